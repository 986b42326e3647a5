"""When the worker asks the trainer for a new adapter."""

from __future__ import annotations

from pydantic import Field, model_validator

from schemas.events import (
    DEFAULT_MIN_EXAMPLES,
    DriftWindow,
    RetrainMethod,
    TaskGoal,
)
from workers.settings import Section


class RetrainGateSettings(Section):
    """When the worker asks the trainer for a new adapter (docs/training.md, "Retrain gate").

    A request fires only when (a) a drift or judge alert held without a break for
    ``persist_s`` seconds of wall-clock time (evaluations of the current baseline, none more
    than ``max_gap_s`` apart, the newest no older than that), (b) at least ``min_examples[goal]`` new labelled examples exist for
    the model's task goal (``task_goals``, else ``default_goal``), (c) ``cooldown_days``
    passed since the last job, and (d) no job is in flight. Every decision, fired or held,
    is a row in ``retrain_jobs``. A cooldown under 7 days needs ``allow_short_cooldown``.
    """

    enabled: bool = True
    interval_s: float = Field(300.0, gt=0, le=86_400, description="Seconds between gate checks")
    persist_s: float = Field(
        6 * 3600.0, gt=0, le=30 * 86_400, description="Seconds an alert must hold, unbroken"
    )
    max_gap_s: float = Field(
        600.0,
        gt=0,
        le=86_400,
        description="Evaluations further apart break the run; an older newest one is stale",
    )
    # Not 7d by default: a window keeps alerting for up to its length after a burst ended, so
    # a window longer than persist_s can look "persistent" after a ten-minute burst.
    drift_windows: tuple[DriftWindow, ...] = Field(
        ("1h", "24h"), description="drift_stats windows whose alerts count"
    )
    judge_interval_s: float | None = Field(
        None, gt=0, description="Spacing of the judge evaluations checked (None: judge's own)"
    )
    task_goals: dict[str, TaskGoal] = Field(
        default_factory=dict, description="Declared task goal per base_model"
    )
    default_goal: TaskGoal = "style"
    min_examples: dict[TaskGoal, int] = Field(
        default_factory=lambda: dict(DEFAULT_MIN_EXAMPLES),  # type: ignore[arg-type]
        description="New labelled examples needed per task goal",
    )
    cooldown_days: float = Field(7.0, ge=0, description="Days between two jobs of one model")
    allow_short_cooldown: bool = Field(False, description="Allow cooldown_days under 7")
    method: RetrainMethod = "lora"
    max_job_hours: float = Field(
        48.0, gt=0, description="A job with no outcome after this no longer counts as in flight"
    )
    lookback_days: float = Field(7.0, gt=0, description="Check models seen in this period")

    @model_validator(mode="after")
    def _cooldown_and_minimums(self) -> RetrainGateSettings:
        if self.cooldown_days < 7 and not self.allow_short_cooldown:
            raise ValueError(
                f"retrain cooldown_days={self.cooldown_days} is under the 7-day default; set "
                "SENTRYML_RETRAIN_ALLOW_SHORT_COOLDOWN=true to use a shorter cooldown"
            )
        merged = {**DEFAULT_MIN_EXAMPLES, **{str(k): v for k, v in self.min_examples.items()}}
        if any(v < 1 for v in merged.values()):
            raise ValueError(f"retrain min_examples must all be >= 1, got {merged}")
        object.__setattr__(self, "min_examples", merged)
        return self
