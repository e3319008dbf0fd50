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


def level_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(fmt.format(row[key]) if key in row else "" for key, _, fmt in COLUMNS))
    return table


def print_levels(rows: list[dict[str, Any]], title: str, console: Console | None = None) -> None:
    (console or Console()).print(level_table(rows, title))
