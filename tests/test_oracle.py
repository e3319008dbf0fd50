"""The oracle check on a small trained MLP: criteria that model the loss rank neurons by the true
loss increase of removing them better than magnitude does; random scores do not rank them at all."""

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

from oracle import trained_context  # noqa: E402

from pruneexp.pruning.oracle import oracle_correlations  # noqa: E402


def test_taylor_and_obd_beat_magnitude_and_random_is_near_zero():
    ctx, model = trained_context(["train.duration=6ep", "criterion.batches=4"])
    hidden = list(ctx.prunable(model))[:-1]
    rho = oracle_correlations(model, hidden, ctx.scoring_batches(), ["taylor", "obd", "magnitude", "random"],
                              common=dict(batches=4), options={"obd": {"variant": "fisher"}})  # what conf/criterion/obd.yaml sets
    assert rho["taylor"] > rho["magnitude"] + 0.1
    assert rho["obd"] > rho["magnitude"] + 0.1
    assert abs(rho["random"]) < 0.2
