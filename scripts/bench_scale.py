"""Training at scale, measured side by side in one process on this machine (issue 25).

Sections (run one or several: `python scripts/bench_scale.py a b d c`):

- (a) `stream`: images/s of `dataset=imagefolder`'s training stream (pruneexp.train.training_batches:
  per-image seeded augmentation, 2 DataLoader workers) against a bare torchvision loop
  (`torchvision.datasets.ImageFolder` + `DataLoader(shuffle=True)`, the same 2 workers, the same
  v2 transforms: RandomResizedCrop(224) + flip + ImageNet normalisation), batch 32, on a generated
  folder of JPEGs (10 classes x 50 images, sides 256-500 px) written once into $PRUNEEXP_CACHE;
  interleaved epochs after a warm-up epoch each (the workers started). Goal (issue 25): >= 0.95x.
- (b) `ddp`: samples/s of one training run of ResNet-20 on CIFAR-shaped random data (global batch
  128, SGD, pruneexp's `train()`) in 2 DDP processes on gloo (each 1 thread, 64 examples a step)
  against 1 process (1 thread, 128 examples a step); each variant in fresh processes (torch's
  multiprocessing spawn), a warm-up call untimed, interleaved repeats. Goal (issue 25): >= 1.6x on
  2 cores. The slower rank's wall time counts (a step waits for both).
- (c) `compile`: one LTH level of scripts/bench_level.py (LeNet-300-100 on MNIST, Adam, batch 60,
  validation every 100 iterations; one thread) as the runner trains it eagerly and with
  `train.compile=true`, interleaved. The timed figure is level 1's training; the graph is compiled
  while level 0 (dense) trains in the first repeat, and reused by level 1 and by later repeats
  (a new model of the same class reuses Dynamo's graph), so compilation is not in the figures. `--baseline DIR` also times another checkout's eager runner (the protocol before
  issue 9: the goal is compiled <= 0.6x of it). Then how far compiling can go on this step at all:
  the hand-written training step of bench_level (the same shapes, data and masks; no evaluation)
  eager, with the forward compiled, with the optimizer step compiled too (PyTorch's compiled-
  optimizer recipe: foreach Adam inside `torch.compile`), with forward, loss and backward compiled
  as one function plus the compiled optimizer, and the forward under `mode="max-autotune-no-
  cudagraphs"` (Inductor's CPU GEMM templates); each after a warm-up that compiles it, interleaved.
- (d) `precision`: the training step of ResNet-20 on CIFAR-shaped random data (batch 128) through
  pruneexp's `train()`, in fp32 and bf16 (`train.precision`), each also with
  `hardware.channels_last`, and fp32 and bf16 + channels-last with `train.compile=true` (compiled in
  the warm-up), interleaved repeats; ms per step (no evaluation: empty validation split) and the
  ratio to fp32.

    PRUNEEXP_CACHE=/tmp/cache python scripts/bench_scale.py a [--repeats 3]
    python scripts/bench_scale.py b [--steps 10] [--repeats 3]
    PRUNEEXP_DATA=/work/shared/data python scripts/bench_scale.py d [--threads 2] [--steps 10] [--repeats 3]
    PRUNEEXP_DATA=/work/shared/data python scripts/bench_scale.py c [--iters 3000] [--repeats 3] [--baseline DIR]

On a shared machine the figures move with its load (printed with them, from os.getloadavg); the
ratios are measured within one process on interleaved repeats, so the load hits every variant alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchgoals import Figure, write_json  # noqa: E402

FIGURES: list[Figure] = []  # what --json writes (make bench's table)


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# ---- (a) the image stream ----------------------------------------------------------------------
def bench_images() -> Path:
    """The generated JPEG folder of section (a), written once into $PRUNEEXP_CACHE (10 classes x 50
    training images of sides 256-500 px, 2 test images per class)."""
    from pruneexp.data.imagefolder import write_image_folder

    cache = Path(os.environ.get("PRUNEEXP_CACHE", Path.home() / ".cache" / "pruneexp"))
    root = cache / "bench_scale_images"
    if not (root / "done").exists():
        write_image_folder(root, classes=10, per_class=50, val_per_class=2, size=(256, 500), fmt="jpg", seed=0)
        (root / "done").write_text("10 classes x 50 jpg, 256-500 px\n")
    return root


def stream_section(opts: argparse.Namespace) -> None:
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from pruneexp.config import DatasetConfig, TrainConfig
    from pruneexp.data import load_data
    from pruneexp.data.imagefolder import recipe
    from pruneexp.train import steps_per_epoch, training_batches

    root, bs, workers = bench_images(), 32, 2
    ours = load_data(OmegaConf.structured(DatasetConfig(name="imagefolder", path=str(root), image_size=224, val_size=0,
                                                        augment=True, workers=workers)), "cpu")
    train_cfg = OmegaConf.structured(TrainConfig(batch_size=bs))
    spe = steps_per_epoch(ours, bs)
    theirs = DataLoader(ImageFolder(str(root / "train"), transform=recipe(224, train=True)), batch_size=bs, shuffle=True,
                        num_workers=workers, persistent_workers=True, prefetch_factor=2, drop_last=True)

    def ours_epoch(epoch: int) -> float:
        t0, n = time.perf_counter(), 0
        for x, _ in training_batches(ours, train_cfg, 0, epoch * spe, (epoch + 1) * spe):
            n += len(x)
        return n / (time.perf_counter() - t0)

    def theirs_epoch() -> float:
        t0, n = time.perf_counter(), 0
        for x, _ in theirs:
            n += len(x)
        return n / (time.perf_counter() - t0)

    ours_epoch(0), theirs_epoch()  # warm-up: the workers of both started
    rates: dict[str, list[float]] = {"ours": [], "theirs": []}
    before = load()
    for r in range(opts.repeats):
        rates["ours"].append(ours_epoch(r + 1))
        rates["theirs"].append(theirs_epoch())
    after = load()
    o, t = statistics.median(rates["ours"]), statistics.median(rates["theirs"])
    pairs = statistics.median(a / b for a, b in zip(rates["ours"], rates["theirs"]))
    print(f"(a) image stream at 224 px, {workers} workers, batch {bs}, {spe * bs} JPEGs an epoch ({root}), "
          f"{opts.repeats} interleaved epochs, median; {before} -> {after}")
    print(f"  pruneexp stream            {o:7.1f} images/s   (runs: {', '.join(f'{v:.1f}' for v in rates['ours'])})")
    print(f"  ImageFolder + DataLoader   {t:7.1f} images/s   (runs: {', '.join(f'{v:.1f}' for v in rates['theirs'])})")
    print(f"  stream / bare = {o / t:.2f} (medians); median of per-repeat ratios {pairs:.2f}   (goal: >= 0.95)")
    FIGURES.append(Figure("imagefolder stream / bare ImageFolder + DataLoader, images/s at 224 px, 2 workers", pairs, ">= 0.95",
                          "issue 25", f"{o:.1f} vs {t:.1f} images/s"))


# ---- (d) precision --------------------------------------------------------------------------------
def resnet20_step_ms(precision: str, channels_last: bool, steps: int, seed: int = 0, compile: bool = False) -> float:
    """ms per training step of ResNet-20 (CIFAR-10 shapes, batch 128, SGD) through pruneexp's train()
    (`compile`: train.compile=true)."""
    from pruneexp.config import TrainConfig
    from pruneexp.data import DataSplits
    from pruneexp.models import MODELS
    from pruneexp.pruning.masks import MaskSet, prunable_weights
    from pruneexp.train import train

    g = torch.Generator().manual_seed(seed)
    bs = 128
    x, y = torch.randn(bs * steps, 3, 32, 32, generator=g), torch.randint(0, 10, (bs * steps,), generator=g)
    empty_x, empty_y = x[:0], y[:0]
    data = DataSplits("cifar_shaped", x, y, empty_x, empty_y, empty_x, empty_y, 10, (3, 32, 32))
    torch.manual_seed(seed)
    model = MODELS.get("resnet20")((3, 32, 32), 10)
    cfg = OmegaConf.structured(TrainConfig(batch_size=bs, duration=f"{steps}it", eval_every=f"{steps}it", lr_schedule="constant",
                                           precision=precision, compile=compile))
    masks = MaskSet.dense(prunable_weights(model))
    t0 = time.perf_counter()
    train(model, data, masks, cfg, seed=seed, quiet=True, channels_last=channels_last)
    return 1000.0 * (time.perf_counter() - t0) / steps


def precision_section(opts: argparse.Namespace) -> None:
    # (precision, channels_last, compile): the step in fp32 and bf16, each with channels-last, and compiled
    variants = [("fp32", False, False), ("bf16", False, False), ("fp32", True, False), ("bf16", True, False),
                ("fp32", False, True), ("bf16", True, True)]
    for p, cl, c in variants:  # warm-up: oneDNN's kernels and primitive caches of each variant; Inductor's compilation
        resnet20_step_ms(p, cl, 2, compile=c)
    times: dict[tuple[str, bool, bool], list[float]] = {v: [] for v in variants}
    before = load()
    for _ in range(opts.repeats):
        for p, cl, c in variants:
            times[(p, cl, c)].append(resnet20_step_ms(p, cl, opts.steps, compile=c))
    after = load()
    flags = "avx512_bf16" if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else "no avx512_bf16"
    print(f"(d) ResNet-20 training step, CIFAR-shaped random data, batch 128, SGD, {torch.get_num_threads()} threads, "
          f"{opts.steps} steps x {opts.repeats} interleaved repeats, median; CPU {flags}; {before} -> {after}")
    base = statistics.median(times[("fp32", False, False)])
    for (p, cl, c), ts in times.items():
        m = statistics.median(ts)
        pairs = [t / f for t, f in zip(ts, times[("fp32", False, False)])]  # the same repeat: the same load
        name = p + (" + channels_last" if cl else "") + (" + compile" if c else "")
        print(f"  {name:30s} {m:8.1f} ms/step  x{m / base:.2f} of fp32 (medians); "
              f"median of per-repeat ratios x{statistics.median(pairs):.2f}   (runs: {', '.join(f'{t:.1f}' for t in ts)})")
        if (p, cl, c) != ("fp32", False, False):
            FIGURES.append(Figure(f"ResNet-20 step, {name} / fp32", statistics.median(pairs), None,
                                  "issue 25 asks for the measurement, states no goal", f"{m:.1f} vs {base:.1f} ms/step ({flags})"))


# ---- (b) one run over 2 processes (DDP) ------------------------------------------------------------
def _ddp_rank(rank: int, world: int, port: int, steps: int, out: str) -> None:
    """One rank of section (b): join a gloo group of `world` (none for 1), train ResNet-20 once
    untimed (warm-up) and once timed; write the timed seconds to `out`/rank<rank>."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from pruneexp import distributed

    distributed.init("cpu")
    resnet20_step_ms("fp32", False, 2)
    cpu = time.process_time()
    ms = resnet20_step_ms("fp32", False, steps)
    Path(out, f"rank{rank}").write_text(f"{ms * steps / 1000.0} {time.process_time() - cpu}")
    distributed.close()


