"""What the demo waits for, prints and returns: drift tables, the live golden run, the
recovery, and the summary from SQL with the whole timeline."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from streams.console import print_table

#: The output features: the ones the incumbent's degraded answers moved.
OUTPUT_FEATURES = ("output_length", "ttr", "distinct2", "refusal")


def _evaluated_since(store: Any, since: float) -> bool:
    ts = datetime.fromtimestamp(since, UTC)
    return bool(
        store.query(
            "SELECT count() FROM drift_stats WHERE ts > {t:DateTime64(3, 'UTC')}", {"t": ts}
        ).scalar()
    )


def _print_drift(store: Any, title: str, adapter_version: str | None = None) -> None:
    where = "window = '1h'" + (" AND adapter_version = {a:String}" if adapter_version else "")
    result = store.query(
        "SELECT feature, window, round(argMax(psi, ts), 3) AS psi, "
        "round(argMax(p_value, ts), 4) AS p_value, argMax(sample_size, ts) AS n, "
        f"argMax(status, ts) AS status FROM drift_stats WHERE {where} "
        "GROUP BY feature, window ORDER BY feature",
        {"a": adapter_version} if adapter_version else None,
    )
    scope = f", adapter {adapter_version}" if adapter_version else ""
    print_table(result.columns, result.rows, title=f"drift after {title} (1h window{scope})")


def _deployed(adapter_events: list[dict[str, Any]], version: str) -> dict[str, Any] | None:
    """The ``deployed`` event of ``version``, once the deployer published it."""
    return next(
        (
            e
            for e in adapter_events
            if e["status"] == "deployed" and e["adapter_version"] == version
        ),
        None,
    )


def _golden_run(store: Any, version: str) -> dict[str, Any] | None:
    """The worker's deploy-triggered golden run of ``version`` (against the live server)."""
    rows = store.query(
        "SELECT adapter_version, trigger, total, passed, pass_rate, ts FROM golden_runs FINAL "
        "WHERE adapter_version = {v:String} AND trigger = 'deploy' ORDER BY ts DESC LIMIT 1",
        {"v": version},
    ).dicts()
    return rows[0] if rows else None


def _recovered(store: Any, version: str) -> dict[str, Any] | None:
    """The newest 1h evaluation of ``version``, once every output feature is ``ok`` on
    enough traffic (not ``insufficient``)."""
    rows = store.query(
        "SELECT feature, argMax(status, ts) AS status, argMax(sample_size, ts) AS n, "
        "max(ts) AS ts FROM drift_stats WHERE adapter_version = {v:String} AND window = '1h' "
        "AND feature IN {f:Array(String)} GROUP BY feature",
        {"v": version, "f": list(OUTPUT_FEATURES)},
    ).dicts()
    if len(rows) < len(OUTPUT_FEATURES) or any(r["status"] != "ok" for r in rows):
        return None
    return {"adapter_version": version, "features": rows, "ts": max(r["ts"] for r in rows)}


_TIMELINE_SQL = """
SELECT 'incident: first drift alert' AS step, min(ts) AS ts FROM alerts
WHERE kind LIKE '%drift' HAVING count() > 0
UNION ALL SELECT 'gate: retrain request fired', min(ts) FROM retrain_jobs
WHERE decision IN ('fired', 'forced') HAVING count() > 0
UNION ALL SELECT concat('trainer: ', decision), min(ts) FROM retrain_jobs
WHERE decision NOT IN ('fired', 'forced', 'held') GROUP BY decision
UNION ALL SELECT concat('golden: ', adapter_version, ' (', trigger, ') ', toString(passed),
                        '/', toString(total)), ts FROM golden_runs FINAL
UNION ALL SELECT concat('adapter ', version, ': ', status), updated_at FROM adapters FINAL
"""


def _summary(store: Any, recovery: dict[str, Any] | None = None) -> dict[str, Any]:
    queries = {
        "alerts": "SELECT kind, severity, count() AS n FROM alerts GROUP BY kind, severity ORDER BY kind",
        "judge": "SELECT adapter_version, dimension, countIf(ok = 1) AS scored, "
        "round(avgIf(score, ok = 1), 2) AS mean FROM judge_scores FINAL "
        "GROUP BY adapter_version, dimension ORDER BY adapter_version, dimension",
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
    steps = [(str(r["step"]), r["ts"]) for r in store.query(_TIMELINE_SQL).dicts()]
    if recovery is not None:
        steps.append(
            (f"recovery: output drift of {recovery['adapter_version']} ok", recovery["ts"])
        )
    steps.sort(key=lambda s: s[1])
    print_table(["when (UTC)", "step"], [(ts, step) for step, ts in steps], title="timeline")
    out["timeline"] = [{"step": step, "ts": str(ts)} for step, ts in steps]
    return out
