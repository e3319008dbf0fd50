"""The BERT row: model=hf model.head=sequence_classification fine-tuned on dataset=text_classification
and pruned while it trains by gmp and by movement (Sanh et al. 2020's setting: the encoder's linears
pruned, embeddings, pooler and classifier dense). A tiny random BERT with an offline WordPiece
tokenizer, on generated text whose label is whether a keyword occurs; nothing downloaded."""

from __future__ import annotations

import csv
import json
import shutil

import pandas as pd
import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[hf]')")

from hf_models import labelled_texts, save_tiny_bert  # noqa: E402
from pruneexp.data import DATASETS, load_data  # noqa: E402
from pruneexp.errors import PruneexpError  # noqa: E402
from pruneexp.hf_local import load_tokenizer  # noqa: E402
from pruneexp.runner import run, run_directory  # noqa: E402
from pruneexp.validate import typed_config, validate  # noqa: E402

SANH = "prune.exclude=[*pooler*,*classifier*]"  # Sanh et al.: the encoder's linears only


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A tiny BertForSequenceClassification (2 labels) saved with its tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny")


def write(path, rows, fmt, text="text", label="label"):
    """(text, label) rows as a .csv / .tsv (header row) or .jsonl file at `path`."""
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({text: t, label: y}) + "\n" for t, y in rows))
        return path
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t" if fmt == "tsv" else ",", quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL)
        w.writerow([text, label])
        w.writerows(rows)
    return path


def data_cfg(make_cfg, bert, path, *extra):
    return make_cfg("model=hf", "model.head=sequence_classification", f"model.path={bert}", "dataset=text_classification",
                    f"dataset.path={path}", "dataset.max_length=16", "dataset.val_size=100", "dataset.test_size=100",
                    f"dataset.cache_dir={path.parent / 'cache'}", *extra)


FINETUNE = ["train.optimizer=adamw", "train.lr=3e-3", "train.weight_decay=0", "train.batch_size=32", "train.duration=60it",
            "train.eval_every=20it", "train.lr_schedule=constant", "sparsity=0.5", SANH, "hardware.levels=none",
            "hardware.threads=1", "quiet=true"]
SCHEDULES = {"gmp": ["schedule=gmp", "schedule.end=30it", "schedule.frequency=10it"],
             "movement": ["schedule=movement", "schedule.end=40it", "schedule.score_lr=1e-2", "schedule.score_weight_decay=0"]}


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_bert_pruned_while_fine_tuning_on_its_encoder_linears_only(make_cfg, bert, tmp_path, schedule):
    path = write(tmp_path / "train.csv", labelled_texts(600, seed=1), "csv")
    out = run(data_cfg(make_cfg, bert, path, *SCHEDULES[schedule], *FINETUNE))
    levels, layers = pd.read_csv(out.directory / "levels.csv"), pd.read_csv(out.directory / "layers.csv")
    final = levels.iloc[-1]
    assert final["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert set(layers["layer"]) == {f"model.bert.encoder.layer.{i}.{name}.weight" for i in range(2) for name in
                                    ("attention.self.query", "attention.self.key", "attention.self.value",
                                     "attention.output.dense", "intermediate.dense", "output.dense")}
    kept = layers[layers.level == final["level"]]
    assert kept["nonzero"].sum() == pytest.approx(0.5 * kept["numel"].sum(), abs=kept.shape[0])
    # the network itself: every encoder linear at its layer's kept count; embeddings, pooler and
    # classifier as dense as the saved model (whose word embeddings' pad row is zero)
    from safetensors.torch import load_file

    start = load_file(bert / "model.safetensors")
    trained = torch.load(out.directory / "levels" / f"level_{int(final['level']):03d}.pt", weights_only=True)["model"]
    nonzero = kept.set_index("layer")["nonzero"]
    for name in nonzero.index:
        assert int((trained[name] != 0).sum()) == int(nonzero[name])
    for name in ("model.classifier.weight", "model.bert.pooler.dense.weight", "model.bert.embeddings.word_embeddings.weight"):
        assert int((trained[name] != 0).sum()) == int((start[name.removeprefix("model.")] != 0).sum()), name
    assert final["val_acc"] > levels.iloc[0]["val_acc"] + 0.2  # the keyword rule is learned, not guessed
    assert json.loads((out.directory / "summary.json").read_text())["status"] == "complete"
    assert (out.directory / "train_log.csv").is_file()


