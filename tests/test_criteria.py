"""Every criterion on a case whose answer is known."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from criteria_helpers import context
from pruneexp.errors import PruneexpError
from pruneexp.pruning.criteria import CRITERIA, score, supported_granularities
from pruneexp.pruning.criteria.common import hvp, mean_gradient
from pruneexp.pruning.criteria.curvature import fisher_curvature, layer_hessians, obs_correction
from pruneexp.pruning.groups import Granularity
from pruneexp.pruning.masks import MaskSet
from pruneexp.pruning.select import select


def mlp(seed=0, widths=(6, 5), inputs=4, classes=3, bn=False):
    torch.manual_seed(seed)
    layers, n = [], inputs
    for w in widths:
        layers += [nn.Linear(n, w)] + ([nn.BatchNorm1d(w)] if bn else []) + [nn.ReLU()]
        n = w
    return nn.Sequential(*layers, nn.Linear(n, classes)).double()


def data(n_batches=3, size=16, inputs=4, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, inputs, generator=g, dtype=torch.float64), torch.randint(0, classes, (size,), generator=g))
            for _ in range(n_batches)]


def test_obd_on_a_quadratic_loss_is_half_h_w_squared_exactly():
    # out = w (identity input); loss = 1/2 sum_q h_q out_q^2: Hessian diag(h), Hutchinson exact on a diagonal H
    model = nn.Linear(4, 1, bias=False).double()
    h = torch.tensor([3.0, 0.5, 2.0, 7.0], dtype=torch.float64)
    loss = lambda out, y: 0.5 * (h * out[:, 0].square()).sum()
    ctx = context(model, [(torch.eye(4, dtype=torch.float64), None)], loss_fn=loss, probes=3, variant="hutchinson")
    s = score("obd", ctx).scores["weight"]
    torch.testing.assert_close(s, 0.5 * h[None] * model.weight.detach().square(), rtol=1e-12, atol=1e-12)


def test_obd_per_unit_is_half_the_units_curvature_block_exactly():
    # two units reading the identity input; loss = 1/2 sum_r w_r^T A w_r: H is A on each unit's block
    model = nn.Linear(3, 2, bias=False).double()
    a = torch.tensor([[2.0, 0.5, -0.3], [0.5, 1.0, 0.2], [-0.3, 0.2, 3.0]], dtype=torch.float64)
    loss = lambda out, y: 0.5 * torch.einsum("ir,ij,jr->", out, a, out)
    ctx = context(model, [(torch.eye(3, dtype=torch.float64), None)], loss_fn=loss, granularity="channel", probes=2,
                  variant="hutchinson")
    w = model.weight.detach()
    torch.testing.assert_close(score("obd", ctx).scores["weight"], 0.5 * torch.einsum("ri,ij,rj->r", w, a, w))


def test_fisher_obd_is_the_mean_squared_per_sample_gradient_times_w_squared():
    model, batches = mlp(), data()
    ctx = context(model, batches)
    fisher = fisher_curvature(ctx)
    w = model[0].weight
    manual = torch.zeros_like(w)
    count = 0
    for x, y in batches:
        for i in range(len(x)):
            g, = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), w)
            manual += g.square()
            count += 1
    torch.testing.assert_close(fisher["0.weight"], manual / count * w.detach().square())
    s = score("obd", context(model, batches, variant="fisher")).scores["0.weight"]
    torch.testing.assert_close(s, 0.5 * manual / count * w.detach().square())


def test_snip_is_abs_gradient_times_weight():
    model, batches = mlp(), data()
    s = score("snip", context(model, batches)).scores
    params = [model[0].weight, model[2].weight, model[4].weight]
    total = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        for t, g in zip(total, torch.autograd.grad(F.cross_entropy(model(x), y), params)):
            t += g / len(batches)
    for name, p, g in zip(["0.weight", "2.weight", "4.weight"], params, total):
        torch.testing.assert_close(s[name], (g * p).abs().detach())


def test_taylor_per_weight_and_per_group_accumulate_squared_contributions_over_batches():
    model, batches = mlp(), data()
    w = model[0].weight
    per_batch = [torch.autograd.grad(F.cross_entropy(model(x), y), w)[0] * w.detach() for x, y in batches]
    weight = score("taylor", context(model, batches)).scores["0.weight"]
    torch.testing.assert_close(weight, sum(c.square() for c in per_batch))
    channel = score("taylor", context(model, batches, granularity="channel")).scores["0.weight"]
    torch.testing.assert_close(channel, sum(c.sum(1).square() for c in per_batch))
    # second order: (mean_b c_b - 1/2 mean_b c_b^2)^2 with c_b the group's g_b . w
    second = score("taylor2", context(model, batches, granularity="channel")).scores["0.weight"]
    c = torch.stack([c.sum(1) for c in per_batch])
    torch.testing.assert_close(second, (c.mean(0) - 0.5 * c.square().mean(0)).square())


def test_taylor_activation_variant_is_mean_abs_activation_times_gradient_per_unit():
    model, batches = mlp(), data()
    s = score("taylor", context(model, batches, granularity="channel", variant="activation")).scores
    total = torch.zeros(6, dtype=torch.float64)
    for x, y in batches:
        z = model[0](x)
        a = torch.relu(z)
        out = model[4](model[3](model[2](a)))
        dz, = torch.autograd.grad(F.cross_entropy(out, y) * len(x), z)
        total += (a * dz).abs().sum(0).detach()
    torch.testing.assert_close(s["0.weight"], total)
    assert s["2.weight"].shape == (5,)


def test_grasp_hessian_gradient_product_matches_finite_differences():
    model, batches = mlp(), data()
    ctx = context(model, batches)
    g = mean_gradient(ctx)
    hg = hvp(ctx, g)
    eps = 1e-5
    params = dict(model.named_parameters())

    def grad_at(shift):
        with torch.no_grad():
            for n in g:
                params[n].add_(shift * g[n])
        out = mean_gradient(ctx)
        with torch.no_grad():
            for n in g:
                params[n].sub_(shift * g[n])
        return out

    plus, minus = grad_at(eps), grad_at(-eps)
    for n in g:
        torch.testing.assert_close(hg[n], (plus[n] - minus[n]) / (2 * eps), rtol=1e-5, atol=1e-8)
    s = score("grasp", ctx).scores
    for n in g:  # keep-score = -S, S = -w * Hg removed largest-first in the paper
        torch.testing.assert_close(s[n], params[n].detach() * hg[n])


def test_synflow_on_a_positive_linear_chain_is_the_path_product():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.uniform_(0.1, 1.0)
        model[1].weight.uniform_(0.1, 1.0)
    w1, w2 = model[0].weight.detach().double(), model[1].weight.detach().double()
    s = score("synflow", context(model, [(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))])).scores
    # R = 1^T W2 W1 1: each weight's score is the sum of the products along the paths through it
    torch.testing.assert_close(s["0.weight"], w1 * w2.sum(0)[:, None])
    torch.testing.assert_close(s["1.weight"], w2 * w1.sum(1)[None, :])
    assert s["0.weight"].dtype == torch.float64


def obs_layer(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 3, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(3, 5, generator=g, dtype=torch.float64))
    x = torch.randn(40, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    return model, x


def test_layerwise_obs_saliency_matches_brute_force_and_its_update_beats_masking():
    model, x = obs_layer()
    ctx = context(model, [(x, torch.zeros(40, dtype=torch.long))], damping=0.0)
    scored = score("obs", ctx)
    w = model[0].weight.detach().clone()

    def best_error(row, drop):  # min over the kept weights of the mean squared output error, by lstsq
        keep = [q for q in range(5) if q not in drop]
        target = x @ w[row]
        sol = torch.linalg.lstsq(x[:, keep], target[:, None]).solution[:, 0]
        return ((x[:, keep] @ sol - target).square().mean()), keep, sol

    for row in range(3):
        brute = torch.stack([best_error(row, [q])[0] for q in range(5)])
        torch.testing.assert_close(scored.scores["0.weight"][row], brute, rtol=1e-8, atol=1e-10)
    # prune 2 of every row (layerwise, 40 %): the update gives the least-squares optimum for the mask
    new = select(scored.scores, 0.4, ctx.masks, scope="layerwise")
    masked_only = ((x @ (w * new["0.weight"]).T - x @ w.T).square().mean())
    scored.update(model, new)
    new.apply_(model)
    updated = ((x @ model[0].weight.detach().T - x @ w.T).square().mean())
    assert updated < masked_only
    optimum = sum(best_error(r, [q for q in range(5) if not new["0.weight"][r, q]])[0] for r in range(3)) / 3
    torch.testing.assert_close(updated, optimum, rtol=1e-8, atol=1e-12)


def test_obs_correction_on_a_conv_layer_uses_unfolded_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1)).double()
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    ctx = context(model, [(x, None)], damping=0.0)
    h = layer_hessians(ctx, 0.0)["0.weight"]
    cols = F.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 18)
    torch.testing.assert_close(h, cols.T @ cols / len(cols))
    keep = torch.rand(3, 2, 3, 3) > 0.5
    new = obs_correction(model[0].weight, keep, h)
    assert (new[~keep] == 0).all()
    err = lambda v: (F.conv2d(x, v, padding=1) - F.conv2d(x, model[0].weight, padding=1)).square().sum()
    assert err(new) <= err(model[0].weight * keep)


def duplicated_unit_model():
    model = mlp(widths=(4,))
    with torch.no_grad():  # unit 3 is a copy of unit 1
        model[0].weight[3] = model[0].weight[1]
        model[0].bias[3] = model[0].bias[1] + 0.0
        model[0].bias.add_(1.0)  # keep every unit active so activations vary
    return model


@pytest.mark.parametrize("criterion", ["correlation", "cosine"])
def test_a_duplicated_unit_is_pruned_once_not_twice(criterion):
    model = duplicated_unit_model()
    ctx = context(model, data(size=64), granularity="channel", params={"0.weight": model[0].weight})
    s = score(criterion, ctx).scores["0.weight"]
    new = select({"0.weight": s}, 0.25, MaskSet.dense({"0.weight": model[0].weight}), granularity="channel")
    pruned = [i for i in range(4) if not new["0.weight"][i].any()]
    assert len(pruned) == 1 and pruned[0] in (1, 3)
    survivor = 4 - pruned[0]
    assert s[survivor] > s[pruned[0]]  # once its twin is gone it is no longer redundant
    assert s[pruned[0]] == pytest.approx(-1.0)


def test_a_constant_channel_has_zero_entropy_and_goes_first():
    model = mlp(widths=(4,))
    with torch.no_grad():
        model[0].weight[2] = 0.0
        model[0].bias[2] = 0.7
    ctx = context(model, data(size=64), granularity="channel", params={"0.weight": model[0].weight})
    s = score("entropy", ctx).scores["0.weight"]
    assert s[2] == 0 and (s[[0, 1, 3]] > 0).all()
    assert int(torch.argmin(s)) == 2
    # source=weights: a unit whose weights all take one value has zero weight entropy
    s = score("entropy", context(model, data(), granularity="channel", params={"0.weight": model[0].weight},
                                 source="weights")).scores["0.weight"]
    assert s[2] == 0 and int(torch.argmin(s)) == 2


def test_a_class_independent_unit_ranks_lowest_under_lda():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=g)
    x = torch.stack([y.double() + 0.3 * torch.randn(300, generator=g, dtype=torch.float64),  # class signal
                     torch.randn(300, generator=g, dtype=torch.float64),  # noise, independent of the class
                     y.double() * 0.5 + torch.randn(300, generator=g, dtype=torch.float64)], 1)
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3, dtype=torch.float64))
        model[0].bias.fill_(5.0)  # stay in the ReLU's linear part
    s = score("lda", context(model, [(x, y)], granularity="channel", params={"0.weight": model[0].weight})).scores["0.weight"]
    assert int(torch.argmin(s)) == 1 and s[0] > s[2] > s[1]


def test_dead_unit_ranks_lowest_under_activation_and_apoz():
    model = mlp(widths=(4,))
    with torch.no_grad():
        model[0].weight[1] = 0.0
        model[0].bias[1] = -1.0  # always off after the ReLU
    ctx = context(model, data(size=64), granularity="channel", params={"0.weight": model[0].weight})
    act = score("activation", ctx).scores["0.weight"]
    apoz = score("apoz", ctx).scores["0.weight"]
    assert act[1] == 0 and int(torch.argmin(act)) == 1
    assert apoz[1] == 0 and int(torch.argmin(apoz)) == 1  # 1 - APoZ, APoZ = 100 %
    x = torch.cat([b[0] for b in data(size=64)])
    torch.testing.assert_close(act, torch.relu(model[0](x)).mean(0).detach())


def test_fpgm_ranks_the_filter_at_the_geometric_median_lowest():
    layer = nn.Linear(2, 5, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.1, 0.0]]))
    s = score("fpgm", context(nn.Sequential(layer), [], granularity="channel")).scores["0.weight"]
    assert int(torch.argmin(s)) == 4
    torch.testing.assert_close(s, torch.cdist(layer.weight.detach(), layer.weight.detach()).sum(1))


def test_lamp_is_the_squared_weight_over_the_sum_of_larger_ones():
    layer = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, -1.0, 3.0]]))
    s = score("lamp", context(nn.Sequential(layer), [])).scores["0.weight"]
    torch.testing.assert_close(s, torch.tensor([[4 / 13, 1 / 14, 9 / 9]], dtype=torch.float64))


def test_magnitude_is_the_absolute_weight_and_its_groups_reduce_by_sum():
    """Han et al. 2015: s_q = |w_q|; at channel granularity the selector sums a unit's |w|."""
    layer = nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-3.0, 0.5, 1.0], [2.0, -2.0, 0.25]]))
    model = nn.Sequential(layer)
    s = score("magnitude", context(model, [])).scores["0.weight"]
    assert torch.equal(s, torch.tensor([[3.0, 0.5, 1.0], [2.0, 2.0, 0.25]], dtype=torch.float64))
    keep = select({"0.weight": s}, 0.5, MaskSet.dense({"0.weight": layer.weight}))["0.weight"]
    assert keep.tolist() == [[True, False, False], [True, True, False]]  # the three largest |w|
    ctx = context(model, [], granularity="channel")
    units = select(score("magnitude", ctx).scores, 0.5, MaskSet.dense(ctx.params), granularity="channel")["0.weight"]
    assert units.tolist() == [[True] * 3, [False] * 3]  # unit sums of |w|: 4.5 against 4.25


