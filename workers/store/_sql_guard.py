"""What SQL the shared chDB endpoint refuses: anything that reaches the host or the network.

chDB is clickhouse-local: its ``file()`` reads any path the process can, ``url()`` fetches
any address, ``INTO OUTFILE`` writes anywhere, and its ``default`` database is an overlay
over the current directory (``SELECT * FROM default.`/etc/passwd```). A ClickHouse server
confines these with ``user_files_path`` and grants; chDB has neither, so ``sentryml store
serve`` checks every statement itself before it runs, for every user.

The check reads ClickHouse's own parse of the statement (``EXPLAIN AST``), so comments,
quoting, case and whitespace cannot hide a call, and it is an allow list where one is
possible. A statement is refused when it

- names a table function outside :data:`TABLE_FUNCTIONS` (``file``, ``url``, ``s3``,
  ``remote``, ``mysql``, ``executable``, ``input``... are not in it), or inserts into one;
- creates a table or database with an engine outside :data:`ENGINES` (``File``, ``URL``,
  ``S3``, ``Filesystem``, ``Kafka``, ``MySQL``... are not in it);
- calls a function of :data:`FUNCTIONS_DENIED` (the scalar ``file()``);
- is a statement of :data:`STATEMENTS_DENIED` (``ATTACH``, ``SYSTEM``), creates a dictionary
  (its sources read files, URLs and databases), or has ``INTO OUTFILE`` / ``FROM INFILE``;
- reads a table of chDB's ``default`` database (the overlay over the host's files), or a
  table whose name is not a plain identifier;
- holds more than one statement (ClickHouse's HTTP interface refuses these too; chDB would
  run them all).

``BACKUP`` / ``RESTORE`` stay allowed for writers to :data:`BACKUP_ENGINES`: chDB confines
``File()`` and ``Disk()`` to the ``backups.allowed_path`` / ``allowed_disk`` the store was
opened with, and refuses them without one.

>>> refusal(ast_lines("SelectWithUnionQuery (children 1)\\n TableExpression\\n  Function file"))
"table function file() is not allowed here (it reaches the host's files or the network); allowed: generateRandom, generate_series, merge, null, numbers, numbers_mt, values, view, zeros, zeros_mt"
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BACKUP_ENGINES",
    "ENGINES",
    "FUNCTIONS_DENIED",
    "STATEMENTS_DENIED",
    "TABLE_FUNCTIONS",
    "AstNode",
    "ast_lines",
    "extra_statement",
    "refusal",
    "skip_quoted",
]

#: Table functions that compute rows inside the store (no files, no network).
TABLE_FUNCTIONS = frozenset(
    {
        "numbers", "numbers_mt", "zeros", "zeros_mt", "values", "generateRandom",
        "generate_series", "null", "view", "merge",
    }
)  # fmt: skip
#: Table and database engines that keep their data inside the store's folder.
ENGINES = frozenset(
    {
        "MergeTree", "ReplacingMergeTree", "SummingMergeTree", "AggregatingMergeTree",
        "CollapsingMergeTree", "VersionedCollapsingMergeTree", "Memory", "Null", "Log",
        "TinyLog", "StripeLog", "Set", "Join", "Buffer", "Merge", "GenerateRandom",
        "Atomic",
    }
)  # fmt: skip
#: Where BACKUP / RESTORE may write and read: chDB confines both to ``backups.allowed_path``
#: and ``backups.allowed_disk`` (without them it refuses), unlike ``S3`` or ``URL``.
BACKUP_ENGINES = frozenset({"File", "Disk"})
#: Ordinary (scalar) functions that read the host's files.
FUNCTIONS_DENIED = frozenset({"file"})
#: Statements refused outright (root node names of ``EXPLAIN AST``).
STATEMENTS_DENIED = {
    "AttachQuery": "ATTACH (it can load tables from any path of the host)",
    "SYSTEM query": "SYSTEM statements",
}
#: chDB's ``default`` database is an Overlay over a Filesystem database: never read it.
OVERLAY_DATABASES = frozenset({"default"})

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NODE = re.compile(r"^(?P<indent> *)(?P<text>\S.*?)\s*$")
# Nodes whose direct Literal child is an INTO OUTFILE / FROM INFILE path.
_WITH_OUTPUT = frozenset({"SelectWithUnionQuery", "SelectIntersectExceptQuery", "InsertQuery"})


@dataclass(frozen=True)
class AstNode:
    """One line of ``EXPLAIN AST``: its kind (first word), the rest, and its parent's kind."""

    depth: int
    kind: str
    name: str
    parent: str
    first_child: bool


