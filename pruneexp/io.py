"""Atomic file writes, shared by every layer that writes to disk (run directories, the MNIST-1D
cache, saved shrunk models), with the checksums and locks that keep those files safe when many
processes share them. A leaf module: it imports nothing of pruneexp."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary path beside `path`, fsync it, then rename it over `path`:
    a reader sees the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a result file is as readable as any other
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}$")  # what mkstemp(prefix=".<name>.") makes


def temporaries(directory: Path | str, name: str | None = None) -> list[Path]:
    """Temporary files `atomic_write` left in `directory` when its process was killed mid-write
    (`.level_002.pt.k3j_x9ab`), only those of the file `name` if given; lock files (`*.lock`) are
    not temporaries."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _TEMPORARY.match(p.name)
        if m and p.is_file() and not p.name.endswith(".lock") and name in (None, m.group("name")):
            found.append(p)
    return sorted(found)


def clean_temporaries(directory: Path | str, name: str | None = None) -> list[Path]:
    """Delete the temporaries a killed writer left in `directory` (of the file `name` only, if
    given) and return them. Call it only while holding the lock that guards those files: then no
    live writer has a temporary there."""
    gone = temporaries(directory, name)
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes (the checksums recorded in summary.json)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_torch(obj: Any, path: Path | str) -> None:
    """`torch.save(obj, path)`, atomically."""
    atomic_write(path, lambda p: torch.save(obj, p))