def test_norm_and_magnitude_group_scores():
    model = mlp()
    w = model[0].weight.detach()
    ctx = context(model, [], granularity="channel")
    torch.testing.assert_close(score("norm", ctx).scores["0.weight"], w.abs().sum(1))
    ctx.cfg.p = 2.0
    torch.testing.assert_close(score("norm", ctx).scores["0.weight"], w.norm(dim=1))
    blocks = Granularity("block", block=(2, 2))
    s = score("norm", context(model, [], granularity=blocks, p=1.0)).scores["0.weight"]
    assert s.shape == (3, 2) and torch.allclose(s[0, 0], w[:2, :2].abs().sum())


def test_bn_scale_reads_the_following_batchnorm_and_refuses_layers_without_one():
    model = mlp(bn=True)
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -2.0, 1.0, 0.1, -0.3, 4.0], dtype=torch.float64))
    params = {"0.weight": model[0].weight, "3.weight": model[3].weight}
    s = score("bn_scale", context(model, [], granularity="channel", params=params)).scores
    torch.testing.assert_close(s["0.weight"], model[1].weight.detach().abs())
    with pytest.raises(PruneexpError, match="BatchNorm"):
        score("bn_scale", context(mlp(), [], granularity="channel"))


def test_random_is_seeded():
    model = mlp()
    a = score("random", context(model, [], seed=3)).scores
    b = score("random", context(model, [], seed=3)).scores
    c = score("random", context(model, [], seed=4)).scores
    assert all(torch.equal(a[n], b[n]) for n in a) and not torch.equal(a["0.weight"], c["0.weight"])


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_scoring_never_changes_the_model(criterion):
    model = mlp(bn=True)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        model(torch.randn(32, 4, dtype=torch.float64))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grans = supported_granularities(criterion)
    for gran in grans:
        params = {n: p for n, p in model.named_parameters() if n in ("0.weight", "3.weight")} if gran == "channel" else None
        for variant in ("weight", "hutchinson", "activation"):  # every variant a criterion reads
            ctx = context(model, data(), granularity=Granularity(gran, n=2, m=4, block=(2, 2)), params=params, variant=variant)
            ctx.targets = {n: 0.5 for n in ctx.params}  # the layerwise targets (sparsegpt chooses its mask to them)
            if gran not in supported_granularities(criterion, variant):
                continue
            scored = score(criterion, ctx)
            for n, s in scored.scores.items():
                assert torch.isfinite(s).all(), (criterion, gran, variant, n)
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), criterion


def test_greedy_redundancy_scores_every_unit_in_removal_order():
    from pruneexp.pruning.criteria.common import greedy_redundancy
    sim = torch.tensor([[1.0, 0.9, 0.1, -0.5], [0.9, 1.0, 0.2, -0.4], [0.1, 0.2, 1.0, 0.3], [-0.5, -0.4, 0.3, 1.0]])
    s = greedy_redundancy(sim)
    # remove 0 (0.9 with 1), then 2 (0.3 with 3), then 1 (0.2 is gone; -0.4 with 3), then 3 (last)
    torch.testing.assert_close(s, torch.tensor([-0.9, 0.4, -0.3, 0.4], dtype=torch.float64))
    assert torch.isfinite(greedy_redundancy(torch.ones(1, 1))).all()
