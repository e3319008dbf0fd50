"""Files pruneexp did not write may be hostile: every checkpoint loads with weights_only=True, so a
pickled payload is refused with a message naming the file, and its code never runs."""

import os
from pathlib import Path

import pytest
import torch

from conftest import TINY
from pruneexp.errors import PruneexpError
from pruneexp.runner import run

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / "pruneexp_payload_ran"


class Payload:
    """Unpickling this calls os.system: what a crafted results file would do."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def plant(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"masks": Payload(), "metrics": {}, "model": {}}, path)


def test_a_pickled_payload_in_a_level_file_is_refused_and_does_not_run(make_cfg):
    MARKER.unlink(missing_ok=True)
    first = run(make_cfg(*TINY))
    plant(first.directory / "levels" / "level_001.pt")
    (first.directory / "summary.json").unlink()  # make the run resume, reading its level files
    with pytest.raises(PruneexpError, match=r"level_001\.pt holds objects other than tensors"):
        run(make_cfg(*TINY))
    assert not MARKER.exists()


def test_a_pickled_payload_in_the_shared_dense_cache_is_refused(make_cfg, tmp_path):
    MARKER.unlink(missing_ok=True)
    first = run(make_cfg(*TINY))
    dense = next((tmp_path / "results" / "pretrained").glob("*/dense.pt"))
    plant(dense)
    with pytest.raises(PruneexpError, match=r"dense\.pt holds objects other than tensors"):
        run(make_cfg(*TINY, "sparsity=0.5"))  # another run sharing that dense network
    assert not MARKER.exists() and first.directory.exists()


def test_shrunk_models_save_as_tensors_only(tmp_path):
    from torch import nn

    from pruneexp.pruning.shrink import load_shrunk, save_shrunk

    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    save_shrunk(model, tmp_path / "m.pt")
    torch.load(tmp_path / "m.pt", weights_only=True)  # no pickled classes inside
    plant(tmp_path / "bad.pt")
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        load_shrunk(tmp_path / "bad.pt", model)
    assert not MARKER.exists()
