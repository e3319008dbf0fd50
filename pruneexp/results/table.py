"""The level table printed at the end of a run (rich)."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

COLUMNS = (
    ("level", "level", "{}"),
    ("name", "name", "{}"),
    ("sparsity", "sparsity", "{:.4f}"),
    ("effective_sparsity", "effective sparsity", "{:.4f}"),  # weights on no input-to-output path counted as pruned too
    ("nonzero_params", "nonzero", "{:,}"),
    ("flop_ratio", "FLOPs kept", "{:.4f}"),
    ("val_acc", "val acc", "{:.4f}"),
    ("test_acc", "test acc", "{:.4f}"),
)
PPL_COLUMNS = {"val_acc": ("val_ppl", "val ppl", "{:.3f}"), "test_acc": ("test_ppl", "test ppl", "{:.3f}")}
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


def missing(value: Any) -> bool:
    """Whether a record's cell holds no value (None, or NaN as pandas reads an empty CSV cell)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _differs(rows: list[dict[str, Any]], key: str, direct: str) -> bool:
    """Whether some row's `key` (an effective reading) differs from its `direct` reading at 4 digits."""
    return any(not missing(r.get(key)) and not missing(r.get(direct)) and f"{r[key]:.4f}" != f"{r[direct]:.4f}"
               for r in rows)


def level_table(rows: list[dict[str, Any]], title: str) -> Table:
    """levels.csv rows as a rich table, in 80 columns, perplexity in place of accuracy for a language
    model. The effective sparsity is shown beside the sparsity only where some level's differs (units
    removed, or weights cut off from every path); the FLOPs column then reads the FLOPs on
    input-to-output paths (`connected_flop_ratio`, the shrunk network's under channel pruning)
    instead of the masks' count, and says so in its header."""
    columns = [c for c in COLUMNS if c[0] != "effective_sparsity" or _differs(rows, "effective_sparsity", "sparsity")]
    if _differs(rows, "connected_flop_ratio", "flop_ratio"):
        columns = [("connected_flop_ratio", "path FLOPs", c[2]) if c[0] == "flop_ratio" else c for c in columns]
    if any(not missing(r.get("test_ppl")) for r in rows):  # a language model is read by its perplexity
        columns = [PPL_COLUMNS.get(c[0], c) for c in columns]
    cells = [["" if missing(row.get(key)) else fmt.format(row[key]) for key, _, fmt in columns] for row in rows]
    table = Table(title=title, show_edge=False)
    for j, (_, header, _) in enumerate(columns):  # headers wrap at their spaces; values stay whole
        table.add_column(header, justify="right", width=max([len(w) for w in header.split()] + [len(r[j]) for r in cells]))
    for row in cells:
        table.add_row(*row)
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
