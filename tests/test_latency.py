"""Latency forms and the timing protocol (pruneexp.measure): every form checked against the masked
model, forms that cannot apply reported with a reason, latency.csv from `run`, `pruneexp bench`.
CUDA tests skip cleanly where no GPU is present."""

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import TINY
from pruneexp.bench import bench
from pruneexp.cli import CONF_DIR
from pruneexp.config import HardwareConfig
from pruneexp.errors import PruneexpError
from pruneexp.measure.forms import FORMS, BuiltForm
from pruneexp.measure.latency import COLUMNS, NOT_APPLICABLE as NA, Target, levels_to_time, measure_level
from pruneexp.measure.timing import Protocol, Timing, time_callable
from pruneexp.models import create_model
from pruneexp.pruning.masks import MaskSet, prunable_weights

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
QUICK = dict(warmup=1, min_reps=3, min_time_s=0.0)


def target(**kw):
    return Target.from_config(OmegaConf.structured(HardwareConfig(**{"name": "test", "threads": 1, "batch_sizes": [1, 8], **QUICK, **kw})))


def random_masks(model, density=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return MaskSet({n: torch.rand(p.shape, generator=g) < density for n, p in prunable_weights(model).items()})


def by_form(rows):
    return {(r["form"], r["batch_size"]): r for r in rows}


def test_mlp_unstructured_every_form_matches_or_says_why():
    torch.manual_seed(0)
    model = create_model("mlp", (1, 8, 8), 10, widths=[64, 32])
    rows = measure_level(model, random_masks(model), (1, 8, 8), target(forms=["dense", "masked", "csr", "semi_structured", "shrunk"]),
                         level=1, name="pruned", flop_ratio=0.2)
    assert all(list(r) == list(COLUMNS) for r in rows)
    got = by_form(rows)
    assert len(rows) == 5 * 2
    for form in ("dense", "masked", "csr"):
        for b in (1, 8):
            r = got[(form, b)]
            assert r["status"] == "ok" and r["equivalence_error"] <= r["tolerance"] == 1e-4
            assert r["median_ms"] > 0 and r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] and r["reps"] >= 3
            assert r["threads"] == 1 and r["dtype"] == "float32" and r["torch"] == torch.__version__
    assert got[("dense", 1)]["speedup_vs_dense"] == 1.0
    assert got[("csr", 1)]["detail"] == "csr: layers.1, layers.3, layers.5"
    assert got[("csr", 1)]["params"] < got[("dense", 1)]["params"]  # stored non-zeros only
    assert got[("semi_structured", 1)]["status"] == NA and "CUDA" in got[("semi_structured", 1)]["detail"]
    assert got[("shrunk", 8)]["status"] == NA and "nothing to remove" in got[("shrunk", 8)]["detail"]


def test_conv_bn_channel_masks_shrunk_form_matches_and_counts(convbn_case):
    model, masks = convbn_case
    got = by_form(measure_level(model, masks, (3, 8, 8), target(forms=["dense", "masked", "shrunk", "csr"])))
    for form in ("dense", "masked", "shrunk"):
        assert got[(form, 8)]["status"] == "ok" and got[(form, 8)]["equivalence_error"] <= 1e-4
    shrunk = got[("shrunk", 1)]
    assert 0 < shrunk["form_flop_ratio"] < 1 and "conv1:-3/8" in shrunk["detail"]
    assert shrunk["params"] < got[("dense", 1)]["params"]
    assert got[("csr", 1)]["status"] == NA and "pruned weight" in got[("csr", 1)]["detail"]  # fc is dense


def test_csr_without_linear_layers_is_not_applicable():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    rows = measure_level(model, random_masks(model, 0.5), (1, 6, 6), target(forms=["csr"], batch_sizes=[2]))
    got = by_form(rows)
    assert got[("dense", 2)]["status"] == "ok"  # dense is always timed: it is the speedup's reference
    assert got[("csr", 2)]["status"] == NA and "no nn.Linear" in got[("csr", 2)]["detail"]


def test_a_form_that_changes_the_outputs_is_reported_not_timed(monkeypatch):
    def broken(model, masks, spec):
        m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        return BuiltForm(m, "wrong weights", 650)

    monkeypatch.setitem(FORMS._items, "broken", broken)
    monkeypatch.setitem(FORMS._meta, "broken", {})
    model = create_model("mlp", (1, 8, 8), 10, widths=[16])
    got = by_form(measure_level(model, random_masks(model), (1, 8, 8), target(forms=["broken"])))
    assert got[("broken", 1)]["status"] == "mismatch" and got[("broken", 1)]["median_ms"] is None
    assert got[("broken", 1)]["equivalence_error"] > 1e-4


def test_bad_hardware_settings_are_user_errors():
    with pytest.raises(PruneexpError, match="form"):
        target(forms=["dense", "cssr"])
    with pytest.raises(PruneexpError, match="dtype"):
        target(dtype="float8")
    with pytest.raises(PruneexpError, match="levels"):
        target(levels="some")
    assert levels_to_time("ends", [0, 1, 2]) == [0, 2] and levels_to_time("final", [0, 1, 2]) == [2]
    assert levels_to_time("all", [0, 1]) == [0, 1] and levels_to_time("none", [0, 1]) == []


