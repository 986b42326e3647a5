"""What changed in the newest 24 h, per adapter: the drift monitor's explanation
(:func:`workers.drift.explain_window`) as a list."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.report._config import Section
from workers.report._html import esc, no_data
from workers.report._queries import Scope

if TYPE_CHECKING:
    from workers.store import Store


def changes_section(store: Store, scope: Scope) -> Section:
    """What changed in the newest 24 h, per adapter (``workers.drift``)."""
    from workers.drift import active_streams, explain_window

    title = "What changed: newest 24 h"
    parts: list[str] = []
    n = 0
    for stream in active_streams(store, scope.end):
        model, adapter, baseline = stream
        if model != scope.base_model or (scope.adapter is not None and adapter != scope.adapter):
            continue
        explanation = explain_window(store, stream, "24h", scope.end)
        if not explanation.sample_size:
            continue
        n += explanation.sample_size
        items = "".join(f"<li>{esc(line)}</li>" for line in explanation.lines())
        parts.append(
            f"<h3>adapter {esc(adapter)} (baseline {esc(baseline.baseline_id)})</h3>"
            f"<ul>{items}</ul>"
        )
    if not n:
        return Section("changes", title, no_data("no embedded prompts in the newest 24 h"))
    body = (
        "<p>The share of prompts unlike the training data (with its 95 % interval), the "
        "clusters that grew and shrank most (named by their training prompts' keywords), "
        "keywords of the new prompts against the typical ones, and up to five of them "
        "(redacted; a bottom-k sample by hash of request id).</p>" + "".join(parts)
    )
    return Section("changes", title, body, (), n)
