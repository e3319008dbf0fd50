"""Schedules with known answers: the LTH sparsity sequence, Zhu & Gupta's cubic, SynFlow's
exponential densities, exact rewinding, the controls' per-layer sparsity, and resume."""

import json

import pandas as pd
import pytest
import torch

from pruneexp.models import create_model
from pruneexp.pruning.masks import MaskSet, prunable_weights
from pruneexp.pruning.select import imp_layer_sparsity, imp_sparsity, select
from pruneexp.runner import run
from pruneexp.schedules.at_init import density_schedule, iterations
from pruneexp.schedules.gmp import cubic_sparsity
from pruneexp.schedules.imp import random_masks

# digits, 4 epochs of 8 steps; the LTH recipe's layerwise pruning with the output layer at half rate
IMP = ["schedule=imp", "schedule.levels=3", "train.duration=4ep", "quiet=true", "prune.scope=layerwise",
       "+prune.layer_rates={layers.5: 0.5}", "hardware.threads=1"]


def test_lth_sparsity_sequence_of_lenet_300_100():
    """Frankle & Carbin 2019, Figure 3: 20 % per level, output layer 10 %: 51.3 / 21.1 / 13.5 / 3.6 %
    of the weights remain after 3 / 7 / 9 / 15 levels."""
    model = create_model("lenet_300_100", (1, 28, 28), 10)
    weights = prunable_weights(model)
    masks = MaskSet.dense(weights)
    expected = {n: p.numel() for n, p in weights.items()}
    rates = {n: 0.2 for n in weights} | {"layers.5.weight": 0.1}
    remaining = {}
    g = torch.Generator().manual_seed(0)
    for level in range(1, 16):
        scores = {n: torch.rand(p.shape, generator=g) for n, p in weights.items()}
        masks = select(scores, 0.0, masks, scope="layerwise", layer_sparsity=imp_layer_sparsity(masks, 0.2, {"@last": 0.5}))
        for n in expected:  # each layer loses round(rate * remaining) of its remaining weights
            expected[n] -= round(rates[n] * expected[n])
            assert int(masks[n].sum()) == expected[n], (level, n)
        remaining[level] = round(100 * sum(expected.values()) / sum(p.numel() for p in weights.values()), 1)
    assert [remaining[k] for k in (3, 7, 9, 15)] == [51.3, 21.1, 13.5, 3.6]


def test_global_imp_removes_the_rate_of_what_remains():
    masks = MaskSet({"a": torch.tensor([True] * 60 + [False] * 40)})
    assert imp_sparsity(masks, 0.2) == pytest.approx(0.52)  # 40 pruned + 12 of the 60 remaining


def test_imp_targets_count_groups_at_channel_and_block_granularity():
    """The selector counts units (channel) and blocks; imp's per-level targets must count the same,
    else layers of different fan-in make `rate` of the weights differ from `rate` of the units."""
    from pruneexp.pruning.groups import Granularity

    wide, narrow = torch.ones(10, 100, dtype=torch.bool), torch.ones(30, 2, dtype=torch.bool)
    wide[:4] = False  # 4 of 10 units gone (400 of 1000 weights)
    masks = MaskSet({"wide": wide, "narrow": narrow})
    channel = Granularity("channel")
    # global: 36 of 40 units live; 20 % of them is 7.2 -> 7 more: (4 + 7) / 40
    assert imp_sparsity(masks, 0.2, channel) == pytest.approx(11 / 40)
    assert imp_sparsity(masks, 0.2, channel, exclude=("narrow",)) == pytest.approx((4 + 1) / 10)  # round(0.2 * 6)
    assert imp_sparsity(masks, 0.2) == pytest.approx((400 + 132) / 1060)  # weight granularity counts weights
    layer = imp_layer_sparsity(masks, 0.5, {"@last": 0.5}, channel)
    assert layer == {"wide": pytest.approx((4 + 3) / 10), "narrow": pytest.approx(round(0.25 * 30) / 30)}
    blocks = Granularity("block", block=(2, 50))  # wide: 5 x 2 blocks, 2 of the 5 block rows gone
    assert imp_layer_sparsity(masks, 0.5, {}, blocks)["wide"] == pytest.approx((4 + 3) / 10)


