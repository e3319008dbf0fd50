"""Every committed reproduction report rebuilds from what is committed (issue 26): for each
results/reproductions/NAME that holds a table.csv, `pruneexp reproduce NAME [--fast] --report-only`
on a copy of the folder alone (no run directory on disk, as in a fresh clone) rewrites every file
with the same bytes (table.csv, table.md, checks.md, checks.csv and the PNGs), so the committed
report is what today's report code makes of the committed table, and its checks' verdicts are
recomputed from it. An archive (an earlier variant's folder) rebuilds its table and figure the same
way. The figures drawn from the runs' own files (latency, FLOPs) stay as committed."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from rich.console import Console

from conftest import REPO
from pruneexp.report import read_table
from pruneexp.reproduce import committed_reports, rebuild_archives, reproduce

FOLDER = REPO / "results" / "reproductions"
REPORTS = committed_reports(FOLDER)


def test_every_committed_report_is_covered():
    """A folder with a table.csv that no reproduction names (nor lists as an archive) would escape the rebuild."""
    with_table = {p.name for p in FOLDER.iterdir() if (p / "table.csv").exists()}
    assert with_table == {p.name for p, _, _ in REPORTS} and len(REPORTS) >= 30


@pytest.mark.parametrize("path, spec, fast", REPORTS, ids=[p.name for p, _, _ in REPORTS])
def test_committed_report_rebuilds_byte_for_byte_from_its_table(path, spec, fast, tmp_path, monkeypatch):
    copy = tmp_path / "reproductions" / path.name
    shutil.copytree(path, copy)
    monkeypatch.setenv("PRUNEEXP_RESULTS", str(tmp_path))  # no run of any experiment under it
    if fast is None:
        rebuild_archives(spec, copy.parent, Console(quiet=True))
    else:
        checks, out = reproduce(spec.name, fast=fast, report_only=True, console=Console(quiet=True))
        assert out == copy
        # the verdicts written are the ones recomputed now (from the table) or carried (from the runs)
        written = pd.read_csv(copy / "checks.csv", dtype=str, keep_default_na=False)
        assert len(written) == len(checks) and set(written["source"]) <= {"table", "runs"}
    assert sorted(f.name for f in copy.iterdir()) == sorted(f.name for f in path.iterdir())
    for committed in sorted(path.iterdir()):
        assert (copy / committed.name).read_bytes() == committed.read_bytes(), f"{path.name}/{committed.name} differs once rebuilt"


def test_a_table_reads_back_to_the_bit():
    """read_table gives back the numbers table.csv holds and writes the same text again."""
    text = (FOLDER / "rigl_vs_static" / "table.csv").read_text()
    table = read_table(FOLDER / "rigl_vs_static" / "table.csv")
    assert table.to_csv(index=False) == text
    # the setups are today's labels: the keys a setup has, none shown as nan
    assert not table["setup"].str.contains("nan").any()
