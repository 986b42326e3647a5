"""Which inference logs go to the LLM judge: a deterministic hash sample under a daily budget.

The decision depends on the request id alone, so every worker, every replay and every
re-deploy picks the same requests (and a request seen twice is judged once). Per model,
the sample stops for the rest of the UTC day once the judge's spend on that model
(tokens or USD, summed from ``judge_scores`` in the store, so N workers agree) reaches
its daily budget; one ``judge_budget`` alert says so.

>>> should_judge("req-42", 0.02), should_judge("req-42", 0.02)
(False, False)
>>> sum(should_judge(f"r{i}", 0.05) for i in range(10_000))
507
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from schemas.events import Alert, InferenceLog, utcnow
from workers.alerts import alert_id
from workers.judge._settings import JudgeSettings, check_judge_rate
from workers.store import Store
from workers.store.exceptions import StoreError

log = logging.getLogger(__name__)

_BUCKETS = 10_000


def should_judge(request_id: str, rate: float, salt: str = "") -> bool:
    """True when ``request_id`` falls in the judged ``rate`` share of traffic.

    ``sha256(request_id) mod 10_000 < rate * 10_000``, or with a ``salt``
    ``HMAC-SHA256(salt, request_id)``: uniform over ids, identical on every worker and
    replay, and nested (a request judged at 2% is also judged at 5%). Without a salt anyone
    can compute which ids are judged, so a client that picks its request ids can dodge the
    judge; with one (SENTRYML_JUDGE_SAMPLE_SALT, the same on every worker) nobody can.
    """
    data = request_id.encode("utf-8")
    if salt:
        digest = hmac.new(salt.encode("utf-8"), data, hashlib.sha256).hexdigest()
    else:
        digest = hashlib.sha256(data).hexdigest()
    return int(digest, 16) % _BUCKETS < rate * _BUCKETS


@dataclass(frozen=True)
class DailyUsage:
    """What the judge spent on one model since UTC midnight."""

    tokens: int = 0
    cost_usd: float = 0.0


USAGE_SQL = """
SELECT base_model,
       sum(prompt_tokens) + sum(completion_tokens) AS tokens,
       sum(cost_usd) AS cost_usd
FROM judge_scores FINAL
WHERE ts >= {start:DateTime64(3, 'UTC')} AND ts < {end:DateTime64(3, 'UTC')}
GROUP BY base_model
"""


def day_bounds(now: datetime) -> tuple[datetime, datetime]:
    """``[midnight, next midnight)`` of ``now``'s UTC day."""
    start = datetime.combine(now.date(), time(0), tzinfo=now.tzinfo)
    return start, start + timedelta(days=1)


def daily_usage(store: Store, now: datetime) -> dict[str, DailyUsage]:
    """Judge tokens and cost per ``base_model`` for ``now``'s UTC day (one query)."""
    start, end = day_bounds(now)
    rows = store.query(USAGE_SQL, {"start": start, "end": end}).rows
    return {str(m): DailyUsage(int(t or 0), float(c or 0.0)) for m, t, c in rows}