def ddp_seconds(world: int, steps: int) -> tuple[float, float]:
    """Wall and CPU seconds of `steps` global steps of ResNet-20 in `world` fresh processes (the
    slowest rank's: a step waits for every rank)."""
    import socket
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_ddp_rank, args=(world, port, steps, out), nprocs=world)
        wall, cpu = zip(*(map(float, p.read_text().split()) for p in Path(out).glob("rank*")))
        return max(wall), max(cpu)


def ddp_section(opts: argparse.Namespace) -> None:
    bs = 128
    one, two, cpu_one, cpu_two = [], [], [], []
    before = load()
    for _ in range(opts.repeats):
        for rates, cpus, world in ((one, cpu_one, 1), (two, cpu_two, 2)):
            wall, cpu = ddp_seconds(world, opts.steps)
            rates.append(bs * opts.steps / wall)
            cpus.append(bs * opts.steps / cpu)
    after = load()
    a, b = statistics.median(one), statistics.median(two)
    pairs = [t / o for t, o in zip(two, one)]  # the same repeat: the same load
    cpu_ratio = statistics.median([t / o for t, o in zip(cpu_two, cpu_one)])
    print(f"(b) ResNet-20 training, CIFAR-shaped random data, global batch 128, SGD, 1 thread per process, {opts.steps} steps "
          f"x {opts.repeats} interleaved repeats, median; {os.cpu_count()} CPUs; {before} -> {after}")
    print(f"  1 process              {a:8.1f} samples/s   (runs: {', '.join(f'{v:.1f}' for v in one)})")
    print(f"  2 DDP processes (gloo) {b:8.1f} samples/s   (runs: {', '.join(f'{v:.1f}' for v in two)})")
    print(f"  2 / 1 = {b / a:.2f} (medians); median of per-repeat ratios {statistics.median(pairs):.2f}   (goal >= 1.6)")
    print(f"  per CPU second of the slowest rank: 2 / 1 = {cpu_ratio:.2f} (what the wall-clock ratio would be if each "
          "process had a core of its own; a busy machine gives them less)")
    FIGURES.append(Figure("ResNet-20 training samples/s, 2 DDP processes / 1 (1 thread each)", statistics.median(pairs), ">= 1.6",
                          "issue 25", f"{b:.1f} vs {a:.1f} samples/s; per CPU second of the slowest rank {cpu_ratio:.2f}; "
                          f"{before} -> {after}"))


