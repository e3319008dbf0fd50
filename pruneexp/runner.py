"""`pruneexp run`: validate the config, load the data, drive the schedule, measure each level and
write it to the run's directory as soon as it is reached (so an interrupted run resumes)."""

from __future__ import annotations

import platform
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from pruneexp import distributed
from pruneexp.config import DENSE_KEYS, NON_RESULT_KEYS, hash_view
from pruneexp.data import load_data
from pruneexp.errors import PruneexpError
from pruneexp.io import clean_temporaries
from pruneexp.loggers import check_installed, open_loggers, selected
from pruneexp.measure import connected_flops, count_layer_flops, masked_flops
from pruneexp.measure.latency import join_latency
from pruneexp.measure.levels import LevelTimer
from pruneexp.pruning.masks import effective_chain, layer_weights
from pruneexp.results import RunStore, run_hash
from pruneexp.results.hashing import drop_keys
from pruneexp.results.store import write_csv
from pruneexp.results.table import print_latency, print_levels
from pruneexp.schedules import SCHEDULES, DenseCache, FileStore, Level, RunContext
from pruneexp.train import accel
from pruneexp.validate import UnsupportedPair, typed_config, validate


@dataclass
class RunOutcome:
    directory: Path
    levels: list[dict[str, Any]]
    resumed_levels: int


def run_directory(cfg: DictConfig) -> Path:
    """results/<experiment>/<hash of the resolved config, output paths left out>."""
    resolved = hash_view(OmegaConf.to_container(cfg, resolve=True))
    return Path(cfg.results_dir) / cfg.experiment / run_hash(resolved, NON_RESULT_KEYS)


def writable_directory(directory: Path) -> Path:
    """Create `directory` (and its parents) or raise a PruneexpError saying it cannot be written,
    before any work is done."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):  # unnamed where the OS allows: no race between processes
            pass
    except OSError as err:
        raise PruneexpError(f"Cannot write to {directory} ({err.strerror or err}): pruneexp writes its results there; "
                            "use a folder you can write (for runs: results_dir=... or PRUNEEXP_RESULTS).") from None
    return directory


@contextmanager
def directory_lock(directory: Path, what: str, console: Console | None = None) -> Iterator[None]:
    """Hold `directory`/.lock: one process at a time works in a run directory. A second process
    waits (and says so) until the first is done. The lock is an OS file lock (fcntl), which the
    kernel drops when its process dies, so a killed run never leaves a stale lock behind."""
    lock = FileLock(str(writable_directory(directory) / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if console is not None:
            console.print(f"[yellow]waiting[/yellow]: another process is running {what} ({directory}); "
                          "this one continues when it is done.")
        lock.acquire()
    try:
        clean_temporaries(directory)
        clean_temporaries(directory / "levels")
        clean_temporaries(directory / "checkpoints")
        yield
    finally:
        lock.release()


class SharedFiles:
    """Named files in a directory that concurrent processes share (the dense network, a ticket's
    masks). Loading a file takes its lock and keeps it, so that when the file is missing this
    process computes it while the others wait, then `save` writes it and lets them reuse it;
    `release` lets go of every lock still held (the runner calls it after each level). Locks are
    OS file locks: a killed process's lock is recovered by the kernel."""

    def __init__(self, root: Path):
        self.store = RunStore(root)
        self.locks: dict[str, FileLock] = {}
        self.held: set[str] = set()
        self.saved: set[str] = set()
        self.loaded: set[str] = set()

    def _acquire(self, name: str) -> None:
        if name in self.held:
            return
        lock = self.locks.get(name)
        if lock is None:
            lock = self.locks[name] = FileLock(str(writable_directory(self.store.root) / f".{name}.lock"))
        lock.acquire()
        self.held.add(name)
        clean_temporaries(self.store.root, name)  # a killed writer of this file left them: none is alive now

    def load(self, name: str) -> Any:
        """The file's contents (None if absent), with its lock held until `save` or `release`."""
        self._acquire(name)
        state = load_checked(self.store, name)
        if state is not None:
            self.loaded.add(name)
        return state

    def save(self, name: str, state: Any) -> None:
        """Write the file atomically under its lock, then let the waiting processes read it."""
        self._acquire(name)
        try:
            self.store.save_file(name, state)
            self.saved.add(name)
        finally:
            self.release(name)

    def release(self, name: str | None = None) -> None:
        """Let go of the lock of `name` (default: of every file)."""
        for n in [name] if name is not None else list(self.held):
            if n in self.held:
                self.held.discard(n)
                self.locks[n].release(force=True)


