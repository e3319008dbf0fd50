"""Structured-config schemas: one dataclass per config group (registered in Hydra's ConfigStore by
`pruneexp.conf_store`, which sits above the method registries that own the methods' schemas).

`conf/config.yaml` lists `config_schema` first in its defaults, so every value a user gives is
checked against these types (a typo in a key or a string where a number belongs fails before any
work). Names (dataset, model, criterion, schedule) and ranges are checked by `validate`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from omegaconf import MISSING

from pruneexp.errors import PruneexpError


@dataclass
class DatasetConfig:
    name: str = MISSING
    # Where torchvision datasets live (read only). PRUNEEXP_DATA, then ./data.
    root: str = "${oc.env:PRUNEEXP_DATA,./data}"
    # Where generated datasets (mnist1d) are cached; never the (possibly shared, read-only) root.
    cache_dir: str = "${oc.env:PRUNEEXP_CACHE,${oc.env:HOME,.}/.cache/pruneexp}"
    download: bool = True  # torchvision download when missing and the network allows it
    val_size: int = 5000  # held out of the training set by split_seed
    test_size: int = 0  # only for datasets with no official test split (digits, synthetic)
    split_seed: int = 0  # fixed: the same validation split for every run seed
    augment: bool = False  # random crop (pad 4) + horizontal flip, on the device, per batch
    normalize: bool = True  # per-channel mean/std of the training split
    # synthetic only
    shape: List[int] = field(default_factory=lambda: [1, 8, 8])
    num_classes: int = 10
    train_size: int = 512  # (markov: sequences generated for train + validation)
    # language modelling (markov, text); left out of the run hash at these values
    block_size: int = 64  # tokens per sequence (the model's context)
    path: str = ""  # text: a local text file ("" = the help topics every Python ships, pydoc_data.topics)
    vocab_size: int = 16  # markov: symbols
    order: int = 2  # markov: the next symbol depends on the last `order` symbols
    concentration: float = 0.3  # markov: Dirichlet concentration of each transition row (lower = lower entropy)
    chain_seed: int = 0  # markov: the chain itself (the sequences drawn from it use split_seed)
    # tokens (text in a model's own tokens): calibration windows, the record field of JSON/parquet
    # text, and the tokenizer (by default the model's: model.path / model.gguf_file)
    nsamples: int = 128
    eval_windows: int = 0  # at most this many validation and test windows (0: every window of the text)
    text_field: str = "text"
    tokenizer: str = "${oc.select:model.path,''}"
    tokenizer_gguf: str = "${oc.select:model.gguf_file,''}"
    # text_classification (labelled text in a model's own tokens; text_field above names the text):
    label_field: str = "label"  # the record field / column holding each example's class
    max_length: int = 128  # tokens per example: padded and truncated to it (BERT fine-tuning's max_seq_length)
    dev_as: str = "validation"  # a folder's dev file: the validation split, or the test split (GLUE: test labels hidden)
    # imagefolder (streamed from disk, pruneexp/data/imagefolder.py): the side of the square crop
    # the model sees (RandomResizedCrop for training; Resize to size/0.875, CenterCrop for evaluation)
    image_size: int = 224
    # DataLoader workers that decode and transform images (imagefolder). How the data are read, not
    # what they are: every sample's augmentation is seeded by (seed, epoch, index), so any number
    # of workers gives the same batches (NON_RESULT_KEYS, out of the run hash).
    workers: int = 4
    pin_memory: bool = True  # page-locked batches for an asynchronous copy to a CUDA device (ignored on CPU)
    persistent_workers: bool = True  # keep the workers alive between passes (workers > 0)
    prefetch_factor: int = 2  # batches each worker prepares ahead (workers > 0)


@dataclass
class ModelConfig:
    """Keys every model takes. A model with constructor arguments registers a subclass beside its
    code (`@MODELS.register("mlp", config=MlpConfig)`); its extra keys go to the constructor as
    keyword arguments, as timm's `create_model(name, **kwargs)`."""

    name: str = MISSING
    source: str = "pruneexp"  # or "torchvision": any torchvision classification model by name
    init: str = "default"  # default | kaiming_normal | glorot_normal | glorot_uniform | variance_scaling
    # Start from trained weights: a file torch.load(weights_only=True) reads as a state_dict, or as a
    # dict holding one under "model" (a pruneexp level file, levels/level_NNN.pt, or a dense.pt), e.g.
    # a network trained on another dataset (transfer). Its identity in the run hash is the file's
    # sha256, not its path; "" (the default) draws the weights from `init` and leaves hashes as they were.
    weights: str = ""