# ---- (c) compile ----------------------------------------------------------------------------------
def compile_section(opts: argparse.Namespace) -> None:
    import bench_level

    torch.set_num_threads(1)
    eager, compiled, base = [], [], []
    before = load()
    for _ in range(opts.repeats):
        if opts.baseline:
            base.append(bench_level.baseline_ms(opts.baseline, opts.iters, "wall"))
        bench_level.EXTRA[:] = []
        eager.append(bench_level.pruneexp_ms(opts.iters))
        bench_level.EXTRA[:] = ["train.compile=true"]
        compiled.append(bench_level.pruneexp_ms(opts.iters))
        torch.set_num_threads(1)
    after = load()
    e, c = statistics.median(eager), statistics.median(compiled)
    print(f"(c) one lth_lenet level, {opts.iters} iterations, 1 thread, wall clock, median of {opts.repeats}; {before} -> {after}")
    print(f"  eager runner      {e:6.3f} ms/it   (runs: {', '.join(f'{v:.3f}' for v in eager)})")
    print(f"  compiled runner   {c:6.3f} ms/it   (runs: {', '.join(f'{v:.3f}' for v in compiled)})")
    print(f"  compiled / eager = {c / e:.2f}")
    FIGURES.append(Figure("one lth_lenet level: compiled / eager runner", c / e, None,
                          "issue 25's goal is against the pre-issue-9 runner (--baseline DIR), not eager",
                          f"{c:.3f} vs {e:.3f} ms/it"))
    if base:
        b = statistics.median(base)
        print(f"  baseline runner   {b:6.3f} ms/it   ({opts.baseline}; runs: {', '.join(f'{v:.3f}' for v in base)})")
        print(f"  compiled / baseline = {c / b:.2f}   eager / baseline = {e / b:.2f}   (goal: compiled <= 0.6)")
        FIGURES.append(Figure("one lth_lenet level: compiled / the old-protocol baseline", c / b, "<= 0.6", "issue 25",
                              f"{c:.3f} vs {b:.3f} ms/it ({opts.baseline})"))
    times = compile_ceiling(opts.iters, opts.repeats)
    plain = statistics.median(times["eager"])
    print(f"  how far compiling goes: the hand-written step (no evaluation), {opts.iters} steps, median of {opts.repeats}; {load()}")
    for how, runs in times.items():
        m = statistics.median(runs)
        print(f"    {how:18s} {m:6.3f} ms/step  / eager {m / plain:.2f}   (runs: {', '.join(f'{v:.3f}' for v in runs)})")
        if how != "eager":
            FIGURES.append(Figure(f"hand-written lth_lenet step: {how} compiled / eager", m / plain, None,
                                  "how far torch.compile goes at this size (no goal)", f"{m:.3f} vs {plain:.3f} ms/step"))


