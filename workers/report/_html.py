"""HTML: escaping and number formats, tables, "no data yet", and the page around the
sections."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from workers.report._config import DAY, Report


def fmt_duration(seconds: float) -> str:
    """``90`` -> ``'90 s'``, ``3600`` -> ``'1 h'``, ``86400`` -> ``'1 d'``."""
    for unit, size in (("d", DAY), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def fmt_n(value: Any) -> str:
    """A count with thousands separators."""
    return f"{int(value):,}"


def fmt_num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    number = float(value)
    if math.isnan(number):
        return "–"
    return f"{number:.{digits}f}"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def fmt_ts(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else esc(value)


def html_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def no_data(what: str) -> str:
    return f'<p class="empty">No data yet: {esc(what)}</p>'


def img_tag(name: str, alt: str) -> str:
    return f'<img src="{esc(name)}" alt="{esc(alt)}">'


def sql_details(queries: Sequence[str]) -> str:
    if not queries:
        return ""
    text = "\n\n".join(q.strip() for q in queries)
    return f"<details><summary>SQL</summary><pre>{esc(text)}</pre></details>"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #222; background: #fafafa; }
main { max-width: 1240px; margin: 0 auto; padding: 16px 20px 40px; }
header { border-bottom: 1px solid #ddd; margin-bottom: 8px; }
h1 { font-size: 22px; margin: 8px 0; } h2 { font-size: 18px; margin: 28px 0 6px; }
h3 { font-size: 14px; margin: 16px 0 4px; }
section { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 4px 16px 12px;
          margin: 14px 0; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
table { border-collapse: collapse; font-size: 12px; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
table.alerts td:last-child { max-width: 480px; }
.empty { color: #777; font-style: italic; }
.meta { color: #555; font-size: 13px; }
.status-alert, .status-page { color: #b00020; font-weight: 600; }
.status-warn { color: #8a5300; font-weight: 600; }
nav a { margin-right: 12px; font-size: 13px; color: #333; }
details pre { font-size: 11px; background: #f6f6f6; padding: 8px; overflow-x: auto; }
"""


def render_page(report: Report, traffic: int | None, generated: datetime) -> str:
    model = report.base_model or "no model"
    adapter = report.adapter or "every adapter"
    others = (
        f" Other models in the store: {', '.join(esc(m) for m in report.other_models)} "
        "(pass <code>--base-model</code>)."
        if report.other_models
        else ""
    )
    traffic_text = "" if traffic is None else f" {fmt_n(traffic)} requests logged in range."
    nav = "".join(f'<a href="#{s.key}">{esc(s.title)}</a>' for s in report.sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>SentryML report: {esc(model)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<header><h1>SentryML report: {esc(model)}</h1>",
        f'<p class="meta">Adapter: {esc(adapter)}. Range: {fmt_ts(report.start)} to '
        f"{fmt_ts(report.end)} UTC. Generated {fmt_ts(generated)} UTC from SQL over the store; "
        f"every statistic gives its sample size n.{traffic_text}{others}</p>",
        f"<nav>{nav}</nav></header>",
    ]
    if report.base_model is None:
        parts.append(no_data("no model has rows in the store in this range"))
    for s in report.sections:
        parts.append(
            f'<section id="{esc(s.key)}"><h2>{esc(s.title)}</h2>{s.body}'
            f"{sql_details(s.queries)}</section>"
        )
    parts.append("</main></body></html>")
    return "\n".join(parts)
