"""What the comparison allows saying, in words: the highest mean per region, and one sentence per paired difference
from the baseline, worded by its Holm-corrected p.

Read from ``comparison.csv`` (:mod:`segzoo.evaluate.stats`) and nothing else, so a sentence cannot disagree with the
tables. No sentence says "better" or "worse" unless the difference survives Holm's correction at :data:`ALPHA`; a
difference that does not is "not detected", with its numbers. Every number is a value of the file, printed with
:func:`digits` decimals (p: three significant digits). The sentences are plain text (the paper escapes them for TeX).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from segzoo.evaluate.metrics import METRICS
from segzoo.report.names import metric_name, model_name, region_name

ALPHA = 0.05  # family-wise error rate of the Holm-corrected tests


def digits(metric: str) -> int:
    """Decimals a value of ``metric`` is printed with: 2 for those with a unit (mm, ml), else 3."""
    return 2 if METRICS[metric].unit else 3


def number(value: float, metric: str) -> str:
    return f"{value:.{digits(metric)}f}"


def signed(value: float, metric: str) -> str:
    return f"{value:+.{digits(metric)}f}"


def p_text(p: float) -> str:
    return f"{p:.3g}"


def interval(low: float, high: float, metric: str, sign: bool = False) -> str:
    show = signed if sign else number
    return f"[{show(low, metric)}, {show(high, metric)}]"


@dataclass(frozen=True)
class Best:
    """The highest (or, lower being better, lowest) mean of ``metric`` on ``region``, with its CI and case count."""

    metric: str
    region: str
    model: str
    mean: float
    low: float
    high: float
    n: int

    def brief(self) -> str:
        """``MS U-Net 3+ on the spinal cord (0.951 [0.940, 0.962])``."""
        return (f"{model_name(self.model)} on the {region_name(self.region)} ({number(self.mean, self.metric)} "
                f"{interval(self.low, self.high, self.metric)})")


@dataclass(frozen=True)
class Difference:
    """One model against the baseline on one region and metric: the median of the paired differences (model −
    baseline) with its bootstrap CI, the number of paired cases and the Holm-corrected p (NaN: not testable)."""

    metric: str
    region: str
    model: str
    baseline: str
    median: float
    low: float
    high: float
    pairs: int
    p_holm: float

    @property
    def tested(self) -> bool:
        return not math.isnan(self.p_holm)

    @property
    def significant(self) -> bool:
        return self.tested and self.p_holm < ALPHA

    @property
    def verdict(self) -> str:
        """``better`` or ``worse`` (significant, by the metric's direction), ``differs`` (significant with a zero
        median difference), ``not detected`` or ``not testable``."""
        if not self.tested:
            return "not testable"
        if not self.significant:
            return "not detected"
        if self.median == 0 or math.isnan(self.median):
            return "differs"
        return "better" if (self.median > 0) == (METRICS[self.metric].better == "higher") else "worse"

    def effect(self) -> str:
        """``median paired difference +0.032 [+0.018, +0.043] over 16 cases, Holm p = 0.003``."""
        return (f"median paired difference {signed(self.median, self.metric)} "
                f"{interval(self.low, self.high, self.metric, sign=True)} over {self.pairs} cases, "
                f"Holm p = {p_text(self.p_holm)}")

    def sentence(self) -> str:
        """The difference in one sentence, worded by :attr:`verdict`."""
        a, b = model_name(self.model), model_name(self.baseline)
        region, metric = region_name(self.region), metric_name(self.metric)
        verdict = self.verdict
        if verdict in ("better", "worse"):
            return f"By {metric}, {a} segments the {region} {verdict} than {b} ({self.effect()})."
        if verdict == "differs":
            return (f"By {metric}, {a} and {b} differ on the {region}, though with no median shift "
                    f"({self.effect()}).")
        if verdict == "not detected":
            return f"By {metric}, no difference between {a} and {b} on the {region} was detected ({self.effect()})."
        return (f"By {metric}, {a} and {b} could not be tested on the {region} ({self.pairs} paired cases, fewer "
                "than two with a difference).")

    def brief(self) -> str:
        """``MS U-Net 3+ on the spinal cord (better; median paired difference ..., Holm p = ...)``."""
        return f"{model_name(self.model)} on the {region_name(self.region)} ({self.verdict}; {self.effect()})"


def best_per_region(comparison: pd.DataFrame, metric: str) -> list[Best]:
    """Per region (in the file's order) the model with the best mean; ties: the first listed; a region where no
    model has a value is left out."""
    rows = comparison[comparison["metric"] == metric].dropna(subset=["mean"])
    higher = METRICS[metric].better == "higher"
    found = []
    for region, group in rows.groupby("region", sort=False):
        r = group.loc[group["mean"].idxmax() if higher else group["mean"].idxmin()]
        found.append(Best(metric, region, r["model"], float(r["mean"]), float(r["ci_low"]), float(r["ci_high"]),
                          int(r["n"])))
    return found


def differences(comparison: pd.DataFrame, metric: str, baseline: str) -> list[Difference]:
    """Every model other than ``baseline`` on every region ``metric`` scores, in the file's order."""
    rows = comparison[(comparison["metric"] == metric) & (comparison["model"] != baseline)]
    return [Difference(metric, r.region, r.model, baseline, float(r.median_diff), float(r.diff_ci_low),
                       float(r.diff_ci_high), int(r.pairs), float(r.p_holm)) for r in rows.itertuples()]


def highest(metric: str) -> str:
    return "highest" if METRICS[metric].better == "higher" else "lowest"


def results_paragraph(comparison: pd.DataFrame, metric: str, baseline: str) -> str:
    """The paragraph of one metric: the best mean per region, a sentence per difference that survives Holm, and how
    many do not (the smallest p among them)."""
    best = best_per_region(comparison, metric)
    if not best:
        return f"No model has a {metric_name(metric)} value."
    diffs = differences(comparison, metric, baseline)
    shown = [d for d in diffs if d.significant]
    rest = [d for d in diffs if d.tested and not d.significant]
    untested = [d for d in diffs if not d.tested]
    text = [f"The {highest(metric)} mean {metric_name(metric)}: " + "; ".join(b.brief() for b in best) + "."]
    text += [d.sentence() for d in shown]
    if rest:
        smallest = min(rest, key=lambda d: d.p_holm)
        what = f"from {model_name(baseline)} by {metric_name(metric)}"
        if len(rest) == 1:
            lead = f"The {'other' if shown else 'one'} tested difference {what} does not survive"
        else:
            lead = (f"The other {len(rest)} tested differences {what} do not survive" if shown else
                    f"None of the {len(rest)} tested differences {what} survives")
        text.append(f"{lead} Holm's correction ({'smallest ' if len(rest) > 1 else ''}Holm p = "
                    f"{p_text(smallest.p_holm)}, {model_name(smallest.model)} on the {region_name(smallest.region)}).")
    if untested:
        text.append(f"{len(untested)} of {len(diffs)} pairs could not be tested (fewer than two paired cases with a "
                    "difference).")
    return " ".join(text)