def _compile_ceiling_step(how: str):
    """One training step of bench_level's hand-written loop (LeNet-300-100, Adam 1.2e-3, batch 60,
    20 % of each weight masked, the masks re-applied after each step), built `how`: eager (fused
    Adam, pruneexp's default), `forward` (torch.compile of the model), `forward+optimizer` (and
    the optimizer step compiled: foreach Adam, the form torch.compile fuses), `step+optimizer`
    (forward, loss and backward one compiled function, and the compiled optimizer), `max-autotune`
    (the forward compiled in that mode). Returns step(x, y)."""
    import torch.nn.functional as F

    import bench_level

    model, weights, masks = bench_level.masked_lenet()
    compiled_opt = how in ("forward+optimizer", "step+optimizer")
    opt = torch.optim.Adam(model.parameters(), lr=1.2e-3, **({"foreach": True} if compiled_opt else {"fused": True}))
    forward = model
    if how in ("forward", "forward+optimizer"):
        forward = torch.compile(model)
    elif how == "max-autotune":
        forward = torch.compile(model, mode="max-autotune-no-cudagraphs")

    def update() -> None:
        opt.step()
        torch._foreach_mul_(weights, masks)

    def loss_backward(x, y):
        loss = F.cross_entropy(forward(x), y)
        loss.backward()
        return loss

    update_ = torch.compile(update) if compiled_opt else update
    loss_backward_ = torch.compile(loss_backward) if how == "step+optimizer" else loss_backward

    def step(x, y) -> None:
        opt.zero_grad(set_to_none=True)
        loss_backward_(x, y)
        with torch.no_grad():
            update_()
    return step


