"""Training data: one record per line of a training JSONL (prompt/completion or chat messages)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.exceptions import TrainingDataError

if TYPE_CHECKING:
    pass


# --------------------------------------------------------------------------------------
# training data
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingRecord:
    """One training example: the user-facing prompt and the target completion.

    For chats, ``prompt`` is the last user turn (what the worker embeds for a production
    chat too) and ``messages`` keeps the whole conversation for the trainer.
    """

    prompt: str
    completion: str
    messages: tuple[tuple[str, str], ...] | None = None


def _content(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise TrainingDataError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _from_messages(messages: Any, where: str) -> TrainingRecord:
    if not isinstance(messages, list) or not messages:
        raise TrainingDataError(f"{where}: 'messages' must be a non-empty list of turns")
    turns: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise TrainingDataError(
                f"{where}: messages[{i}] must be an object with 'role' and 'content'"
            )
        turns.append((str(m["role"]), _content(m["content"], where, f"messages[{i}].content")))
    if turns[-1][0] != "assistant":
        raise TrainingDataError(
            f"{where}: the last message must be the assistant's answer (the completion), "
            f"got role {turns[-1][0]!r}"
        )
    users = [c for r, c in turns[:-1] if r == "user"]
    if not users:
        raise TrainingDataError(f"{where}: no user message before the assistant's answer")
    return TrainingRecord(prompt=users[-1], completion=turns[-1][1], messages=tuple(turns))


def parse_training_record(obj: Any, where: str = "<record>") -> TrainingRecord:
    """One JSONL object as a :class:`TrainingRecord`; :class:`TrainingDataError` if malformed.

    Accepted shapes: ``{"prompt": str, "completion": str}``, ``{"messages": [...]}`` (last
    turn is the assistant's), and TRL's conversational ``{"prompt": [turns], "completion":
    [turns]}``. Other keys (ids, metadata) are ignored.
    """
    if not isinstance(obj, dict):
        raise TrainingDataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        return _from_messages(obj["messages"], where)
    if "prompt" in obj and "completion" in obj:
        prompt, completion = obj["prompt"], obj["completion"]
        if isinstance(prompt, list) and isinstance(completion, list):
            return _from_messages([*prompt, *completion], where)
        return TrainingRecord(
            prompt=_content(prompt, where, "prompt"),
            completion=_content(completion, where, "completion"),
        )
    raise TrainingDataError(
        f"{where}: needs 'prompt' and 'completion', or 'messages' (found keys: "
        f"{', '.join(sorted(obj)) or 'none'})"
    )


def read_training_jsonl(path: str | Path) -> list[TrainingRecord]:
    """Read the training JSONL the trainer also reads; errors name the file and line.

    Blank lines are skipped; an empty file (no examples) is an error.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TrainingDataError(f"{p}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise TrainingDataError(f"{p}: not UTF-8 text ({exc})") from exc
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrainingDataError(
                f"{where}: invalid JSON: {exc.msg} (column {exc.colno})"
            ) from exc
        records.append(parse_training_record(obj, where))
    if not records:
        raise TrainingDataError(
            f"{p}: no training examples (the file is empty); expected one JSON object per "
            'line, e.g. {"prompt": "...", "completion": "..."}'
        )
    return records
