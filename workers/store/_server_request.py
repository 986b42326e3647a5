"""Reading a request to the chDB endpoint: its body, form fields, settings and statement.

Request bodies are decompressed (``Content-Encoding`` gzip, deflate, lz4, zstd),
``multipart/form-data`` fields read as parameters, the parameters that are not HTTP
transport become query-level settings, and ``INSERT ... FORMAT fmt`` is split from the
data that follows it, exactly as ClickHouse's parser does.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP

from workers.store._server_errors import (
    ClickHouseError,
)
from workers.store._sql_guard import skip_quoted

_SETTING = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# HTTP-interface parameters that are not query settings (ClickHouse consumes these itself),
# and settings about HTTP streaming that have no meaning for a buffered reply.
_TRANSPORT_PARAMS = frozenset(
    {
        "query", "database", "default_format", "session_id", "session_timeout",
        "session_check", "query_id", "compress", "decompress", "buffer_size",
        "wait_end_of_query", "client_protocol_version", "quota_key", "role", "user",
        "password", "stacktrace", "close_session", "send_progress_in_http_headers",
        "http_headers_progress_interval_ms", "enable_http_compression",
        "http_zlib_compression_level", "cancel_http_readonly_queries_on_client_close",
        "http_response_buffer_size", "http_wait_end_of_query",
    }
)  # fmt: skip
# Statements whose effect outlives the query in ClickHouse's session model.
_STATEFUL = re.compile(r"^\s*(SET|USE)\b|\bTEMPORARY\s+TABLE\b", re.IGNORECASE)
_READ_VERBS = ("SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "CHECK")


@dataclass
class _Statement:
    sql: str
    insert_format: str | None = None  # set for ``INSERT ... FORMAT x`` followed by data
    data: bytes = b""


def _word_at(text: bytes, i: int) -> bytes:
    j = i
    while j < len(text) and (chr(text[j]).isalnum() or text[j] == 0x5F):
        j += 1
    return text[i:j]


def _split_insert(full: bytes) -> _Statement | None:
    """Split ``INSERT ... FORMAT fmt\\n<data>`` into statement, format and data.

    Scans the statement head (skipping quotes and comments) for the first top-level FORMAT,
    stopping at VALUES/SELECT/WITH, whose data is part of the SQL. Data starts after spaces
    and one newline following the format name, exactly as ClickHouse's parser does, so a
    binary body that begins with whitespace bytes is kept intact.
    """
    head = full.lstrip()
    if _word_at(head, 0).upper() != b"INSERT":
        return None
    offset = len(full) - len(head)
    i, n = 0, len(head)
    while i < n:
        c = head[i]
        if c in b"'\"`":
            i = skip_quoted(head, i)
        elif head.startswith(b"--", i) or c == 0x23:  # -- and # comments
            end = head.find(b"\n", i)
            i = n if end < 0 else end + 1
        elif head.startswith(b"/*", i):
            end = head.find(b"*/", i + 2)
            i = n if end < 0 else end + 2
        elif chr(c).isalpha() or c == 0x5F:
            word = _word_at(head, i)
            upper = word.upper()
            if upper in (b"VALUES", b"SELECT", b"WITH"):
                return None
            if upper == b"FORMAT":
                j = i + len(word)
                while j < n and head[j] in b" \t\r\n\f":
                    j += 1
                fmt = _word_at(head, j)
                if not fmt:
                    return None
                k = j + len(fmt)
                while k < n and head[k] in b" \t\f":
                    k += 1
                if k < n and head[k] == 0x0D:
                    k += 1
                if k < n and head[k] == 0x0A:
                    k += 1
                sql = head[:i].decode("utf-8").rstrip().rstrip(";")
                return _Statement(sql, fmt.decode(), full[offset + k :])
            i += len(word)
        else:
            i += 1
    return None


_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)


def _result_format(sql: str, default: str) -> str:
    match = _TRAILING_FORMAT.search(sql[-300:])
    return match.group(1) if match else default


def _is_read(sql: str) -> bool:
    stripped = re.sub(r"^(\s+|--[^\n]*\n|/\*.*?\*/)+", "", sql, flags=re.DOTALL)
    return stripped[:12].upper().startswith(_READ_VERBS)


def _decompress(encoding: str, body: bytes) -> bytes:
    encoding = encoding.strip().lower()
    if not body or encoding in ("", "identity"):
        return body
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
        if encoding == "lz4":
            import lz4.frame

            return bytes(lz4.frame.decompress(body))
        if encoding == "zstd":
            try:
                from compression import zstd  # type: ignore[import-not-found]
            except ImportError:
                from backports import zstd  # type: ignore[no-redef]
            return bytes(zstd.decompress(body))
    except ImportError as exc:
        raise ClickHouseError(
            336, "UNKNOWN_COMPRESSION_METHOD", f"Content-Encoding {encoding} needs {exc.name}"
        ) from exc
    except Exception as exc:
        raise ClickHouseError(
            271, "CANNOT_DECOMPRESS", f"cannot decompress the {encoding} body: {exc}", 400
        ) from exc
    raise ClickHouseError(
        336, "UNKNOWN_COMPRESSION_METHOD", f"Unknown Content-Encoding {encoding!r}"
    )


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a ``multipart/form-data`` body (ClickHouse reads query + params)."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    fields: dict[str, str] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if name is None:
            continue
        if part.get_filename() is not None:
            raise ClickHouseError(
                48, "NOT_IMPLEMENTED", "external data (file form fields) is not supported here"
            )
        payload = part.get_payload(decode=True)
        fields[str(name)] = payload.decode("utf-8") if isinstance(payload, bytes) else ""
    return fields


def query_settings(params: Mapping[str, str]) -> dict[str, str]:
    """The request parameters that are query-level settings (not transport, not ``param_``)."""
    settings = {}
    for key, value in params.items():
        if key in _TRANSPORT_PARAMS or key.startswith("param_"):
            continue
        if not _SETTING.match(key):
            raise ClickHouseError(115, "UNKNOWN_SETTING", f"Unknown setting {key!r}")
        settings[key] = value
    return settings
