"""dataset=imagefolder: images streamed from class folders by DataLoader workers (ImageNet style).

Layout (`dataset.path`): `train/<class>/*.jpg` and, optionally, `val/<class>/*.jpg` with the same
class folder names (ImageNet after the usual val preparation, Imagenette); Tiny-ImageNet's
`val/images/` + `val/val_annotations.txt` is read too. Files are listed by torchvision's
ImageFolder rules (`find_classes` / `make_dataset`: sorted class folders, any depth below them,
torchvision's image extensions); labels are the sorted class folder indices of `train/`.

Splits (the same seeded rule as the resident datasets, `pruneexp.data.core.split_indices`):
- test = `val/` when it exists (selection never reads it); without it, `dataset.test_size` images
  are held out of `train/` as test by `dataset.split_seed`;
- validation = `dataset.val_size` images held out of (the rest of) `train/` by `dataset.split_seed`:
  a uniform random subset, the same for every run seed; training = the images left.

Transforms: torchvision.transforms.v2's standard ImageNet recipe on the RGB image (read as
ImageFolder reads it): training RandomResizedCrop(image_size) + RandomHorizontalFlip
(`dataset.augment=true`); evaluation (and training with augment=false) Resize(image_size / 0.875)
+ CenterCrop(image_size); then float in [0, 1] and, with `dataset.normalize`, the ImageNet mean/std.

Every batch is a function of (seed, epoch, step): the loop picks the epoch's order (the same
`batch_order` as resident data), and each training image's augmentation draws from torch's RNG
seeded by `augment_seeds(seed, epoch)[position]` inside whichever process decodes it, so 0, 2 or
16 workers give the same tensors, and a resumed or rewound run reads what an uninterrupted one did.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pruneexp.data.core import DATASETS, split_indices
from pruneexp.errors import PruneexpError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 0.875  # evaluation resizes the short side to image_size / 0.875 (224 -> 256), then center-crops
SPLITS = ("train", "val", "test")

LAYOUT = ("Lay it out as <path>/train/<class>/<image> (and optionally <path>/val/<class>/<image> with the same class "
          "folders, used as the test split), e.g. ImageNet or Imagenette extracted as they ship; set dataset.path=<path>.")


def recipe(image_size: int, train: bool, normalize: bool = True) -> Callable[[Any], Tensor]:
    """torchvision.transforms.v2's standard ImageNet recipe for an RGB image (PIL or uint8 tensor),
    made a uint8 (3, H, W) tensor first: training RandomResizedCrop + RandomHorizontalFlip,
    evaluation Resize(image_size / 0.875) + CenterCrop; then float32 in [0, 1], normalised by the
    ImageNet mean and std when `normalize`."""
    from torchvision.transforms import v2

    geometry = ([v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()] if train else
                [v2.Resize(int(image_size / RESIZE_RATIO), antialias=True), v2.CenterCrop(image_size)])
    tail = [v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)] if normalize else []
    return v2.Compose([v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), *tail])


def read_rgb(path: str) -> Any:
    """The image at `path` as an RGB PIL image, read as torchvision's ImageFolder reads it
    (`default_loader`: grey and CMYK files converted). Not torchvision.io.decode_image: torchvision
    0.29 deprecates its image decoding in favour of TorchCodec, which pruneexp does not require."""
    from torchvision.datasets.folder import default_loader

    return default_loader(path)


class KeyedImages(Dataset):
    """Images addressed by a key (index, augmentation seed): seed < 0 reads the image through the
    evaluation transform, seed >= 0 through the training transform with torch's RNG seeded by it.
    The global RNG of the process that decodes is restored after each batch (workers=0 decodes in
    the training process, whose RNG drives dropout and is saved in snapshots)."""

    def __init__(self, samples: Sequence[tuple[str, int]], train_transform: Callable, eval_transform: Callable):
        self.samples = list(samples)
        self.train_transform, self.eval_transform = train_transform, eval_transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> list[tuple[Tensor, int]]:
        out, cpu_rng = [], torch.default_generator
        state = cpu_rng.get_state()  # one save/restore per batch, not per image
        try:
            for index, seed in keys:
                path, label = self.samples[index]
                image = read_rgb(path)
                if seed < 0:
                    out.append((self.eval_transform(image), label))
                else:
                    # the CPU generator alone: torch.manual_seed also queues a CUDA seeding, with a
                    # stack trace each time (0.17 ms an image, seen here)
                    cpu_rng.manual_seed(seed)
                    out.append((self.train_transform(image), label))
        finally:
            cpu_rng.set_state(state)
        return out


class BatchPlan:
    """A batch sampler whose batches are set before each pass (`plan`): one DataLoader (and one set
    of persistent workers) serves every epoch, evaluation or scoring pass. Batches are made lazily
    from tensors, so an ImageNet epoch costs no list of a million keys."""

    def __init__(self) -> None:
        self.keys, self.seeds, self.batch_size = torch.zeros(0, dtype=torch.long), None, 1

    def plan(self, keys: Tensor, batch_size: int, seeds: Optional[Tensor] = None) -> None:
        """Read the images `keys` (indices into KeyedImages) in order, `batch_size` at a time (the last
        batch may be short), with training augmentation seeded by `seeds` (None: evaluation)."""
        self.keys, self.seeds, self.batch_size = keys, seeds, int(batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        keys, seeds, bs = self.keys, self.seeds, self.batch_size  # the plan of this pass, whatever is planned next
        for a in range(0, len(keys), bs):
            batch = keys[a : a + bs].tolist()
            yield list(zip(batch, [-1] * len(batch) if seeds is None else seeds[a : a + bs].tolist()))

    def __len__(self) -> int:
        return -(-len(self.keys) // self.batch_size)


def augment_seeds(seed: int, epoch: int, n: int) -> Tensor:
    """The augmentation seed of each of the `n` training images in `epoch` (indexed by the image's
    position in the training split): a function of (seed, epoch, index), drawn from a generator of
    its own (not the epoch order's), non-negative 63-bit integers."""
    digest = hashlib.sha256(f"pruneexp/augment/{int(seed)}/{int(epoch)}".encode()).digest()
    g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    return torch.randint(0, 2**63 - 1, (n,), generator=g)


@dataclass
class StreamSplits:
    """Train / validation / test splits of images on disk, read in batches by DataLoader workers.

    The fields the rest of pruneexp reads from DataSplits are here too (name, num_classes,
    input_shape, task, floor, meta, the label tensors and `device`); the images come from `batches`.
    Two DataLoaders share one KeyedImages: one for training passes, one for evaluation and scoring
    (those run in the middle of a training pass, so they need workers of their own)."""

    name: str
    images: KeyedImages
    train_idx: Tensor  # indices into images.samples
    val_idx: Tensor
    test_idx: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    device: torch.device
    augment: bool = True
    loader_options: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"
    floor: Optional[float] = None
    meta: dict = field(default_factory=dict)
    source: str = ""
    _loaders: dict[str, tuple[DataLoader, BatchPlan]] = field(default_factory=dict, repr=False)
    train_y: Tensor = field(init=False, repr=False)  # the labels of each split, on CPU
    val_y: Tensor = field(init=False, repr=False)
    test_y: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        labels = torch.tensor([label for _, label in self.images.samples], dtype=torch.long)
        self.train_y, self.val_y, self.test_y = (labels[self.split_indices(s)] for s in SPLITS)  # on CPU

    def split_indices(self, split: str) -> Tensor:
        """The indices into `images.samples` of `split` (train, val or test)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return {"train": self.train_idx, "val": self.val_idx, "test": self.test_idx}[split]

    def _loader(self, kind: str) -> tuple[DataLoader, BatchPlan]:
        if kind not in self._loaders:
            plan = BatchPlan()
            opts = dict(self.loader_options)
            workers = int(opts.pop("workers", 0))
            extra = dict(persistent_workers=bool(opts.get("persistent_workers", True)),
                         prefetch_factor=int(opts.get("prefetch_factor", 2))) if workers > 0 else {}
            # a generator of its own: a DataLoader draws its workers' base seed from the global RNG by
            # default, which would move the training process's RNG (dropout) with every pass
            loader = DataLoader(self.images, batch_sampler=plan, num_workers=workers, generator=torch.Generator(),
                                pin_memory=bool(opts.get("pin_memory", True)) and self.device.type == "cuda", **extra)
            self._loaders[kind] = (loader, plan)
        return self._loaders[kind]

    def batches(self, split: str, positions: Tensor, batch_size: int, seeds: Optional[Tensor] = None,
                kind: str = "eval") -> Iterator[tuple[Tensor, Tensor]]:
        """(x, y) batches on the run's device of the images at `positions` of `split`, in that order,
        `batch_size` at a time; training augmentation seeded per image by `seeds` (aligned with
        `positions`; None: the evaluation transform). `kind` names the DataLoader ("train" or "eval"):
        a pass of one may run inside a pass of the other, never inside one of its own."""
        loader, plan = self._loader(kind)
        plan.plan(self.split_indices(split)[positions.cpu()], batch_size, seeds)
        non_blocking = self.device.type == "cuda"
        for x, y in loader:
            yield x.to(self.device, non_blocking=non_blocking), y.to(self.device, non_blocking=non_blocking)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Every image of `split` in stored order through the evaluation transform."""
        return self.batches(split, torch.arange(len(self.split_indices(split))), batch_size)

    def train_batches(self, positions: Tensor, batch_size: int, seed: int, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Training batches of the images at `positions` (of the epoch's order): augmented with the
        seeds of (seed, epoch) when `augment`, else through the evaluation transform."""
        seeds = augment_seeds(seed, epoch, len(self.train_idx))[positions.cpu()] if self.augment else None
        return self.batches("train", positions, batch_size, seeds, kind="train")


def _listing(root: Path, class_to_idx: Optional[dict[str, int]] = None) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """(path, label) of every image under `root`'s class folders (torchvision's ImageFolder rules)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if class_to_idx is None:
        _, class_to_idx = find_classes(str(root))
    return make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True), class_to_idx


def _tiny_imagenet_val(val: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """Tiny-ImageNet's validation layout: val/images/<file> labelled by val/val_annotations.txt
    (tab-separated: file, class, box). Hand-written: torchvision has no reader for it."""
    samples = []
    for line in (val / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1] in class_to_idx:
            samples.append((str(val / "images" / parts[0]), class_to_idx[parts[1]]))
    return samples


def _missing(what: str) -> PruneexpError:
    return PruneexpError(f"dataset=imagefolder: {what}. {LAYOUT}")


def list_images(path: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[str]]:
    """(train samples, test samples, class names) of the folder `path` (see the module docstring);
    a PruneexpError naming the expected layout when it is not there."""
    if not path:
        raise _missing("dataset.path is not set")
    root = Path(path).expanduser()
    train = root / "train"
    if not train.is_dir():
        raise _missing(f"no training folder {train}" + ("" if root.is_dir() else f" ({root} does not exist)"))
    try:
        train_samples, class_to_idx = _listing(train)
    except (FileNotFoundError, OSError) as err:
        raise _missing(f"{train} holds no class folders ({err})") from None
    if not train_samples:
        raise _missing(f"{train} has class folders but no images in them")
    val, test_samples = root / "val", []
    if (val / "val_annotations.txt").is_file():
        test_samples = _tiny_imagenet_val(val, class_to_idx)
    elif val.is_dir():
        from torchvision.datasets.folder import find_classes

        unknown = sorted(set(find_classes(str(val))[0]) - set(class_to_idx))
        if unknown:
            raise _missing(f"{val} has class folders that {train} lacks ({', '.join(unknown[:5])}); both must name the same classes")
        test_samples, _ = _listing(val, class_to_idx)
        if not test_samples:
            raise _missing(f"{val} holds no images")
    return train_samples, test_samples, sorted(class_to_idx, key=class_to_idx.get)


@DATASETS.register("imagefolder", streamed=True, shape="(3, dataset.image_size, dataset.image_size)", classes="class folders of train/",
                   size="images under dataset.path/train (and val/ as test), streamed by DataLoader workers")
def load_imagefolder(cfg: Any, device: torch.device) -> StreamSplits:
    """The StreamSplits of `cfg.path` (module docstring: layout, splits, transforms, seeding)."""
    size = int(cfg.image_size)
    train_samples, test_samples, classes = list_images(str(cfg.path))
    has_test = bool(test_samples)
    train_idx, val_idx, test_idx = split_indices("imagefolder", len(train_samples), int(cfg.val_size), int(cfg.test_size),
                                                 has_test=has_test, split_seed=int(cfg.split_seed))
    if has_test:
        test_idx = torch.arange(len(train_samples), len(train_samples) + len(test_samples))
    images = KeyedImages([*train_samples, *test_samples], recipe(size, True, cfg.normalize), recipe(size, False, cfg.normalize))
    options = dict(workers=int(cfg.workers), pin_memory=bool(cfg.pin_memory), persistent_workers=bool(cfg.persistent_workers),
                   prefetch_factor=int(cfg.prefetch_factor))
    where = "val/" if has_test else f"{len(test_idx)} images held out of train/"
    return StreamSplits("imagefolder", images, train_idx, val_idx, test_idx, len(classes), (3, size, size), torch.device(device),
                        augment=bool(cfg.augment), loader_options=options,
                        source=f"{cfg.path}: {len(classes)} classes, {len(train_idx)} train / {len(val_idx)} val / "
                               f"{len(test_idx)} test ({where}), {int(cfg.workers)} workers")


def write_image_folder(root: str | Path, classes: int = 3, per_class: int = 8, val_per_class: int = 0,
                       size: tuple[int, int] = (40, 40), fmt: str = "png", seed: int = 0) -> Path:
    """Write a generated stand-in of an ImageNet-style folder (tests, benchmarks, a dry run without
    ImageNet): `root`/train/c<k>/<i>.<fmt> (and val/ with `val_per_class` per class), each image
    of a side drawn uniformly from `size` = (lo, hi), a class colour plus smooth noise, so a small
    network can learn the classes. Deterministic in `seed`; returns `root`."""
    import torch.nn.functional as F
    from PIL import Image

    root, g = Path(root), torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    colours = torch.rand(classes, 3, 1, 1, generator=g)
    for split, count in (("train", per_class), ("val", val_per_class)):
        for k in range(classes if count else 0):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = (int(torch.randint(size[0], size[1] + 1, (1,), generator=g)) for _ in range(2))
                noise = F.interpolate(torch.rand(1, 3, max(2, h // 8), max(2, w // 8), generator=g), size=(h, w), mode="bilinear")[0]
                image = (255 * (0.6 * colours[k] + 0.4 * noise)).clamp(0, 255).to(torch.uint8)
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.{fmt}", quality=90)
    return root
