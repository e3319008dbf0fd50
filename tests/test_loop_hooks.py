"""The training loop's hook and task: a sparsifier that drops and regrows weights through the hook,
test figures only where a result needs them, divergence stopped, optimizer implementation exact."""

import math

import pytest
import torch
from torch import nn

from test_train import cfg, toy_data, toy_model

from pruneexp.errors import TrainingDiverged
from pruneexp.pruning.masks import MaskSet, prunable_weights
from pruneexp.pruning.select import select
from pruneexp.train import TASKS, Sparsifier, reset_optimizer_state, train


class DropRegrow(Sparsifier):
    """A toy dynamic-sparse-training step: every `every` steps, per layer, drop the `k` smallest live
    weights and regrow `k` dead connections chosen by a seeded draw, at zero, with zero optimizer state."""

    def __init__(self, every=5, k=4):
        self.every, self.k, self.grown = every, k, []
        self.gen = torch.Generator().manual_seed(0)

    def after_step(self, model, step, masks, optimizer):
        if (step + 1) % self.every:
            return
        params = dict(model.named_parameters())
        for name in masks.weights:
            w, m = params[name], masks[name].clone()
            live = torch.where(m.flatten(), w.detach().abs().flatten(), torch.tensor(math.inf))
            drop = torch.topk(live, self.k, largest=False).indices
            dead = (~m.flatten()).nonzero().flatten()
            grow = dead[torch.randperm(len(dead), generator=self.gen)[: self.k]]
            m.view(-1)[drop] = False
            m.view(-1)[grow] = True
            grown = torch.zeros_like(m)
            grown.view(-1)[grow] = True
            with torch.no_grad():
                w[grown] = 0.0
            reset_optimizer_state(optimizer, w, grown)
            masks.set_(name, m)
            self.grown.append((name, grown, optimizer))


def sparse_masks(model, sparsity=0.7):
    masks = MaskSet.dense(prunable_weights(model))
    masks = select({n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) for n, p in prunable_weights(model).items()},
                   sparsity, masks, scope="layerwise")
    masks.apply_(model)
    return masks


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_sparsifier_drops_and_regrows_through_the_hook(optimizer):
    model = toy_model()
    masks = sparse_masks(model)
    kept = {n: int(masks[n].sum()) for n in masks.weights}
    before = {n: masks[n].clone() for n in masks.weights}
    hook = DropRegrow()
    result = train(model, toy_data(), masks, cfg(duration="40it", optimizer=optimizer, lr=0.01), seed=0, quiet=True, sparsifier=hook)
    assert result.steps == 40 and len(hook.grown) == 2 * 8  # 2 layers x 8 updates
    for n in masks.weights:
        assert int(masks[n].sum()) == kept[n]  # sparsity per layer exactly constant
        assert not torch.equal(masks[n], before[n])  # the connectivity did move
        w = dict(model.named_parameters())[n]
        assert (w[~masks[n]] == 0).all()  # the loop applied the edited masks (no stale copy)
    # at the moment of the last update, regrown weights were zero with zero optimizer state
    name, grown, opt = hook.grown[-1]
    state = opt.state[dict(model.named_parameters())[name]]
    moments = [v for v in state.values() if torch.is_tensor(v) and v.dim() > 0]
    assert moments and all((v[grown] == 0).all() for v in moments)
    assert (dict(model.named_parameters())[name][grown] == 0).all()  # the last update was the last step


def test_a_penalty_enters_the_loss_and_its_gradient():
    class Constant(Sparsifier):  # adds 5 to the loss, nothing to the gradient
        def penalty(self, model, step):
            return torch.tensor(5.0)

    class L2(Sparsifier):  # 1/2 lambda |w|^2: the gradient of weight decay lambda
        def penalty(self, model, step):
            return 0.5 * 1e-2 * sum(p.square().sum() for n, p in model.named_parameters())

    plain, shifted = (train(toy_model(), toy_data(), MaskSet.dense(prunable_weights(toy_model())), cfg(), seed=0, quiet=True,
                            sparsifier=s) for s in (None, Constant()))
    assert [r["train_loss"] for r in shifted.log] == pytest.approx([r["train_loss"] + 5.0 for r in plain.log], abs=1e-5)
    assert [r["val_loss"] for r in shifted.log] == [r["val_loss"] for r in plain.log]  # the same trajectory
    decayed, penalised = toy_model(), toy_model()
    train(decayed, toy_data(), MaskSet.dense(prunable_weights(decayed)), cfg(optimizer="sgd", momentum=0.0, weight_decay=1e-2),
          seed=0, quiet=True)
    train(penalised, toy_data(), MaskSet.dense(prunable_weights(penalised)), cfg(optimizer="sgd", momentum=0.0, weight_decay=0.0),
          seed=0, quiet=True, sparsifier=L2())
    for (n, a), b in zip(decayed.state_dict().items(), penalised.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), n


