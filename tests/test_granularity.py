"""Granularities and allocations: ERK, N:M, blocks, channels with their bias/BatchNorm footprint."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruneexp.models import create_model
from pruneexp.pruning.channels import following_batchnorm, with_channel_footprint
from pruneexp.pruning.groups import Granularity
from pruneexp.pruning.masks import MaskSet, prunable_weights
from pruneexp.pruning.select import erk_densities, select


def dense(**shapes):
    return MaskSet({n: torch.ones(s, dtype=torch.bool) for n, s in shapes.items()})


def test_erk_densities_follow_the_formula_and_hit_the_target():
    shapes = {"conv": (16, 3, 3, 3), "fc1": (64, 256), "fc2": (10, 64)}
    numel = {n: math.prod(s) for n, s in shapes.items()}
    d = erk_densities(shapes, 0.5)
    assert sum(d[n] * numel[n] for n in shapes) == pytest.approx(0.5 * sum(numel.values()))
    capped = [n for n in shapes if d[n] == 1.0]
    free = [n for n in shapes if n not in capped]
    eps = (0.5 * sum(numel.values()) - sum(numel[n] for n in capped)) / sum(sum(shapes[n]) for n in free)
    for n in free:  # d = eps * (sum of dims) / (product of dims)
        assert d[n] == pytest.approx(eps * sum(shapes[n]) / numel[n])
    assert capped == ["conv", "fc2"]  # small layers that would exceed density 1 are kept dense
    # the selector prunes each layer to its ERK density
    scores = {n: torch.rand(s) for n, s in shapes.items()}
    new = select(scores, 0.5, dense(**shapes), scope="erk")
    for n in shapes:
        assert int(new[n].sum()) == max(1, numel[n] - round((1 - d[n]) * numel[n]))


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
def test_nm_groups_have_exactly_m_minus_n_zeros(n, m):
    shapes = {"fc": (8, 16), "conv": (4, 8, 3, 3)}
    scores = {k: torch.randn(s) for k, s in shapes.items()}
    new = select(scores, 1 - n / m, dense(**shapes), granularity=Granularity("nm", n=n, m=m))
    for k in shapes:
        groups = new[k].reshape(-1, m)
        assert ((~groups).sum(1) == m - n).all()
        kept_scores = torch.where(groups, scores[k].reshape(-1, m), float("inf")).amin(1)
        dropped = torch.where(~groups, scores[k].reshape(-1, m), float("-inf")).amax(1)
        assert (kept_scores >= dropped).all()  # the N best of each group are kept


def test_nm_refuses_rows_that_are_not_a_multiple_of_m():
    from pruneexp.errors import PruneexpError
    with pytest.raises(PruneexpError, match="multiple of prune.m"):
        select({"a.weight": torch.rand(4, 6)}, 0.5, dense(**{"a.weight": (4, 6)}), granularity=Granularity("nm"))


def test_block_granularity_prunes_whole_blocks_by_reduced_score():
    scores = {"w": torch.arange(64.0).reshape(8, 8)}
    for how in ("sum", "mean", "l2"):
        new = select(scores, 0.5, dense(w=(8, 8)), granularity=Granularity("block", block=(4, 2)), group_reduce=how)
        blocks = new["w"].reshape(2, 4, 4, 2).permute(0, 2, 1, 3).reshape(8, 8)
        assert (blocks.all(1) | (~blocks).all(1)).all()  # every block all-kept or all-pruned
        assert int(new["w"].sum()) == 32 and new["w"][4:].all() and not new["w"][:4].any()


def test_channel_selection_counts_units_and_reduces_element_scores():
    scores = {"a": torch.tensor([[1.0, 1.0], [5.0, -4.0], [3.0, 0.0], [0.0, 0.5]])}
    new = select(scores, 0.5, dense(a=(4, 2)), granularity="channel", group_reduce="sum")
    assert new["a"].any(1).tolist() == [True, False, True, False]  # sums 2, 1, 3, 0.5
    new = select(scores, 0.5, dense(a=(4, 2)), granularity="channel", group_reduce="l2")
    assert new["a"].any(1).tolist() == [False, True, True, False]
    # a unit already pruned stays pruned and counts towards the target
    current = MaskSet({"a": torch.tensor([[True, True], [False, False], [True, True], [True, True]])})
    new = select(scores, 0.5, current, granularity="channel", group_reduce="l2")
    assert new["a"].any(1).tolist() == [True, False, True, False]


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def randomise_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)


def test_channel_masked_model_equals_the_physically_shrunk_model():
    torch.manual_seed(0)
    model = ConvBN()
    randomise_bn(model)
    model.eval()
    params = prunable_weights(model)
    scores = {"conv1.weight": torch.tensor([5.0, 1.0, 4.0, 0.5, 3.0, 2.0]), "conv2.weight": torch.tensor([1.0, 4.0, 3.0, 2.0])}
    new = select(scores, 0.5, MaskSet.dense(params), granularity="channel", scope="layerwise", frozen=("fc.weight",))
    new = with_channel_footprint(model, new)
    assert set(new.masks) == {"conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight",
                              "bn2.bias", "fc.weight"}
    assert new.weights == ("conv1.weight", "conv2.weight", "fc.weight") and new["fc.weight"].all()
    keep1, keep2 = [0, 2, 4], [1, 2]
    assert new["bn1.bias"].nonzero().flatten().tolist() == keep1
    x = torch.randn(2, 3, 8, 8)
    # the physically shrunk twin, built by hand
    small = ConvBN()
    small.conv1, small.bn1 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
    small.conv2, small.bn2 = nn.Conv2d(3, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)
    small.fc = nn.Linear(2, 5)
    with torch.no_grad():
        small.conv1.weight.copy_(model.conv1.weight[keep1])
        small.conv1.bias.copy_(model.conv1.bias[keep1])
        for a, b, keep in ((small.bn1, model.bn1, keep1), (small.bn2, model.bn2, keep2)):
            for attr in ("weight", "bias", "running_mean", "running_var"):
                getattr(a, attr).copy_(getattr(b, attr)[keep])
        small.conv2.weight.copy_(model.conv2.weight[keep2][:, keep1])
        small.fc.weight.copy_(model.fc.weight[:, keep2])
        small.fc.bias.copy_(model.fc.bias)
    small.eval()
    new.apply_(model)
    torch.testing.assert_close(model(x), small(x), rtol=1e-5, atol=1e-6)


def test_following_batchnorm_on_resnet20_and_zero_output_of_a_pruned_channel():
    model = create_model("resnet20", (3, 32, 32), 10)
    pairs = following_batchnorm(model)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 21 and set(pairs) == set(convs)
    assert pairs["conv1"] == "bn1" and pairs["blocks.0.conv2"] == "blocks.0.bn2"
    assert pairs["blocks.3.shortcut.0"] == "blocks.3.shortcut.1"
    randomise_bn(model)
    model.eval()
    params = prunable_weights(model)
    masks = MaskSet.dense(params)
    cut = masks.masks["blocks.4.conv1.weight"].clone()
    cut[[3, 7]] = False
    masks = with_channel_footprint(model, MaskSet({**masks.masks, "blocks.4.conv1.weight": cut}, masks.weights))
    assert masks["blocks.4.bn1.weight"].tolist().count(False) == 2
    masks.apply_(model)
    seen = {}
    model.blocks[4].bn1.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    model(torch.randn(2, 3, 32, 32))
    assert (seen["out"][:, [3, 7]] == 0).all() and (seen["out"][:, 0] != 0).any()