def test_timing_protocol_counts_and_statistics():
    calls = []
    t = time_callable(lambda: calls.append(1), torch.device("cpu"), Protocol(warmup=4, min_reps=7, min_time_s=0.0))
    assert t.reps == 7 and len(calls) == 11
    t = time_callable(lambda: None, torch.device("cpu"), Protocol(warmup=0, min_reps=1, min_time_s=0.01))
    assert t.reps > 1  # kept going until the minimum time
    xs = [3.0, 1.0, 2.0, 10.0, 4.0]
    s = Timing.from_samples(xs)
    assert s.median_ms == 3.0 and s.p10_ms == pytest.approx(np.percentile(xs, 10))
    assert s.p90_ms == pytest.approx(np.percentile(xs, 90)) and s.cv == pytest.approx(np.std(xs) / np.mean(xs))


def test_run_writes_latency_csv_and_bench_retimes_saved_levels(make_cfg):
    from pruneexp.runner import run

    out = run(make_cfg(*TINY, "hardware.threads=1", "hardware.batch_sizes=[4]", "hardware.min_time_s=0"))
    lat = pd.read_csv(out.directory / "latency.csv")
    assert sorted(lat["level"].unique()) == [0, 2]  # levels=ends
    assert set(lat["form"]) == {"dense", "masked", "csr", "shrunk"}
    assert (lat[lat.form == "shrunk"]["status"] == NA).all()  # unstructured masks: nothing to remove
    ok = lat[lat.status == "ok"]
    assert (ok["equivalence_error"] <= ok["tolerance"]).all() and ok["median_ms"].notna().all()
    assert "median_ms" not in pd.read_csv(out.directory / "levels.csv")  # deterministic level table
    joined = pd.read_csv(out.directory / "levels_latency.csv")
    assert joined["best_form"].notna().tolist() == [True, False, True]

    path = bench(out.directory, ["hardware=cpu_1thread", "hardware.levels=all", "hardware.min_time_s=0",
                                 "hardware.min_reps=3"], CONF_DIR)
    rows = pd.read_csv(path)
    assert path.name == "latency_cpu_1thread.csv" and sorted(rows["level"].unique()) == [0, 1, 2]
    assert (rows["threads"] == 1).all() and (rows["batch_size"] == 1).all()
    csr = rows[(rows.form == "csr") & (rows.level == 2)].iloc[0]
    assert csr["status"] == "ok" and csr["equivalence_error"] <= 1e-4
    with pytest.raises(PruneexpError, match="only hardware overrides"):
        bench(out.directory, ["model=vgg11"], CONF_DIR)


def test_cli_bench_on_a_non_run_directory_is_a_one_paragraph_error(tmp_path, capsys):
    from pruneexp.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["bench", str(tmp_path)])
    assert exit_.value.code == 2 and "not a pruneexp run directory" in capsys.readouterr().err


@cuda
def test_cuda_semi_structured_two_four_matches_and_is_timed_with_events():
    cc = torch.cuda.get_device_capability()
    if cc < (8, 0):
        pytest.skip("2:4 needs compute capability >= 8.0")
    torch.manual_seed(0)
    model = create_model("mlp", (1, 16, 16), 10, widths=[256, 256])
    masks = MaskSet.dense(prunable_weights(model))
    for name in ("layers.1.weight", "layers.3.weight"):  # 2:4: keep the first two of every four inputs
        m = masks.masks[name].reshape(masks.masks[name].shape[0], -1, 4)
        m[..., 2:] = False
    hw = Target.from_config(OmegaConf.structured(HardwareConfig(
        name="cuda", device="cuda", dtype="float16", tolerance=1e-2, batch_sizes=[64],
        forms=["dense", "semi_structured", "shrunk"], **QUICK)))
    got = by_form(measure_level(model, masks, (1, 16, 16), hw))
    r = got[("semi_structured", 64)]
    assert r["status"] == "ok", r["detail"]
    assert r["equivalence_error"] <= 1e-2 and "layers.1" in r["detail"] and "sm_" in r["device_name"]


@cuda
def test_cuda_shrunk_resnet_and_csr_match(resnet20_case):
    model, masks = resnet20_case
    hw = Target.from_config(OmegaConf.structured(HardwareConfig(
        name="cuda", device="cuda", dtype="float32", batch_sizes=[16], forms=["dense", "masked", "shrunk", "csr"], **QUICK)))
    got = by_form(measure_level(model, masks, (3, 8, 8), hw))
    for form in ("dense", "masked", "shrunk"):
        assert got[(form, 16)]["status"] == "ok", got[(form, 16)]["detail"]
    assert got[("csr", 16)]["status"] == NA  # channel masks leave ResNet-20's only linear layer dense
    torch.manual_seed(0)
    mlp = create_model("mlp", (1, 8, 8), 10, widths=[64, 32])  # csr needs pruned linear layers: timed here on CUDA
    got = by_form(measure_level(mlp, random_masks(mlp), (1, 8, 8), hw))
    r = got[("csr", 16)]
    assert r["status"] == "ok" and r["equivalence_error"] <= r["tolerance"] and r["median_ms"] > 0, r["detail"]
