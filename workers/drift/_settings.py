"""Drift thresholds, per-model overrides and the evaluator's schedule."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from schemas.events import DRIFT_WINDOWS, DriftWindow
from workers.settings import Section


class DriftModelSettings(Section):
    """Per-model overrides of the drift thresholds, keyed by ``base_model``."""

    psi_warn: float | None = Field(None, gt=0)
    psi_alert: float | None = Field(None, gt=0)
    alpha: float | None = Field(None, gt=0, lt=1)
    min_samples: int | None = Field(None, ge=1)
    share_warn: float | None = Field(None, gt=0, le=1)
    share_alert: float | None = Field(None, gt=0, le=1)


class DriftSettings(Section):
    """Drift thresholds and the evaluator's schedule (see docs/drift.md).

    A window is ``alert`` when PSI >= ``psi_alert`` AND the two-sample test against the
    baseline's reference counts rejects, Holm-adjusted over the evaluation, at ``alpha``;
    ``warn`` likewise with ``psi_warn``; ``insufficient`` under ``min_samples`` events. The
    ``novelty`` feature uses ``share_warn`` / ``share_alert`` instead: the estimated share of
    traffic unlike the training data. Per model:
    ``SENTRYML_DRIFT_MODELS='{"my-model": {"psi_alert": 0.3}}'``.
    """

    psi_warn: float = Field(0.1, gt=0, description="PSI at which a significant shift warns")
    psi_alert: float = Field(0.2, gt=0, description="PSI at which a significant shift alerts")
    alpha: float = Field(
        0.01, gt=0, lt=1, description="False-alarm bound of one evaluation (Holm, all tests)"
    )
    min_samples: int = Field(30, ge=1, description="Fewer events in a window: 'insufficient'")
    share_warn: float = Field(
        0.05, gt=0, le=1, description="Share of traffic unlike the training data that warns"
    )
    share_alert: float = Field(
        0.15, gt=0, le=1, description="Share of traffic unlike the training data that alerts"
    )
    models: dict[str, DriftModelSettings] = Field(default_factory=dict)
    interval_s: float = Field(60.0, gt=0, description="Seconds between evaluations")
    renotify_s: float = Field(
        3600.0, ge=0, description="An open incident notifies again at most this often"
    )
    resolve_after: int = Field(
        3, ge=1, le=10_000, description="Healthy evaluations in a row that resolve an incident"
    )
    windows: tuple[DriftWindow, ...] = DRIFT_WINDOWS
    alert_windows: tuple[DriftWindow, ...] = DRIFT_WINDOWS

    @model_validator(mode="after")
    def _consistent(self) -> DriftSettings:
        extra = sorted(set(self.alert_windows) - set(self.windows))
        if extra:
            raise ValueError(f"alert_windows {extra} are not evaluated; add them to windows")
        self.thresholds_for("")  # validates the defaults
        for name in self.models:
            self.thresholds_for(name)
        return self

    def thresholds_for(self, base_model: str) -> Any:
        """The :class:`workers.drift.DriftThresholds` for ``base_model`` (overrides applied)."""
        from workers.drift._decide import DriftThresholds

        own = self.models.get(base_model)
        values: dict[str, Any] = {
            "psi_warn": self.psi_warn,
            "psi_alert": self.psi_alert,
            "alpha": self.alpha,
            "min_samples": self.min_samples,
            "share_warn": self.share_warn,
            "share_alert": self.share_alert,
        }
        if own is not None:
            values.update({k: v for k, v in own.model_dump().items() if v is not None})
        try:
            return DriftThresholds(**values)
        except ValueError as exc:
            where = f"drift.models[{base_model!r}]" if own is not None else "drift"
            raise ValueError(f"{where}: {exc}") from exc
