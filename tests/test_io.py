"""Atomic writes: all or nothing, and files as readable as any other the user writes."""

import os

import pytest
import torch

from pruneexp.io import atomic_write, save_torch


def test_atomic_write_replaces_whole_files_with_the_umask_mode(tmp_path):
    path = tmp_path / "sub" / "levels.csv"
    atomic_write(path, lambda p: p.write_text("a\n1\n"))
    old = os.umask(0o022)
    try:
        atomic_write(path, lambda p: p.write_text("a\n2\n"))
    finally:
        os.umask(old)
    assert path.read_text() == "a\n2\n"
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["levels.csv"]  # no temporary left behind


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "state.pt"
    save_torch({"step": 1}, path)

    def torn(p):
        p.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, torn)
    assert torch.load(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
