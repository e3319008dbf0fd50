"""`make bench`'s table (scripts/bench_all.py, scripts/benchgoals.py) on stand-in benchmark scripts
that print known figures: no timing here, only how the figures, goals and failures reach the table."""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import bench_all  # noqa: E402
from benchgoals import Figure, holds, write_json  # noqa: E402


def test_goals_are_comparisons_with_a_number():
    assert holds(1.05, "<= 1.1") and not holds(1.2, "<= 1.1") and holds(1.1, "<= 1.1")
    assert holds(0.97, ">= 0.95") and not holds(1.0, "< 1") and holds(0.99, "< 1") and holds(2, "> 1.6")
    assert holds(3.0, None) is None  # no goal stated: reported, not judged
    assert holds(None, "<= 1.1") is False  # nothing measured meets no goal
    with pytest.raises(ValueError, match="not 'OP NUMBER'"):
        holds(1.0, "about 1")


def test_the_table_has_every_figure_its_goal_and_the_failures(tmp_path, monkeypatch):
    """Three stand-ins: one whose figures meet and miss their goals, one that fails, one absent."""
    good = tmp_path / "bench_good.py"
    good.write_text(
        "import json, sys\n"
        "path = sys.argv[sys.argv.index('--json') + 1]\n"
        "assert sys.argv[1:3] == ['--repeats', '2']\n"
        "json.dump({'benchmark': 'bench_good', 'threads': 1, 'figures': ["
        "{'figure': 'fast / slow', 'value': 0.5, 'goal': '<= 1.1', 'source': 'issue 1', 'detail': '1 vs 2 s'},"
        "{'figure': 'many / few', 'value': 1.3, 'goal': '<= 1.1', 'source': 'issue 2', 'detail': ''},"
        "{'figure': 'speedup', 'value': 2.5, 'goal': None, 'source': 'none stated', 'detail': 'a|b'}]}, open(path, 'w'))\n"
        "print('what it prints alone')\n")
    bad = tmp_path / "bench_bad.py"
    bad.write_text("import sys\nsys.exit('no data here')\n")
    other = tmp_path / "bench_other.py"  # writes JSON of its own shape
    other.write_text("import json, sys\njson.dump([{'ratio': 1.0}], open(sys.argv[sys.argv.index('--json') + 1], 'w'))\n")
    monkeypatch.setattr(bench_all, "SCRIPTS", tmp_path)
    monkeypatch.setattr(bench_all, "BENCHMARKS", {"bench_good": (["--repeats", "2"], []), "bench_bad": ([], []), "bench_other": ([], []),
                                                     "bench_gone": ([], [])})
    out = tmp_path / "bench.md"
    monkeypatch.setattr(sys, "argv", ["bench_all.py", "--out", str(out)])
    with pytest.raises(SystemExit) as stop:
        bench_all.main()
    assert stop.value.code == 1  # a benchmark failed
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| bench_")]
    assert rows == [
        "| bench_good | fast / slow | 0.500 | <= 1.1 | yes | issue 1 | 1 | 1 vs 2 s |",
        "| bench_good | many / few | 1.300 | <= 1.1 | **NO** | issue 2 | 1 | - |",
        "| bench_good | speedup | 2.500 | - | - | none stated | 1 | a/b |",
        "| bench_bad | (failed: exit 1: no data here) | - | - | **NO** | - | - | - |",
        "| bench_other | (failed: its --json output is not benchgoals.py's format) | - | - | **NO** | - | - | - |",
        "| bench_gone | (not in this checkout) | - | - | - | - | - | - |",
    ]
    assert "1 of 2 goals hold" in text and "threads per benchmark: 1" in text and "machine: " in text
    assert "what it prints alone" in text  # each benchmark's own output is kept beside the table


def test_a_script_writes_its_figures(tmp_path):
    write_json(tmp_path / "f.json", "bench_x", 1, [Figure("a / b", 1.02, "<= 1.1", "issue 28", "x")])
    data = json.loads((tmp_path / "f.json").read_text())
    assert data == {"benchmark": "bench_x", "threads": 1,
                    "figures": [{"figure": "a / b", "value": 1.02, "goal": "<= 1.1", "source": "issue 28", "detail": "x"}]}


def test_every_benchmark_script_takes_json():
    """The scripts make bench runs exist (but the two that other issues add) and accept --json."""
    for name in bench_all.BENCHMARKS:
        script = REPO / "scripts" / f"{name}.py"
        if name in ("bench_posttrain", "bench_scale") and not script.exists():
            continue
        assert "--json" in script.read_text(), name
