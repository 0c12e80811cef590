"""The weight-generation success criteria, judged from the evaluation's tables (thresholds fixed here).

Every one-shot number comes from held-out parents (starts G.pt never saw), as the mean over parents x draws
of the whole-test-volume Dice. Each row: criterion, task, value, threshold, passed, detail. Every task is
judged; one the zoo does not learn, or that cannot be measured, is shown FAIL with its numbers and why,
never dropped. The time budgets are judged by ``bench/weightgen.py`` from the Snakemake benchmarks.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

ONESHOT_SHARE = 0.95      # one-shot ≥ this × what Adam reaches from the same held-out parent
R2_MIN = 0.8              # G.pt's prompt alignment R²
NOVELTY = (0.3, 1.2)      # distance to the training checkpoints, relative to a held-out parent's own finals
MEMORISER_NAMES = {"lookup": "lookup", "mean_k": "mean of k nearest", "nearest": "nearest checkpoint",
                   "noise": "noise at equal distance"}
# Method names of the unification table that the criteria compare.
UNIFIED = "G.pt, every region prompted"
BEST_MULTITASK = "best multi-task checkpoint"
MULTITASK_ADAM = "multi-task Adam (final)"
MERGE_PREFIX = "merge"


def _row(criterion: str, task: str, value: float, threshold: str, passed: bool, detail: str) -> dict:
    ok = bool(passed) and value is not None and not (isinstance(value, float) and math.isnan(value))
    return {"criterion": criterion, "task": task, "value": value, "threshold": threshold, "passed": ok,
            "detail": detail}


def mean_ci(values, seed: int) -> tuple[float, float, float]:
    """Mean and its 95 % percentile-bootstrap CI (scipy.stats.bootstrap) of the finite ``values``."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    if len(values) < 2 or np.ptp(values) == 0:
        return float(values.mean()), float(values.mean()), float(values.mean())
    ci = stats.bootstrap((values,), np.mean, n_resamples=2000, method="percentile",
                         rng=np.random.default_rng(seed)).confidence_interval
    return float(values.mean()), float(ci.low), float(ci.high)


def _ci(values: pd.Series, seed: int) -> str:
    mean, low, high = mean_ci(values, seed)
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def judge(tables: dict[str, pd.DataFrame], tasks: list[str], seed: int = 0) -> pd.DataFrame:
    """The criteria for the single tasks ``tasks`` and for one network for every region."""
    shots, aligned, tuned = tables["oneshot"], tables["alignment"], tables["finetune"]
    rows = []
    for task in tasks:
        s = shots[shots["task"] == task] if len(shots) else shots
        n = f"{len(s)} draws from {s['start'].nunique() if len(s) else 0} held-out parents"
        one = float(s["oneshot_dice"].mean()) if len(s) else np.nan
        adam = float(s["adam_best_dice"].mean()) if len(s) else np.nan
        rows.append(_row(f"one-shot ≥ {ONESHOT_SHARE} × Adam from the same held-out parent (test volumes)", task,
                         one / adam if adam else np.nan, f"≥ {ONESHOT_SHARE}", one >= ONESHOT_SHARE * adam,
                         f"one-shot {_ci(s['oneshot_dice'], seed) if len(s) else 'none'} vs the parents' own "
                         f"val-chosen best {adam:.3f}; {n}"))
        memorisers = {m: float(s[f"{m}_dice"].mean()) if len(s) else np.nan for m in MEMORISER_NAMES}
        strongest = max(memorisers, key=lambda m: -np.inf if np.isnan(memorisers[m]) else memorisers[m])
        rows.append(_row("one-shot above every memoriser (same parents and prompts, test volumes)", task,
                         one - memorisers[strongest], "> 0 for each", all(one > v for v in memorisers.values()),
                         f"one-shot {one:.3f}; " + ", ".join(f"{MEMORISER_NAMES[m]} {v:.3f}"
                                                             for m, v in memorisers.items())))
        a = aligned[aligned["task"] == task] if len(aligned) else aligned
        r2, lookup = (float(a[c].iloc[0]) if len(a) else np.nan for c in ("r2", "r2_lookup"))
        rows.append(_row(f"prompt alignment R² ≥ {R2_MIN} and above the lookup memoriser's (test volumes)", task, r2,
                         f"≥ {R2_MIN}, > lookup", r2 >= R2_MIN and r2 > lookup,
                         f"G.pt R² {r2:.3f} vs lookup R² {lookup:.3f} on the same "
                         f"{int(a['n'].iloc[0]) if len(a) else 0} prompts"))
        rows.append(_steps_row(tuned, task))
        ratio = float(s["novelty_ratio"].median()) if len(s) else np.nan
        rows.append(_row("novelty ratio (nearest distance / a held-out parent's own finals')", task, ratio,
                         f"{NOVELTY[0]}–{NOVELTY[1]}", NOVELTY[0] <= ratio <= NOVELTY[1],
                         f"median over {len(s)} draws; memorisers: " + ", ".join(
                             f"{MEMORISER_NAMES[m]} {s[f'{m}_novelty_ratio'].median():.2f}" for m in MEMORISER_NAMES)
                         if len(s) else "no draws"))
    rows.append(_unify(tables["unification"]))
    return pd.DataFrame(rows)


