"""SQL: every number on the page comes from one of these queries, and every query of one
report shares its model, adapter filter and time range (:class:`Scope`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Where the ADAPTER filter goes in a query (a constant fragment; the value is bound).
_ADAPTER = "/*ADAPTER*/"


_RANGE64 = "ts >= {start:DateTime64(3, 'UTC')} AND ts <= {end:DateTime64(3, 'UTC')}"


MODELS_SQL = f"""
SELECT base_model, max(last) AS last FROM (
    SELECT toString(base_model) AS base_model, max(ts) AS last
    FROM drift_stats WHERE {_RANGE64} GROUP BY base_model
    UNION ALL
    SELECT toString(base_model), toDateTime64(max(bucket), 3, 'UTC') FROM window_counts
    WHERE bucket >= {{start:DateTime64(3, 'UTC')}} AND bucket <= {{end:DateTime64(3, 'UTC')}}
    GROUP BY base_model
    UNION ALL
    SELECT toString(base_model), max(ts) FROM judge_scores WHERE {_RANGE64} GROUP BY base_model
    UNION ALL
    SELECT toString(base_model), max(ts) FROM golden_runs WHERE {_RANGE64} GROUP BY base_model
    UNION ALL
    SELECT toString(base_model), max(ts) FROM alerts WHERE {_RANGE64} GROUP BY base_model
    UNION ALL
    SELECT toString(base_model), max(ts) FROM retrain_jobs WHERE {_RANGE64} GROUP BY base_model
    UNION ALL
    SELECT toString(base_model), max(updated_at) FROM adapters
    WHERE updated_at >= {{start:DateTime64(3, 'UTC')}} AND updated_at <= {{end:DateTime64(3, 'UTC')}}
    GROUP BY base_model
)
GROUP BY base_model ORDER BY last DESC, base_model
"""


TRAFFIC_SQL = f"""
SELECT count() AS requests FROM inference_logs
WHERE base_model = {{m:String}} AND {_RANGE64}{_ADAPTER}
"""


DRIFT_EXTENT_SQL = f"""
SELECT count() AS n, min(ts) AS first, max(ts) AS last FROM drift_stats
WHERE base_model = {{m:String}} AND {_RANGE64}{_ADAPTER}
"""


DRIFT_SERIES_SQL = f"""
SELECT feature, window, adapter_version,
       toStartOfInterval(ts, toIntervalSecond({{step:UInt32}})) AS t,
       maxIfOrNull(psi, status != 'insufficient') AS psi,
       maxIfOrNull(jsd, status != 'insufficient') AS jsd,
       argMax(sample_size, ts) AS sample_size,
       argMax(psi_warn, ts) AS psi_warn, argMax(psi_alert, ts) AS psi_alert
FROM drift_stats
WHERE base_model = {{m:String}} AND {_RANGE64}{_ADAPTER}
GROUP BY feature, window, adapter_version, t
ORDER BY feature, window, adapter_version, t
"""


DRIFT_LATEST_SQL = f"""
SELECT feature, window, adapter_version, max(ts) AS last, argMax(psi, ts) AS psi,
       argMax(jsd, ts) AS jsd, argMax(ifNull(p_adjusted, p_value), ts) AS p_adjusted,
       argMax(sample_size, ts) AS sample_size, argMax(baseline_size, ts) AS baseline_size,
       argMax(status, ts) AS status, count() AS evaluations
FROM drift_stats
WHERE base_model = {{m:String}} AND {_RANGE64}{_ADAPTER}
GROUP BY feature, window, adapter_version
"""


DRIFT_ALERTS_SQL = f"""
SELECT ts, adapter_version, feature, window, severity, value FROM alerts FINAL
WHERE base_model = {{m:String}} AND {_RANGE64}
  AND kind IN ('embedding_drift', 'output_drift'){_ADAPTER}
ORDER BY ts LIMIT 20000
"""


NEWEST_COUNTS_SQL = f"""
SELECT baseline_id, max(bucket) AS last, sum(count) AS n FROM window_counts
WHERE base_model = {{m:String}} AND feature = {{f:String}}
  AND bucket >= {{start:DateTime64(3, 'UTC')}} AND bucket <= {{end:DateTime64(3, 'UTC')}}{_ADAPTER}
GROUP BY baseline_id ORDER BY last DESC, n DESC LIMIT 1
"""


# One window of the drift evaluation (``workers.report._evaluation``): every feature's
# counts per bin in the minute buckets after ``from`` up to the newest one.
EVALUATION_COUNTS_SQL = f"""
SELECT feature, bin, sum(count) AS n FROM window_counts
WHERE base_model = {{m:String}} AND baseline_id = {{b:String}}
  AND bucket > {{from:DateTime64(3, 'UTC')}} AND bucket <= {{last:DateTime64(3, 'UTC')}}{_ADAPTER}
