"""The comparison: models × regions with bootstrap 95 % CIs, effect sizes and paired Wilcoxon tests against a
baseline model (config ``compare.baseline``; U-Net 3+ by default), Holm-corrected.

Per-case values are first averaged over seeds (a case is the unit that is resampled), then:

* mean and percentile-bootstrap 95 % CI over test cases (``scipy.stats.bootstrap``, seeded);
* for every other model, on the cases both it and the baseline have: the effect size, the median of the paired
  differences (model − baseline) with its percentile-bootstrap 95 % CI, and a paired two-sided Wilcoxon
  signed-rank test (``scipy.stats.wilcoxon``), p-values Holm-corrected over all tests of a metric;
* with several training seeds, the seed-to-seed spread: the standard deviation over seeds of a model's mean
  over the test cases (each seed's mean over the cases it scores).

NaN values (a region absent and not predicted) are left out, case by case; a region a metric never scores (the
lesion-wise metrics outside the instance regions) has no row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

BASELINE = "unet3plus"  # the schema's default of compare.baseline, and what tables without a baseline column used
COLUMNS = ["model", "region", "metric", "n", "mean", "ci_low", "ci_high", "seeds", "seed_sd", "median_diff",
           "diff_ci_low", "diff_ci_high", "p_vs_baseline", "pairs", "baseline", "p_holm"]


def per_case(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``[case × (model, region)]`` table of one metric, averaged over seeds (models and regions in order of
    first appearance)."""
    return scores.groupby(["model", "region", "case"], sort=False)[metric].mean().unstack(["model", "region"])


def bootstrap_ci(values: np.ndarray, seed: int, resamples: int = 2000,
                 statistic=np.mean) -> tuple[float, float, float]:
    """``statistic`` (the mean) and its 95 % percentile-bootstrap interval over the non-NaN ``values``."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return np.nan, np.nan, np.nan
    value = float(statistic(values))
    if values.size == 1 or np.all(values == values[0]):
        return value, value, value
    res = stats.bootstrap((values,), statistic, confidence_level=0.95, n_resamples=resamples, method="percentile",
                          rng=np.random.default_rng(seed))
    return value, float(res.confidence_interval.low), float(res.confidence_interval.high)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid])]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def compare(scores: pd.DataFrame, metric: str = "dice", seed: int = 0, baseline: str = BASELINE) -> pd.DataFrame:
    """One row per model and region: n, mean, CI, the seed-to-seed spread, the paired median difference from the
    baseline with its CI, and p against the baseline (raw and Holm-adjusted)."""
    table = per_case(scores, metric)
    table = table.loc[:, table.notna().any()]  # a region this metric does not score at all
    seed_means = scores.groupby(["model", "region", "seed"], sort=False)[metric].mean()
    rows = []
    for model, region in table.columns:
        mean, low, high = bootstrap_ci(table[(model, region)].to_numpy(dtype=float), seed)
        p, pairs, effect = np.nan, 0, (np.nan, np.nan, np.nan)
        if model != baseline and (baseline, region) in table.columns:
            pair = table[[(model, region), (baseline, region)]].dropna()  # cases both models have a value for
            pairs = len(pair)
            diff = pair.iloc[:, 0] - pair.iloc[:, 1]
            effect = bootstrap_ci(diff.to_numpy(dtype=float), seed, statistic=np.median)
            if pairs >= 2 and (diff != 0).any():
                p = float(stats.wilcoxon(pair.iloc[:, 0], pair.iloc[:, 1]).pvalue)
        per_seed = seed_means.loc[(model, region)].dropna()
        rows.append({"model": model, "region": region, "metric": metric,
                     "n": int(table[(model, region)].notna().sum()), "mean": mean, "ci_low": low, "ci_high": high,
                     "seeds": len(per_seed), "seed_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else np.nan,
                     "median_diff": effect[0], "diff_ci_low": effect[1], "diff_ci_high": effect[2],
                     "p_vs_baseline": p, "pairs": pairs, "baseline": baseline})
    out = pd.DataFrame(rows, columns=COLUMNS[:-1])
    out["p_holm"] = holm(out["p_vs_baseline"].tolist())
    return out


def baseline_of(comparison: pd.DataFrame) -> str:
    """The model a comparison table's differences and tests were taken against (its ``baseline`` column)."""
    if "baseline" not in comparison or comparison.empty:
        return BASELINE  # tables written before the baseline was a choice
    return str(comparison["baseline"].iloc[0])


def wide_table(comparison: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Models as rows, regions as columns, cells ``mean [low, high] n=<cases>``, with several seeds ``± <sd over
    seeds>``, and for variants the paired median difference from the baseline ``Δ <median> [low, high]`` with the
    Holm p and the number of paired cases (cases where a model's value is NaN drop out of its mean and pairs)."""
    def cell(r):
        text = f"{r['mean']:.{digits}f} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}] n={r['n']}"
        if r["seeds"] > 1:
            text += f" ± {r['seed_sd']:.{digits}f} over {r['seeds']} seeds"
        if not np.isnan(r["median_diff"]):
            text += (f"; Δ {r['median_diff']:+.{digits}f} [{r['diff_ci_low']:+.{digits}f}, "
                     f"{r['diff_ci_high']:+.{digits}f}]")
        return text if np.isnan(r["p_holm"]) else f"{text} (p={r['p_holm']:.3g}, {r['pairs']} pairs)"
    comparison = comparison.assign(cell=comparison.apply(cell, axis=1))
    wide = comparison.pivot(index="model", columns="region", values="cell")
    return wide.loc[list(dict.fromkeys(comparison["model"])), list(dict.fromkeys(comparison["region"]))]