def _steps_row(tuned: pd.DataFrame, task: str) -> dict:
    """Per draw: steps the parent needs to reach its own best minus the steps the draw needs (a draw that does not
    reach it within its budget counts as never); PASS when the median over draws is above 0."""
    name = "Adam from the sample reaches the held-out parent's best in fewer steps than from the parent"
    t = tuned[tuned["task"] == task] if len(tuned) else tuned
    if t.empty:
        return _row(name, task, np.nan, "median > 0 steps saved", False, "no held-out parent run of this task")
    sample = t["sample_steps_to_best"].fillna(np.inf).to_numpy()
    parent = t["parent_steps_to_best"].fillna(np.inf).to_numpy()
    with np.errstate(invalid="ignore"):
        saved = np.where(np.isinf(sample), -np.inf, parent - sample)  # never reached: never sooner
    median = float(np.median(saved))
    reached = int(np.isfinite(sample).sum())

    def text(values: np.ndarray, budget: int) -> str:
        finite = values[np.isfinite(values)]
        return (f"median {np.median(finite):.0f} over the {len(finite)} that reach it" if len(finite) else
                "none reaches it") + f" (budget {budget})"

    return _row(name, task, median, "median > 0 steps saved", median > 0,
                f"steps saved per draw, median over {len(t)} draws: {median:g}; from the draws: "
                f"{text(sample, int(t['sample_budget'].iloc[0]))}, {reached} of {len(t)} reach it; from the parents: "
                f"{text(parent, int(t['parent_budget'].iloc[0]))}; target: the parent's val-chosen best on test "
                f"patches (mean {t['target_dice'].mean():.3f})")


def _unify(unified: pd.DataFrame) -> dict:
    name = "one network for every region ≥ the held-out parents' best multi-task checkpoint (test volumes)"
    if unified.empty:
        return _row(name, "all", np.nan, "≥ 0", False, "no held-out parent with multi-task runs")
    means = unified.groupby("method")["mean_dice"].mean()
    if UNIFIED not in means or BEST_MULTITASK not in means:
        return _row(name, "all", np.nan, "≥ 0", False, "no G.pt draw or no multi-task run from the held-out parents")
    g, best = float(means[UNIFIED]), float(means[BEST_MULTITASK])
    gaps = "; ".join(f"{m} {v:.3f} (gap {g - v:+.3f})" for m, v in means.items()
                     if m not in (UNIFIED, BEST_MULTITASK) and (m == MULTITASK_ADAM or m.startswith(MERGE_PREFIX)))
    return _row(name, "all", g - best, "≥ 0", g >= best,
                f"G.pt {g:.3f} vs best multi-task checkpoint {best:.3f} (mean Dice over every region, mean over "
                f"{unified['start'].nunique()} held-out parents); {gaps}")
