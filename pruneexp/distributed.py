"""One run over several processes (torch.distributed DDP): who this process is, the process group,
and the few collective moves the runner, the prune step and the training loop make.

How a run spans processes (issue 25):
- Started by `torchrun --nproc-per-node=N -m pruneexp run ...`, by `hardware.devices=N` (the CLI
  starts torchrun's launcher itself, `launch`), or by SLURM tasks (submitit's `tasks_per_node`);
  the rank and world come from the environment (`Ranks.from_env`).
- gloo on CPU, nccl on CUDA (each rank on `cuda:LOCAL_RANK`). The process group has a timeout
  (`hardware.dist_timeout_s`), and torchrun's agent stops every rank when one dies, so a dead rank
  fails the run instead of hanging it.
- Rank 0 (the leader) alone reads and writes the run directory, the shared caches and the trackers;
  what it reads it hands to the others (`shared`), so every rank runs the schedule on the same state.
- The training data: each rank takes its shard of every global batch (train/loop.py); DDP averages
  the gradients, so a step is the 1-process step on the same global batch up to float rounding.
- Masks are selected once, on rank 0, over the full scoring batches (the data is resident in every
  rank), and broadcast with the weights the criterion changed (`pruning/step.py`); evaluation runs on
  rank 0 and its numbers are broadcast (`on_leader`). The records are those of a 1-process run.
- Two process groups: DDP (and SyncBatchNorm) train in the default one, which torch keeps alive for
  good once DDP has used it; pruneexp's own collectives (`on_leader`, `broadcast_`, `mean_`) run in
  a group of their own that `close` destroys, its threads joined before Python shuts down
  (`_make_run_group`).

Everything is torch.distributed's own (init_process_group, DistributedDataParallel,
broadcast_object_list, the elastic launcher); this module only chooses when to call them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import uuid
import weakref
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pruneexp.errors import PruneexpError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: global rank, number of processes, rank on its node."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @classmethod
    def from_env(cls) -> "Ranks":
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK, else the SLURM step's SLURM_PROCID /
        SLURM_STEP_NUM_TASKS / SLURM_LOCALID (set by srun for each task, so a batch script that
        merely holds an allocation of several tasks is one process), else the task of submitit's
        local executor (SUBMITIT_LOCAL_GLOBALID / _NTASKS / _LOCALID), else a single process."""
        env = os.environ
        if "RANK" in env and "WORLD_SIZE" in env:
            return cls(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
        if int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1 and "SLURM_PROCID" in env:
            return cls(int(env["SLURM_PROCID"]), int(env["SLURM_STEP_NUM_TASKS"]), int(env.get("SLURM_LOCALID", 0)))
        if int(env.get("SUBMITIT_LOCAL_NTASKS", "1")) > 1 and "SUBMITIT_LOCAL_GLOBALID" in env:
            # submitit's local executor (hydra/launcher=submitit_local with tasks_per_node=N): SLURM's tasks on one machine
            return cls(int(env["SUBMITIT_LOCAL_GLOBALID"]), int(env["SUBMITIT_LOCAL_NTASKS"]), int(env.get("SUBMITIT_LOCAL_LOCALID", 0)))
        return cls()


def ranks() -> Ranks:
    """This process's Ranks: from the process group once it is up, else from the environment."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), Ranks.from_env().local)
    return Ranks.from_env()


def active() -> bool:
    """Whether this process is one of several of one run (the process group is up)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def leader() -> bool:
    """Whether this process writes: rank 0, or the only process."""
    return not active() or dist.get_rank() == 0


def init(device: str, timeout_s: int = DEFAULT_TIMEOUT_S) -> torch.device:
    """Join the run's process group when the environment says there are several processes (gloo
    on CPU, nccl on CUDA, env:// rendezvous) and return this rank's device: `cuda:LOCAL_RANK` for
    `hardware.device=cuda`, else `device`. A single process returns `device` untouched."""
    me = Ranks.from_env()
    if me.world <= 1:
        return torch.device(device)
    cuda = torch.device(device).type == "cuda"
    if cuda and torch.device(device).index is not None:
        raise PruneexpError(f"hardware.device={device}: with several processes each one takes the GPU of its local rank; "
                            "use hardware.device=cuda.")
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:  # SLURM (or submitit's local) tasks: submitit derives it from the job's node list
            _export_submitit_master()
        os.environ.setdefault("RANK", str(me.rank))
        os.environ.setdefault("WORLD_SIZE", str(me.world))
        os.environ.setdefault("LOCAL_RANK", str(me.local))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
        # `pruneexp run` closes after its jobs; a job run in a task of Hydra's submitit launcher, or
        # the runner called from a script, is closed here before the interpreter shuts down
        atexit.register(close)
    here = torch.device(device)
    if cuda:
        here = torch.device("cuda", me.local % torch.cuda.device_count())  # one GPU per task (--gpus-per-task): cuda:0
        torch.cuda.set_device(here)
    if _RUN_GROUP is None:
        _make_run_group()
    return here


def _export_submitit_master() -> None:
    """MASTER_ADDR / MASTER_PORT of a SLURM step from its node list, or of submitit's local tasks
    (localhost), by submitit's helper (a port drawn from the job id, the same in every task)."""
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        raise PruneexpError("Several SLURM tasks but no MASTER_ADDR: install submitit (pip install "
                            "hydra-submitit-launcher) or export MASTER_ADDR and MASTER_PORT.") from None
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


_RUN_GROUP: Any = None  # the group of pruneexp's own collectives (on_leader, broadcast_, mean_)


def _make_run_group() -> None:
    """A group of all the ranks for pruneexp's own collectives, beside the default group that DDP
    (and SyncBatchNorm) train in. Why two: torch keeps the default group alive for good once a
    DistributedDataParallel exists (even after the wrapper is gone and the group destroyed), and
    with it its gloo worker threads. A worker thread that lets go of a finished collective's tensors
    takes the GIL to release their Python objects; one that does so while the interpreter shuts
    down is ended by Python inside a C++ destructor (std::terminate, SIGABRT: torchrun reported a
    rank dead after a complete run, ~1 in 20 two-process runs on 2 busy cores). The run's last
    collectives are pruneexp's (evaluations handed on, the deferred test); on a group nothing else
    holds, `close` destroys them and joins their threads while Python still runs. The default
    group's last collective is a training step's, long finished by then."""
    global _RUN_GROUP
    _RUN_GROUP = dist.new_group(ranks=list(range(dist.get_world_size())))


def close() -> None:
    """Leave and destroy the process groups (end of this process's runs); the run group's threads
    end here (`_make_run_group`)."""
    global _RUN_GROUP
    if dist.is_available() and dist.is_initialized():
        forget_wrappers()
        dist.destroy_process_group()
        _RUN_GROUP = None  # its last reference: the group's destructor joins its worker threads now


def shared(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` run by rank 0 alone, its result handed to every rank (broadcast_object_list): how the
    other ranks read the run directory and the shared caches without touching them. Every rank
    must call it at the same point. One process: `fn` itself."""
    def call(*args: Any, **kwargs: Any) -> T:
        return on_leader(lambda: fn(*args, **kwargs))
    return call


def on_leader(fn: Callable[[], T]) -> T:
    """fn() on rank 0, its value broadcast to every rank; an exception on rank 0 is raised on every
    rank (a PruneexpError keeps its message), so no rank waits for a value that never comes."""
    if not active():
        return fn()
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as err:  # handed on, then raised here too
            box[0] = ("error", err)
    dist.broadcast_object_list(box, src=0, group=_RUN_GROUP)
    kind, value = box[0]
    if kind == "error":
        if dist.get_rank() == 0:
            raise value
        raise PruneexpError(f"rank 0 failed: {value}") if isinstance(value, PruneexpError) else RuntimeError(f"rank 0 failed: {value!r}")
    return value


def share(value: T) -> T:
    """Rank 0's `value` on every rank."""
    return on_leader(lambda: value)


def broadcast_(tensors: list[Tensor]) -> None:
    """Overwrite `tensors` on every rank with rank 0's (in place)."""
    if active():
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0, group=_RUN_GROUP)


def mean_(t: Tensor) -> Tensor:
    """`t` replaced in place by its mean over the ranks (SUM / world: gloo has no AVG)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=_RUN_GROUP)
        t.div_(dist.get_world_size())
    return t


def per_rank_batch(batch_size: int, world: int) -> int:
    """The examples each rank trains on per step: the global batch (train.batch_size, what the run
    hash holds) divided by the number of processes; a PruneexpError when it does not divide."""
    if batch_size % world:
        lower, upper = batch_size - batch_size % world, batch_size + world - batch_size % world
        raise PruneexpError(f"train.batch_size={batch_size} is the global batch, split evenly over {world} processes; "
                            f"it does not divide: use a multiple of {world} (e.g. {lower} or {upper}) or another process count.")
    return batch_size // world


_WRAPPED: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], nn.Module]]" = weakref.WeakKeyDictionary()


def data_parallel(model: nn.Module) -> nn.Module:
    """`model` under DistributedDataParallel when the run spans processes (gradients averaged over
    the ranks in backward; BatchNorm buffers broadcast from rank 0 at each forward), else `model`.
    The wrapper shares the model's parameters, so masks re-applied to them hold for it. One wrapper
    per model object while its parameters stay the same (a model trained again, at the next level,
    keeps its wrapper, and so train.compile's compiled wrapper of it and Dynamo's cache)."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    params = tuple(id(p) for p in model.parameters())
    known = _WRAPPED.get(model)
    if known is not None and known[0] == params:
        return known[1]
    device = next(model.parameters()).device
    wrapper = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    _WRAPPED[model] = (params, wrapper)
    return wrapper


def forget_wrappers() -> None:
    """Drop the DDP wrappers `data_parallel` keeps (end of a run). Each wrapper holds its model, so
    a weak key alone never lets either go: every model a sweep trained would stay in memory."""
    _WRAPPED.clear()


@contextlib.contextmanager
def synced_batchnorm(model: nn.Module) -> Iterator[None]:
    """On CUDA under DDP, every BatchNorm of `model` normalises by the statistics of the whole global
    batch (torch's SyncBatchNorm) while training, so a step is the 1-process step and the process
    count stays out of the run hash. The modules become SyncBatchNorm in place (same parameters
    and buffers, same state_dict) and return to their own class after: the rest of pruneexp
    (shrink, graph, measure) keeps seeing plain BatchNorm. On CPU torch's SyncBatchNorm does not run
    (it refuses CPU tensors), so there each rank normalises by its own shard (DDP's default)."""
    device = next(model.parameters(), torch.empty(0)).device
    if not active() or device.type != "cuda":
        yield
        return
    swapped = [(m, type(m)) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               and not isinstance(m, nn.SyncBatchNorm)]
    for m, _ in swapped:
        m.__class__ = nn.SyncBatchNorm  # hand-written: torch converts to SyncBatchNorm but has no way back
        m.process_group = None
    try:
        yield
    finally:
        for m, cls in swapped:
            m.__class__ = cls


def launch(nprocs: int, args: list[str], entrypoint: str | None = None) -> None:
    """Run `python -m pruneexp <args>` (or `python <entrypoint> <args>`) in `nprocs` processes on
    this machine through torchrun's launcher (torch.distributed.launcher.api: a c10d rendezvous on a
    free local port, like `torchrun --standalone`); a rank that fails stops every other one and the
    launch raises a PruneexpError naming the rank, its exit code and its error."""
    import sys

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nprocs, run_id=f"pruneexp-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5)
    command = [sys.executable, "-m", "pruneexp"] if entrypoint is None else [sys.executable, entrypoint]
    # each process its share of the cores (torchrun's own CLI gives each 1), unless the caller chose
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = threads or str(max(1, (os.cpu_count() or 1) // nprocs))
    try:
        elastic_launch(config, entrypoint=command[0])(*command[1:], *args)
    except ChildFailedError as err:
        (rank, first), *rest = sorted(err.failures.items(), key=lambda kv: kv[1].timestamp)
        then = "; then " + ", ".join(f"rank {r} {_failure_text(f)}" for r, f in rest) if rest else ""
        raise PruneexpError(f"rank {rank} of {nprocs} {_failure_text(first)}, and the run stopped with it (torchrun ends every "
                            f"rank when one fails{then}). Started again, the run resumes from its last finished level or "
                            "checkpoint.") from None
    finally:
        if threads is None:
            del os.environ["OMP_NUM_THREADS"]


# how gloo's transport says a peer process is gone (its socket closed or reset under a collective)
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer")


def lost_peer(err: BaseException) -> str | None:
    """For an error raised in a collective because another rank died: one line saying so, with
    gloo's (or torch's network) message; else None (a real error, left to its traceback). The rank
    that died first is named by the launcher (`launch`), so this rank's traceback says nothing more."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, dist.DistNetworkError) or (isinstance(err, RuntimeError) and any(p in text for p in _PEER_LOST)):
        me = ranks()
        return (f"rank {me.rank} of {me.world} lost its connection to another rank of the run, which has stopped ({text}). "
                "The launcher's message names the rank that failed first.")
    return None


def record_error(message: str) -> None:
    """Leave `message` where torchrun's agent reads a failed rank's error (TORCHELASTIC_ERROR_FILE,
    torch's own error handler), so the launcher's error names it; nothing outside torchrun."""
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import get_error_handler

        get_error_handler().record_exception(PruneexpError(message))


def _failure_text(failure: Any) -> str:
    """'died (SIGKILL)' or 'exited with 2: <its recorded error>' for one failed rank."""
    if failure.exitcode < 0:
        return f"died ({failure.signal_name()})"
    message = failure.message
    if isinstance(message, dict):  # the error file torch's error handler writes: {"message": ..., "extraInfo": ...}
        message = message.get("message", message)
    text = str(message or "").strip()
    return f"exited with {failure.exitcode}" + (f" ({text.splitlines()[-1]})" if text and "elastic/errors.html" not in text else "")
