"""The level table printed at the end of a run (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

COLUMNS = (
    ("level", "level", "{}"),
    ("name", "name", "{}"),
    ("sparsity", "sparsity", "{:.4f}"),
    ("nonzero_params", "nonzero", "{:,}"),
    ("flop_ratio", "FLOPs kept", "{:.4f}"),
    ("val_acc", "val acc", "{:.4f}"),
    ("test_acc", "test acc", "{:.4f}"),
)
# The latency table (latency.csv rows that were timed or not applicable).
LATENCY_COLUMNS = (
    ("level", "level", "{}"),
    ("name", "name", "{}"),
    ("form", "form", "{}"),
    ("batch_size", "batch", "{:.0f}"),
    ("status", "status", "{}"),
    ("median_ms", "median ms", "{:.4f}"),
    ("cv", "CV", "{:.3f}"),
    ("speedup_vs_dense", "speedup", "{:.2f}x"),
    ("flop_ratio", "FLOPs kept", "{:.4f}"),
)


def level_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(fmt.format(row[key]) if key in row else "" for key, _, fmt in COLUMNS))
    return table


def print_levels(rows: list[dict[str, Any]], title: str, console: Console | None = None) -> None:
    (console or Console()).print(level_table(rows, title))


def print_latency(rows: list[dict[str, Any]], title: str, console: Console | None = None) -> None:
    """latency.csv as a table; a form that did not run shows its status (n/a, mismatch, error)."""
    if not rows:
        return
    table = Table(title=title)
    for _, header, _ in LATENCY_COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(_cell(row.get(key), fmt) for key, _, fmt in LATENCY_COLUMNS))
    (console or Console()).print(table)


def _cell(value: Any, fmt: str) -> str:
    """A formatted cell; missing values (absent, None or NaN) are blank."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return fmt.format(value)