@dataclass
class CriterionConfig:
    """Keys every criterion takes; a criterion with options registers a subclass beside its code
    (`register_criterion(..., config=ObdConfig)`), so only its own options exist and are hashed."""

    name: str = MISSING
    batches: int = 8  # batches the score is estimated on (several, not one)
    batch_size: int = 128


@dataclass
class PruneConfig:
    scope: str = "global"  # global | layerwise | erk (LAMP: criterion=lamp with scope global)
    granularity: str = "weight"  # weight | channel | nm | block
    group_reduce: str = "sum"  # how element scores become group scores: sum | mean | l2
    exclude: List[str] = field(default_factory=list)  # parameter-name globs, or @first / @last
    layer_rates: Dict[str, float] = field(default_factory=dict)  # glob|@first|@last -> rate multiplier
    # glob|@first|@last -> the layer's own final sparsity (layerwise scope; layers not named get
    # `sparsity`); e.g. Han et al. 2015's per-layer densities. imp reaches it over its levels.
    layer_sparsity: Dict[str, float] = field(default_factory=dict)
    layer_types: List[str] = field(default_factory=lambda: ["linear", "conv"])
    n: int = 2  # N:M
    m: int = 4
    block: List[int] = field(default_factory=lambda: [4, 4])
    # Prune each layer's bias with its weights, the two ranked together as one vector (Greydanus's
    # MNIST-1D notebook); weight granularity, criteria scoring each entry alone (magnitude, random).
    biases: bool = False


@dataclass
class TrainConfig:
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 5e-4
    batch_size: int = 128
    duration: str = "20ep"  # "40ep" or "5000it"
    lr_schedule: str = "cosine"  # constant | multistep | cosine | linear (constant to milestones[0], then to 0)
    milestones: List[str] = field(default_factory=list)  # multistep: durations, e.g. ["10ep", "15ep"]
    gamma: float = 0.1
    warmup: str = "0it"  # linear warm-up from 0
    eval_every: str = "1ep"
    eval_batch_size: int = 2000
    # fused (default): one kernel for the whole update, the fastest implementation torch has on CPU
    # and CUDA, deterministic (a test holds it to that); Adam on LeNet-300-100 takes ~0.3 instead of
    # ~1.4 ms a step. foreach: torch's multi-tensor step, the same bits as its single-tensor loop and
    # as every run made before this option existed (a config without the key is read as foreach), so
    # `train.optimizer_impl=foreach` finds and reproduces those runs; fused rounds differently, so its
    # runs have their own hash.
    optimizer_impl: str = "fused"
    # shuffle: a new permutation of the training split every epoch, from (seed, epoch); fixed: the
    # split in its stored order every epoch, batch i = examples [i*bs, (i+1)*bs) (Greydanus's
    # MNIST-1D notebook, `bix = step * batch_size % n`)
    batch_order: str = "shuffle"
    # The forward pass and loss under torch.autocast in this dtype: fp32 (none) | bf16 | fp16 (with a
    # GradScaler, its state in snapshots and checkpoints). Weights and optimizer stay float32 (train/accel.py).
    precision: str = "fp32"
    # torch.compile of the model for the training step (Inductor: a C++ compiler on CPU, Triton on CUDA);
    # evaluation stays eager. Kernels round differently, so compiled runs have their own hash.
    compile: bool = False
    # The training loss's label smoothing (Szegedy et al. 2016; torchvision's ImageNet recipe: 0.1):
    # cross-entropy against (1 - eps) one-hot + eps / classes. Evaluation losses stay unsmoothed.
    label_smoothing: float = 0.0


@dataclass
class FinetuneConfig:
    duration: str = "10ep"
    lr: float = 0.01
    lr_schedule: str = "cosine"
    warmup: str = "0it"


@dataclass
class ScheduleConfig:
    """Keys every schedule takes; each schedule registers its own subclass beside its code."""

    name: str = MISSING


