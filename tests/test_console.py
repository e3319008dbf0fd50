"""Console output (issue 11): `pruneexp run` shows only the latency forms that ran (latency.csv keeps
every row and its reason); `pruneexp list` gives sizes, input shapes and parameter counts."""

import io

from rich.console import Console

from pruneexp.results.table import print_latency


def _row(form, batch, status, detail="", speedup=1.0):
    return dict(level=2, name="finetuned", form=form, batch_size=batch, status=status, median_ms=0.1 if status == "ok" else None,
                cv=0.01, speedup_vs_dense=speedup if status == "ok" else None, flop_ratio=0.1, detail=detail)


def test_latency_table_shows_the_forms_that_ran_and_counts_the_rest():
    rows = [_row("dense", 1, "ok"), _row("masked", 1, "ok", speedup=0.5),
            *[_row("shrunk", b, "not applicable", "nothing to remove: weight granularity") for b in (1, 64)],
            _row("semi_structured", 1, "not applicable", "needs CUDA"), _row("csr", 1, "error", "csr: RuntimeError: boom")]
    out = io.StringIO()
    print_latency(rows, "latency", Console(file=out, width=100))
    text = out.getvalue()
    table = [line for line in text.splitlines() if line.startswith("│")]
    assert len(table) == 2 and "masked" in table[1] and "0.50x" in table[1]
    assert "not applicable" not in "".join(table)
    assert "not timed (not applicable): semi_structured, shrunk (3 rows; reasons in latency.csv)" in text
    assert "error: level 2 csr batch 1: csr: RuntimeError: boom" in text  # a failure is named in full


def test_list_gives_dataset_sizes_shapes_and_model_parameter_counts(capsys, monkeypatch):
    from pruneexp.cli import list_command

    monkeypatch.setenv("COLUMNS", "200")  # one line per entry
    list_command()
    text = capsys.readouterr().out
    assert "60,000 train / 10,000 test; input (1, 28, 28), 10 classes" in text  # mnist
    assert "266,610 params (266,200 prunable) on input (1, 28, 28)" in text  # LeNet-300-100: 784*300+300*100+100*10 + biases
    assert "272,474 params" in text  # resnet20 on CIFAR-10 (He et al. 2016: 0.27M)
    assert "logger" in text and "tensorboard" in text


def test_level_table_reads_flops_on_paths_where_they_differ_from_the_masks_count():
    """The run's level table fits 80 columns: its FLOPs column reads connected_flop_ratio, headed
    `path FLOPs`, where some level's differs from flop_ratio; the masks' count otherwise."""
    from pruneexp.results.table import print_levels

    def table(rows):
        out = io.StringIO()
        print_levels(rows, "t", Console(file=out, width=80))
        return out.getvalue()

    rows = [dict(level=0, name="dense", sparsity=0.0, effective_sparsity=0.0, nonzero_params=10, flop_ratio=1.0,
                 connected_flop_ratio=1.0, val_acc=0.9, test_acc=0.9),
            dict(level=1, name="pruned", sparsity=0.25, effective_sparsity=0.65, nonzero_params=7, flop_ratio=0.745,
                 connected_flop_ratio=0.3466, val_acc=0.8, test_acc=0.8)]
    text = table(rows)
    assert "path" in text and "0.3466" in text and "0.7450" not in text and "…" not in text
    same = [{**r, "connected_flop_ratio": r["flop_ratio"]} for r in rows]
    assert "path" not in table(same) and "0.7450" in table(same)
    old = [{k: v for k, v in r.items() if k != "connected_flop_ratio"} for r in rows]  # a record from before the column
    assert "0.7450" in table(old)