CEILING_WAYS = ("eager", "forward", "forward+optimizer", "step+optimizer", "max-autotune")


def compile_ceiling(iters: int, repeats: int) -> dict[str, list[float]]:
    """ms per step of each of CEILING_WAYS on MNIST batches in bench_level's order, interleaved."""
    import bench_level

    from pruneexp.data import load_data

    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        cfg = bench_level.compose_cfg(tmp, iters)
    data = load_data(cfg.dataset, torch.device("cpu"))
    order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(0))
    batches = [(data.train_x.index_select(0, idx), data.train_y.index_select(0, idx))
               for idx in order[: (len(order) // 60) * 60].view(-1, 60)]
    steps = {how: _compile_ceiling_step(how) for how in CEILING_WAYS}
    for step in steps.values():  # warm-up: compiles each compiled one
        for x, y in batches[:30]:
            step(x, y)
    times: dict[str, list[float]] = {how: [] for how in CEILING_WAYS}
    for _ in range(repeats):
        for how, step in steps.items():
            t0 = time.perf_counter()
            for i in range(iters):
                step(*batches[i % len(batches)])
            times[how].append(1000.0 * (time.perf_counter() - t0) / iters)
    return times


SECTIONS = {"a": stream_section, "b": ddp_section, "c": compile_section, "d": precision_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sections", nargs="+", choices=sorted(SECTIONS))
    parser.add_argument("--threads", type=int, default=None, help="(d) torch threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=10, help="(b, d) training steps per timed call")
    parser.add_argument("--iters", type=int, default=3000, help="(c) iterations of the level")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default=None, help="(c) another checkout whose eager runner is timed the same way")
    parser.add_argument("--json", default="", help="also write the figures (scripts/benchgoals.py, for make bench)")
    opts = parser.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    for name in opts.sections:
        SECTIONS[name](opts)
    if opts.json:
        write_json(opts.json, "bench_scale", torch.get_num_threads(), FIGURES)


if __name__ == "__main__":
    main()
