"""The selector on hand-made scores whose right masks are known."""

import pytest
import torch

from pruneexp.errors import PruneexpError
from pruneexp.pruning.masks import MaskSet
from pruneexp.pruning.select import n_to_keep, select, top_k_mask


def masks_for(**shapes):
    return MaskSet({n: torch.ones(s, dtype=torch.bool) for n, s in shapes.items()})


def test_global_keeps_the_largest_scores_across_layers():
    scores = {"a": torch.tensor([[1.0, 9.0], [3.0, 7.0]]), "b": torch.tensor([2.0, 8.0, 4.0, 6.0])}
    new = select(scores, 0.5, masks_for(a=(2, 2), b=(4,)), scope="global")
    # 8 weights, keep 4: scores 9, 8, 7, 6
    assert new["a"].tolist() == [[False, True], [False, True]]
    assert new["b"].tolist() == [False, True, False, True]


def test_layerwise_prunes_each_layer_to_the_target():
    scores = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0])}
    new = select(scores, 0.75, masks_for(a=(4,), b=(8,)), scope="layerwise")
    assert new["a"].tolist() == [False, False, False, True]
    assert new["b"].tolist() == [False] * 6 + [True] * 2
    # global at the same target would have emptied layer a: it keeps one weight instead
    glob = select(scores, 0.75, masks_for(a=(4,), b=(8,)), scope="global")
    assert int(glob["a"].sum()) == 1 and glob["a"].tolist() == [False, False, False, True]
    assert int(glob["b"].sum()) == 3


def test_ties_are_broken_by_index_deterministically():
    scores = {"a": torch.ones(10)}
    first = select(scores, 0.6, masks_for(a=(10,)), scope="layerwise")
    assert first["a"].tolist() == [True] * 4 + [False] * 6
    for _ in range(3):
        assert select(scores, 0.6, masks_for(a=(10,)), scope="layerwise").equal(first)


def test_already_pruned_weights_stay_pruned_and_count_towards_the_target():
    scores = {"a": torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 9.0, 8.0])}
    current = MaskSet({"a": torch.tensor([True] * 6 + [False] * 2)})  # 9 and 8 already pruned
    new = select(scores, 0.5, current, scope="global")
    assert new["a"].tolist() == [True, True, True, True, False, False, False, False]
    # a target below the current sparsity never revives a pruned weight
    revived = select(scores, 0.0, current, scope="global")
    assert revived["a"].tolist() == current["a"].tolist()


def test_layer_rate_multipliers_and_first_last_rules():
    scores = {"l1.weight": torch.arange(100.0), "l2.weight": torch.arange(100.0), "out.weight": torch.arange(10.0)}
    current = masks_for(**{"l1.weight": (100,), "l2.weight": (100,), "out.weight": (10,)})
    new = select(scores, 0.2, current, scope="layerwise", layer_rates={"@last": 0.5})
    assert [int(new[n].sum()) for n in current.weights] == [80, 80, 9]
    new = select(scores, 0.2, current, scope="layerwise", layer_rates={"l*": 2.0, "@first": 0.0})
    assert [int(new[n].sum()) for n in current.weights] == [100, 60, 8]


def test_bad_targets_are_refused():
    with pytest.raises(PruneexpError, match=r"\[0, 1\)"):
        select({"a": torch.ones(4)}, 1.0, masks_for(a=(4,)))
    with pytest.raises(PruneexpError, match="layerwise"):
        select({"a": torch.ones(4)}, 0.5, masks_for(a=(4,)), layer_rates={"a": 0.5})
    with pytest.raises(PruneexpError, match="matches no prunable layer"):
        select({"a": torch.ones(4)}, 0.5, masks_for(a=(4,)), scope="layerwise", layer_rates={"nope*": 0.5})


def test_helpers():
    assert n_to_keep(10, 0.95) == 1 and n_to_keep(10, 0.5) == 5 and n_to_keep(1000, 0.9) == 100
    assert top_k_mask(torch.tensor([1.0, float("-inf"), 3.0]), 3).tolist() == [True, False, True]


def test_row_scope_prunes_every_output_row_to_the_target():
    """Wanda's comparison group (Sun et al. 2023): each output row keeps its own top scores."""
    scores = {"w": torch.tensor([[1.0, 2.0, 3.0, 4.0], [40.0, 30.0, 20.0, 10.0], [5.0, 5.0, 5.0, 5.0]])}
    masks = select(scores, 0.5, MaskSet.dense({"w": torch.zeros(3, 4)}), scope="row")
    assert masks["w"].tolist() == [[False, False, True, True], [True, True, False, False], [True, True, False, False]]
    global_masks = select(scores, 0.5, MaskSet.dense({"w": torch.zeros(3, 4)}), scope="global")
    assert not global_masks["w"][0].any()  # a global threshold would empty the first row instead


def stable_sort_top_k(s: torch.Tensor, k: int) -> torch.Tensor:
    """The rule top_k_mask keeps: the first k of a stable descending sort (torch's order: NaN, +inf,
    the finite scores, -inf), of which only the finite ones."""
    order = torch.sort(s.flatten(), descending=True, stable=True).indices
    want = torch.zeros(s.numel(), dtype=torch.bool)
    want[order[:k]] = True
    return want.view(s.shape) & torch.isfinite(s)