@dataclass
class RegularizerConfig:
    """Keys every regularizer takes (`regularizer=` group, pruneexp/regularizers/); a method with
    options registers a subclass beside its code. `none` (the default) is left out of the run hash."""

    name: str = "none"
    strength: float = 1.0e-4  # λ
    update: str = "proximal"  # subgradient (added to the loss) | proximal (a prox step after the optimizer step)
    # At the end of training: weights with |w| <= threshold (units with ‖w_g‖₂ <= threshold) are pruned.
    threshold: float = 1.0e-3
    # Target mode: after thresholding, the selector prunes on to this sparsity (null: off); the
    # sparsity the penalty alone reached is the level before it.
    target_sparsity: Optional[float] = None


@dataclass
class HardwareConfig:
    name: str = MISSING
    device: str = "cpu"  # cpu | cuda | cuda:N
    threads: Optional[int] = None  # torch.set_num_threads; None leaves torch's default
    # Latency (pruneexp.measure.latency): forms to build, check and time, and the timing protocol.
    dtype: str = "float32"  # float32 | float16 | bfloat16 (the forms' dtype; training stays float32)
    batch_sizes: List[int] = field(default_factory=lambda: [1, 64])
    forms: List[str] = field(default_factory=lambda: ["dense", "masked", "csr", "shrunk"])
    levels: str = "ends"  # which levels `pruneexp run` / `bench` time: all | ends (first, last) | final | none
    warmup: int = 3  # untimed calls before timing
    min_reps: int = 10  # timed calls: at least this many ...
    min_time_s: float = 0.03  # ... and at least this much timed work (seconds)
    compile: bool = False  # torch.compile each form before timing (train.compile compiles training)
    # Training in channels-last memory order (the model's 4-d weights and each image batch, NHWC): the
    # fast layout of oneDNN / cuDNN convolutions; other kernels, other rounding, so in the run hash.
    channels_last: bool = False
    tolerance: float = 1.0e-4  # max |y_form - y_masked| / max |y_masked| for a form to be timed
    # Mid-training checkpoints ("5ep", "2000it"; null: none): taken at evaluation steps at most this
    # often, so a killed run continues from the last one with the same bits (pruneexp.train.checkpoint).
    # How the job runs, not what it computes: a NON_RESULT_KEY, out of the run hash.
    checkpoint_every: Optional[str] = None
    # One run over this many processes (torch.distributed DDP, one per GPU, or per CPU group with gloo):
    # `pruneexp run` starts them itself through torchrun's launcher. train.batch_size stays the global
    # batch, split over the processes, so the count is how the job runs, not what it computes: a
    # NON_RESULT_KEY. Under torchrun or SLURM tasks the environment's process count is used instead.
    devices: int = 1
    # A collective that waits longer than this (a rank that hangs) fails the run (torch.distributed's timeout).
    dist_timeout_s: int = 1800


@dataclass
class CsvLoggerConfig:
    """The run directory's own files (levels.csv, train_log.csv, ...): always written."""


@dataclass
class TensorBoardLoggerConfig:
    log_dir: str = "${results_dir}/tensorboard"  # each run logs to <log_dir>/<experiment>/<run hash>


@dataclass
class MlflowLoggerConfig:
    tracking_uri: str = ""  # "" = sqlite:///<results_dir>/mlflow.db (absolute): `mlflow ui --backend-store-uri` that, no server
    experiment_name: str = "${experiment}"
    log_artifacts: bool = True  # the run directory's files as artifacts at the end
    log_checkpoints: bool = False  # ... including levels/level_NNN.pt


@dataclass
class WandbLoggerConfig:
    project: str = "pruneexp"
    entity: Optional[str] = None
    mode: str = "offline"  # offline | online | disabled; offline needs no network (`wandb sync` uploads later)
    dir: str = "${results_dir}"  # wandb writes <dir>/wandb/offline-run-*


