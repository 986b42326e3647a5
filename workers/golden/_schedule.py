"""Scheduling (the daily trigger), pure and clock-free."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from croniter import croniter


def validate_cron(expression: str) -> str:
    if not croniter.is_valid(expression):
        raise ValueError(
            f"invalid cron expression {expression!r}: use five fields, e.g. '0 6 * * *'"
        )
    return expression


def due_run(last_run_at: datetime | None, now: datetime, cron: str) -> datetime | None:
    """The latest scheduled time in ``(last_run_at, now]``, or None when nothing is due.

    Missed slots collapse into one run (a worker down for three days runs once, not three
    times). Times are UTC.

    >>> t = datetime(2025, 1, 2, 6, 0, 30, tzinfo=UTC)
    >>> due_run(datetime(2025, 1, 1, 6, 0, tzinfo=UTC), t, "0 6 * * *")
    datetime.datetime(2025, 1, 2, 6, 0, tzinfo=datetime.timezone.utc)
    >>> due_run(t, t + timedelta(hours=1), "0 6 * * *") is None
    True
    """
    now = now.astimezone(UTC)
    # croniter's get_prev is strict, so look back from just after `now`.
    slot: datetime = croniter(validate_cron(cron), now + timedelta(microseconds=1)).get_prev(
        datetime
    )
    slot = slot.astimezone(UTC)
    if last_run_at is not None and slot <= last_run_at.astimezone(UTC):
        return None
    return slot
