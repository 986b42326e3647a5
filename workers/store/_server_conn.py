"""One chDB connection of the endpoint, and what is known of its state.

A request changes only the database and settings that differ from the previous one on
the same connection (usually none); inserts go through an owner-only spool file so that
the engine's errors reach the client.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import chdb.session

log = logging.getLogger(__name__)


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class _Conn:
    """A chDB connection and what is known of its state, so a request changes only the
    database and settings that differ from the previous one (usually none).

    ``own_db`` and the session's own settings are what SET/USE statements chose;
    ``overrides`` are per-query settings from URL parameters now in effect on top, each
    with the expression that restores the session's own value.
    """

    def __init__(self, path: Path, readonly: bool) -> None:
        self.session = chdb.session.Session(str(path))
        self.readonly = readonly
        if readonly:
            # As a ClickHouse server runs GET requests: no writes, no settings changes.
            self.session.query("SET readonly = 1")
        self.own_db = self.db = "default"
        self.overrides: dict[str, tuple[str, str]] = {}
        self.own_settings_default = True  # no SET statement has run here
        self.broken = False  # its state is unknown: close it, never reuse it
        self.timeout_s = 60.0
        self.last_used = time.monotonic()

    def _q(self, sql: str) -> None:
        self.session.query(sql, "TabSeparated")

    def _own_values(self, names: list[str]) -> dict[str, str]:
        if not names or self.own_settings_default:
            return dict.fromkeys(names, "DEFAULT")
        result = self.session.query(
            "SELECT name, value, changed FROM system.settings WHERE has({names:Array(String)}, name)",
            "JSONCompact",
            params={"names": "[" + ",".join(map(_literal, names)) + "]"},
        )
        found = {
            n: _literal(v) if c else "DEFAULT" for n, v, c in json.loads(result.bytes())["data"]
        }
        return {n: found.get(n, "DEFAULT") for n in names}

    def prepare(self, database: str, settings: Mapping[str, str]) -> None:
        """Select the request's database and settings (per query, as ClickHouse does)."""
        try:
            target = database or self.own_db
            if target != self.db:
                self.db = ""  # unknown until USE succeeds
                self._q(f"USE {_ident(target)}")
                self.db = target
            changes = [
                f"{name} = {restore}"
                for name, (_, restore) in self.overrides.items()
                if name not in settings
            ]
            restores = self._own_values([n for n in settings if n not in self.overrides])
            wanted: dict[str, tuple[str, str]] = {}
            for name, value in settings.items():
                current = self.overrides.get(name)
                wanted[name] = (value, current[1] if current else restores[name])
                if current is None or current[0] != value:
                    changes.append(f"{name} = {_literal(value)}")
            if changes:
                self._q("SET " + ", ".join(changes))
            self.overrides = wanted
        except RuntimeError:
            self._recover()
            raise

    def revert(self) -> None:
        """Back to the session's own database and settings."""
        self.prepare("", {})

    def absorb(self, sql: str) -> None:
        """Learn what a SET/USE statement changed in the session."""
        if re.match(r"\s*USE\b", sql, re.IGNORECASE):
            current = self.session.query("SELECT currentDatabase()", "TabSeparated")
            self.own_db = self.db = current.bytes().decode().strip()
        if re.match(r"\s*SET\b", sql, re.IGNORECASE):
            self.own_settings_default = False

    def _recover(self) -> None:
        """After a failed USE/SET: undo overrides one by one, or give the connection up."""
        try:
            for name, (_, restore) in self.overrides.items():
                self._q(f"SET {name} = {restore}")
            self.overrides = {}
            self._q(f"USE {_ident(self.own_db)}")
            self.db = self.own_db
        except RuntimeError:
            log.warning("a chDB connection's state could not be reset; closing it")
            self.broken = True

    def insert(self, sql: str, fmt: str, data: bytes) -> tuple[int, int]:
        """Insert ``data`` (in format ``fmt``); ``(rows, bytes)`` written.

        Not through chDB's streaming ``send_insert``: it reports success for rows the engine
        refuses (a CHECK constraint, TOO_MANY_PARTS ...), and they vanish with a 200. The
        body goes through an owner-only spool file read with ``FROM INFILE`` instead, so
        the engine's error reaches the client, which can retry or bisect.
        """
        with tempfile.NamedTemporaryFile(dir=_spool_dir(), prefix="insert-") as spool:
            spool.write(data)
            spool.flush()
            result = self.session.query(
                f"{sql} FROM INFILE {_literal(spool.name)} COMPRESSION 'none' FORMAT {fmt}",
                "TabSeparated",
            )
        return result.rows_written(), result.bytes_written()

    def close(self) -> None:
        self.session.close()


@functools.cache
def _spool_dir() -> str:
    """A private folder (mode 0700) for insert bodies, removed when the process exits."""
    folder = tempfile.mkdtemp(prefix="sentryml-chdb-spool-")
    atexit.register(shutil.rmtree, folder, True)
    return folder
