"""Labelled text in a pretrained model's own tokens (`dataset=text_classification`): the data of
BERT-style fine-tuning (GLUE's single-sentence tasks such as SST-2, or any local (text, label) file).

`dataset.path` is one file or a folder:
- a .csv (header row), .tsv (header row, no quoting: GLUE's layout) or .jsonl (one JSON record a
  line) file: every example; validation (`dataset.val_size`) and test (`dataset.test_size`) are held
  out of it by `dataset.split_seed`;
- a folder holding `train.<ext>` and, optionally, `dev.<ext>` (or `validation` / `valid`) and
  `test.<ext>`. The dev file is the validation split (`dataset.dev_as=validation`, the default) or the
  test split (`dataset.dev_as=test`: GLUE hides its test labels, so papers report dev accuracy; the
  validation split is then held out of train). A test file without labels (GLUE's) is left unread.
  A split no file gives is held out of train by `dataset.split_seed`, independent of the run seed.

Each record's text is its `dataset.text_field` (with the default `text` and no such column, GLUE's
`sentence`), its class its `dataset.label_field`: integers are class indices; other labels are
numbered in the sorted order of the training file's label names.

The tokenizer is the model's (`dataset.tokenizer`, by default `model.path`). Each text becomes
`dataset.max_length` ids: [CLS] text [SEP] as the tokenizer adds them, truncated, padded with the
pad token. The attention mask is the tokenizer's: the model reads it back as ids != pad id (checked
here: every text's mask is exactly its non-pad positions, and the pad id is the model config's).
Ids are cached under `dataset.cache_dir` by the sha256 of the texts, of the tokenizer and of max_length.
Every levels.csv row records max_length, the texts' and the tokenizer's sha256, and `full_rows`: the
examples that fill all max_length positions (truncated, or exactly that long), to see what a
shorter max_length would cut.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pruneexp.data.core import DATASETS, RawData
from pruneexp.data.tokens import cached_tensor, json_records
from pruneexp.errors import PruneexpError
from pruneexp.hf_local import load_tokenizer, tokenizer_identity

SUFFIXES = (".csv", ".tsv", ".jsonl")
SPLIT_STEMS = {"train": ("train",), "dev": ("dev", "validation", "valid"), "test": ("test",)}
GLUE_TEXT_FIELD = "sentence"  # GLUE's single-sentence column (SST-2, CoLA)
DEV_AS = ("validation", "test")

Record = dict[str, Any]


def read_records(path: Path) -> list[Record]:
    """The records of one .csv / .tsv / .jsonl file, as dicts (a header row names the columns)."""
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            return [record for _, record in json_records(f, path)]
    # GLUE's TSVs are tab-separated with no quoting (a sentence may hold a lone quote mark)
    style = dict(delimiter="\t", quoting=csv.QUOTE_NONE) if path.suffix == ".tsv" else {}
    with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: a spreadsheet's byte-order mark is no part of the header
        return list(csv.DictReader(f, **style))


def text_field_of(records: list[Record], field: str) -> str:
    """`field`, or GLUE's `sentence` when `field` is the default `text` and the records lack it."""
    if records and field == "text" and field not in records[0] and GLUE_TEXT_FIELD in records[0]:
        return GLUE_TEXT_FIELD
    return field


def columns(path: Path, records: list[Record], text_field: str, label_field: str, labelled: bool = True) -> tuple[str, bool]:
    """(the text column, whether the file has labels) of `records`, or a PruneexpError naming the
    option to set and the fields the file has. `labelled=False`: a file may lack labels (a test file)."""
    if not records:
        raise PruneexpError(f"{path} holds no examples.")
    first = records[0]
    field = text_field_of(records, text_field)
    if field not in first:
        raise PruneexpError(f"{path} has no text field {text_field!r}: set dataset.text_field to one of its fields "
                            f"({', '.join(map(str, first))}).")
    has_labels = label_field in first
    if labelled and not has_labels:
        raise PruneexpError(f"{path} has no label field {label_field!r}: set dataset.label_field to one of its fields "
                            f"({', '.join(map(str, first))}).")
    return field, has_labels


