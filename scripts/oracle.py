"""Oracle check: Spearman rank correlation between each criterion's per-neuron scores and the true
loss increase of removing each neuron, on a trained MLP (issue #3, point 2).

    python scripts/oracle.py                           # digits, LeNet-300-100 (a few seconds)
    PRUNEEXP_DATA=/work/shared/data python scripts/oracle.py dataset=mnist train.duration=4ep

Extra arguments are `pruneexp run` overrides. Prints a markdown table.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from pruneexp.cli import CONF_DIR  # noqa: E402
from pruneexp.conf_store import register_configs  # noqa: E402
from pruneexp.data import load_data  # noqa: E402
from pruneexp.pruning.criteria import CRITERIA, criterion_config  # noqa: E402
from pruneexp.pruning.oracle import oracle_correlations  # noqa: E402
from pruneexp.schedules import RunContext  # noqa: E402

GRADIENT_BASED = ["taylor", "taylor2", "obd", "snip", "grasp", "synflow"]
REFERENCES = ["magnitude", "norm", "random"]


def trained_context(overrides: list[str]):
    """A RunContext and its dense model, trained by the config's `train` (quiet)."""
    import torch

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["quiet=true", *overrides])
    ctx = RunContext(cfg, load_data(cfg.dataset, torch.device(cfg.hardware.device)), torch.device(cfg.hardware.device), quiet=True)
    model = ctx.build_model()
    ctx.train(model, ctx.dense_masks(model), ctx.train_cfg(), "dense", 0)
    return ctx, model


def main(overrides: list[str]) -> None:
    ctx, model = trained_context(overrides)
    hidden = list(ctx.prunable(model))[:-1]  # the classifier's outputs are the classes
    rest = [c for c in CRITERIA if c not in GRADIENT_BASED + REFERENCES + ["bn_scale"]]
    common = dict(ctx.cfg.criterion)
    rho = oracle_correlations(model, hidden, ctx.scoring_batches(), GRADIENT_BASED + REFERENCES + rest, seed=ctx.cfg.seed, common=common)
    rho.pop("obd", None)
    for variant in ("fisher", "hutchinson"):  # obd's two curvature estimates
        c = criterion_config("obd", **common, variant=variant)
        label = f"obd (variant={variant}" + (f", {c.probes} probes)" if variant == "hutchinson" else ")")
        rho[label] = oracle_correlations(model, hidden, ctx.scoring_batches(), ["obd"], common=common, options={"obd": {"variant": variant}})["obd"]
    print(f"Spearman rank correlation with the true loss increase of removing each neuron "
          f"({ctx.cfg.model.name} on {ctx.cfg.dataset.name}, {sum(p.shape[0] for n, p in ctx.prunable(model).items() if n in hidden)} hidden units, "
          f"{ctx.cfg.criterion.batches} scoring batches of {ctx.cfg.criterion.batch_size})\n")
    print("| criterion | kind | Spearman ρ |\n|---|---|---|")
    for name, r in rho.items():
        kind = "gradient-based" if name.split()[0] in GRADIENT_BASED else "reference" if name in REFERENCES else "activation/weight"
        print(f"| {name} | {kind} | {r:+.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
