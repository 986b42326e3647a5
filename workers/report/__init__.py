"""The HTML drift report: SQL, plots and one module per section."""

from __future__ import annotations

from workers.report._report import (
    FIGURES,
    HERO,
    ReportConfig,
    build_report,
    parse_since,
    section_summary,
)

__all__ = [
    "FIGURES",
    "HERO",
    "ReportConfig",
    "build_report",
    "parse_since",
    "section_summary",
]
