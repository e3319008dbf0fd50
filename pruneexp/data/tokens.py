"""Text in a pretrained model's own tokens (`dataset=tokens`): the calibration and evaluation
protocol of the SparseGPT and Wanda reference codes (their `datautils.py` / `data.py`).

    calibration  = dataset.nsamples windows of seqlen tokens at seeded random offsets of the
                   training text's token ids (x = ids[i : i+seqlen], y = ids[i+1 : i+seqlen+1])
    evaluation   = the test text's ids cut into n = len // seqlen non-overlapping windows; in each,
                   the seqlen - 1 next-token predictions are scored (the last target is ignored)
    perplexity   = exp(sum of NLL / number of predicted tokens)   (both reference codes' ppl)

seqlen is `dataset.block_size`; the offsets come from `dataset.split_seed` (the reference's
`--seed`), so every run seed calibrates on the same windows unless the split seed changes.

The tokenizer is the model's (`dataset.tokenizer`, by default `model.path`, and
`dataset.tokenizer_gguf`, by default `model.gguf_file`). Token ids are cached under
`dataset.cache_dir` by the sha256 of the text and of the tokenizer, so a text is tokenized once.

Text sources (`dataset.path`):
- none: the help topics every Python ships (`pydoc_data.topics`);
- a .txt file, or a folder of .txt / .jsonl / .jsonl.gz / .json.gz / .parquet files (each record's
  `dataset.text_field`), documents joined by blank lines in file-name order;
- a WikiText-2 raw folder (`wiki.train.raw`, `wiki.valid.raw`, `wiki.test.raw`): the reference
  reads each split's lines and tokenizes train as " ".join(lines), valid and test as "\\n\\n".join(lines);
- a C4 folder (`c4-train.*.json.gz` and `c4-validation.*.json.gz` shards, as the references read
  them): calibration from the train shard, evaluation on " ".join of the first 1100 validation
  documents cut to 256 windows (the references' `valenc[:, :256 * seqlen]`). One simplification:
  the references draw each calibration window inside one random document longer than seqlen;
  here the windows are drawn from the train documents joined by blank lines.
Text with no named splits is split by position: the first 85 % trains (calibration), the next 5 %
validates, the last 10 % tests.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from pruneexp.data.core import DATASETS, RawData
from pruneexp.errors import PruneexpError
from pruneexp.hf_local import load_tokenizer, tokenizer_identity
from pruneexp.io import save_torch

TOKEN_SPLITS = (0.85, 0.05, 0.10)  # train / validation / test by position, for text with no named splits
IGNORE = -100  # a target no loss or metric counts (torch's cross_entropy ignore_index)
C4_EVAL_DOCUMENTS, C4_EVAL_WINDOWS = 1100, 256  # the references' C4 evaluation: valdata[:1100], 256 windows
TEXT_SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".json.gz", ".parquet")


def pydoc_text() -> str:
    """The help topics of the standard library (pydoc_data.topics), joined in key order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def _open_text(path: Path) -> Any:
    return gzip.open(path, "rt", encoding="utf-8", errors="replace") if path.suffix == ".gz" else path.open(encoding="utf-8", errors="replace")


def documents(path: Path, field: str) -> Iterator[str]:
    """The documents of one file: a .txt file whole; one record's `field` per line of JSON lines
    (.jsonl, .jsonl.gz, C4's .json.gz); each row's `field` of a parquet file."""
    name = path.name
    if name.endswith(".txt") or name.endswith(".raw"):
        yield path.read_text(encoding="utf-8", errors="replace")
        return
    if name.endswith(".parquet"):
        import pandas as pd

        frame = pd.read_parquet(path)
        if field not in frame:
            raise PruneexpError(f"{path} has no column {field!r} (dataset.text_field); its columns: {', '.join(frame.columns)}.")
        yield from (str(t) for t in frame[field])
        return
    with _open_text(path) as f:
        for number, record in json_records(f, path):
            if field not in record:
                raise PruneexpError(f"{path}, line {number}: no field {field!r} (dataset.text_field).")
            yield str(record[field])


