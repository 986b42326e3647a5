"""ClickHouse's errors as the chDB endpoint answers them, and the reply it sends.

A :class:`ClickHouseError` carries ClickHouse's code, error name and message; its HTTP
status follows ClickHouse's own mapping (``src/Server/HTTPHandler.cpp``), so clients raise
their usual errors. :func:`_from_chdb` reads a chDB error (ClickHouse's ``Code: N.
DB::Exception: ...`` text) into one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from workers.store.exceptions import StoreError

# ClickHouse's HTTP status for an error, by error name (src/Server/HTTPHandler.cpp).
_STATUS_BY_NAME = {
    "REQUIRED_PASSWORD": 401,
    "AUTHENTICATION_FAILED": 403,
    "UNKNOWN_USER": 403,
    "WRONG_PASSWORD": 403,
    "READONLY": 403,
    "ACCESS_DENIED": 403,
    "UNKNOWN_QUERY_PARAMETER": 400,
    "UNKNOWN_TYPE_OF_QUERY": 400,
    "SESSION_NOT_FOUND": 404,
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "TIMEOUT_EXCEEDED": 408,
    "CANNOT_OPEN_FILE": 503,
    "NOT_ENOUGH_SPACE": 503,
}
_BAD_REQUEST = frozenset(
    {
        "SYNTAX_ERROR", "BAD_ARGUMENTS", "BAD_QUERY_PARAMETER", "TYPE_MISMATCH",
        "INCORRECT_DATA", "INCORRECT_QUERY", "CANNOT_READ_ALL_DATA", "TOO_DEEP_AST",
        "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
        "THERE_IS_NO_COLUMN", "NO_SUCH_COLUMN_IN_TABLE", "EMPTY_QUERY",
        "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE", "ILLEGAL_TYPE_OF_ARGUMENT",
        "NUMBER_OF_ARGUMENTS_DOESNT_MATCH", "UNKNOWN_COMPRESSION_METHOD",
    }
)  # fmt: skip
_CODE = re.compile(r"Code: (\d+)\. ")
_ERROR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?: \(version [^)]*\))?\s*$")


class ClickHouseError(StoreError):
    """An error to answer in ClickHouse's format (code, name, message)."""

    def __init__(self, code: int, name: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message
        self.status = status or _status(name)


def _status(name: str) -> int:
    if name in _STATUS_BY_NAME:
        return _STATUS_BY_NAME[name]
    if name in _BAD_REQUEST or name.startswith("CANNOT_PARSE"):
        return 400
    if name.startswith("UNKNOWN_"):
        return 404
    return 500


def _from_chdb(exc: Exception) -> ClickHouseError:
    """Translate a chDB error (its text is ClickHouse's ``Code: N. DB::Exception: ...``)."""
    text = str(exc).strip()
    code_match = _CODE.search(text)
    if code_match is None:
        return ClickHouseError(1001, "STD_EXCEPTION", f"DB::Exception: {text}")
    message = text[code_match.end() :]
    name_match = _ERROR_NAME.search(message)
    return ClickHouseError(
        int(code_match.group(1)), name_match.group(1) if name_match else "", message
    )


@dataclass
class Reply:
    """An HTTP response: status, body, headers."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