def test_csv_tsv_jsonl_and_a_glue_folder_give_the_same_tensors(make_cfg, bert, tmp_path):
    rows = labelled_texts(300, seed=2)
    got = {}
    for fmt in ("csv", "tsv", "jsonl"):
        (tmp_path / fmt).mkdir()
        got[fmt] = load_data(data_cfg(make_cfg, bert, write(tmp_path / fmt / f"all.{fmt}", rows, fmt)).dataset, "cpu")
    for fmt in ("tsv", "jsonl"):
        for part in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
            assert torch.equal(getattr(got["csv"], part), getattr(got[fmt], part)), (fmt, part)
    d = got["csv"]
    assert d.train_x.dtype == torch.int64 and d.input_shape == (16,) and d.num_classes == 2 and d.task == "classification"
    assert len(d.val_y) == len(d.test_y) == 100 and (d.train_x[:, 0] == 2).all()  # [CLS] first, ids never normalized
    # GLUE's SST-2 layout: train.tsv / dev.tsv (sentence<TAB>label) and an unlabelled test.tsv
    glue = tmp_path / "SST-2"
    glue.mkdir()
    write(glue / "train.tsv", rows[:250], "tsv", text="sentence")
    write(glue / "dev.tsv", rows[250:], "tsv", text="sentence")
    (glue / "test.tsv").write_text("index\tsentence\n0\ta film\n")
    single = load_data(data_cfg(make_cfg, bert, glue / "train.tsv").dataset, "cpu")  # its `sentence` column read as the text
    assert len(single.train_y) == 50  # 250 less 100 validation and 100 test held out
    folder = load_data(data_cfg(make_cfg, bert, glue).dataset, "cpu")
    tokenizer = load_tokenizer(str(bert))
    dev = tokenizer([t for t, _ in rows[250:]], padding="max_length", truncation=True, max_length=16)["input_ids"]
    assert torch.equal(folder.val_x, torch.tensor(dev)) and folder.val_y.tolist() == [y for _, y in rows[250:]]
    assert len(folder.train_y) == 150 and len(folder.test_y) == 100  # the unlabelled test.tsv left unread: test held out
    dev_test = load_data(data_cfg(make_cfg, bert, glue, "dataset.dev_as=test").dataset, "cpu")
    assert torch.equal(dev_test.test_x, folder.val_x) and len(dev_test.val_y) == 100  # validation held out of train instead


def test_token_ids_cached_by_content(make_cfg, bert, tmp_path):
    path = write(tmp_path / "a.csv", labelled_texts(240, seed=3), "csv")
    cfg = data_cfg(make_cfg, bert, path).dataset
    first = DATASETS.get("text_classification")(cfg)
    cached = sorted((tmp_path / "cache" / "text_classification").glob("*.pt"))
    assert len(cached) == 1  # one file: its split is held out after tokenizing
    again = DATASETS.get("text_classification")(cfg)
    assert sorted((tmp_path / "cache" / "text_classification").glob("*.pt")) == cached and torch.equal(first.train_x, again.train_x)
    moved = write(tmp_path / "elsewhere.jsonl", labelled_texts(240, seed=3), "jsonl")  # same texts, another file: same key
    DATASETS.get("text_classification")(data_cfg(make_cfg, bert, moved).dataset)
    assert sorted((tmp_path / "cache" / "text_classification").glob("*.pt")) == cached
    DATASETS.get("text_classification")(data_cfg(make_cfg, bert, path, "dataset.max_length=12").dataset)
    assert len(list((tmp_path / "cache" / "text_classification").glob("*.pt"))) == 2
    assert first.meta["max_length"] == 16 and first.meta["text_sha256"] == again.meta["text_sha256"]