@dataclass
class LoggerConfig:
    """`logger=[csv,tensorboard,mlflow,wandb]` (conf/logger/): each one selected is a non-null node."""

    csv: Optional[CsvLoggerConfig] = None
    tensorboard: Optional[TensorBoardLoggerConfig] = None
    mlflow: Optional[MlflowLoggerConfig] = None
    wandb: Optional[WandbLoggerConfig] = None


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    # Typed by the chosen method's own schema (its YAML's `defaults: [<name>_schema]`).
    model: Any = MISSING
    criterion: Any = MISSING
    schedule: Any = MISSING
    # sparsity from the loss (schedule=regularized); `none` leaves the run hash as it was
    regularizer: Any = field(default_factory=RegularizerConfig)
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # experiment trackers; not hashed
    prune: PruneConfig = field(default_factory=PruneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    experiment: str = "default"
    sparsity: float = 0.9  # fraction of prunable weights removed at the end of the schedule
    seed: int = 0
    # Output locations and display: they do not change results, so the run hash ignores them.
    results_dir: str = "${oc.env:PRUNEEXP_RESULTS,results}"
    quiet: bool = False
    save_checkpoints: bool = True
    # Reuse the trained dense network of an earlier run with the same data, model, training and
    # seed (OpenLTH shares one pretraining among its pruning branches the same way).
    share_dense: bool = True
    # A sweep over criteria x granularities skips the pairs a criterion cannot score instead of failing.
    skip_unsupported: bool = False


# Keys that do not change what a run computes; the run hash leaves them out.
NON_RESULT_KEYS = ("results_dir", "quiet", "share_dense", "save_checkpoints", "skip_unsupported", "dataset.root", "dataset.cache_dir",
                   "dataset.download", "dataset.workers", "dataset.pin_memory",
                   "dataset.persistent_workers", "dataset.prefetch_factor", "schedule.only_levels", "logger", "hardware.checkpoint_every",
                   "schedule.offload", "hardware.devices", "hardware.dist_timeout_s")
# The part of a config that determines dense training: runs agreeing on it share one dense network.
DENSE_KEYS = ("dataset", "model", "train", "seed", "hardware.device", "hardware.channels_last")


BASE_SCHEMAS = {"model": ModelConfig, "criterion": CriterionConfig, "schedule": ScheduleConfig, "regularizer": RegularizerConfig}

# The keys every model, criterion and schedule node had before each method owned its schema (one
# shared dataclass per group, all of whose keys were hashed), with their values then. The run hash
# fills a node's missing keys from here, so a config whose values are unchanged keeps the hash of
# its finished runs (users' results are found, not recomputed). These are constants: options a
# method does not have cannot be set on it, so they never tell two runs apart.
LEGACY_HASH_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": dict(source="pruneexp", widths=None, init="default"),
    "criterion": dict(batches=8, batch_size=128, p=1.0, variant="", probes=8, damping=0.01, source="activations", options={}),
    "schedule": dict(finetune=dict(duration="10ep", lr=0.01, lr_schedule="cosine", warmup="0it"), levels=15, rate=0.2,
                     target=None, retrain="rewind", rewind="0it", start="0it", end="1ep", frequency="100it",
                     initial_sparsity=0.0, iterations=None),
}


# Keys added since runs were first hashed, with the value under which they compute exactly what
# runs did before they existed: at that value a key is left out of the hash (so finished runs keep
# their names); any other value enters it.
HASH_NEUTRAL: dict[str, Any] = {"model.weights": "", "schedule.score_lr": None, "schedule.score_weight_decay": None,
                                "train.optimizer_impl": "foreach", "train.batch_order": "shuffle", "prune.biases": False,
                                "prune.layer_sparsity": {}, "schedule.rounds": "geometric", "schedule.mask_step": None,
                                "dataset.block_size": 64, "dataset.path": "", "dataset.vocab_size": 16, "dataset.order": 2,
                                "dataset.concentration": 0.3, "dataset.chain_seed": 0,
                                "dataset.nsamples": 128, "dataset.text_field": "text", "dataset.tokenizer": "",
                                "dataset.tokenizer_gguf": "", "model.gguf_file": "", "model.dtype": "float32",
                                "criterion.precision": "float64", "dataset.eval_windows": 0, "regularizer.ema": 0.0,
                                "regularizer.train_clip_variance": "all", "schedule.sparse_init": "dense", "model.conv_relu": False,
                                "train.precision": "fp32", "train.compile": False, "hardware.channels_last": False,
                                "dataset.label_field": "label", "dataset.max_length": 128, "dataset.dev_as": "validation",
                                "model.head": "causal_lm",
                                "dataset.image_size": 224, "train.label_smoothing": 0.0}
# Groups added since runs were first hashed whose whole node is left out of the hash while its name
# is this value (runs without a regularizer keep their names).
HASH_NEUTRAL_GROUPS = {"regularizer": "none"}


