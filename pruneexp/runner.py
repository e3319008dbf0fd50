"""`pruneexp run`: validate the config, load the data, drive the schedule, measure each level and
write it to the run's directory as soon as it is reached (so an interrupted run resumes)."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from pruneexp.config import DENSE_KEYS, NON_RESULT_KEYS
from pruneexp.data import load_data
from pruneexp.loggers import check_installed, open_loggers, selected
from pruneexp.measure import count_layer_flops, effective_flops
from pruneexp.measure.latency import join_latency
from pruneexp.measure.levels import LevelTimer
from pruneexp.results import RunStore, run_hash
from pruneexp.results.hashing import drop_keys
from pruneexp.results.store import write_csv
from pruneexp.results.table import print_latency, print_levels
from pruneexp.schedules import SCHEDULES, DenseCache, FileStore, Level, RunContext
from pruneexp.validate import UnsupportedPair, validate


@dataclass
class RunOutcome:
    directory: Path
    levels: list[dict[str, Any]]
    resumed_levels: int


def run_directory(cfg: DictConfig) -> Path:
    """results/<experiment>/<hash of the resolved config, output paths left out>."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return Path(cfg.results_dir) / cfg.experiment / run_hash(resolved, NON_RESULT_KEYS)


def dense_cache(cfg: DictConfig) -> DenseCache:
    """The shared dense network of this config: results/pretrained/<hash of DENSE_KEYS>/dense.pt."""
    if not cfg.share_dense:
        return DenseCache()
    resolved = drop_keys(OmegaConf.to_container(cfg, resolve=True), NON_RESULT_KEYS)
    subset: dict[str, Any] = {}
    for key in DENSE_KEYS:
        *parents, leaf = key.split(".")
        src, dst = resolved, subset
        for p in parents:
            src, dst = src[p], dst.setdefault(p, {})
        dst[leaf] = src[leaf]
    store = RunStore(Path(cfg.results_dir) / "pretrained" / run_hash(subset))
    return DenseCache(load=lambda: store.load_file("dense.pt"), save=lambda state: store.save_file("dense.pt", state))


def ticket_files(cfg: DictConfig) -> FileStore:
    """Where the masks of this config's rewinding trajectory (the lottery ticket) are shared with
    its controls: results/tickets/<hash of the config with retrain=rewind, minus what does not
    change the masks (experiment name, level count, fine-tuning)>/."""
    resolved = drop_keys(OmegaConf.to_container(cfg, resolve=True), NON_RESULT_KEYS)
    resolved.pop("experiment", None)
    resolved["schedule"] = {k: v for k, v in resolved["schedule"].items() if k not in ("levels", "target", "finetune")}
    resolved["schedule"]["retrain"] = "rewind"
    store = RunStore(Path(cfg.results_dir) / "tickets" / run_hash(resolved))
    return FileStore(load=store.load_file, save=store.save_file)