def load_checked(store: RunStore, name: str) -> Any:
    """`store.load_file(name)`, with a file torch cannot read turned into a PruneexpError naming
    it and saying how to recompute it (a truncated level file, an overwritten cache)."""
    try:
        return store.load_file(name)
    except PruneexpError:
        raise
    except Exception as err:  # torch's zip reader and unpickler raise many kinds, none naming the file
        raise store.damaged(name, f"{type(err).__name__}: {err}") from None


def dense_cache(cfg: DictConfig, shared: list[SharedFiles] | None = None) -> DenseCache:
    """The shared dense network of this config: results/pretrained/<hash of DENSE_KEYS>/dense.pt.
    Its SharedFiles (the lock) is appended to `shared` when given, for the runner to release."""
    if not cfg.share_dense:
        return DenseCache()
    resolved = drop_keys(hash_view(OmegaConf.to_container(cfg, resolve=True)), NON_RESULT_KEYS)
    subset: dict[str, Any] = {}
    for key in DENSE_KEYS:
        *parents, leaf = key.split(".")
        src, dst = resolved, subset
        for p in parents:
            src, dst = src[p], dst.setdefault(p, {})
        if leaf in src:  # a HASH_NEUTRAL key at its neutral value is gone from the view: dense hashes stay as they were
            dst[leaf] = src[leaf]
    files = SharedFiles(Path(cfg.results_dir) / "pretrained" / run_hash(subset))
    if shared is not None:
        shared.append(files)
    return DenseCache(load=lambda: files.load("dense.pt"), save=lambda state: files.save("dense.pt", state))


def ticket_files(cfg: DictConfig, shared: list[SharedFiles] | None = None) -> FileStore:
    """Where the masks a schedule shares between runs (imp: the lottery ticket's, read by its
    controls) are kept: results/tickets/<hash of the schedule's `ticket_key` of the config>/.
    Unbound for a schedule that shares none. Its SharedFiles (the lock) is appended to `shared`."""
    ticket_key = SCHEDULES.meta(cfg.schedule.name).get("ticket_key")
    if ticket_key is None:
        return FileStore()
    resolved = ticket_key(drop_keys(hash_view(OmegaConf.to_container(cfg, resolve=True)), NON_RESULT_KEYS))
    files = SharedFiles(Path(cfg.results_dir) / "tickets" / run_hash(resolved))
    if shared is not None:
        shared.append(files)
    return FileStore(load=files.load, save=files.save)