def test_top_k_by_selection_equals_the_stable_sort():
    """top_k_mask finds the k-th largest score by selection; it must keep exactly what the first k
    of a stable descending sort keep (ties to the earlier index, -inf never kept, NaN and +inf
    taking their sorted places but never kept)."""
    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        n = int(torch.randint(1, 200, (1,), generator=g))
        s = torch.randint(0, 4, (n,), generator=g).double()  # many ties
        u = torch.rand(n, generator=g)
        s[u < 0.2] = float("-inf")  # already pruned
        if trial % 3 == 0:  # non-finite scores above the finite ones
            s[(u >= 0.2) & (u < 0.25)] = float("nan")
            s[(u >= 0.25) & (u < 0.3)] = float("inf")
        for k in (0, 1, n // 3, n // 2, n - 1, n, n + 2):
            assert torch.equal(top_k_mask(s, k), stable_sort_top_k(s, k)), (n, k)


@pytest.mark.parametrize("case", ["inf_run", "inf_scattered", "zero_run", "zeros_scattered", "inf_and_zero_runs",
                                  "descending", "ascending", "all_equal", "two_values"])
def test_top_k_on_long_runs_of_equal_scores_equals_the_stable_sort(case):
    """Long runs of -inf (the already-pruned weights of gmp's later updates and of dynamic sparse
    training) and of equal finite scores (regrown weights at zero), contiguous and scattered, and
    sorted input (the worst case of a quickselect): still exactly the stable sort's choice."""
    g = torch.Generator().manual_seed(1)
    n = 30_000
    s = torch.randn(n, generator=g, dtype=torch.float64)
    scatter = torch.randperm(n, generator=g)[: 3 * n // 4]
    if case == "inf_run":
        s[1000:1000 + 3 * n // 4] = float("-inf")
    elif case == "inf_scattered":
        s[scatter] = float("-inf")
    elif case == "zero_run":
        s[5000:5000 + 3 * n // 4] = 0.0
    elif case == "zeros_scattered":
        s[scatter] = 0.0
    elif case == "inf_and_zero_runs":
        s[: n // 2] = float("-inf")
        s[n // 2: 3 * n // 4] = 0.0
    elif case == "descending":
        s = s.sort(descending=True).values
    elif case == "ascending":
        s = s.sort().values
    elif case == "all_equal":
        s = torch.full((n,), 0.5, dtype=torch.float64)
    elif case == "two_values":
        s = torch.randint(0, 2, (n,), generator=g).double()
    alive = int(torch.isfinite(s).sum())
    for k in sorted({1, 7, alive // 10, alive // 2, alive - 1, alive, alive + 3, n // 2, n}):
        assert torch.equal(top_k_mask(s, k), stable_sort_top_k(s, k)), (case, k)
    # k landing exactly on the run of equal values: the first of them (by index) fill the places left
    if case in ("zero_run", "zeros_scattered"):
        above = int((s > 0).sum())
        for k in (above, above + 1, above + 100, above + 3 * n // 4 - 1):
            assert torch.equal(top_k_mask(s, k), stable_sort_top_k(s, k)), (case, k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64])
def test_top_k_keeps_dtype_ties_and_shape(dtype):
    """Scores in any dtype (movement and dst pass the model's) are compared as they are: ties of a
    low-precision dtype stay ties; the mask has the scores' shape and device."""
    g = torch.Generator().manual_seed(2)
    s = (torch.randn(40, 50, generator=g) * 3).to(dtype)
    if dtype.is_floating_point:
        s[:10] = float("-inf")
    for k in (0, 1, 100, 999, 1500, 2000):
        got = top_k_mask(s, k)
        assert got.shape == s.shape and got.dtype == torch.bool
        assert torch.equal(got, stable_sort_top_k(s.double(), k)), (dtype, k)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_scores_on_live_weights_are_refused(bad):
    scores = {"a": torch.tensor([1.0, bad, 3.0, 4.0]), "b": torch.tensor([1.0, 2.0])}
    with pytest.raises(PruneexpError, match="not finite.*diverged"):
        select(scores, 0.5, masks_for(a=(4,), b=(2,)), scope="global")
    # a pruned weight may score anything: it is ignored
    current = MaskSet({"a": torch.tensor([True, False, True, True]), "b": torch.ones(2, dtype=torch.bool)})
    new = select(scores, 0.5, current, scope="global")
    assert int(sum(m.sum() for m in new.masks.values())) == 3


def test_the_selector_refuses_to_return_another_sparsity_than_asked(monkeypatch):
    """Whatever goes wrong inside the thresholding, a kept count off the target stops the run."""
    import pruneexp.pruning.select as sel

    scores = {"a": torch.arange(10.0)}
    assert int(select(scores, 0.7, masks_for(a=(10,)))["a"].sum()) == 3
    monkeypatch.setattr(sel, "top_k_mask", lambda s, k: torch.zeros_like(s, dtype=torch.bool) | (s > 0))
    with pytest.raises(PruneexpError, match="kept 9 of 10 .* asks for 3"):
        sel.select(scores, 0.7, masks_for(a=(10,)))


def test_top_k_rows_equals_the_stable_sort_of_each_row():
    """top_k_rows keeps, in each row, what the first k of that row's stable descending sort keep, of
    which only the finite ones: a row with fewer than k live scores (-inf: already pruned) keeps
    only those; ties go to the earlier column."""
    from pruneexp.pruning.select import top_k_rows

    g = torch.Generator().manual_seed(1)
    for trial in range(100):
        rows, cols = (int(v) for v in torch.randint(1, 12, (2,), generator=g))
        s = torch.randint(0, 4, (rows, cols), generator=g).double()  # many ties
        s[torch.rand(rows, cols, generator=g) < 0.4] = float("-inf")
        k = int(torch.randint(0, cols + 1, (1,), generator=g))
        want = torch.stack([stable_sort_top_k(r, k) for r in s])
        assert torch.equal(top_k_rows(s, k), want), (trial, s, k)
    s = torch.tensor([[float("-inf"), 1.0, float("-inf"), 2.0]])
    assert top_k_rows(s, 3).tolist() == [[False, True, False, True]]