def test_test_split_is_evaluated_at_the_end_and_at_the_minimum_of_validation_loss():
    """Without a sparsifier the weights at each new validation minimum are kept and tested once at the
    end; with one (here a no-op, same trajectory) test runs at every new minimum as it happens. The
    early-stop figures must be the same numbers."""
    def run(sparsifier):
        model = toy_model()
        return train(model, toy_data(), MaskSet.dense(prunable_weights(model)), cfg(duration="100it", eval_every="5it"),
                     seed=0, quiet=True, sparsifier=sparsifier), model

    (deferred, final), (eager, eager_final) = run(None), run(Sparsifier())
    assert all(torch.equal(final.state_dict()[k], v) for k, v in eager_final.state_dict().items())  # final weights put back
    assert [r["val_loss"] for r in deferred.log] == [r["val_loss"] for r in eager.log]
    best, new_bests = math.inf, []
    for row in eager.log:
        new_bests.append(row["val_loss"] < best)
        best = min(best, row["val_loss"])
        assert math.isfinite(row["test_acc"]) == (new_bests[-1] or row["step"] == 100), row
    assert sum(new_bests) > 2  # several minima along the way: the deferral saves test passes here
    tested = [r["step"] for r in deferred.log if math.isfinite(r["test_acc"])]
    assert tested == sorted({deferred.best_step, 100})  # the final minimum and the end, nothing else
    at_best = next(r for r in eager.log if r["step"] == eager.best_step)
    deferred_at_best = next(r for r in deferred.log if r["step"] == deferred.best_step)
    assert deferred.best_step == eager.best_step and deferred.best_step < 100
    assert (deferred_at_best["test_loss"], deferred_at_best["test_acc"]) == (at_best["test_loss"], at_best["test_acc"])
    assert deferred.test_acc_at_best == eager.test_acc_at_best == at_best["test_acc"]
    assert deferred.test_acc == eager.test_acc == eager.log[-1]["test_acc"]


@pytest.mark.parametrize("lr", [50.0, math.inf])
def test_divergence_stops_training_naming_phase_and_step(lr):
    with pytest.raises(TrainingDiverged, match=r"phase 'dense' at step \d+") as err:
        train(toy_model(), toy_data(), MaskSet.dense(prunable_weights(toy_model())),
              cfg(duration="200it", eval_every="10it", lr=lr, optimizer="sgd", momentum=0.9), seed=0, quiet=True, phase="dense")
    assert err.value.phase == "dense" and err.value.step % 10 == 0


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizer_implementations_are_exact_or_deterministic(name, monkeypatch):
    """train.optimizer_impl=foreach must give torch's single-tensor bits, which is what lets it keep
    the hashes of runs made before the option existed; fused (the default) must give the same bits
    every time."""
    from pruneexp.train import optim

    def run(impl):
        model = toy_model()
        train(model, toy_data(), MaskSet.dense(prunable_weights(model)), cfg(duration="60it", optimizer=name, lr=0.01,
                                                                             weight_decay=1e-3, optimizer_impl=impl), seed=0, quiet=True)
        return model.state_dict()

    foreach, fused, fused_again = run("foreach"), run("fused"), run("fused")
    monkeypatch.setitem(optim.IMPL, "foreach", dict(foreach=False))  # torch's single-tensor loop
    single = run("foreach")
    assert all(torch.equal(single[k], foreach[k]) for k in single)
    assert all(torch.equal(fused[k], fused_again[k]) for k in fused)


def test_optimizer_impl_enters_the_hash_only_when_it_changes_the_arithmetic(make_cfg):
    from omegaconf import OmegaConf

    from pruneexp.config import NON_RESULT_KEYS, hash_view
    from pruneexp.results import run_hash
    from pruneexp.runner import run_directory

    default = make_cfg()
    assert default.train.optimizer_impl == "fused"
    assert run_directory(default) == run_directory(make_cfg("train.optimizer_impl=fused"))
    assert run_directory(default) != run_directory(make_cfg("train.optimizer_impl=foreach"))
    # a config saved before the option existed trained with foreach's arithmetic: it keeps its hash
    foreach = OmegaConf.to_container(make_cfg("train.optimizer_impl=foreach"), resolve=True)
    before = OmegaConf.to_container(make_cfg("train.optimizer_impl=foreach"), resolve=True)
    del before["train"]["optimizer_impl"]
    assert run_hash(hash_view(before), NON_RESULT_KEYS) == run_hash(hash_view(foreach), NON_RESULT_KEYS)


def test_language_model_task_reads_tokens_and_gives_perplexity():
    task = TASKS.get("language_model")
    vocab, model = 5, nn.Embedding(5, 5)
    with torch.no_grad():
        model.weight.zero_()  # uniform predictions: loss log V, perplexity V
    x = torch.randint(0, vocab, (4, 7))
    metrics = task.evaluate(model, x, x, batch_size=3)
    assert metrics["loss"] == pytest.approx(math.log(vocab)) and metrics["ppl"] == pytest.approx(vocab)
    assert task.loss(model(x), x).shape == ()