def test_run_hash_names_the_model_files_and_is_neutral_at_defaults(make_cfg, bert, tmp_path):
    path = write(tmp_path / "a.csv", labelled_texts(40), "csv")
    copy = shutil.copytree(bert, tmp_path / "copy")
    a = run_directory(typed_config(data_cfg(make_cfg, bert, path, "schedule=gmp")))
    b = run_directory(typed_config(data_cfg(make_cfg, copy, path, "schedule=gmp")))
    assert a == b  # the model's files, not where they lie
    assert a != run_directory(typed_config(data_cfg(make_cfg, bert, path, "schedule=gmp", "dataset.dev_as=test")))
    plain = make_cfg("dataset=digits")  # a run that predates the new keys keeps its name with them at their defaults
    with_keys = make_cfg("dataset=digits", "dataset.label_field=label", "dataset.max_length=128", "dataset.dev_as=validation")
    assert run_directory(plain) == run_directory(with_keys) != run_directory(make_cfg("dataset=digits", "dataset.max_length=64"))


def test_bad_fields_and_mismatched_heads_refused_clearly(make_cfg, bert, tmp_path):
    rows = labelled_texts(40)
    load = DATASETS.get("text_classification")
    with pytest.raises(PruneexpError, match=r"no text field 'review'.*dataset.text_field.*text, label"):
        load(data_cfg(make_cfg, bert, write(tmp_path / "a.csv", rows, "csv"), "dataset.text_field=review").dataset)
    with pytest.raises(PruneexpError, match=r"no label field 'label'.*dataset.label_field.*text, stars"):
        load(data_cfg(make_cfg, bert, write(tmp_path / "b.jsonl", rows, "jsonl", label="stars")).dataset)
    with pytest.raises(PruneexpError, match=r"must end in .csv, .tsv, .jsonl"):
        load(data_cfg(make_cfg, bert, write(tmp_path / "c.txt", rows, "csv")).dataset)
    (tmp_path / "glue").mkdir()
    write(tmp_path / "glue" / "train.tsv", [(t, "pos" if y else "neg") for t, y in rows], "tsv")
    write(tmp_path / "glue" / "dev.tsv", [("a film", "neutral")], "tsv")
    with pytest.raises(PruneexpError, match=r"validation split has labels the training split lacks: neutral"):
        load(data_cfg(make_cfg, bert, tmp_path / "glue").dataset)
    with pytest.raises(PruneexpError, match=r"holds no train file"):
        load(data_cfg(make_cfg, bert, tmp_path).dataset)
    # a head meets only its own data, refused before anything is loaded
    for overrides, message in [(("model=hf", f"model.path={bert}", "dataset=text_classification"), "model.head=sequence_classification"),
                               (("model=mlp", "dataset=text_classification"), "not model=mlp"),
                               (("model=hf", f"model.path={bert}", "model.head=sequence_classification", "dataset=tokens"),
                                "use dataset=text_classification"),
                               (("model=hf", f"model.path={bert}", "model.head=regression", "dataset=text_classification"),
                                "not one of causal_lm, sequence_classification")]:
        with pytest.raises(PruneexpError, match=message):
            validate(make_cfg(*overrides))
    # a saved head of another size than the dataset's classes
    three = write(tmp_path / "three.csv", [(t, i % 3) for i, (t, _) in enumerate(rows)], "csv")
    with pytest.raises(PruneexpError, match=r"does not have the dataset's 3 labels"):
        run(data_cfg(make_cfg, bert, three, "dataset.val_size=5", "dataset.test_size=5", "schedule=gmp", "quiet=true"))
