"""The weight-generation success criteria, judged from the evaluation's tables (thresholds fixed here).

Each row: criterion, task, value, threshold, passed, detail. A criterion that cannot be measured (no
held-out run of a task, say) is reported with ``passed`` False and says why. The time budgets are
judged by ``bench/weightgen.py`` from the Snakemake benchmarks, not here.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from segzoo.weightgen.finetune import STEPS

ONESHOT_SHARE = 0.95      # one-shot test Dice ≥ this × the best checkpoint's
R2_MIN = 0.8              # G.pt's prompt alignment R²
NOVELTY = (0.3, 1.2)      # distance ratio to held-out finals
UNIFY_MARGIN = 0.1        # unified network's mean Dice above the best merge
# Method names of the unification table that the criteria compare.
UNIFIED = "G.pt, every region prompted high"
MERGES = r"uniform soup|task arithmetic|TIES"
MULTITASK_ADAM = "multi-task Adam, same steps"


def _row(criterion: str, task: str, value: float, threshold: str, passed: bool, detail: str) -> dict:
    ok = bool(passed) and value is not None and not (isinstance(value, float) and math.isnan(value))
    return {"criterion": criterion, "task": task, "value": value, "threshold": threshold, "passed": ok,
            "detail": detail}


def judge(tables: dict[str, pd.DataFrame], tasks: list[str]) -> pd.DataFrame:
    rows = []
    shots, aligned, tuned = tables["oneshot"], tables["alignment"], tables["finetune"]
    for task in tasks:
        s = shots[shots["task"] == task]
        one, best, noise = s["oneshot_dice"].mean(), s["best_checkpoint_dice"].mean(), s["noise_dice"].mean()
        rows.append(_row("one-shot ≥ 0.95 × best checkpoint (test)", task, one / best if best else np.nan,
                         f"≥ {ONESHOT_SHARE}", one >= ONESHOT_SHARE * best,
                         f"one-shot {one:.3f} vs best checkpoint {best:.3f} (mean of {len(s)} held-out runs)"))
        rows.append(_row("one-shot above equal-distance noise (test)", task, one - noise, "> 0", one > noise,
                         f"one-shot {one:.3f} vs noise at the same distance {noise:.3f}"))
        pooled = aligned[(aligned["task"] == task) & (aligned["region"] == task) & (aligned["run"] == "pooled")]
        r2, lookup, r2_val = (float(pooled[c].iloc[0]) if len(pooled) else np.nan
                              for c in ("r2", "r2_lookup", "r2_val"))
        rows.append(_row("prompt alignment R² (G.pt's definition, test)", task, r2, f"≥ {R2_MIN}", r2 >= R2_MIN,
                         f"pooled over {int(pooled['n'].iloc[0]) if len(pooled) else 0} prompts; lookup memoriser "
                         f"R² {lookup:.3f}; R² on val {r2_val:.3f}"))
        t = tuned[tuned["task"] == task]
        if len(t):
            a, b = t["one-shot_steps_to_best"].iloc[0], t["start_steps_to_best"].iloc[0]
            faster = not np.isnan(a) and (np.isnan(b) or a < b)
            start_text = f"{b:.0f}" if not np.isnan(b) else f"not within {int(t['start_steps_budget'].iloc[0])}"
            rows.append(_row("Adam from the sample reaches the best checkpoint sooner than from the start", task,
                             a, f"< steps from the start ({start_text})", faster,
                             f"steps to {t['best_checkpoint_dice'].iloc[0]:.3f}: from the sample "
                             f"{f'not within {max(STEPS)}' if np.isnan(a) else int(a)}, "
                             f"from the start {start_text}"))
    learned = shots[shots["task"].isin(tasks)]
    ratio = float(learned["novelty_ratio"].median()) if len(learned) else np.nan
    rows.append(_row("novelty ratio (d to nearest training checkpoint / same for held-out finals)", "headline",
                     ratio, f"{NOVELTY[0]}–{NOVELTY[1]}", NOVELTY[0] <= ratio <= NOVELTY[1],
                     f"median over {len(learned)} one-shot networks; generated {learned['d_nearest'].median():.2f}, "
                     f"held-out finals {learned['heldout_final_d_nearest'].median():.2f}"))
    rows.append(_unify(tables["unification"]))
    return pd.DataFrame(rows)


def _unify(unified: pd.DataFrame) -> dict:
    name = "one network for every region: G.pt ≥ best merge + 0.1 (mean Dice, test)"
    gpt = unified[unified["method"] == UNIFIED]
    merges = unified[unified["method"].str.match(MERGES)]
    if gpt.empty or merges.empty:
        return _row(name, "all", np.nan, f"≥ +{UNIFY_MARGIN}", False, "no multi-task held-out run or no merge")
    g, m = float(gpt["mean_dice"].iloc[0]), merges.loc[merges["mean_dice"].idxmax()]
    adam = unified[unified["method"] == MULTITASK_ADAM]
    adam_dice = float(adam["mean_dice"].iloc[0]) if len(adam) else np.nan
    gap = f"; multi-task Adam {adam_dice:.3f} (gap {g - adam_dice:+.3f})" if len(adam) else ""
    return _row(name, "all", g - float(m["mean_dice"]), f"≥ +{UNIFY_MARGIN}", g - float(m["mean_dice"]) >= UNIFY_MARGIN,
                f"G.pt {g:.3f} vs best merge {m['method']} {float(m['mean_dice']):.3f}{gap}")