def test_channel_imp_run_removes_the_rate_of_the_remaining_units(make_cfg):
    overrides = [o for o in IMP if "layer_rates" not in o]
    out = run(make_cfg(*overrides, "prune.granularity=channel", "schedule.rate=0.5"))
    layers = pd.read_csv(out.directory / "layers.csv")
    fan_in = {n: p.shape[1] for n, p in create_model("lenet_300_100", (1, 8, 8), 10).named_parameters() if n.endswith("weight")}
    for name in ("layers.1.weight", "layers.3.weight"):  # the classifier keeps its outputs
        # channel masks cover whole rows, so the live units are the kept weights over the fan-in
        alive = [int(n) // fan_in[name] for n in layers[layers["layer"] == name].sort_values("level")["nonzero"]]
        assert all(alive[k] == alive[k - 1] - round(0.5 * alive[k - 1]) for k in (1, 2, 3)), (name, alive)
    # effective counts (Vysogorets & Kempe 2023): a removed unit's row is masked, but the next layer's
    # column that reads it is not; only rows of live units over live inputs lie on a path
    rows = {n: layers[layers["layer"] == n].sort_values("level").reset_index(drop=True) for n in fan_in}
    h1 = rows["layers.1.weight"]["nonzero"] // fan_in["layers.1.weight"]
    h2 = rows["layers.3.weight"]["nonzero"] // fan_in["layers.3.weight"]
    assert (rows["layers.1.weight"]["effective_nonzero"] == rows["layers.1.weight"]["nonzero"]).all()
    assert (rows["layers.3.weight"]["effective_nonzero"] == h2 * h1).all()
    assert (rows["layers.5.weight"]["effective_nonzero"] == 10 * h2).all()
    levels = pd.read_csv(out.directory / "levels.csv").sort_values("level").reset_index(drop=True)
    total = sum(int(r["numel"].iloc[0]) for r in rows.values())
    effective = sum(r["effective_nonzero"] for r in rows.values())
    assert levels["effective_sparsity"].tolist() == pytest.approx((1 - effective / total).tolist())
    assert (levels["effective_sparsity"][1:] > levels["sparsity"][1:]).all() and levels["effective_sparsity"][0] == 0


def test_cubic_schedule_values():
    """Zhu & Gupta 2017: s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3."""
    at = {t: cubic_sparsity(t, 0.1, 0.9, t0=100, n=10, dt=20) for t in (0, 100, 150, 200, 250, 300, 400)}
    assert at[0] == at[100] == pytest.approx(0.1)
    assert at[150] == pytest.approx(0.9 - 0.8 * 0.75 ** 3)
    assert at[200] == pytest.approx(0.9 - 0.8 * 0.125)
    assert at[250] == pytest.approx(0.9 - 0.8 * 0.25 ** 3)
    assert at[300] == at[400] == pytest.approx(0.9)


def test_gmp_run_follows_the_cubic(make_cfg):
    out = run(make_cfg("hardware.threads=1", "schedule=gmp", "train.duration=4ep", "schedule.start=1ep", "schedule.end=3ep",
                       "schedule.frequency=4it", "sparsity=0.8", "schedule.initial_sparsity=0.2", "quiet=true"))
    levels = pd.read_csv(out.directory / "levels.csv")
    updates = levels[levels["name"] != "trained"]
    assert updates["step"].tolist() == [8, 12, 16, 20, 24]  # digits: 8 steps per epoch
    want = [cubic_sparsity(t, 0.2, 0.8, 8, 4, 4) for t in updates["step"]]
    assert updates["sparsity"].tolist() == pytest.approx(want, abs=1e-3)
    final = levels.iloc[-1]
    assert final["name"] == "trained" and final["sparsity"] == pytest.approx(0.8, abs=1e-3) and final["train_steps"] == 32


def test_synflow_exponential_density_schedule(make_cfg):
    """Tanaka et al. 2020: density_k = rho^(k/n); n = 100 for synflow, 1 for other criteria."""
    assert density_schedule(0.99, 2) == pytest.approx([0.9, 0.99])
    seq = density_schedule(0.9, 100)
    assert len(seq) == 100 and seq[-1] == pytest.approx(0.9) and all(a < b for a, b in zip(seq, seq[1:]))
    assert iterations(make_cfg("schedule=at_init", "criterion.name=synflow")) == 100
    assert iterations(make_cfg("schedule=at_init")) == 1
    out = run(make_cfg("hardware.threads=1", "schedule=at_init", "schedule.iterations=5", "sparsity=0.9", "prune.scope=layerwise", "train.duration=3ep", "quiet=true"))
    levels = pd.read_csv(out.directory / "levels.csv")
    assert levels["name"].tolist() == ["init", "pruned", "trained"]
    assert levels["sparsity"].tolist()[1:] == pytest.approx([0.9, 0.9], abs=1e-3)
    assert levels.iloc[2]["test_acc"] > levels.iloc[1]["test_acc"]


def test_rewinding_restores_the_weights_of_the_rewind_point_bit_for_bit(make_cfg):
    out = run(make_cfg(*IMP, "schedule.rewind=5it", "schedule.levels=1"))
    from pruneexp.train import TrainState

    snapshot = TrainState.from_dict(torch.load(out.directory / "rewind.pt", weights_only=True))
    assert snapshot.step == 5
    # the original run's weights at iteration 5, from a training stopped there
    from pruneexp.data import load_data
    from pruneexp.schedules import RunContext
    from pruneexp.train import train

    cfg = make_cfg(*IMP)
    ctx = RunContext(cfg, load_data(cfg.dataset, "cpu"), torch.device("cpu"), quiet=True)
    model = ctx.build_model()
    train(model, ctx.data, ctx.dense_masks(model), cfg.train, seed=cfg.seed, stop=5, quiet=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(snapshot.model[name], tensor), name
    # retraining the rewound network with every weight kept repeats the dense training exactly
    dense = torch.load(out.directory / "levels/level_000.pt", weights_only=True)["model"]
    again = ctx.build_model(seed=123)
    train(again, ctx.data, ctx.dense_masks(again), cfg.train, seed=cfg.seed, state=snapshot, quiet=True)
    assert all(torch.equal(dense[n], t) for n, t in again.state_dict().items())


def layer_masks(directory, level):
    return MaskSet.from_state_dict(torch.load(directory / f"levels/level_{level:03d}.pt", weights_only=True)["masks"])


def test_controls_keep_each_layers_sparsity(make_cfg, tmp_path):
    IMP = [*globals()["IMP"], "schedule.levels=2"]
    # a control run alone computes the ticket's masks itself; they equal the ticket run's
    reinit = run(make_cfg(*IMP, "schedule.retrain=reinit", f"results_dir={tmp_path / 'alone'}"))
    ticket = run(make_cfg(*IMP))
    shared = run(make_cfg(*IMP, "schedule.retrain=reinit"))  # reads the ticket's shared masks
    randm = run(make_cfg(*IMP, "schedule.retrain=random_mask"))
    assert len(ticket.levels) == 3
    t_layers = pd.read_csv(ticket.directory / "layers.csv")
    for control in (reinit, shared, randm):
        assert pd.read_csv(control.directory / "layers.csv")[["level", "layer", "nonzero"]].equals(t_layers[["level", "layer", "nonzero"]])
    assert (pd.read_csv(reinit.directory / "levels.csv") == pd.read_csv(shared.directory / "levels.csv")).all().all()
    for level in (1, 2):
        assert layer_masks(reinit.directory, level).equal(layer_masks(ticket.directory, level))
        r, before = layer_masks(randm.directory, level), layer_masks(randm.directory, level - 1)
        assert not r.equal(layer_masks(ticket.directory, level))
        assert all(bool((r[n] <= before[n]).all()) for n in r.weights)  # nested: pruned stay pruned
    # reinit trains other initial weights than the ticket
    t_log, r_log = (pd.read_csv(d.directory / "train_log.csv") for d in (ticket, reinit))
    assert set(r_log["phase"]) == {"dense", "reinit"}
    assert r_log[r_log["level"] == 1]["train_loss"].iloc[0] != t_log[t_log["level"] == 1]["train_loss"].iloc[0]


def test_random_masks_match_per_layer_counts_and_are_seeded():
    inside = MaskSet({"a": torch.ones(10, 10, dtype=torch.bool), "b": torch.ones(50, dtype=torch.bool)})
    like = MaskSet({"a": torch.rand(10, 10) < 0.3, "b": torch.rand(50) < 0.6})
    one, two = random_masks(inside, like, seed=4), random_masks(inside, like, seed=4)
    assert one.equal(two) and not one.equal(random_masks(inside, like, seed=5))
    assert all(int(one[n].sum()) == int(like[n].sum()) for n in ("a", "b"))


@pytest.mark.parametrize("mode", ["lr_rewind", "finetune"])
def test_lr_rewind_and_finetune_keep_the_trained_weights(make_cfg, mode):
    out = run(make_cfg(*IMP, f"schedule.retrain={mode}", "schedule.rewind=2ep", "schedule.levels=2",
                       "schedule.finetune.duration=1ep", "schedule.finetune.lr=0.001"))
    log = pd.read_csv(out.directory / "train_log.csv")
    retrained = log[log["phase"] == mode]
    dense = log[log["phase"] == "dense"]
    if mode == "lr_rewind":  # the LR schedule replayed from the rewind point (epoch 2) to the end
        assert retrained[retrained["level"] == 1]["step"].tolist() == [24, 32]
        assert retrained[retrained["level"] == 1]["lr"].tolist() == dense[dense["step"] >= 24]["lr"].tolist()
    else:
        assert retrained["lr"].unique().tolist() == [0.001] and retrained["step"].tolist() == [8, 8]
    levels = pd.read_csv(out.directory / "levels.csv")
    assert levels.iloc[-1]["test_acc"] > 0.8  # started from trained weights, not from scratch


def test_interrupted_imp_resumes_with_the_same_numbers(make_cfg):
    cfg = make_cfg(*IMP, "schedule.rewind=3it")
    full = run(cfg)
    reference = {n: (full.directory / n).read_bytes() for n in ("levels.csv", "layers.csv")}
    log = pd.read_csv(full.directory / "train_log.csv").drop(columns="elapsed_s")
    for level in (2, 3):  # interrupted after level 1
        (full.directory / f"levels/level_{level:03d}.pt").unlink()
    summary = json.loads((full.directory / "summary.json").read_text())
    (full.directory / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    resumed = run(cfg)
    assert resumed.resumed_levels == 2
    for name, content in reference.items():
        assert (resumed.directory / name).read_bytes() == content, name
    assert pd.read_csv(resumed.directory / "train_log.csv").drop(columns="elapsed_s").equals(log)


def test_imp_stops_at_the_target_and_refuses_bad_settings(make_cfg):
    out = run(make_cfg(*IMP, "schedule.levels=10", "schedule.target=0.5", "schedule.rate=0.3"))
    levels = pd.read_csv(out.directory / "levels.csv")
    assert len(levels) == 3 and levels["sparsity"].iloc[-2] < 0.5 <= levels["sparsity"].iloc[-1]
    from pruneexp.errors import PruneexpError

    for bad, message in [("schedule.retrain=rewinds", "Unknown schedule.retrain"), ("schedule.rate=1.5", "schedule.rate"),
                         ("schedule.rewind=40ep", "not inside train.duration")]:
        with pytest.raises(PruneexpError, match=message):
            run(make_cfg(*IMP, bad))


def test_rewinding_twice_to_a_late_snapshot_gives_the_same_network():
    """The optimizer updates its state in place; a snapshot must come out of a rewind unchanged."""
    from test_train import cfg as train_cfg, toy_data, toy_model
    from pruneexp.train import train

    data, c = toy_data(), train_cfg(optimizer="sgd", momentum=0.9, duration="30it")
    first = toy_model()
    masks = MaskSet.dense(prunable_weights(first))
    snap = train(first, data, masks, c, seed=0, snapshot_at={10}, quiet=True).snapshots[10]
    runs = []
    for _ in range(2):
        model = toy_model(seed=5)
        train(model, data, masks, c, seed=0, state=snap, quiet=True)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])


def test_reinit_levels_run_apart_equal_one_full_run(make_cfg, tmp_path):
    """schedule.only_levels computes some reinit levels now and the rest later (OpenLTH's per-level
    branches); the finished run is byte for byte the run that computed every level in one go."""
    IMP = [*globals()["IMP"], "schedule.retrain=reinit"]
    full = run(make_cfg(*IMP, f"results_dir={tmp_path / 'full'}"))
    first = run(make_cfg(*IMP, "schedule.only_levels=[3,1]"))
    assert [r["level"] for r in first.levels] == [0, 1, 3]
    assert json.loads((first.directory / "summary.json").read_text())["status"] == "partial"
    rest = run(make_cfg(*IMP))  # the same run (only_levels is not hashed): restores 1 and 3, computes 2
    assert rest.directory == first.directory and rest.resumed_levels == 3
    assert json.loads((rest.directory / "summary.json").read_text())["status"] == "complete"
    for name in ("levels.csv", "layers.csv"):
        assert (rest.directory / name).read_bytes() == (full.directory / name).read_bytes(), name
    logs = [pd.read_csv(d / "train_log.csv").drop(columns="elapsed_s") for d in (rest.directory, full.directory)]
    assert logs[0].equals(logs[1])


def test_random_mask_levels_run_apart_equal_one_full_run(make_cfg, tmp_path):
    """A random-mask level is drawn inside the level before it: with schedule.only_levels the skipped
    levels' masks are drawn (not trained), so level 3 alone, then the rest, equals one full run."""
    IMP = [*globals()["IMP"], "schedule.retrain=random_mask"]
    full = run(make_cfg(*IMP, f"results_dir={tmp_path / 'full'}"))
    first = run(make_cfg(*IMP, "schedule.only_levels=[3]"))
    assert [r["level"] for r in first.levels] == [0, 3]
    assert layer_masks(first.directory, 3).equal(layer_masks(full.directory, 3))
    rest = run(make_cfg(*IMP))
    for name in ("levels.csv", "layers.csv"):
        assert (rest.directory / name).read_bytes() == (full.directory / name).read_bytes(), name


@pytest.mark.parametrize("bad, message", [
    (["schedule.only_levels=[1]"], "applies to the controls"),  # the ticket's levels chain
    (["schedule.retrain=reinit", "schedule.only_levels=[0,4]"], r"must name levels in 1\.\.3"),
    (["schedule.retrain=reinit", "schedule.only_levels=[2]", "schedule.target=0.5"], "schedule.target=null"),
])
def test_only_levels_is_refused_where_levels_depend_on_each_other(make_cfg, bad, message):
    from pruneexp.errors import PruneexpError

    with pytest.raises(PruneexpError, match=message):
        run(make_cfg(*IMP, *bad))
