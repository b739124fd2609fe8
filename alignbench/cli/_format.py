"""How the commands write numbers and summaries: one formatter for scores, one builder for the
two-column (what, value) summary tables of ``score``, ``convert`` and ``train``."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table


def number(value: float | None, *, signed: bool = False, missing: str = "—") -> str:
    """A score with four decimals (``signed``: with its sign, as a Δ is shown); ``missing`` for None."""
    if value is None:
        return missing
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def summary_table(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    """A summary as a headerless table: the names in bold, then their values."""
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table
