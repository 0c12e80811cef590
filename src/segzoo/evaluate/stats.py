"""The comparison: models × regions with bootstrap 95 % CIs, paired Wilcoxon tests against U-Net 3+, Holm.

Per-case values are first averaged over seeds (a case is the unit that is resampled), then:

* mean and percentile-bootstrap 95 % CI over test cases (``scipy.stats.bootstrap``, seeded);
* for every other model, a paired two-sided Wilcoxon signed-rank test against the baseline on the
  cases both have (``scipy.stats.wilcoxon``), p-values Holm-corrected over all tests of a metric.

NaN values (a region absent and not predicted) are left out, case by case.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

BASELINE = "unet3plus"


def per_case(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``[case × (model, region)]`` table of one metric, averaged over seeds (models and regions in order of
    first appearance)."""
    return scores.groupby(["model", "region", "case"], sort=False)[metric].mean().unstack(["model", "region"])


def bootstrap_ci(values: np.ndarray, seed: int, resamples: int = 2000) -> tuple[float, float, float]:
    """Mean and 95 % percentile-bootstrap interval of the non-NaN ``values``."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return np.nan, np.nan, np.nan
    if values.size == 1 or np.all(values == values[0]):
        return float(values.mean()), float(values.mean()), float(values.mean())
    res = stats.bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=resamples, method="percentile",
                          rng=np.random.default_rng(seed))
    return float(values.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


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
    """One row per model and region: n, mean, CI, p against the baseline (raw and Holm-adjusted)."""
    table = per_case(scores, metric)
    rows = []
    for model, region in table.columns:
        mean, low, high = bootstrap_ci(table[(model, region)].to_numpy(dtype=float), seed)
        p, pairs = np.nan, 0
        if model != baseline and (baseline, region) in table.columns:
            pair = table[[(model, region), (baseline, region)]].dropna()  # cases both models have a value for
            pairs = len(pair)
            diff = pair.iloc[:, 0] - pair.iloc[:, 1]
            if pairs >= 2 and (diff != 0).any():
                p = float(stats.wilcoxon(pair.iloc[:, 0], pair.iloc[:, 1]).pvalue)
        rows.append({"model": model, "region": region, "metric": metric,
                     "n": int(table[(model, region)].notna().sum()), "mean": mean, "ci_low": low, "ci_high": high,
                     "p_vs_baseline": p, "pairs": pairs})
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out["p_vs_baseline"].tolist())
    return out


def wide_table(comparison: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Models as rows, regions as columns, cells ``mean [low, high] n=<cases>`` and, for variants, the Holm
    p with the number of paired cases (cases where a model's value is NaN drop out of its mean and pairs)."""
    def cell(r):
        text = f"{r['mean']:.{digits}f} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}] n={r['n']}"
        return text if np.isnan(r["p_holm"]) else f"{text} (p={r['p_holm']:.3g}, {r['pairs']} pairs)"
    comparison = comparison.assign(cell=comparison.apply(cell, axis=1))
    wide = comparison.pivot(index="model", columns="region", values="cell")
    return wide.loc[list(dict.fromkeys(comparison["model"])), list(dict.fromkeys(comparison["region"]))]
