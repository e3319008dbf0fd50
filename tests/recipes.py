"""Stand-ins for the data and models the seed-table recipes (conf/experiment/) need, so a test can
compose each recipe and run it for a few steps offline: tiny random Hugging Face models, generated
GLUE-style and WikiText-style folders, CIFAR-shaped synthetic images."""

from __future__ import annotations

import csv
from pathlib import Path

from hf_models import labelled_texts, save_tiny, save_tiny_bert

SEED_TABLE = ("gmp_bert_sst2", "sparsegpt_gpt2", "imp_resnet20_cifar10", "imp_vgg16_cifar10")
CIFAR_STANDIN = ["dataset=synthetic", "dataset.shape=[3,32,32]", "dataset.num_classes=10", "dataset.train_size=32",
                 "dataset.val_size=16", "dataset.test_size=16"]


def glue_folder(directory: Path) -> Path:
    """A GLUE SST-2-shaped folder: train.tsv and dev.tsv (`sentence<TAB>label`), an unlabelled test.tsv."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = labelled_texts(80, seed=5)
    for name, part in (("train", rows[:64]), ("dev", rows[64:])):
        with (directory / f"{name}.tsv").open("w", newline="") as f:
            w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            w.writerow(["sentence", "label"])
            w.writerows(part)
    (directory / "test.tsv").write_text("index\tsentence\n0\ta film\n")
    return directory


def wikitext_folder(directory: Path) -> Path:
    """A WikiText-2-raw-shaped folder (wiki.train.raw, wiki.valid.raw, wiki.test.raw) of pydoc text."""
    from pruneexp.data.tokens import pydoc_text

    directory.mkdir(parents=True, exist_ok=True)
    text = pydoc_text()
    for i, split in enumerate(("train", "valid", "test")):
        (directory / f"wiki.{split}.raw").write_text(text[i * 6000 : (i + 1) * 6000])
    return directory


def model_overrides(name: str, tmp_path: Path) -> list[str]:
    """The overrides that point a recipe's model.path at a tiny stand-in (none for built-in models)."""
    if name == "gmp_bert_sst2":  # bert-base-uncased as published: an encoder without a classification head
        return [f"model.path={save_tiny_bert(tmp_path / 'bert', head=False)}"]
    if name == "sparsegpt_gpt2":
        return [f"model.path={save_tiny(tmp_path / 'gpt2', 'gpt2')}"]
    if name == "posttrain_smollm2":
        return [f"model.path={save_tiny(tmp_path / 'tiny', 'llama')}"]
    return []


def standin_overrides(name: str, tmp_path: Path) -> list[str]:
    """Overrides that run the recipe `name` offline in seconds: its model and data replaced by
    stand-ins, two training steps per training phase, nothing timed."""
    common = ["hardware.levels=none", "hardware.threads=1", "quiet=true", f"dataset.cache_dir={tmp_path / 'cache'}"]
    if name == "gmp_bert_sst2":
        return [*model_overrides(name, tmp_path), f"dataset.path={glue_folder(tmp_path / 'SST-2')}", "dataset.max_length=16",
                "dataset.val_size=16", "train.duration=2it", "train.warmup=1it", "train.eval_every=1it", "schedule.start=0it",
                "schedule.end=2it", "schedule.frequency=1it", *common]
    if name == "sparsegpt_gpt2":
        return [*model_overrides(name, tmp_path), f"dataset.path={wikitext_folder(tmp_path / 'wikitext-2-raw')}",
                "dataset.block_size=32", "dataset.nsamples=8", "criterion.batches=2", "criterion.batch_size=4", *common]
    if name in ("imp_resnet20_cifar10", "imp_vgg16_cifar10"):
        return [*CIFAR_STANDIN, "train.duration=2it", "train.batch_size=16", "train.eval_every=1it", "schedule.levels=1",
                "schedule.rewind=1it", "save_checkpoints=false", *common]
    raise KeyError(name)
