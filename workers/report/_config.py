"""What a report covers (:class:`ReportConfig`, ``--since``) and what it wrote
(:class:`Report`, one :class:`Section` per part of the page)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from workers.drift import WINDOWS, DriftSettings

#: The drift windows in display order.
WINDOW_ORDER: tuple[str, ...] = tuple(WINDOWS)
#: The compact README figure.
HERO = "drift_overview.png"
#: Every PNG the report may write; stale ones from an earlier run are removed.
FIGURES: tuple[str, ...] = (
    HERO,
    "drift.png",
    "cluster_shares.png",
    "output_length.png",
    "judge_means.png",
    "golden_pass_rate.png",
    "timeline.png",
)

#: Seconds in a day.
DAY = 86400


@dataclass(frozen=True)
class ReportConfig:
    """What the report covers and how it draws.

    ``base_model`` None picks the model with the most recent activity (the page names the
    others). ``adapter`` None covers every adapter of the model; golden runs and the
    retrain timeline always show every adapter version, since comparing versions is
    their point. ``drift`` holds the drift monitor's thresholds and windows: the share
    sections' statuses are its decisions on their counts (pass the monitor's settings).
    """

    base_model: str | None = None
    adapter: str | None = None
    since: timedelta = timedelta(days=7)
    hero_window: str = "7d"
    max_points: int = 240
    alerts_limit: int = 50
    dpi: int = 110
    drift: DriftSettings = field(default_factory=DriftSettings, hash=False)

    def __post_init__(self) -> None:
        if self.since <= timedelta(0):
            raise ValueError(f"since must be a positive duration, got {self.since}")
        if self.hero_window not in WINDOW_ORDER:
            raise ValueError(f"hero_window must be one of {WINDOW_ORDER}, got {self.hero_window!r}")
        if not 10 <= self.max_points <= 10_000:
            raise ValueError(f"max_points must be in [10, 10000], got {self.max_points}")
        if not 1 <= self.alerts_limit <= 10_000:
            raise ValueError(f"alerts_limit must be in [1, 10000], got {self.alerts_limit}")
        if not 50 <= self.dpi <= 400:
            raise ValueError(f"dpi must be in [50, 400], got {self.dpi}")


@dataclass(frozen=True)
class Section:
    """One part of the page: its HTML, the PNGs it shows, and how many observations it
    rests on (0 = "no data yet")."""

    key: str
    title: str
    body: str
    images: tuple[str, ...] = ()
    n: int = 0
    queries: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.n == 0


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote."""

    out_dir: Path
    index: Path
    base_model: str | None
    adapter: str | None
    start: datetime
    end: datetime
    sections: tuple[Section, ...]
    other_models: tuple[str, ...] = ()

    @property
    def images(self) -> list[Path]:
        return [self.out_dir / name for s in self.sections for name in s.images]

    @property
    def hero(self) -> Path | None:
        """``drift_overview.png`` when there was drift data to draw, else None."""
        path = self.out_dir / HERO
        return path if any(HERO in s.images for s in self.sections) else None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)


_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": DAY, "w": 7 * DAY}


def parse_since(text: str, now: datetime) -> timedelta:
    """``--since``: a duration (``90m``, ``36h``, ``7d``, ``2w``) or an ISO date/time (UTC
    when it has no zone), as the duration back from ``now``.

    >>> parse_since("36h", datetime(2026, 3, 2, tzinfo=UTC))
    datetime.timedelta(days=1, seconds=43200)
    >>> parse_since("2026-03-01", datetime(2026, 3, 2, 12, tzinfo=UTC))
    datetime.timedelta(days=1, seconds=43200)
    """
    match = _DURATION.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
        if seconds <= 0:
            raise ValueError(f"--since {text!r}: the duration must be positive")
        return timedelta(seconds=seconds)
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither a duration (30m, 24h, 7d, 2w) nor an ISO "
            "date/time (2026-03-01 or 2026-03-01T12:00)"
        ) from None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    if at >= now:
        raise ValueError(f"--since {text!r} is not in the past (now is {now:%Y-%m-%d %H:%M} UTC)")
    return now - at
