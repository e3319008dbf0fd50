"""One run's directory: results/<experiment>/<hash>/ with config.yaml, levels.csv, layers.csv,
train_log.csv, summary.json and per-level masks and checkpoints. Every file is written atomically
(temp file in the same directory, fsync, rename), so an interrupted run never leaves a torn file,
and a run that is started again resumes from the levels already on disk."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch

from pruneexp.errors import PruneexpError
from pruneexp.io import atomic_write, save_torch, sha256


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_csv(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    frame = pd.DataFrame(list(rows))
    atomic_write(path, lambda p: frame.to_csv(p, index=False))


class RunStore:
    """Files of one run. Level artefacts are keyed by level number."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def write_config(self, yaml_text: str) -> None:
        write_text(self.path("config.yaml"), yaml_text)

    def write_levels(self, rows: list[dict[str, Any]]) -> None:
        write_csv(self.path("levels.csv"), rows)

    def write_layers(self, rows: list[dict[str, Any]]) -> None:
        write_csv(self.path("layers.csv"), rows)

    def write_train_log(self, rows: list[dict[str, Any]]) -> None:
        write_csv(self.path("train_log.csv"), rows)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_text(self.path("summary.json"), json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")

    def read_csv(self, name: str) -> list[dict[str, Any]]:
        """The rows of a CSV file of the run ([] if it is absent); a damaged file is a PruneexpError naming it."""
        path = self.path(name)
        if not path.exists():
            return []
        try:
            return pd.read_csv(path).to_dict("records")
        except pd.errors.EmptyDataError:
            return []
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
            raise self.damaged(name, err) from None

    def read_summary(self) -> dict[str, Any] | None:
        """summary.json as a dict (None if absent); unreadable or not a JSON object is a PruneexpError naming it."""
        path = self.path("summary.json")
        if not path.exists():
            return None
        try:
            summary = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise self.damaged("summary.json", err) from None
        if not isinstance(summary, dict):
            raise self.damaged("summary.json", "not a JSON object")
        return summary

    def damaged(self, name: str, why: Any) -> PruneexpError:
        """The error for a file of the run that cannot be read or fails its checksum: which file,
        why, and how to recompute it."""
        how = ("delete it and run the same command again: the levels are recomputed from the level files"
               if name != "train_log.csv" else
               "the training log of finished levels exists only there, so delete the run directory and run again")
        if name == "summary.json":
            how = "delete it and run the same command again: finished levels are restored from their level files"
        elif name.endswith(".pt"):
            how = "delete it and run the same command again to recompute it"
        return PruneexpError(f"{self.path(name)} is damaged ({why}); {how}.")

    def checksums(self, names: Iterable[str]) -> dict[str, str]:
        """SHA-256 of each named file that exists (the `files` record of summary.json)."""
        return {n: sha256(self.path(n)) for n in names if self.path(n).exists()}

    def verify(self, recorded: dict[str, str], names: Iterable[str] | None = None) -> list[str]:
        """Check files against the checksums recorded in summary.json (all of them, or `names`):
        raise a PruneexpError naming the first one whose bytes differ; return the recorded files
        that are missing (a missing file is recomputed, a changed one is never trusted)."""
        missing = []
        for name in sorted(recorded if names is None else set(names) & set(recorded)):
            path = self.path(name)
            if not path.exists():
                missing.append(name)
            elif sha256(path) != recorded[name]:
                raise self.damaged(name, "its SHA-256 differs from the one recorded in summary.json")
        return missing

    def save_file(self, name: str, state: dict[str, Any]) -> None:
        save_torch(state, self.path(name))

    def load_file(self, name: str) -> dict[str, Any] | None:
        """The file's contents, or None when it does not exist. Loaded with `weights_only=True`:
        pruneexp saves plain tensors, numbers and strings only, so a file carrying pickled objects
        (crafted, or written by a pruneexp older than this rule) is refused and nothing in it runs."""
        path = self.path(name)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise PruneexpError(f"{path} holds objects other than tensors, numbers and strings, so it was not loaded "
                                f"(a file pruneexp did not write, or one from an older pruneexp): delete it to recompute it. "
                                f"({str(err).splitlines()[0]})") from None
        except (RuntimeError, EOFError, OSError) as err:  # torch's zip reader on a truncated or garbled file
            raise self.damaged(name, f"{type(err).__name__}: {str(err).splitlines()[0]}") from None

    def remove_checkpoints(self, level: int | None = None) -> None:
        """Delete the mid-training checkpoints of `level` (all of them when None): once a level's
        file is written, they hold nothing it lacks."""
        folder = self.path("checkpoints")
        for path in folder.glob("*.pt" if level is None else f"*_{level:03d}_*.pt"):
            path.unlink(missing_ok=True)
        if level is None and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

    @staticmethod
    def level_name(level: int) -> str:
        return f"levels/level_{level:03d}.pt"

    def save_level(self, level: int, state: dict[str, Any]) -> None:
        """Masks (always) and, when present, model weights of a finished level."""
        self.save_file(self.level_name(level), state)

    def load_level(self, level: int) -> dict[str, Any] | None:
        return self.load_file(self.level_name(level))
