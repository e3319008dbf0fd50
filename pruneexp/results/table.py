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
    """levels.csv rows as a rich table."""
    table = Table(title=title)
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(fmt.format(row[key]) if key in row else "" for key, _, fmt in COLUMNS))
    return table


def print_levels(rows: list[dict[str, Any]], title: str, console: Console | None = None) -> None:
    """Print the level table."""
    (console or Console()).print(level_table(rows, title))


def print_latency(rows: list[dict[str, Any]], title: str, console: Console | None = None) -> None:
    """The forms that ran (status ok) of latency.csv as a table, then one line per other status with
    its forms and reason (mismatch and error named in full; `not applicable` counted), so that the
    console stays short: latency.csv keeps every row with its reason."""
    if not rows:
        return
    console = console or Console()
    ran = [r for r in rows if r.get("status") == "ok"]
    if ran:
        table = Table(title=title)
        for key, header, _ in LATENCY_COLUMNS:
            if key != "status":
                table.add_column(header, justify="right")
        for row in ran:
            table.add_row(*(_cell(row.get(key), fmt) for key, _, fmt in LATENCY_COLUMNS if key != "status"))
        console.print(table)
    others: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("status") != "ok":
            others.setdefault(str(row.get("status")), []).append(row)
    for status, group in others.items():
        forms = sorted({str(r.get("form")) for r in group})
        if status == "not applicable":
            console.print(f"not timed ({status}): {', '.join(forms)} ({len(group)} rows; reasons in latency.csv)", highlight=False)
        else:
            for r in group:
                console.print(f"[yellow]{status}[/yellow]: level {r.get('level')} {r.get('form')} batch {r.get('batch_size')}: "
                              f"{r.get('detail', '')}", highlight=False)


def _cell(value: Any, fmt: str) -> str:
    """A formatted cell; missing values (absent, None or NaN) are blank."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return fmt.format(value)
