"""Datasets, loaded once into tensors resident on the run's device (airbench / nanoGPT style).

Batches are drawn by index from the resident tensors (no DataLoader, no per-sample transforms).
Validation is held out of the training set by `dataset.split_seed`, independent of the run seed;
selection decisions read validation accuracy, test accuracy is only reported.

    splits = load_data(cfg.dataset, device)   # -> DataSplits
    DATASETS.get("mnist")(cfg.dataset)        # -> RawData on CPU (the registered loaders)
"""

from pruneexp.data.augment import CropFlip, crop_flip, random_crop_flip
from pruneexp.data.core import DATASETS, DataSplits, RawData, load_data, normalize_stats
from pruneexp.data import sources as _sources  # noqa: F401  (registers the datasets)
from pruneexp.data import language as _language  # noqa: F401  (registers markov and text)
from pruneexp.data import tokens as _tokens  # noqa: F401  (registers tokens: text in a model's own tokenizer)
from pruneexp.data import text_classification as _text_classification  # noqa: F401  (labelled text in a model's tokens)
from pruneexp.data.sources import mnist1d_cache_file

__all__ = [
    "DATASETS",
    "DataSplits",
    "RawData",
    "load_data",
    "normalize_stats",
    "CropFlip",
    "crop_flip",
    "random_crop_flip",
    "mnist1d_cache_file",
]