class JudgeSampler:
    """Pick the judge sample from a batch of (already redacted) inference logs.

    ``select`` is what the ingest agent calls per batch; alerts raised while selecting
    wait in :meth:`pop_alerts` for the judge module's timer to deliver them.

    >>> sampler = JudgeSampler(JudgeSettings(), usage=lambda now: {})
    >>> logs = [InferenceLog(request_id=f"r{i}", base_model="m", prompt="p", completion="c")
    ...         for i in range(100)]
    >>> [e.request_id for e in sampler.select(logs)]
    ['r6', 'r37', 'r88', 'r95']
    """

    def __init__(
        self,
        settings: JudgeSettings,
        *,
        store: Store | None = None,
        usage: Callable[[datetime], dict[str, DailyUsage]] | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        if (store is None) == (usage is None):
            raise ValueError("give exactly one of `store` (read usage from it) or `usage`")
        check_judge_rate(settings.sample_rate, allow_override=settings.allow_rate_override)
        for name, model in settings.models.items():
            if model.sample_rate is not None:
                check_judge_rate(
                    model.sample_rate,
                    allow_override=settings.allow_rate_override,
                    where=f"models[{name!r}].sample_rate",
                )
        self.settings = settings
        self._salt = settings.sample_salt.get_secret_value() if settings.sample_salt else ""
        if not self._salt:
            log.warning(
                "judge sample: no SENTRYML_JUDGE_SAMPLE_SALT, so which requests are judged is "
                "predictable from their ids (a client choosing its ids can avoid the judge); "
                "set the same secret salt on every worker"
            )
        self._read_usage: Callable[[datetime], dict[str, DailyUsage]] = (
            usage if usage is not None else (lambda at: daily_usage(store, at))  # type: ignore[arg-type]
        )
        self.now = now
        self._usage: dict[str, DailyUsage] = {}
        self._usage_at: datetime | None = None
        self._paused_until: dict[str, datetime] = {}
        self._alerts: list[Alert] = []

    # -- configuration -------------------------------------------------------------
    def rate_for(self, base_model: str) -> float:
        override = self.settings.models.get(base_model)
        if override is not None and override.sample_rate is not None:
            return override.sample_rate
        return self.settings.sample_rate

    def budget_for(self, base_model: str) -> tuple[int | None, float | None]:
        """``(daily token budget, daily USD budget)`` of one model; ``None`` = unlimited."""
        override = self.settings.models.get(base_model)
        tokens = self.settings.daily_token_budget
        cost = self.settings.daily_cost_budget_usd
        if override is not None:
            if override.daily_token_budget is not None:
                tokens = override.daily_token_budget
            if override.daily_cost_budget_usd is not None:
                cost = override.daily_cost_budget_usd
        return tokens, cost

    # -- budget ----------------------------------------------------------------------
    def usage(self) -> dict[str, DailyUsage]:
        """Today's judge usage per model, re-read from the store every ``budget_refresh_s``."""
        now = self.now()
        stale = (
            self._usage_at is None
            or self._usage_at.date() != now.date()
            or (now - self._usage_at).total_seconds() >= self.settings.budget_refresh_s
        )
        if stale:
            try:
                self._usage = self._read_usage(now)
                self._usage_at = now
            except StoreError as exc:
                # Fail open: keep sampling on the last known usage rather than stall ingest.
                log.warning(
                    "judge budget: cannot read today's usage, using the last known: %s", exc
                )
        return self._usage

    def budget_open(self, base_model: str) -> bool:
        """False while ``base_model``'s judge budget for today is spent (sampling paused)."""
        now = self.now()
        until = self._paused_until.get(base_model)
        if until is not None:
            if now < until:
                return False
            del self._paused_until[base_model]  # a new UTC day: the budget is fresh
        spent = self._spent(base_model, self.usage().get(base_model, DailyUsage()))
        if spent is None:
            return True
        feature, used, budget = spent
        _, midnight = day_bounds(now)
        self._paused_until[base_model] = midnight
        day = now.date().isoformat()
        unit = "tokens" if feature == "tokens" else "USD"
        self._alerts.append(
            Alert(
                ts=now,
                alert_id=alert_id("judge_budget", base_model, feature, day),
                base_model=base_model,
                kind="judge_budget",
                feature=feature,
                window=day,
                severity="warn",
                value=float(used),
                threshold=float(budget),
                message=(
                    f"judge budget for {base_model} spent on {day}: {used:g} of {budget:g} "
                    f"{unit}; judge sampling of {base_model} paused until "
                    f"{midnight.isoformat()}. Raise SENTRYML_JUDGE_DAILY_TOKEN_BUDGET / "
                    "SENTRYML_JUDGE_DAILY_COST_BUDGET_USD (or the model's entry in "
                    "SENTRYML_JUDGE_MODELS) to resume sooner."
                ),
            )
        )
        log.warning("judge budget spent for %s (%s %g/%g)", base_model, feature, used, budget)
        return False

    def _spent(self, base_model: str, used: DailyUsage) -> tuple[str, float, float] | None:
        token_budget, cost_budget = self.budget_for(base_model)
        if token_budget is not None and used.tokens >= token_budget:
            return "tokens", float(used.tokens), float(token_budget)
        if cost_budget is not None and used.cost_usd >= cost_budget:
            return "cost_usd", used.cost_usd, cost_budget
        return None

    def paused_until(self, base_model: str) -> datetime | None:
        return self._paused_until.get(base_model)

    def pop_alerts(self) -> list[Alert]:
        """Budget alerts raised since the last call (each model at most once per UTC day)."""
        alerts, self._alerts = self._alerts, []
        return alerts

    def defer_alerts(self, alerts: Sequence[Alert]) -> None:
        """Put back alerts that could not be delivered yet (the next pop returns them)."""
        self._alerts[:0] = alerts

    # -- the sample --------------------------------------------------------------------
    def select(self, events: Sequence[InferenceLog]) -> list[InferenceLog]:
        """The events of this batch that go to the judge (order kept)."""
        open_models: dict[str, bool] = {}
        chosen = []
        for event in events:
            model = event.base_model
            if not should_judge(event.request_id, self.rate_for(model), self._salt):
                continue
            if model not in open_models:
                open_models[model] = self.budget_open(model)
            if open_models[model]:
                chosen.append(event)
        return chosen