def level_row(level: Level, flops: Any, layer_types: Any = ("linear", "conv")) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The levels.csv row of a level and its layers.csv rows (exact counts, no wall times, so the
    same seed gives the same file). `effective_sparsity` (and each layer's `effective_nonzero`)
    counts only the kept weights on an input-to-output path (effective_chain; Vysogorets & Kempe
    2023); FLOPs are read both ways: `effective_flops` / `flop_ratio` by the masks as selected (each
    layer's FLOPs scaled by its density; the name records of every pruneexp version carry), and
    `connected_flops` / `connected_flop_ratio` by the effective masks (the shrunk network's FLOPs
    under channel pruning). The effective columns are empty where the network is not a chain of layers."""
    rep = level.masks.report(level.model)
    eff = masked_flops(flops, level.masks)
    chain = effective_chain(level.model, level.masks, layer_types)
    live = None if chain is None else {w: int(chain[w].sum()) for w in level.masks.weights}
    connected = connected_flops(flops, chain)
    row = dict(level=level.level, name=level.name, sparsity=rep.sparsity, sparsity_all=rep.sparsity_all,
               effective_sparsity=None if live is None else 1 - sum(live.values()) / rep.prunable,
               prunable_params=rep.prunable, nonzero_prunable=rep.prunable_nonzero, total_params=rep.total,
               nonzero_params=rep.total_nonzero, dense_flops=flops.total, effective_flops=eff,
               flop_ratio=eff / flops.total, connected_flops=connected,
               connected_flop_ratio=None if connected is None else connected / flops.total, **level.metrics)
    layers = [dict(level=level.level, layer=name, numel=numel, nonzero=kept, sparsity=1 - kept / numel,
                   effective_nonzero=None if live is None else live[name])
              for name, (numel, kept) in rep.layers.items()]
    return row, layers


def run_flops(level: Level, input_shape: Any, layer_types: Any = ("linear", "conv")) -> Any:
    """The dense FLOPs of the run's model per layer weight (count_layer_flops): every layer of
    `layer_types`, the unpruned ones included (connected_flops reads them), and every masked weight."""
    weights = dict.fromkeys([*layer_weights(level.model, layer_types), *level.masks.weights])
    return count_layer_flops(level.model, input_shape, list(weights))


def check_layers(cfg: DictConfig, input_shape: Any, num_classes: int) -> None:
    """Check the layer patterns of `prune.exclude` and `prune.layer_rates` against the model's real
    layers (and the per-layer targets they give) before anything is trained: a pattern that
    matches nothing is refused with the list of layer names; weights named by `model.weights` must
    fit the model."""
    from pruneexp.models import load_weights, model_from_config
    from pruneexp.pruning.masks import prunable_weights
    from pruneexp.pruning.select import explicit_layer_targets, layer_targets

    p = cfg.prune
    with torch.random.fork_rng(devices=[]):
        model = model_from_config(cfg.model, tuple(input_shape), num_classes)
    if cfg.model.get("weights"):  # the trained weights must fit this model before anything is trained
        load_weights(model, cfg.model.weights)
    names = list(prunable_weights(model, p.layer_types, p.exclude))
    if p.layer_rates:
        layer_targets(names, 0.0, dict(p.layer_rates))
        # the largest per-level rate the schedule asks of the selector: imp's rate, else the sparsity
        layer_targets(names, cfg.schedule.get("rate", cfg.sparsity), dict(p.layer_rates))
    if p.get("layer_sparsity"):
        explicit_layer_targets(names, cfg.sparsity, dict(p.layer_sparsity))


def run(cfg: DictConfig, console: Console | None = None) -> RunOutcome:
    """Run one experiment end to end; return where it wrote and its level rows. One process at a
    time works in a run directory (others wait); an exception during the schedule marks the run
    `failed` in summary.json, with the message, and is raised again.

    When the environment holds several processes of one run (torchrun, SLURM tasks), each joins the
    process group here; rank 0 runs as above, the others follow its schedule (`_follow`), writing
    nothing."""
    console = console or Console(quiet=cfg.quiet or not distributed.leader())
    try:
        validate(cfg)
        cfg = typed_config(cfg)
    except UnsupportedPair as err:
        if not cfg.get("skip_unsupported", False):
            raise
        console.print(f"[yellow]skipped[/yellow] (skip_unsupported=true): {err}")
        return RunOutcome(Path(cfg.results_dir), [], 0)
    check_installed(cfg)  # a selected tracker that is not installed fails before any work
    directory = run_directory(cfg)
    device = distributed.init(cfg.hardware.device, cfg.hardware.get("dist_timeout_s", distributed.DEFAULT_TIMEOUT_S))
    try:
        if not distributed.leader():
            return _follow(cfg, directory, device)
        with directory_lock(directory, f"the same run ({cfg.experiment})", console):
            return _run_locked(cfg, directory, console, device)
    finally:  # the wrappers the loop kept for this run's models (reused across its levels), and so the models
        accel.forget_compiled()
        distributed.forget_wrappers()


def _follow(cfg: DictConfig, directory: Path, device: torch.device) -> RunOutcome:
    """A rank other than 0: run the same schedule in step with rank 0 (DDP training, its masks,
    its evaluations), reading what rank 0 reads from the run directory and the caches (every load
    is rank 0's, broadcast) and writing nothing anywhere."""
    done = distributed.on_leader(lambda: None)  # rank 0: the run complete already (its outcome), or None
    if done is not None:
        return done
    if cfg.hardware.threads:
        torch.set_num_threads(cfg.hardware.threads)
    data = load_data(cfg.dataset, device)
    check_layers(cfg, data.input_shape, data.num_classes)
    ctx = shared_context(RunContext(cfg, data, device, quiet=True))
    for _ in SCHEDULES.get(cfg.schedule.name)(ctx):
        pass
    return RunOutcome(directory, [], 0)


def shared_context(ctx: RunContext) -> RunContext:
    """`ctx` with every read of the run directory and of the shared caches made by rank 0 and
    handed to every rank (pruneexp.distributed.shared); ranks other than 0 never write (their
    stores are the unbound ones, whose saves do nothing). One process: `ctx` as it is."""
    if not distributed.active():
        return ctx
    share = distributed.shared
    ctx.load_level = share(ctx.load_level)
    ctx.dense_cache = DenseCache(load=share(ctx.dense_cache.load), save=ctx.dense_cache.save)
    for name in ("run_files", "ticket_files", "checkpoints"):
        store = getattr(ctx, name)
        setattr(ctx, name, FileStore(load=share(store.load), save=store.save))
    return ctx


def merged(rows: list[dict[str, Any]], previous: list[dict[str, Any]], reached: set[int]) -> list[dict[str, Any]]:
    """`rows` plus the rows a previous invocation wrote for levels this one has not reached yet,
    ordered by level: a resumed run never rewrites a file with less than it held."""
    kept = [r for r in previous if int(r["level"]) not in reached]
    return sorted([*rows, *kept], key=lambda r: int(r["level"])) if kept else rows


TRUSTED = ("levels/", "rewind.pt", "config.yaml")  # verified on every resume (the rest is rewritten)


def _run_locked(cfg: DictConfig, directory: Path, console: Console, device: torch.device) -> RunOutcome:
    store = RunStore(directory)
    title = f"{cfg.experiment}/{directory.name}: {cfg.schedule.name} {cfg.criterion.name} on {cfg.model.name}/{cfg.dataset.name}"
    summary = store.read_summary()
    recorded: dict[str, str] = dict((summary or {}).get("files") or {})  # the checksums of the files written so far
    # over several processes the others wait for this answer: complete already (the outcome), or to be computed
    done = distributed.on_leader(lambda: _complete(cfg, directory, store, summary, recorded, title, console))
    if done is not None:
        return done
    return _compute(cfg, directory, store, recorded, title, console, device)


def _complete(cfg: DictConfig, directory: Path, store: RunStore, summary: dict[str, Any] | None, recorded: dict[str, str],
              title: str, console: Console) -> RunOutcome | None:
    """The outcome of a run found complete on disk (its files verified against `recorded`), or None
    when it is to be computed (the files it trusts on a resume verified)."""
    complete = summary is not None and summary.get("status") == "complete"
    if complete:
        # a run of an older pruneexp records no checksums: then at least its tables must be there
        missing = store.verify(recorded) if recorded else [n for n in ("config.yaml", "levels.csv") if not store.path(n).exists()]
        if not missing:
            rows = store.read_csv("levels.csv")
            checked = "checksums verified" if recorded else "no checksums recorded (an older pruneexp)"
            console.print(f"[green]Already complete[/green]: {directory} ({checked}; delete it to run again)")
            print_levels(rows, title, console)
            print_latency(store.read_csv("latency.csv"), "latency (latency.csv)", console)
            if selected(cfg):
                console.print(f"Not logged to {', '.join(selected(cfg))}: the run was complete before this invocation "
                              "(trackers record the invocation that computes a run; delete the run directory to run and log it again).")
            return RunOutcome(directory, rows, resumed_levels=len(rows))
        console.print(f"[yellow]Recomputing[/yellow] {', '.join(missing)}: the run was complete but these files are missing.")
    else:
        store.verify(recorded, [n for n in recorded if n.startswith(TRUSTED)])
    return None


def _compute(cfg: DictConfig, directory: Path, store: RunStore, recorded: dict[str, str], title: str, console: Console,
             device: torch.device) -> RunOutcome:
    if cfg.hardware.threads:
        torch.set_num_threads(cfg.hardware.threads)
    started = time.perf_counter()
    data = load_data(cfg.dataset, device)
    check_layers(cfg, data.input_shape, data.num_classes)
    sums = {n: h for n, h in recorded.items() if store.path(n).exists()}

    def wrote(*names: str) -> None:
        sums.update(store.checksums(names))

    def save_run_file(name: str, state: Any) -> None:
        store.save_file(name, state)
        wrote(name)

    store.write_config(OmegaConf.to_yaml(cfg, resolve=True))
    wrote("config.yaml")
    shared: list[SharedFiles] = []
    loaded: dict[int, Any] = {}

    def load_run_file(name: str) -> Any:
        return load_checked(store, name)

    def load_level(k: int) -> Any:
        loaded[k] = load_run_file(store.level_name(k))
        return loaded[k]

    ctx = shared_context(RunContext(cfg, data, device, load_level=load_level,
                                    dense_cache=dense_cache(cfg, shared), quiet=cfg.quiet,
                                    run_files=FileStore(load=load_run_file, save=save_run_file),
                                    ticket_files=ticket_files(cfg, shared),
                                    # checkpoints are not checksummed: each overwrites the last, and a kill leaves summary.json behind them
                                    checkpoints=FileStore(load=load_run_file, save=store.save_file)))
    previous_log = store.read_csv("train_log.csv")
    previous_levels, previous_layers = store.read_csv("levels.csv"), store.read_csv("layers.csv")
    if previous_levels and not previous_log and "train_log.csv" in recorded:
        console.print("[yellow]warning[/yellow]: train_log.csv is gone; the training log of the restored levels is lost "
                      "(delete the run directory to recompute it).")
    loggers = open_loggers(cfg, directory)  # logger=tensorboard,mlflow,wandb (csv: the files below)

    rows: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    reached: set[int] = set()
    flops, resumed = None, 0
    timer, last = LevelTimer(cfg.hardware, data.input_shape, cfg.seed), None

    def extra() -> dict[str, Any]:
        return dict(files=dict(sums), dense_cache=_dense_use(cfg, shared))

    try:
        for level in SCHEDULES.get(cfg.schedule.name)(ctx):
            for files in shared:  # the caches this level needed are written: let other processes in
                files.release()
            if flops is None:
                flops = run_flops(level, data.input_shape, cfg.prune.layer_types)
            row, layer_rows = level_row(level, flops, cfg.prune.layer_types)
            rows.append(row)
            layers.extend(layer_rows)
            reached.add(level.level)
            last = (level.level, level.name, level.model, level.masks, row["flop_ratio"], row["connected_flop_ratio"])
            if timer.seen(*last):
                write_csv(store.path("latency.csv"), timer.rows)
                wrote("latency.csv")
            if level.restored:  # its training log was saved with it (older runs: in train_log.csv)
                resumed += 1
                saved = loaded.get(level.level) or {}
                log = saved["log"] if "log" in saved else [r for r in previous_log if r["level"] == level.level]
                ctx.train_log[:0] = log
            else:  # the level's log goes into its file too: a kill before train_log.csv is written loses nothing
                state = {"masks": level.masks.state_dict(), "metrics": level.metrics,
                         "log": [r for r in ctx.train_log if r["level"] == level.level]}
                if cfg.save_checkpoints and level.weights:
                    state["model"] = {k: v.detach().cpu() for k, v in level.model.state_dict().items()}
                store.save_level(level.level, state)
                wrote(store.level_name(level.level))
                store.remove_checkpoints(level.level)  # the level file holds what they were for
            loggers.log_level(row, [r for r in ctx.train_log if r["level"] == level.level])
            if not level.flush:  # a burst of levels reached at once (gmp's updates): tables after its last
                continue
            store.write_levels(merged(rows, previous_levels, reached))
            store.write_layers(merged(layers, previous_layers, reached))
            log = merged(ctx.train_log, previous_log, reached)
            store.write_train_log(sorted(log, key=lambda r: (r["level"], r["step"])))
            wrote("levels.csv", "layers.csv", "train_log.csv")
            store.write_summary({**_summary(cfg, directory, rows, "running", started, device), **extra()})
            console.print(f"level {row['level']} {row['name']}: sparsity {row['sparsity']:.4f}, "
                          + (f"val ppl {row['val_ppl']:.3f}, test ppl {row['test_ppl']:.3f}" if "test_ppl" in row else
                             f"val acc {row['val_acc']:.4f}, test acc {row['test_acc']:.4f}") + (" (resumed)" if level.restored else ""))
        if last is not None and timer.finish(*last):
            write_csv(store.path("latency.csv"), timer.rows)
            wrote("latency.csv")
        if timer.rows:  # levels.csv stays free of wall times (same seed, same bytes); the join goes beside it
            write_csv(store.path("levels_latency.csv"), join_latency(rows, timer.rows))
            wrote("levels_latency.csv")
    except BaseException as err:
        _mark_failed(store, {**_summary(cfg, directory, rows, "failed", started, device), **extra()}, err)
        try:  # no tracker run left RUNNING; a tracker's own failure must not hide the run's error
            loggers.finish("failed" if isinstance(err, Exception) else "interrupted", rows)
        except Exception as tracker_err:  # noqa: BLE001
            console.print(f"[yellow]warning[/yellow]: closing the trackers failed too: {tracker_err}")
        raise
    finally:
        for files in shared:
            files.release()
    status = "partial" if _left_out(cfg, rows) else "complete"
    store.remove_checkpoints()
    store.write_summary({**_summary(cfg, directory, rows, status, started, device, data.input_shape, data.num_classes), **extra()})
    loggers.finish(status, rows)
    print_levels(rows, title, console)
    print_latency(timer.rows, "latency (latency.csv)", console)
    console.print(f"Results: {directory}")
    if status == "partial":
        console.print(f"[yellow]Partial[/yellow]: levels {_left_out(cfg, rows)} were left out (schedule.only_levels); "
                      "run again without it to compute them.")
    return RunOutcome(directory, rows, resumed)


def _mark_failed(store: RunStore, summary: dict[str, Any], err: BaseException) -> None:
    """Record why the run stopped (status `failed`, or `interrupted` for Ctrl-C) without hiding the
    original error if summary.json cannot be written either."""
    if not isinstance(err, Exception):
        summary["status"] = "interrupted"
    summary["error"] = f"{type(err).__name__}: {err}"
    try:
        store.write_summary(summary)
    except Exception:  # the original error is the one to report
        pass


def _dense_use(cfg: DictConfig, shared: list[SharedFiles]) -> str | None:
    """How this invocation got the dense network: `trained` (and shared), `reused` from the cache,
    or None (not shared, or restored from the run's own level file)."""
    if not cfg.share_dense or not shared:
        return None
    dense = shared[0]
    return "trained" if "dense.pt" in dense.saved else "reused" if "dense.pt" in dense.loaded else None


def _left_out(cfg: DictConfig, rows: list[dict[str, Any]]) -> list[int]:
    """The levels the schedule left for a later invocation (its `left_out` metadata; e.g. imp's
    schedule.only_levels), none for most schedules."""
    left_out = SCHEDULES.meta(cfg.schedule.name).get("left_out")
    return [] if left_out is None else left_out(cfg, {int(r["level"]) for r in rows})


def _summary(cfg: DictConfig, directory: Path, rows: list[dict[str, Any]], status: str, started: float,
             device: torch.device, input_shape: Any = None, num_classes: Any = None) -> dict[str, Any]:
    return dict(status=status, run=directory.name, experiment=cfg.experiment, levels=len(rows),
                input_shape=None if input_shape is None else list(input_shape), num_classes=num_classes,
                final=rows[-1] if rows else None, wall_s=round(time.perf_counter() - started, 3),
                device=str(device), processes=distributed.ranks().world, torch=torch.__version__, threads=torch.get_num_threads(),
                machine=platform.machine(), processor=platform.processor() or platform.machine(),
                python=platform.python_version())
