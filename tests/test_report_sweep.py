"""`pruneexp report` over the design card's sweep (issue 11): a multirun folder leads to its runs,
the swept sparsities make one accuracy-vs-sparsity curve, tables are sorted and named and read at
80 columns, unfinished runs are left out or marked, latency gets its plots."""

import importlib.util
import json

import pandas as pd
import pytest

from conftest import TINY
from pruneexp.errors import PruneexpError
from pruneexp.report import JOB_LINK, aggregate, canonical, choose_picture, curve_points, find, latency_rows, load_levels, make_report
from pruneexp.runner import run

MLFLOW = importlib.util.find_spec("mlflow") is not None
SWEEP = ["sparsity=0.9,0.5", "seed=0,1", *TINY, "hardware.threads=1", "hardware.min_reps=2", "hardware.min_time_s=0",
         *(["logger=[csv,mlflow]"] if MLFLOW else [])]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The design card's sweep, cut down: `pruneexp run -m sparsity=0.9,0.5 seed=0,1` on digits."""
    import os
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "PRUNEEXP_RESULTS": str(root / "results"), "PRUNEEXP_CACHE": str(root / "cache"), "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-m", "pruneexp", "run", "-m", *SWEEP], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (folder,) = (root / "results" / "default" / "multirun").iterdir()
    return root, folder, env


def test_multirun_folder_leads_to_its_runs(sweep):
    root, folder, _ = sweep
    links = sorted(folder.glob(f"*/{JOB_LINK}"))
    assert len(links) == 4  # one per job, in the job folders Hydra made
    runs = find([folder]).runs
    assert len(runs) == 4 and all((r / "levels.csv").exists() for r in runs)
    assert {r.resolve() for r in runs} == {p.parent.resolve() for p in (root / "results" / "default").glob("*/levels.csv")}
    link = json.loads(links[0].read_text())
    assert (links[0].parent / link["run"]).resolve() == runs[0].resolve() or any(
        (links[0].parent / link["run"]).resolve() == r.resolve() for r in runs)
    # reporting the experiment folder too does not count a run twice
    assert len(find([folder, root / "results" / "default"]).runs) == 4