def examples(path: Path, text_field: str, label_field: str, labelled: bool = True) -> tuple[list[str], list[str]] | None:
    """(texts, label strings) of a file; None for a file without labels when `labelled` is False."""
    records = read_records(path)
    field, has_labels = columns(path, records, text_field, label_field, labelled)
    if not has_labels:
        return None
    texts, labels = [], []
    for number, record in enumerate(records, 1):
        text, label = record.get(field), record.get(label_field)
        if text is None or label is None or str(label).strip() == "":
            raise PruneexpError(f"{path}, example {number}: no {field if text is None else label_field!r} value.")
        texts.append(str(text))
        labels.append(str(label).strip())
    return texts, labels


def split_files(path: str) -> dict[str, Path]:
    """{train, dev?, test?: file} of `dataset.path` (a file is the train file, the rest held out)."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix not in SUFFIXES:
            raise PruneexpError(f"dataset.path={path}: a labelled text file must end in {', '.join(SUFFIXES)}.")
        return {"train": p}
    if not p.is_dir():
        raise PruneexpError(f"dataset.path={path!r} is neither a file nor a folder: give a local .csv/.tsv/.jsonl file of "
                            f"(text, label) records, or a folder with train.<ext> (and dev.<ext>, test.<ext>), e.g. GLUE's SST-2.")
    found: dict[str, Path] = {}
    for split, stems in SPLIT_STEMS.items():
        hits = [p / f"{stem}{ext}" for stem in stems for ext in SUFFIXES if (p / f"{stem}{ext}").is_file()]
        if len(hits) > 1:
            raise PruneexpError(f"dataset.path={path} holds {len(hits)} {split} files ({', '.join(h.name for h in hits)}); keep one.")
        if hits:
            found[split] = hits[0]
    if "train" not in found:
        raise PruneexpError(f"dataset.path={path} holds no train file (train{'|'.join(SUFFIXES)}).")
    return found


def class_indices(labels: dict[str, list[str]]) -> tuple[dict[str, Tensor], int, list[str]]:
    """Labels as class indices: integers as they are, other names numbered in the sorted order of
    the training split's names. ({split: indices}, number of classes, class names)."""
    every = [label for split in labels.values() for label in split]
    try:
        as_int = {s: [int(v) for v in split] for s, split in labels.items()}
    except ValueError:
        names = sorted(set(labels["train"]))
        index = {name: i for i, name in enumerate(names)}
        for split, values in labels.items():
            unknown = sorted(set(values) - set(index))
            if unknown:
                raise PruneexpError(f"the {split} split has labels the training split lacks: {', '.join(unknown[:5])}.")
        return {s: torch.tensor([index[v] for v in split]) for s, split in labels.items()}, len(names), names
    low = min(min(v) for v in as_int.values())
    if low < 0:
        raise PruneexpError(f"integer labels are class indices and must be >= 0; found {low}.")
    classes = max(max(v) for v in as_int.values()) + 1
    if classes < 2:
        raise PruneexpError(f"the labels name {classes} class; classification needs at least 2 ({len(every)} examples).")
    return {s: torch.tensor(v) for s, v in as_int.items()}, classes, [str(c) for c in range(classes)]


def encode(texts: list[str], tokenizer: Any, max_length: int, cache_dir: str) -> Tensor:
    """Token ids (len(texts), max_length) of `texts`, padded and truncated to max_length, cached by
    the sha256 of the tokenizer, max_length and the texts; refused when a text's attention mask is
    not exactly its non-pad positions (the model derives the mask from the ids)."""
    pad = tokenizer.pad_token_id

    def compute() -> Tensor:
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length)
        ids = torch.tensor(enc["input_ids"], dtype=torch.int64).view(len(texts), max_length)
        mask = torch.tensor(enc["attention_mask"], dtype=torch.bool).view(len(texts), max_length)
        bad = ((ids != pad) != mask).any(dim=1).nonzero().flatten()
        if len(bad):
            raise PruneexpError(f"the tokenizer gives the pad id {pad} inside text (e.g. example {int(bad[0]) + 1}: "
                                f"{texts[int(bad[0])][:60]!r}); its attention mask cannot be read back from the ids.")
        return ids

    body = json.dumps([tokenizer_identity(tokenizer), max_length, texts])
    return cached_tensor(cache_dir, "text_classification", hashlib.sha256(body.encode()).hexdigest()[:24], compute)


