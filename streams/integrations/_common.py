"""What every integration maps the same way: OpenAI-style messages into the event's chat turns."""

from __future__ import annotations

from typing import Any

#: Roles of the OpenAI API that the event schema names differently.
_ROLES = {"developer": "system", "function": "tool"}


def content_text(content: Any) -> str:
    """A message's content as text (the text parts of a multi-part content)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p.get("text", "") if isinstance(p, dict) else getattr(p, "text", "") for p in content
        ]
        return "".join(p for p in parts if isinstance(p, str))
    return str(content)


def chat_messages(raw: Any) -> list[dict[str, str]]:
    out = []
    for message in raw or ():
        get = message.get if isinstance(message, dict) else lambda k, m=message: getattr(m, k, None)
        role = str(get("role") or "user")
        out.append({"role": _ROLES.get(role, role), "content": content_text(get("content"))})
    return out
