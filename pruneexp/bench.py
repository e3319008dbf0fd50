"""`pruneexp bench RUN_DIR [hardware=NAME] [hardware.KEY=VALUE ...]`: time a finished run's saved
levels on a hardware target without retraining. The model is rebuilt from the run's config.yaml,
each selected level's weights and masks are loaded from levels/level_NNN.pt, and the rows go to
RUN_DIR/latency_<hardware name>.csv (and are printed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from pruneexp.errors import PruneexpError
from pruneexp.measure.latency import Target, levels_to_time, measure_level
from pruneexp.models import model_from_config
from pruneexp.pruning.masks import MaskSet
from pruneexp.results import RunStore
from pruneexp.results.store import write_csv
from pruneexp.results.table import print_latency


def hardware_config(conf_dir: Path, run_hardware: str, overrides: list[str]) -> DictConfig:
    """The hardware node: `hardware=NAME` (default: the run's own target) composed from conf/hardware/
    with `hardware.KEY=VALUE` overrides on top. Any other override is a user error."""
    bad = [o for o in overrides if not (o.startswith("hardware=") or o.startswith("hardware."))]
    if bad:
        raise PruneexpError(f"pruneexp bench takes only hardware overrides (hardware=NAME, hardware.KEY=VALUE); got: {' '.join(bad)}.")
    if not any(o.startswith("hardware=") for o in overrides):
        overrides = [f"hardware={run_hardware}", *overrides]
    from pruneexp.conf_store import register_configs

    register_configs()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
    except Exception as err:  # hydra's own message names the bad key or value
        raise PruneexpError(f"Bad hardware override: {err}") from None
    return cfg.hardware


def _input_shape(run_cfg: Any, summary: dict[str, Any] | None) -> tuple[tuple[int, ...], int]:
    if summary and summary.get("input_shape"):
        return tuple(summary["input_shape"]), int(summary["num_classes"])
    from pruneexp.data import DATASETS  # older runs: read the shape from the dataset itself

    raw = DATASETS.get(run_cfg.dataset.name)(run_cfg.dataset)
    return tuple(int(s) for s in raw.input_shape), int(raw.num_classes)


def bench(run_dir: Path, overrides: list[str], conf_dir: Path, console: Console | None = None) -> Path:
    """Time the saved levels of `run_dir` (`hardware.levels` picks which) and write
    latency_<hardware>.csv there; return its path. The run directory must be writable (checked
    before any timing), its files must match the checksums in summary.json, and no other process
    may be working in it meanwhile (its lock is held)."""
    from pruneexp.runner import directory_lock  # bench sits above the runner

    console = console or Console()
    store = RunStore(Path(run_dir))
    if not store.path("config.yaml").exists():
        raise PruneexpError(f"{run_dir} is not a pruneexp run directory (no config.yaml); give results/<experiment>/<hash>.")
    with directory_lock(store.root, "this run", console):
        return _bench_locked(store, run_dir, overrides, conf_dir, console)


def _bench_locked(store: RunStore, run_dir: Path, overrides: list[str], conf_dir: Path, console: Console) -> Path:
    from pruneexp.runner import load_checked

    summary = store.read_summary()
    recorded = (summary or {}).get("files") or {}
    missing = store.verify(recorded, [n for n in recorded if n == "config.yaml" or n.startswith("levels/")])
    if missing:
        raise PruneexpError(f"{run_dir} lacks {', '.join(missing)}, which summary.json records; run the same "
                            "`pruneexp run` command again to recompute them, then bench.")
    try:
        run_cfg = OmegaConf.load(store.path("config.yaml"))
    except Exception as err:  # a YAML parser error, undecodable bytes
        raise store.damaged("config.yaml", f"{type(err).__name__}: {err}") from None
    hw = hardware_config(conf_dir, str(run_cfg.hardware.name), overrides)
    target = Target.from_config(hw)
    if target.device.type == "cuda" and not torch.cuda.is_available():
        raise PruneexpError(f"hardware={hw.name} asks for device '{hw.device}', but no CUDA device is available here.")
    saved = sorted(int(p.stem.split("_")[1]) for p in store.path("levels").glob("level_*.pt"))
    if not saved:
        raise PruneexpError(f"{run_dir} has no saved levels (levels/level_NNN.pt).")
    input_shape, num_classes = _input_shape(run_cfg, summary)
    levels = {int(r["level"]): r for r in store.read_csv("levels.csv")}
    rows: list[dict[str, Any]] = []
    for level in levels_to_time(str(hw.levels), saved):
        state = load_checked(store, store.level_name(level))
        if "model" not in state:
            raise PruneexpError(f"level {level} of {run_dir} has masks but no weights (the run had save_checkpoints=false).")
        model = model_from_config(run_cfg.model, input_shape, num_classes)
        model.load_state_dict(state["model"])
        info = levels.get(level, {})
        rows.extend(measure_level(model, MaskSet.from_state_dict(state["masks"]), input_shape, target, level=level,
                                  name=str(info.get("name", "")), flop_ratio=info.get("flop_ratio"),
                                  connected_flop_ratio=info.get("connected_flop_ratio"), seed=int(run_cfg.seed)))
    out = store.path(f"latency_{hw.name}.csv")
    write_csv(out, rows)
    print_latency(rows, f"{run_dir}: latency on {hw.name}", console)
    console.print(f"Latency: {out}")
    return out