GROUP BY feature, bin ORDER BY feature, bin
"""


BASELINE_SQL = (
    "SELECT payload FROM baselines FINAL WHERE baseline_id = {b:String} "
    "ORDER BY created_at DESC LIMIT 1"
)


JUDGE_EXTENT_SQL = f"""
SELECT count() AS n, min(ts) AS first, max(ts) AS last FROM judge_scores FINAL
WHERE base_model = {{m:String}} AND ok = 1 AND score IS NOT NULL AND {_RANGE64}{_ADAPTER}
"""


# The rolling mean is a window function over per-step sums: RANGE over the step's start
# in seconds, so a step with no scores does not stretch the window.
JUDGE_ROLLING_SQL = f"""
SELECT dimension, adapter_version, t,
       sum(s) OVER w / sum(n) OVER w AS rolling_mean, sum(n) OVER w AS rolling_n
FROM (
    SELECT dimension, adapter_version,
           toStartOfInterval(ts, toIntervalSecond({{step:UInt32}})) AS t,
           sum(toFloat64(assumeNotNull(score))) AS s, count() AS n
    FROM judge_scores FINAL
    WHERE base_model = {{m:String}} AND ok = 1 AND score IS NOT NULL
      AND {_RANGE64}{_ADAPTER}
    GROUP BY dimension, adapter_version, t
)
WINDOW w AS (PARTITION BY dimension, adapter_version ORDER BY toUInt32(toDateTime(t))
             RANGE BETWEEN {{lookback:UInt32}} PRECEDING AND CURRENT ROW)
ORDER BY dimension, adapter_version, t
"""


JUDGE_SUMMARY_SQL = f"""
SELECT dimension, adapter_version,
       avgIf(score, ok = 1 AND score IS NOT NULL) AS mean_score,
       countIf(ok = 1 AND score IS NOT NULL) AS scored, countIf(ok = 0) AS failures,
       sum(injection_flag) AS injection_flags, max(ts) AS last
FROM judge_scores FINAL
WHERE base_model = {{m:String}} AND {_RANGE64}{_ADAPTER}
GROUP BY dimension, adapter_version
ORDER BY dimension, adapter_version
"""


GOLDEN_RUNS_SQL = f"""
SELECT adapter_version, golden_set, ts, pass_rate FROM golden_runs FINAL
WHERE base_model = {{m:String}} AND {_RANGE64}
ORDER BY ts LIMIT 10000
"""


GOLDEN_SQL = f"""
SELECT adapter_version, golden_set, count() AS runs, min(ts) AS first_run,
       max(ts) AS last_run, argMax(pass_rate, ts) AS last_pass_rate,
       argMax(passed, ts) AS last_passed, argMax(total, ts) AS last_total,
       argMax(threshold, ts) AS threshold, avg(pass_rate) AS mean_pass_rate
FROM golden_runs FINAL
WHERE base_model = {{m:String}} AND {_RANGE64}
GROUP BY adapter_version, golden_set
ORDER BY first_run, adapter_version, golden_set
"""


TIMELINE_ALERTS_SQL = f"""
SELECT ts, kind, severity, adapter_version FROM alerts FINAL
WHERE base_model = {{m:String}} AND {_RANGE64}
ORDER BY ts LIMIT 20000
"""


TIMELINE_JOBS_SQL = f"""
SELECT ts, job_id, adapter_version, decision, reason FROM retrain_jobs
WHERE base_model = {{m:String}} AND {_RANGE64} AND decision != 'held'
ORDER BY ts LIMIT 2000
"""


TIMELINE_HELD_SQL = f"""
SELECT toStartOfInterval(ts, toIntervalSecond({{step:UInt32}})) AS t, count() AS n
FROM retrain_jobs
WHERE base_model = {{m:String}} AND {_RANGE64} AND decision = 'held'
GROUP BY t ORDER BY t
"""


TIMELINE_ADAPTERS_SQL = """
SELECT updated_at, version, parent_version, status, method, job_id FROM adapters FINAL
WHERE base_model = {m:String}
  AND updated_at >= {start:DateTime64(3, 'UTC')} AND updated_at <= {end:DateTime64(3, 'UTC')}
ORDER BY updated_at
"""


RECENT_ALERTS_SQL = f"""
SELECT ts, adapter_version, kind, feature, window, severity, value, threshold, p_value,
       sample_size, message
FROM alerts FINAL
WHERE base_model = {{m:String}} AND {_RANGE64}{_ADAPTER}
ORDER BY ts DESC, alert_id LIMIT {{limit:UInt32}}
"""


ALERT_COUNTS_SQL = f"""
SELECT kind, severity, count() AS n FROM alerts FINAL
WHERE base_model = {{m:String}} AND {_RANGE64}{_ADAPTER}
GROUP BY kind, severity ORDER BY kind, severity
"""


@dataclass(frozen=True)
class Scope:
    """The model, adapter filter and time range every query of one report shares."""

    base_model: str
    adapter: str | None
    start: datetime
    end: datetime

    def sql(self, text: str, column: str = "adapter_version") -> str:
        """``text`` with the adapter filter in place (the value itself is bound)."""
        fragment = "" if self.adapter is None else f" AND {column} = {{a:String}}"
        return text.replace(_ADAPTER, fragment)

    def params(self, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"m": self.base_model, "start": self.start, "end": self.end}
        if self.adapter is not None:
            out["a"] = self.adapter
        out.update(extra)
        return out
