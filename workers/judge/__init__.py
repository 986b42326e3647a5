"""The LLM judge: the OpenAI-compatible scoring client, its prompts, the deterministic
sample and daily budget, and the rolling-mean alerts.
"""

from __future__ import annotations

from workers.judge._alerts import RollingMean, judge_drop_alerts, rolling_judge_means
from workers.judge._client import (
    JudgeClient,
    JudgedBatch,
    judge_batch,
    parse_verdict,
    schema_check,
    score_rubric,
)
from workers.judge._otel import EvaluationEmitter
from workers.judge._prompts import RUBRICS, build_messages, detect_injection
from workers.judge._sampling import DailyUsage, JudgeSampler, daily_usage, should_judge
from workers.judge._settings import JudgeModelSettings, JudgeSettings

__all__ = [
    "RUBRICS",
    "DailyUsage",
    "EvaluationEmitter",
    "JudgeClient",
    "JudgeModelSettings",
    "JudgeSampler",
    "JudgeSettings",
    "JudgedBatch",
    "RollingMean",
    "build_messages",
    "daily_usage",
    "detect_injection",
    "judge_batch",
    "judge_drop_alerts",
    "parse_verdict",
    "rolling_judge_means",
    "schema_check",
    "score_rubric",
    "should_judge",
]
