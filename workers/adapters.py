"""The ``adapters`` table, read side: which adapter of a base model is live.

The trainer's registry (:mod:`trainer.registry`) writes the table; the retrain gate and the
golden schedule only need to know which version serves, so the one query lives here.
"""

from __future__ import annotations

from typing import Any

from workers.store import Store

#: Statuses of an adapter that serves (or is about to): the newest such row is the live one.
LIVE_STATUSES = ("promoted", "deployed")

_LIVE_SQL = (
    "SELECT {columns} FROM adapters FINAL WHERE base_model = {{m:String}} "
    "AND status IN {live} ORDER BY updated_at DESC LIMIT 1"
)


def live_adapter_row(
    store: Store, base_model: str, columns: tuple[str, ...] = ("version",)
) -> dict[str, Any] | None:
    """The newest promoted or deployed adapter row of ``base_model`` (``columns`` of it),
    or None when the base model serves alone."""
    rows = store.query(
        _LIVE_SQL.format(columns=", ".join(columns), live=LIVE_STATUSES), {"m": base_model}
    ).dicts()
    return rows[0] if rows else None


def live_adapter_version(store: Store, base_model: str) -> str | None:
    """The live adapter's version, or None."""
    row = live_adapter_row(store, base_model)
    return str(row["version"]) if row else None