def check_pad(tokenizer: Any, cfg: Any) -> int:
    """The tokenizer's pad id, which must be the one the model at dataset.tokenizer pads with."""
    pad = tokenizer.pad_token_id
    if pad is None:
        raise PruneexpError(f"the tokenizer at dataset.tokenizer={cfg.tokenizer} has no padding token, and dataset=text_classification "
                            "pads every text to dataset.max_length; save the tokenizer with a pad token (an encoder such as BERT has one).")
    config = Path(str(cfg.tokenizer)).expanduser() / "config.json"
    if config.is_file():
        model_pad = json.loads(config.read_text(encoding="utf-8")).get("pad_token_id")
        if model_pad is not None and model_pad != pad:
            raise PruneexpError(f"the tokenizer pads with id {pad} and the model at {cfg.tokenizer} with {model_pad} "
                                f"(config.json pad_token_id); make them agree.")
    return pad


@DATASETS.register("text_classification", shape="(dataset.max_length,) token ids of the model's tokenizer",
                   classes="the labels' classes", size="the local file(s) at dataset.path")
def load_text_classification(cfg: Any) -> RawData:
    """Labelled local text in the model's own tokens (module docstring): token ids padded to
    dataset.max_length, labels as class indices; dev and test splits from files where given."""
    max_length, dev_as = int(cfg.max_length), str(cfg.dev_as)
    if max_length < 2:
        raise PruneexpError(f"dataset.max_length={max_length} must be at least 2 (BERT's [CLS] and [SEP]; GLUE's usual 128).")
    if dev_as not in DEV_AS:
        raise PruneexpError(f"dataset.dev_as={dev_as!r}: the dev file is the {' or the '.join(DEV_AS)} split.")
    if not cfg.tokenizer:
        raise PruneexpError("dataset=text_classification reads text in a model's own tokens: use it with model=hf "
                            "model.head=sequence_classification (its model.path gives the tokenizer) or set dataset.tokenizer.")
    if not cfg.path:
        raise PruneexpError("dataset=text_classification needs dataset.path: a local .csv/.tsv/.jsonl file of (text, label) "
                            "records or a folder with train/dev/test files (e.g. GLUE's SST-2).")
    named = {"train": "train", "dev": dev_as, "test": "test"}
    read: dict[str, tuple[Path, tuple[list[str], list[str]]]] = {}
    for split, file in split_files(str(cfg.path)).items():
        got = examples(file, cfg.text_field, cfg.label_field, labelled=split != "test")
        if got is None:
            continue
        if named[split] in read:
            raise PruneexpError(f"{read[named[split]][0].name} and {file.name} both give the {named[split]} split "
                                f"(dataset.dev_as={dev_as}); use dataset.dev_as=validation.")
        read[named[split]] = (file, got)
    labels, classes, names = class_indices({s: got[1] for s, (_, got) in read.items()})
    tokenizer = load_tokenizer(str(cfg.tokenizer), str(cfg.tokenizer_gguf), "dataset.tokenizer")
    pad = check_pad(tokenizer, cfg)
    ids = {s: encode(got[0], tokenizer, max_length, str(cfg.cache_dir)) for s, (_, got) in read.items()}
    full_rows = sum(int((x[:, -1] != pad).sum()) for x in ids.values())  # a full row: the text filled or overflowed it
    digest = hashlib.sha256(json.dumps({s: got for s, (_, got) in sorted(read.items())}).encode()).hexdigest()
    meta = dict(max_length=max_length, text_sha256=digest[:16], tokenizer_sha256=tokenizer_identity(tokenizer)[:16],
                full_rows=full_rows)
    held = [s for s in ("validation", "test") if s not in read]
    source = ", ".join(f"{file.name} as {s} ({len(got[0])})" for s, (file, got) in read.items())
    source += f"; {' and '.join(held)} held out of train by dataset.split_seed" if held else ""
    source += f"; classes {', '.join(names)}" if len(names) <= 10 else f"; {len(names)} classes"
    val = read.get("validation")
    return RawData(ids["train"], labels["train"], ids.get("test"), labels.get("test"), classes, (max_length,),
                   val_x=None if val is None else ids["validation"], val_y=None if val is None else labels["validation"],
                   meta=meta, source=source)
