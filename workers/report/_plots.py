"""Plots: matplotlib ``Figure`` objects (no pyplot state, Agg canvas), time axes with round
steps, the PSI axis and the colours every section shares."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from workers.report._config import DAY

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Time-series steps the report picks from (seconds): round numbers on the axis.
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)


def nice_step(span_s: float, max_points: int) -> int:
    """The smallest round step (seconds) that draws ``span_s`` in at most ``max_points``."""
    need = span_s / max_points
    for step in _STEPS:
        if step >= need:
            return step
    return DAY * max(1, math.ceil(need / DAY))


#: Marker colours of alert severities.
SEVERITY_COLORS = {"info": "tab:gray", "warn": "tab:orange", "alert": "tab:red", "page": "black"}


def new_figure(width: float, height: float, *, constrained: bool = True) -> Figure:
    """A Figure object, not pyplot: no global state, and savefig renders with Agg.

    Grids of axes get fixed margins (:func:`set_margins`) instead of constrained layout, which
    costs seconds per figure on a busy 2-core machine.
    """
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained" if constrained else None)


def set_margins(fig: Figure, *, left: float, right: float, top: float, bottom: float) -> None:
    """Fixed margins in inches."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        hspace=0.45,
        wspace=0.12,
    )


def save_png(fig: Figure, path: Path, dpi: int) -> None:
    fig.savefig(path, dpi=dpi, format="png", facecolor="white")


def time_axis(ax: Axes) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(True, alpha=0.3)


#: Line styles of adapters.
LINESTYLES = ("-", "--", ":", "-.")
#: Line colours of windows / features: not orange or red, which mark the thresholds.
PALETTE = ("C0", "C2", "C4", "C5", "C9", "C8", "C6")
_PSI_TICKS = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


def psi_axis(ax: Axes, values: Iterable[float], warn: float, alert: float) -> None:
    """Symlog above 1 (so 0.1/0.2 stay readable next to a PSI of 5), ticks in plain numbers."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter

    finite = [v for v in values if not math.isnan(v)]
    peak = max([*finite, alert], default=alert)
    if peak > 1.0:
        ax.set_yscale("symlog", linthresh=max(warn, 0.05), linscale=1.0)
    top = peak * (1.6 if peak > 1.0 else 1.15)
    ax.set_ylim(0, top)
    ax.yaxis.set_major_locator(FixedLocator([t for t in _PSI_TICKS if t <= top]))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_locator(FixedLocator([]))
