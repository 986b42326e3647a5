"""The HTML drift report: SQL, plots and one module per section."""

from __future__ import annotations

from workers.report._build import build_report, section_summary
from workers.report._config import FIGURES, HERO, ReportConfig, parse_since

__all__ = [
    "FIGURES",
    "HERO",
    "ReportConfig",
    "build_report",
    "parse_since",
    "section_summary",
]