def json_records(lines: Iterator[str], path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of each non-blank line of a JSON-lines file; a line that is not a JSON
    object is refused, naming the file and the line."""
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise PruneexpError(f"{path}, line {number}: not a JSON record ({err.msg}).") from None
            if not isinstance(record, dict):
                raise PruneexpError(f"{path}, line {number}: a JSON record must be an object with named fields.")
            yield number, record


def by_position(text: str) -> dict[str, str]:
    """train / validation / test text cut by position (TOKEN_SPLITS)."""
    a = math.floor(TOKEN_SPLITS[0] * len(text))
    b = a + math.floor(TOKEN_SPLITS[1] * len(text))
    return {"train": text[:a], "validation": text[a:b], "test": text[b:]}


def split_texts(path: str, field: str = "text") -> tuple[dict[str, str], str]:
    """({train, validation, test: text}, how they were read) from `path` (module docstring)."""
    if not path:
        return by_position(pydoc_text()), "pydoc_data.topics by position 85/5/10 %"
    p = Path(path).expanduser()
    if p.is_file():
        if not p.name.endswith(TEXT_SUFFIXES):
            raise PruneexpError(f"dataset.path={path}: a text file must end in {', '.join(TEXT_SUFFIXES)}.")
        return by_position("\n\n".join(documents(p, field))), f"{p.name} by position 85/5/10 %"
    if not p.is_dir():
        raise PruneexpError(f"dataset.path={path} is neither a file nor a folder; give local text (a .txt file, a folder of "
                            "text files, WikiText-2 raw or C4 shards), or no path for the pydoc help topics.")
    wiki = {s: p / f"wiki.{s}.raw" for s in ("train", "valid", "test")}
    if all(f.is_file() for f in wiki.values()):
        lines = {s: f.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True) for s, f in wiki.items()}
        return {"train": " ".join(lines["train"]), "validation": "\n\n".join(lines["valid"]),
                "test": "\n\n".join(lines["test"])}, "WikiText-2 raw (wiki.{train,valid,test}.raw)"
    c4_train, c4_val = sorted(p.glob("c4-train.*.json.gz")), sorted(p.glob("c4-validation.*.json.gz"))
    if c4_train and c4_val:
        val_docs = []
        for f in c4_val:
            for doc in documents(f, field):
                val_docs.append(doc)
                if len(val_docs) == C4_EVAL_DOCUMENTS:
                    break
            if len(val_docs) == C4_EVAL_DOCUMENTS:
                break
        train = "\n\n".join(d for f in c4_train[:1] for d in documents(f, field))
        # no validation split of its own: the evaluation documents after the first 1100 would be
        # another reading; the validation text is the last 5 % of the train shard's text instead
        cut = math.floor(0.95 * len(train))
        return {"train": train[:cut], "validation": train[cut:], "test": " ".join(val_docs)}, "C4 shards (train: first shard; test: 1100 validation documents)"
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(TEXT_SUFFIXES))
    if not files:
        raise PruneexpError(f"dataset.path={path} holds no text ({', '.join(TEXT_SUFFIXES)}, WikiText-2 raw or C4 shards).")
    return by_position("\n\n".join(d for f in files for d in documents(f, field))), f"{len(files)} files by position 85/5/10 %"


def cached_tensor(cache_dir: str, folder: str, key: str, compute: Callable[[], Tensor]) -> Tensor:
    """`compute()`, kept in <cache_dir>/<folder>/<key>.pt (written atomically) and read back from
    there the next time; a damaged cache file is recomputed and rewritten."""
    cache = Path(cache_dir).expanduser() / folder / f"{key}.pt"
    if cache.is_file():
        try:
            return torch.load(cache, weights_only=True)
        except Exception:  # damaged: recomputed and rewritten below
            pass
    value = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_torch(value, cache)
    return value


def token_ids(text: str, tokenizer: Any, cache_dir: str) -> Tensor:
    """The ids of `text` under `tokenizer` (as the references call it: tokenizer(text), special
    tokens as the tokenizer adds them), cached by the sha256 of the text and of the tokenizer."""
    key = hashlib.sha256((tokenizer_identity(tokenizer) + "\0" + text).encode()).hexdigest()[:24]
    return cached_tensor(cache_dir, "tokens", key,
                         lambda: torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.int64))


def calibration_windows(ids: Tensor, nsamples: int, seqlen: int, seed: int) -> tuple[Tensor, Tensor]:
    """`nsamples` windows of `seqlen` tokens at random offsets i in [0, len - seqlen - 1] (numpy's
    default_rng(seed)): x = ids[i : i+seqlen] and their next tokens y = ids[i+1 : i+seqlen+1]."""
    last = len(ids) - seqlen - 1
    if last < 0:
        raise PruneexpError(f"the training text has {len(ids)} tokens, fewer than dataset.block_size + 1 = {seqlen + 1}.")
    starts = torch.from_numpy(np.random.default_rng(seed).integers(0, last + 1, size=nsamples))
    offsets = starts[:, None] + torch.arange(seqlen)[None]
    return ids[offsets], ids[offsets + 1]


def evaluation_windows(ids: Tensor, seqlen: int, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """n = len // seqlen non-overlapping windows x of seqlen tokens (at most `limit`), and targets y
    with y[:, t] = x[:, t+1] and the last target IGNORE: each window scores its seqlen - 1 next-token
    predictions, as the references' `shift_logits` / `shift_labels` do."""
    n = len(ids) // seqlen if limit is None else min(limit, len(ids) // seqlen)
    if n < 1:
        raise PruneexpError(f"an evaluation text of {len(ids)} tokens holds no window of dataset.block_size = {seqlen} tokens.")
    x = ids[: n * seqlen].view(n, seqlen).clone()
    y = torch.full_like(x, IGNORE)
    y[:, :-1] = x[:, 1:]
    return x, y


@DATASETS.register("tokens", shape="(dataset.block_size,) token ids of the model's tokenizer", classes="the tokenizer's vocabulary",
                   size="dataset.nsamples calibration windows; validation and test text in non-overlapping windows")
def load_tokens(cfg: Any) -> RawData:
    """Local text in the model's own tokens (module docstring): train = dataset.nsamples seeded
    calibration windows, validation and test = non-overlapping windows with seqlen - 1 scored targets."""
    seqlen, nsamples = int(cfg.block_size), int(cfg.nsamples)
    if seqlen < 2 or nsamples < 1:
        raise PruneexpError(f"dataset=tokens needs dataset.block_size >= 2 and dataset.nsamples >= 1 (got {seqlen}, {nsamples}).")
    if not cfg.tokenizer and not cfg.tokenizer_gguf:
        raise PruneexpError("dataset=tokens reads text in a model's own tokens: use it with model=hf (its model.path gives the "
                            "tokenizer) or set dataset.tokenizer=<a local model directory>.")
    tokenizer = load_tokenizer(str(cfg.tokenizer), str(cfg.tokenizer_gguf), "dataset.tokenizer")
    texts, source = split_texts(str(cfg.path), str(cfg.text_field))
    ids = {s: token_ids(t, tokenizer, str(cfg.cache_dir)) for s, t in texts.items()}
    train_x, train_y = calibration_windows(ids["train"], nsamples, seqlen, int(cfg.split_seed))
    limit = int(cfg.eval_windows) or (C4_EVAL_WINDOWS if source.startswith("C4") else None)
    val_x, val_y = evaluation_windows(ids["validation"], seqlen, limit)
    test_x, test_y = evaluation_windows(ids["test"], seqlen, limit)
    digest = hashlib.sha256("\0".join(texts[s] for s in ("train", "validation", "test")).encode()).hexdigest()
    meta = dict(nsamples=nsamples, seqlen=seqlen, text_sha256=digest[:16], eval_tokens=int((test_y != IGNORE).sum()),
                tokenizer_sha256=tokenizer_identity(tokenizer)[:16])
    vocab = max(len(tokenizer), int(max(int(i.max()) for i in ids.values())) + 1)
    return RawData(train_x, train_y, test_x, test_y, vocab, (seqlen,), task="language_model", val_x=val_x, val_y=val_y,
                   meta=meta, source=source)