def test_sweep_report_is_one_curve_sorted_named_and_fits_80_columns(sweep):
    import subprocess
    import sys

    root, folder, env = sweep
    proc = subprocess.run([sys.executable, "-m", "pruneexp", "report", str(folder), "--out", str(root / "rep")], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "sweep picture" in proc.stdout
    table_lines = [line for line in proc.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert len(table_lines) > 6 and max(map(len, table_lines)) <= 80 and "…" not in proc.stdout
    table = pd.read_csv(root / "rep" / "table.csv")
    # sorted by sparsity (numbers as numbers), then level, levels named
    assert table["sparsity"].tolist() == [0.5] * 3 + [0.9] * 3
    assert table["name"].tolist() == ["dense", "pruned", "finetuned"] * 2
    md = (root / "rep" / "table.md").read_text()
    assert "| all runs, sparsity 0.5 | 2 finetuned |" in md
    # the compact view first: weights remaining x curve, the final level's mean ± std over seeds
    assert md.index("| weights remaining % | compression | all runs |") < md.index("Every level of every setup")
    # the curve's points are the final levels' mean over seeds, read back from levels.csv
    levels, keys = load_levels(find([folder]).runs)
    assert keys == ["sparsity"]
    points = curve_points(canonical(aggregate(levels, keys)), "test_acc")
    final, before = points[points["kind"] == "final"], points[points["kind"] == "before"]
    assert final["curve"].tolist() == ["all runs"] * 2 and len(before) == 2 and set(before["name"]) == {"pruned"}
    for _, p in final.iterrows():
        finals = [pd.read_csv(r / "levels.csv").iloc[-1] for r in find([folder]).runs]
        finals = [f for f in finals if abs(f["sparsity"] - (1 - p["remaining"])) < 1e-3]
        assert len(finals) == 2 and p["seeds"] == 2 and p["name"] == "finetuned"
        assert p["mean"] == pytest.approx(sum(f["test_acc"] for f in finals) / 2)
        assert f"| {100 * p['remaining']:.3g} | {1 / p['remaining']:.3g}× | {100 * p['mean']:.2f} ± {100 * p['std']:.2f} |" in md
    # the latency plots' data: latency.csv's timed rows, each with its level's weights remaining and accuracy
    runs = find([folder]).runs
    lat = latency_rows(runs, levels, [], "test_acc")
    assert set(lat["status"]) == {"ok"} and len(lat) == sum((pd.read_csv(r / "latency.csv")["status"] == "ok").sum() for r in runs)
    for _, row in lat.sample(5, random_state=0).iterrows():
        own = pd.read_csv(f"{[r for r in runs if r.name == row['run']][0]}/levels.csv").set_index("level").loc[row["level"]]
        assert row["remaining"] == pytest.approx(1 - own["sparsity"]) and row["test_acc"] == pytest.approx(own["test_acc"])
    for name in ("accuracy_vs_sparsity.png", "speedup_vs_sparsity.png", "accuracy_vs_speedup.png"):
        png = (root / "rep" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, name
    # --x overrides the picture; --by names the curves
    assert make_report([folder], root / "rep2", x="levels").picture == "levels"
    by = make_report([folder], root / "rep3", by=["seed"])
    assert by.picture == "sweep"
    with pytest.raises(Exception, match="not a config key"):
        make_report([folder], root / "rep4", by=["nope"])


def test_report_leaves_out_or_marks_unfinished_runs(make_cfg, tmp_path, cli):
    done = run(make_cfg(*TINY, "sparsity=0.5")).directory
    other = run(make_cfg(*TINY, "sparsity=0.8")).directory
    # `other` is being resumed: levels.csv has shrunk and summary.json says running
    levels = pd.read_csv(other / "levels.csv")
    levels.iloc[:1].to_csv(other / "levels.csv", index=False)
    summary = json.loads((other / "summary.json").read_text())
    (other / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    proc = cli("report", str(tmp_path / "results" / "default"), "--out", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    assert "left out, not complete" in proc.stdout and other.name in proc.stdout
    table = pd.read_csv(tmp_path / "a" / "table.csv")
    assert len(table) == 3 and (table["incomplete_runs"] == 0).all()
    assert "Left out, not complete: 1 run(s)" in (tmp_path / "a" / "table.md").read_text()
    marked = make_report([tmp_path / "results" / "default"], tmp_path / "b", incomplete="mark")  # --include-incomplete
    assert marked.incomplete == [f"{other} (running)"]
    table = pd.read_csv(tmp_path / "b" / "table.csv")
    assert table["incomplete_runs"].tolist() == [0, 0, 0, 1]  # sparsity 0.5 (3 levels), then 0.8's one level
    assert "0 dense *" in (tmp_path / "b" / "table.md").read_text()
    # a failed run alone: nothing complete to report, said plainly
    (done / "summary.json").write_text(json.dumps({**summary, "status": "failed"}))
    with pytest.raises(PruneexpError, match=r"No complete runs.*failed"):
        make_report([tmp_path / "results" / "default"], tmp_path / "c", incomplete="skip")


def _levels(setup, remaining):
    return pd.DataFrame({"setup": setup, "remaining_mean": remaining, "level": range(len(remaining))})


def test_picture_follows_the_runs():
    oneshot = pd.concat([_levels("a", [1.0, 0.5, 0.5]), _levels("b", [1.0, 0.1, 0.1])])
    assert choose_picture(oneshot) == "sweep"
    imp = pd.concat([_levels("a", [1.0, 0.8, 0.64]), _levels("b", [1.0, 0.8, 0.64])])
    assert choose_picture(imp) == "levels"
    single = _levels("a", [1.0, 0.1, 0.1])
    assert choose_picture(single) == "levels"


@pytest.mark.skipif(not MLFLOW, reason="mlflow is not installed (pip install -e '.[trackers]')")
def test_mlflow_holds_one_run_per_sweep_job_named_by_its_overrides(sweep):
    import mlflow

    root, folder, _ = sweep
    mlflow.set_tracking_uri(f"sqlite:///{root / 'results' / 'mlflow.db'}")
    try:
        runs = mlflow.search_runs(experiment_names=["default"])
    finally:
        mlflow.set_tracking_uri(None)
    assert sorted(runs["tags.mlflow.runName"]) == ["sparsity=0.5 seed=0", "sparsity=0.5 seed=1", "sparsity=0.9 seed=0", "sparsity=0.9 seed=1"]
    assert (runs["status"] == "FINISHED").all() and (runs["tags.pruneexp.status"] == "complete").all()
    for _, r in runs.iterrows():  # each MLflow run is its pruneexp run: the final test accuracy agrees with levels.csv
        levels = pd.read_csv(f"{r['tags.pruneexp.run_dir']}/levels.csv")
        assert r["params.sparsity"] == str(r["tags.mlflow.runName"].split()[0].split("=")[1])
        assert r["metrics.level_test_acc"] == pytest.approx(levels["test_acc"].iloc[-1])


def test_curve_points_take_the_dense_reference_only_from_a_trained_dense_level():
    rows = []
    for setup, names, remaining, accs in (("a", ("dense", "pruned", "finetuned"), (1.0, 0.5, 0.5), (0.97, 0.9, 0.96)),
                                          ("b", ("init", "pruned", "trained"), (1.0, 0.1, 0.1), (0.1, 0.1, 0.8))):
        rows += [{"setup": setup, "schedule.name": setup, "level": k, "name": n, "remaining_mean": r, "test_acc_mean": a,
                  "test_acc_std": float("nan"), "seeds": 1} for k, (n, r, a) in enumerate(zip(names, remaining, accs))]
    points = curve_points(pd.DataFrame(rows), "test_acc")
    at = {(r["curve"], r["kind"]): r for _, r in points.iterrows()}
    assert at[("a", "dense")]["mean"] == pytest.approx(0.97)
    assert at[("a", "before")]["mean"] == pytest.approx(0.9) and at[("a", "final")]["mean"] == pytest.approx(0.96)
    # at_init's level 0 is untrained: no dense line; its final level is "trained", not fine-tuned: no "before" point
    assert ("b", "dense") not in at and ("b", "before") not in at and at[("b", "final")]["mean"] == pytest.approx(0.8)


def test_a_report_rebuilt_from_its_table_is_the_report_of_the_runs(sweep, tmp_path):
    """What `--report-only` does on a fresh clone (the committed table.csv and latency.csv, no runs)
    gives the bytes that the report of the runs gave: table.csv, table.md and every figure."""
    from pruneexp.report import LATENCY, read_table, write_latency, write_report

    _, folder, _ = sweep
    first = tmp_path / "from_runs"
    report = make_report([folder], first, title="sweep")
    assert (first / LATENCY).exists() and first / LATENCY in report.files
    again = tmp_path / "from_table"
    again.mkdir()
    for name in ("table.csv", LATENCY):
        (again / name).write_bytes((first / name).read_bytes())
    write_report(read_table(again / "table.csv"), again, "test_acc", "sweep")
    write_latency(pd.read_csv(again / LATENCY), again, "test_acc", "sweep")
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in first.iterdir())
    for path in sorted(first.iterdir()):
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