def implied(resolved: dict[str, Any], neutral_keys: str, has_key: Callable[[str, Any, str], bool] | None = None) -> dict[str, Any]:
    """`resolved` with each method node completed with LEGACY_HASH_DEFAULTS, and HASH_NEUTRAL keys and
    groups "dropped" where at their neutral value (a regularizer node named "none" left out) or
    "filled" in at it where missing (a missing regularizer node read as {name: none}): the two
    readings of "a key a run predates means its neutral value". A key is filled only where
    `has_key(group, method name, key)` says the method has it (`conf_store.has_key`, which reads the
    method registries: this module sits below them)."""
    if neutral_keys == "filled" and has_key is None:
        raise ValueError("implied(..., 'filled') needs has_key: use pruneexp.conf_store.comparable_view")
    out = dict(resolved)
    for group, legacy in LEGACY_HASH_DEFAULTS.items():
        if isinstance(out.get(group), dict):
            out[group] = {**legacy, **out[group]}
    for key, neutral in HASH_NEUTRAL.items():
        group, leaf = key.split(".")
        node = out.get(group)
        if not isinstance(node, dict):
            continue
        if neutral_keys == "dropped" and leaf in node and node[leaf] == neutral:
            out[group] = {k: v for k, v in node.items() if k != leaf}
        elif neutral_keys == "filled" and leaf not in node and has_key(group, node.get("name"), leaf):
            out[group] = {**node, leaf: neutral}
    for group, neutral in HASH_NEUTRAL_GROUPS.items():
        node = out.get(group)
        if neutral_keys == "dropped" and isinstance(node, dict) and node.get("name") == neutral:
            del out[group]
        elif neutral_keys == "filled" and (node is None or isinstance(node, dict) and node.get("name") == neutral):
            out[group] = {"name": neutral}  # a run that predates the group ran as its neutral method
    return out


def hash_view(resolved: dict[str, Any]) -> dict[str, Any]:
    """The resolved config as the run hash reads it: each method node completed with
    LEGACY_HASH_DEFAULTS, and HASH_NEUTRAL keys at their neutral value left out (see both)."""
    out = implied(resolved, "dropped")
    if isinstance(out.get("model"), dict) and out["model"].get("weights"):  # the weights' identity, not their path
        out["model"] = {**out["model"], "weights": "sha256:" + file_sha256(out["model"]["weights"])}
    model, data = out.get("model"), out.get("dataset")
    if isinstance(model, dict) and model.get("name") == "hf" and model.get("path"):  # a local model: its files, not its path
        source = (model["path"], model.get("gguf_file", ""))
        if isinstance(data, dict) and (data.get("tokenizer", ""), data.get("tokenizer_gguf", "")) == source:
            data = out["dataset"] = {k: v for k, v in data.items() if k not in ("tokenizer", "tokenizer_gguf")}  # the model's own
        out["model"] = {**model, "path": "sha256:" + model_files_sha256(*source)}
        out["model"].pop("gguf_file", None)
    if isinstance(data, dict) and data.get("tokenizer"):
        out["dataset"] = {**data, "tokenizer": "sha256:" + model_files_sha256(data["tokenizer"], data.get("tokenizer_gguf", ""))}
        out["dataset"].pop("tokenizer_gguf", None)
    return out


def model_files_sha256(path: str, gguf_file: str = "") -> str:
    """The identity of a local model: the sha256 of its GGUF file, or of the (name, sha256) list of
    every file in its directory; cached per (path, size, mtime) within a process."""
    import hashlib
    from pathlib import Path

    root = Path(path).expanduser()
    files = [root / gguf_file] if gguf_file else sorted(f for f in root.rglob("*") if f.is_file())
    if not files or not all(f.is_file() for f in files):
        raise PruneexpError(f"model.path={path}: no model files to identify the run by (a directory with config.json, or "
                            f"the GGUF file {gguf_file!r} in it).")
    listing = "\n".join(f"{f.relative_to(root)}:{_file_digest(str(f), f.stat().st_size, f.stat().st_mtime_ns)}" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def file_sha256(path: str) -> str:
    """The sha256 of the file at `path` (hex), or a PruneexpError saying it cannot be read."""
    import hashlib

    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as err:
        raise PruneexpError(f"model.weights={path}: cannot read the weights file ({err.strerror or err}); give the path of a "
                            f"state_dict or a pruneexp level file (results/<experiment>/<run>/levels/level_NNN.pt).") from None