def level_row(level: Level, flops: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The levels.csv row of a level and its layers.csv rows (exact counts, no wall times, so the
    same seed gives the same file)."""
    rep = level.masks.report(level.model)
    eff = effective_flops(flops, level.masks)
    row = dict(level=level.level, name=level.name, sparsity=rep.sparsity, sparsity_all=rep.sparsity_all,
               prunable_params=rep.prunable, nonzero_prunable=rep.prunable_nonzero, total_params=rep.total,
               nonzero_params=rep.total_nonzero, dense_flops=flops.total, effective_flops=eff,
               flop_ratio=eff / flops.total, **level.metrics)
    layers = [dict(level=level.level, layer=name, numel=numel, nonzero=kept, sparsity=1 - kept / numel)
              for name, (numel, kept) in rep.layers.items()]
    return row, layers


def run(cfg: DictConfig, console: Console | None = None) -> RunOutcome:
    """Run one experiment end to end; return where it wrote and its level rows."""
    console = console or Console(quiet=cfg.quiet)
    try:
        validate(cfg)
    except UnsupportedPair as err:
        if not cfg.get("skip_unsupported", False):
            raise
        console.print(f"[yellow]skipped[/yellow] (skip_unsupported=true): {err}")
        return RunOutcome(Path(cfg.results_dir), [], 0)
    check_installed(cfg)  # a selected tracker that is not installed fails before any work
    directory = run_directory(cfg)
    store = RunStore(directory)
    title = f"{cfg.experiment}/{directory.name}: {cfg.schedule.name} {cfg.criterion.name} on {cfg.model.name}/{cfg.dataset.name}"
    summary = store.read_summary()
    if summary is not None and summary.get("status") == "complete":
        rows = store.read_csv("levels.csv")
        console.print(f"[green]Already complete[/green]: {directory} (delete it to run again)")
        print_levels(rows, title, console)
        print_latency(store.read_csv("latency.csv"), "latency (latency.csv)", console)
        if selected(cfg):
            console.print(f"Not logged to {', '.join(selected(cfg))}: the run was complete before this invocation "
                          "(trackers record the invocation that computes a run; delete the run directory to run and log it again).")
        return RunOutcome(directory, rows, resumed_levels=len(rows))

    if cfg.hardware.threads:
        torch.set_num_threads(cfg.hardware.threads)
    device = torch.device(cfg.hardware.device)
    started = time.perf_counter()
    data = load_data(cfg.dataset, device)
    store.write_config(OmegaConf.to_yaml(cfg, resolve=True))
    ctx = RunContext(cfg, data, device, load_level=store.load_level, dense_cache=dense_cache(cfg), quiet=cfg.quiet,
                     run_files=FileStore(load=store.load_file, save=store.save_file), ticket_files=ticket_files(cfg))
    previous_log = store.read_csv("train_log.csv")
    loggers = open_loggers(cfg, directory)  # logger=tensorboard,mlflow,wandb (csv: the files below)

    rows: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    flops, resumed = None, 0
    timer, last = LevelTimer(cfg.hardware, data.input_shape, cfg.seed), None
    for level in SCHEDULES.get(cfg.schedule.name)(ctx):
        if flops is None:
            flops = count_layer_flops(level.model, data.input_shape, list(level.masks.weights))
        row, layer_rows = level_row(level, flops)
        rows.append(row)
        layers.extend(layer_rows)
        last = (level.level, level.name, level.model, level.masks, row["flop_ratio"])
        if timer.seen(*last):
            write_csv(store.path("latency.csv"), timer.rows)
        if level.restored:
            resumed += 1
            ctx.train_log[:0] = [r for r in previous_log if r["level"] == level.level]
        else:
            state = {"masks": level.masks.state_dict(), "metrics": level.metrics}
            if cfg.save_checkpoints:
                state["model"] = {k: v.detach().cpu() for k, v in level.model.state_dict().items()}
            store.save_level(level.level, state)
        store.write_levels(rows)
        store.write_layers(layers)
        store.write_train_log(sorted(ctx.train_log, key=lambda r: (r["level"], r["step"])))
        store.write_summary(_summary(cfg, directory, rows, "running", started, device))
        loggers.log_level(row, [r for r in ctx.train_log if r["level"] == level.level])
        console.print(f"level {row['level']} {row['name']}: sparsity {row['sparsity']:.4f}, "
                      f"val acc {row['val_acc']:.4f}, test acc {row['test_acc']:.4f}" + (" (resumed)" if level.restored else ""))
    if last is not None and timer.finish(*last):
        write_csv(store.path("latency.csv"), timer.rows)
    if timer.rows:  # levels.csv stays free of wall times (same seed, same bytes); the join goes beside it
        write_csv(store.path("levels_latency.csv"), join_latency(rows, timer.rows))
    status = "partial" if _left_out(cfg, rows) else "complete"
    store.write_summary(_summary(cfg, directory, rows, status, started, device, data.input_shape, data.num_classes))
    loggers.finish(status, rows)
    print_levels(rows, title, console)
    print_latency(timer.rows, "latency (latency.csv)", console)
    console.print(f"Results: {directory}")
    if status == "partial":
        console.print(f"[yellow]Partial[/yellow]: levels {_left_out(cfg, rows)} were left out (schedule.only_levels); "
                      "run again without it to compute them.")
    return RunOutcome(directory, rows, resumed)


def _left_out(cfg: DictConfig, rows: list[dict[str, Any]]) -> list[int]:
    """The levels that schedule.only_levels left for a later invocation (none without it)."""
    if cfg.schedule.get("only_levels") is None:
        return []
    done = {int(r["level"]) for r in rows}
    return [k for k in range(cfg.schedule.levels + 1) if k not in done]


def _summary(cfg: DictConfig, directory: Path, rows: list[dict[str, Any]], status: str, started: float,
             device: torch.device, input_shape: Any = None, num_classes: Any = None) -> dict[str, Any]:
    return dict(status=status, run=directory.name, experiment=cfg.experiment, levels=len(rows),
                input_shape=None if input_shape is None else list(input_shape), num_classes=num_classes,
                final=rows[-1] if rows else None, wall_s=round(time.perf_counter() - started, 3),
                device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                machine=platform.machine(), processor=platform.processor() or platform.machine(),
                python=platform.python_version())
