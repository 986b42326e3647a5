"""What the demo prints and returns: drift tables and the summary from SQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


def _evaluated_since(store: Any, since: float) -> bool:
    from datetime import UTC, datetime

    ts = datetime.fromtimestamp(since, UTC)
    return bool(
        store.query(
            "SELECT count() FROM drift_stats WHERE ts > {t:DateTime64(3, 'UTC')}", {"t": ts}
        ).scalar()
    )


def _print_drift(store: Any, title: str) -> None:
    from streams.console import print_table

    result = store.query(
        "SELECT feature, window, round(argMax(psi, ts), 3) AS psi, "
        "round(argMax(p_value, ts), 4) AS p_value, argMax(sample_size, ts) AS n, "
        "argMax(status, ts) AS status FROM drift_stats "
        "WHERE window = '1h' GROUP BY feature, window ORDER BY feature"
    )
    print_table(result.columns, result.rows, title=f"drift after {title} (1h window)")


def _summary(store: Any) -> dict[str, Any]:
    from streams.console import print_table

    queries = {
        "alerts": "SELECT kind, severity, count() AS n FROM alerts GROUP BY kind, severity ORDER BY kind",
        "judge": "SELECT dimension, countIf(ok = 1) AS scored, round(avgIf(score, ok = 1), 2) AS mean "
        "FROM judge_scores FINAL GROUP BY dimension ORDER BY dimension",
        "golden": "SELECT adapter_version, trigger, total, passed, round(pass_rate, 3) AS pass_rate "
        "FROM golden_runs FINAL ORDER BY ts",
        "retrain": "SELECT decision, count() AS n, any(reason) AS example FROM retrain_jobs "
        "GROUP BY decision ORDER BY decision",
        "adapters": "SELECT version, parent_version, method, status, sha256 FROM adapters FINAL",
    }
    out: dict[str, Any] = {}
    for name, sql in queries.items():
        result = store.query(sql)
        print_table(result.columns, result.rows, title=name)
        out[name] = result.dicts()
    return out
