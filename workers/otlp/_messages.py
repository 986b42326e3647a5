"""GenAI message content, in each shape the conventions and instrumentations have used.

* current: ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (and
  ``gen_ai.system_instructions``), a JSON string on spans and structured values on the
  ``gen_ai.client.inference.operation.details`` event: ``[{"role", "parts": [{"type":
  "text", "content"}]}]``;
* older: ``gen_ai.prompt`` / ``gen_ai.completion``, a JSON (or Python-literal, as the
  spec's own examples print it) list of ``{"role", "content"}``, or plain text;
* flattened: ``gen_ai.prompt.0.role``, ``gen_ai.prompt.0.content``, ...
  (``gen_ai.completion.0.content``), as OpenLLMetry-style instrumentations write them;
* per-message events: ``gen_ai.{system,user,assistant,tool}.message`` with ``{"content"}``
  bodies and ``gen_ai.choice`` with ``{"message": {"role", "content"}}``.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

#: Roles the event schema names differently (OpenAI's developer/function, Gemini's model).
_ROLES = {"developer": "system", "function": "tool", "model": "assistant", "human": "user"}
_KNOWN_ROLES = frozenset({"system", "user", "assistant", "tool"})
#: Python-literal content is read only below this size (``ast`` is slow on huge input).
_LITERAL_MAX = 256 * 1024
_INDEXED = re.compile(r"^(\d+)\.(role|content)$")


def role_of(raw: Any, default: str = "user") -> str:
    role = str(raw or default).lower()
    role = _ROLES.get(role, role)
    return role if role in _KNOWN_ROLES else default


def structured(value: Any) -> Any:
    """A JSON or Python-literal string as the value it spells; anything else unchanged."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text or text[0] not in "[{":
        return value
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    if len(text) > _LITERAL_MAX:
        return value
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value


def text_of(content: Any) -> str | None:
    """The text of one message's content: a string, or its text parts joined."""
    if content is None:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                text = part.get("content", part.get("text"))
                if isinstance(text, str):
                    texts.append(text)
        return "".join(texts) if texts else None
    return None


def message_text(message: dict[str, Any]) -> str | None:
    """A message's text: its ``parts`` (current conventions) or its ``content``."""
    if "parts" in message:
        return text_of(message.get("parts"))
    if "message" in message and isinstance(message["message"], dict):  # a choice
        return message_text(message["message"])
    return text_of(message.get("content"))


def as_messages(value: Any) -> list[dict[str, Any]] | None:
    """``value`` as a list of message dicts, or None when it is not one."""
    value = structured(value)
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return value
    return None


def chat_turns(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Input messages as the event's chat turns (a message without text keeps ``""``)."""
    turns = []
    for message in messages:
        inner = message.get("message")
        if not isinstance(inner, dict):
            inner = message
        turns.append({"role": role_of(inner.get("role")), "content": message_text(message) or ""})
    return turns


def system_turns(value: Any) -> list[dict[str, str]]:
    """``gen_ai.system_instructions`` (a list of parts) as leading system turns."""
    value = structured(value)
    text = text_of(value) if not isinstance(value, str) else value
    return [{"role": "system", "content": text}] if text else []


def completion_of(value: Any) -> str | None:
    """The answer in an output value: the first output message with text, or plain text."""
    messages = as_messages(value)
    if messages is None:
        return value if isinstance(value, str) and value else None
    for message in messages:
        text = message_text(message)
        if text:
            return text
    return None


def prompt_of(value: Any) -> tuple[str | None, list[dict[str, str]] | None]:
    """``(prompt, messages)`` of an input value: chat turns, or a plain prompt string."""
    messages = as_messages(value)
    if messages is not None:
        return None, chat_turns(messages)
    if isinstance(value, str) and value:
        return value, None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "\n".join(value), None  # several prompts of a text completion
    return None, None


def indexed(attributes: dict[str, Any], prefix: str) -> list[dict[str, Any]] | None:
    """``prefix.N.role`` / ``prefix.N.content`` attributes as messages, in index order."""
    found: dict[int, dict[str, Any]] = {}
    start = prefix + "."
    for key, value in attributes.items():
        if key.startswith(start):
            match = _INDEXED.match(key[len(start) :])
            if match:
                found.setdefault(int(match.group(1)), {})[match.group(2)] = value
    if not found:
        return None
    return [found[i] for i in sorted(found)]
