"""Query parameters: the one text form both backends send for ``{name:Type}`` placeholders.

ClickHouse parses a bound value from its *escaped* text form (as in TabSeparated): a
backslash starts an escape, a raw tab or newline ends the value. chDB and the HTTP interface
parse alike, so both backends format values the same way here.

Datetimes are sent in UTC (naive ones are taken as UTC). A ``DateTime`` placeholder gets
whole seconds (ClickHouse refuses a fraction there, clickhouse-connect truncates it); a
``DateTime64`` placeholder keeps the microseconds.

>>> from datetime import datetime, UTC
>>> sql = "SELECT {t:DateTime('UTC')}, {u:DateTime64(3, 'UTC')}, {s:String}"
>>> text_params(sql, {"t": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
...                   "u": datetime(2026, 1, 2, 3, 4, 5, 678000), "s": "a\\tb"})
{'t': '2026-01-02 03:04:05', 'u': '2026-01-02 03:04:05.678000', 's': 'a\\\\tb'}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

__all__ = ["format_datetime", "placeholder_types", "text_params", "to_text", "utc_params"]

_PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*((?:[^{}]|\{[^{}]*\})+?)\s*\}")
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "'": "\\'", "`": "\\`"}
_WRAPPERS = ("Nullable(", "LowCardinality(", "Array(")


def placeholder_types(sql: str) -> dict[str, str]:
    """``{name: ClickHouse type}`` of every ``{name:Type}`` placeholder in ``sql``."""
    return {m.group(1): m.group(2).strip() for m in _PLACEHOLDER.finditer(sql)}


def _element_type(ch_type: str) -> str:
    """The scalar type under Nullable/LowCardinality/Array wrappers."""
    changed = True
    while changed:
        changed = False
        for wrapper in _WRAPPERS:
            if ch_type.startswith(wrapper) and ch_type.endswith(")"):
                ch_type = ch_type[len(wrapper) : -1].strip()
                changed = True
    return ch_type


def format_datetime(value: datetime, ch_type: str = "") -> str:
    """``value`` in UTC as ClickHouse text; sub-seconds only for ``DateTime64`` (or unknown)."""
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    base = _element_type(ch_type)
    keep_fraction = utc.microsecond and (not base or base.startswith("DateTime64"))
    return utc.strftime("%Y-%m-%d %H:%M:%S.%f" if keep_fraction else "%Y-%m-%d %H:%M:%S")


def _escape(text: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in text)


def to_text(value: Any, ch_type: str = "", nested: bool = False) -> str:
    """``value`` in the escaped text form ClickHouse parses for a ``{name:Type}`` parameter.

    Top-level strings are escaped but not quoted; inside arrays and tuples they are quoted.
    ``None`` is ``\\N`` at the top level and ``NULL`` inside containers.
    """
    if value is None:
        return "NULL" if nested else "\\N"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        text = format_datetime(value, ch_type)
        return f"'{text}'" if nested else text
    if isinstance(value, date):
        return f"'{value.isoformat()}'" if nested else value.isoformat()
    if isinstance(value, str):
        return f"'{_escape(value)}'" if nested else _escape(value)
    if isinstance(value, list):
        return "[" + ",".join(to_text(v, ch_type, nested=True) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ",".join(to_text(v, ch_type, nested=True) for v in value) + ")"
    if isinstance(value, Mapping):
        pairs = (
            f"{to_text(k, nested=True)}:{to_text(v, ch_type, nested=True)}"
            for k, v in value.items()
        )
        return "{" + ",".join(pairs) + "}"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    raise TypeError(f"cannot bind a {type(value).__name__} as a query parameter")


def text_params(sql: str, params: Mapping[str, Any]) -> dict[str, str]:
    """Every parameter of ``sql`` in its escaped text form (what chDB takes)."""
    types = placeholder_types(sql)
    return {name: to_text(value, types.get(name, "")) for name, value in params.items()}


def _utc_value(value: Any, ch_type: str) -> Any:
    if isinstance(value, datetime):
        return format_datetime(value, ch_type)
    if isinstance(value, list):
        return [_utc_value(v, ch_type) for v in value]
    if isinstance(value, tuple):
        return tuple(_utc_value(v, ch_type) for v in value)
    return value


def utc_params(sql: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with datetimes replaced by their UTC text (for clickhouse-connect).

    clickhouse-connect would format a datetime in the server's timezone and drop its
    sub-seconds; as text it binds exactly as on chDB.
    """
    types = placeholder_types(sql)
    return {name: _utc_value(value, types.get(name, "")) for name, value in params.items()}