def ast_lines(text: str) -> list[AstNode]:
    """The nodes of an ``EXPLAIN AST`` answer (one node a line, one space per level)."""
    nodes: list[AstNode] = []
    stack: list[tuple[str, int]] = []  # (kind, children seen so far) per open level
    for line in text.splitlines():
        match = _NODE.match(line)
        if match is None:
            continue
        depth = len(match.group("indent"))
        body = re.sub(r"\s*\(children \d+\)$", "", match.group("text"))
        body = re.sub(r"\s*\(alias [^)]*\)", "", body)
        if body.startswith("SYSTEM query"):
            kind, name = "SYSTEM query", ""
        elif body.startswith("Storage definition"):
            kind, name = "Storage definition", ""
        elif body.startswith("Dictionary definition"):
            kind, name = "Dictionary definition", ""
        else:
            kind, _, name = body.partition(" ")
        del stack[depth:]
        parent, seen = stack[-1] if stack else ("", 0)
        if stack:
            stack[-1] = (parent, seen + 1)
        nodes.append(AstNode(depth, kind, name.strip(), parent, seen == 0))
        stack.append((kind, 0))
    return nodes


def refusal(nodes: Sequence[AstNode], database: str = "") -> str | None:
    """Why the parsed statement is refused, or None when it may run.

    ``database`` is the one unqualified table names resolve in.
    """
    if nodes and nodes[0].kind in STATEMENTS_DENIED:
        return f"{STATEMENTS_DENIED[nodes[0].kind]} are not allowed here"
    for node in nodes:
        if node.kind == "Dictionary definition":
            return "dictionaries are not allowed here (their sources read files and URLs)"
        if node.kind == "FunctionWithKeyValueArguments":
            return f"{node.name} is not allowed here"
        if node.kind == "Literal" and node.parent in _WITH_OUTPUT:
            return "INTO OUTFILE and FROM INFILE are not allowed here (they reach the host's files)"
        if node.kind == "Function":
            reason = _function_refusal(node)
            if reason:
                return reason
        if node.kind == "TableIdentifier":
            reason = _table_refusal(node.name, database)
            if reason:
                return reason
    return None


def _function_refusal(node: AstNode) -> str | None:
    name = node.name
    if node.parent in ("BackupQuery", "RestoreQuery"):
        if name in BACKUP_ENGINES:
            return None
        return f"backups to {name}() are not allowed here; use File() or Disk()"
    if node.parent == "TableExpression" and name not in TABLE_FUNCTIONS:
        return (
            f"table function {name}() is not allowed here (it reaches the host's files or "
            f"the network); allowed: {', '.join(sorted(TABLE_FUNCTIONS))}"
        )
    if node.parent == "InsertQuery":
        return f"INSERT INTO FUNCTION {name}() is not allowed here"
    if node.parent == "Storage definition" and node.first_child and name not in ENGINES:
        return (
            f"engine {name} is not allowed here (it keeps data outside the store); "
            f"allowed: {', '.join(sorted(ENGINES))}"
        )
    if name.lower() in FUNCTIONS_DENIED:
        return f"function {name}() is not allowed here (it reads the host's files)"
    return None


def _table_refusal(name: str, database: str) -> str | None:
    parts = name.split(".")
    if len(parts) > 2 or not all(_PLAIN.match(p) for p in parts):
        return f"table name {name!r} is not allowed here: use a plain database.table name"
    db = parts[0] if len(parts) == 2 else database
    if db in OVERLAY_DATABASES:
        return (
            f"tables of the {db!r} database are not allowed here (in chDB it reads the "
            "host's files): use your own database, e.g. the one SENTRYML_STORE_DATABASE names"
        )
    return None


def skip_quoted(text: bytes, i: int) -> int:
    """The index after the quoted string, identifier or backtick name starting at ``i``."""
    quote = text[i]
    i += 1
    while i < len(text):
        c = text[i]
        if c == 0x5C:  # backslash escapes the next byte
            i += 2
            continue
        if c == quote:
            if i + 1 < len(text) and text[i + 1] == quote:  # doubled quote
                i += 2
                continue
            return i + 1
        i += 1
    return i


def extra_statement(sql: str) -> bool:
    """True when ``sql`` holds a second statement after a top-level ``;``.

    >>> extra_statement("SELECT 1;"), extra_statement("SELECT ';'; SELECT 2")
    (False, True)
    """
    text = sql.encode("utf-8")
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in b"'\"`":
            i = skip_quoted(text, i)
        elif text.startswith(b"--", i) or c == 0x23:
            end = text.find(b"\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith(b"/*", i):
            end = text.find(b"*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == 0x3B:  # ';'
            rest = text[i + 1 :]
            return bool(_strip_comments(rest).strip(b" \t\r\n\f;"))
        else:
            i += 1
    return False


def _strip_comments(text: bytes) -> bytes:
    return re.sub(rb"--[^\n]*|#[^\n]*|/\*.*?\*/", b"", text, flags=re.DOTALL)
