"""The terminal every command and the demo print to, and its one table format."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def print_table(columns: list[str], rows: list[tuple[Any, ...]], title: str | None = None) -> None:
    """Print query results as a table (shared by every command that shows rows)."""
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
