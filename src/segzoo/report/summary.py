"""The answer first: what the top of a dataset's page says before any table.

Per region, the model with the best mean of the headline metric (Dice where it is scored) with its bootstrap CI,
and which models differ from the baseline after Holm's correction; then how many of G.pt's success criteria
passed, naming the failed ones. Everything is read from the files the page shows further down
(``comparison.csv`` and the G.pt ``summary.json``), so the summary cannot disagree with the tables.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from segzoo.evaluate.metrics import METRICS
from segzoo.evaluate.stats import baseline_of
from segzoo.report.names import model_name, region_name

ALPHA = 0.05  # family-wise error rate of the Holm-corrected tests


def headline_metric(metrics: list[str]) -> str:
    """Dice when it is scored, else the first metric the config lists."""
    return "dice" if "dice" in metrics else metrics[0]


def region_answers(comparison: pd.DataFrame, metric: str) -> list[dict]:
    """One entry per region: the best model by mean ``metric`` (ties: the first listed), its mean and CI, and
    the models whose difference from the baseline is significant after Holm, each with its direction and p."""
    rows = comparison[comparison["metric"] == metric]
    higher = METRICS[metric].better == "higher"
    answers = []
    for region, group in rows.groupby("region", sort=False):
        scored = group.dropna(subset=["mean"])
        if scored.empty:
            answers.append({"region": region, "best": None})
            continue
        best = scored.loc[scored["mean"].idxmax() if higher else scored["mean"].idxmin()]
        baseline = scored[scored["model"] == baseline_of(comparison)]
        base_mean = float(baseline["mean"].iloc[0]) if len(baseline) else np.nan
        significant = [{"model": r.model, "p": float(r.p_holm),
                        "direction": "better" if (r.mean > base_mean) == higher else "worse",
                        "effect": (float(r.median_diff), float(r.diff_ci_low), float(r.diff_ci_high))}
                       for r in group.itertuples() if not pd.isna(r.p_holm) and r.p_holm < ALPHA]
        tested = group["p_holm"].notna().sum()
        answers.append({"region": region, "best": best["model"], "mean": float(best["mean"]),
                        "ci": (float(best["ci_low"]), float(best["ci_high"])), "n": int(best["n"]),
                        "significant": significant, "tests": int(tested),
                        "smallest_p": float(group["p_holm"].min()) if tested else None})
    return answers


def summary_section(comparison: pd.DataFrame, metrics: list[str], gpt: dict | None,
                    terms: str | None = None) -> list[str]:
    """The page's "Summary" section (HTML parts). ``gpt``: the G.pt evaluation's ``summary.json``, or None;
    ``terms``: the comparison's protocol in a sentence (:meth:`segzoo.data.plans.Plans.terms`)."""
    metric = headline_metric(metrics)
    label = METRICS[metric].label
    baseline = html.escape(model_name(baseline_of(comparison)))
    rows = []
    for a in region_answers(comparison, metric):
        if a["best"] is None:
            rows.append(f"<tr><td>{html.escape(region_name(a['region']))}</td><td colspan='3'>no model has a value"
                        "</td></tr>")
            continue
        if a["significant"]:
            tests = "; ".join(f"<b>{html.escape(model_name(s['model']))}</b> {s['direction']} by "
                              f"{abs(s['effect'][0]):.3f} "
                              f"(median paired difference {s['effect'][0]:+.3f} [{s['effect'][1]:+.3f}, "
                              f"{s['effect'][2]:+.3f}], p = {s['p']:.3g})" for s in a["significant"])
        elif a["tests"]:
            tests = f"none (smallest p = {a['smallest_p']:.3g})"
        else:
            tests = "not testable (fewer than 2 paired cases with a difference)"
        rows.append(f"<tr><td>{html.escape(region_name(a['region']))}</td>"
                    f"<td><b>{html.escape(model_name(a['best']))}</b></td>"
                    f"<td>{a['mean']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}], n = {a['n']}</td><td>{tests}</td></tr>")
    seeds = int(comparison["seeds"].max()) if "seeds" in comparison and len(comparison) else 1
    protocol = ("<p class='protocol'><b>On what terms</b>: " + html.escape(terms or "protocol not recorded")
                + f"; {seeds} training seed{'s' if seeds > 1 else ''} per model"
                + (" (the tables give the spread over seeds)" if seeds > 1 else
                   " (one seed: a difference smaller than seed-to-seed variation cannot be told from it)") + ".</p>")
    parts = ["<h2>Summary</h2>", protocol,
             f"<p>Best model per region by mean {html.escape(label)} on the test cases, with its 95 % bootstrap CI, "
             f"and the models whose per-case {html.escape(label)} differs from the baseline, <b>{baseline}</b> "
             "(<code>compare.baseline</code>; paired Wilcoxon, "
             f"Holm-corrected over all models and regions, α = {ALPHA}), by how much (the median of the paired "
             "differences with its 95 % bootstrap CI). Details in "
             "<a href='#comparison'>Comparison</a>.</p>",
             f"<table class='comparison summary'><tr><th>region</th><th>best model</th><th>mean [95 % CI]</th>"
             f"<th>differs from {baseline} after Holm</th></tr>" + "".join(rows) + "</table>"]
    if gpt is not None:
        learned = {n: h for n, h in gpt["headline"].items() if gpt["generators"][n]["generator_kind"] == "learned"}
        verdict = "; ".join(f"{html.escape(gpt['generators'][n]['label'])} {h['heldout']['passed']} of "
                            f"{h['heldout']['of']}" for n, h in learned.items() if "heldout" in h)
        lost = gpt.get("not_learned_by_adam", [])
        parts.append(f"<p><b>Checkpoint diffusion: discriminative criteria passed from held-out parents: {verdict}"
                     "</b> (a criterion a trivial generator passes does not count"
                     + (f"; not learned by Adam, every row failed: {html.escape(', '.join(lost))}" if lost else "")
                     + "). Every generator and criterion in <a href='#checkpoint-diffusion-every-generator-through-"
                       "every-criterion'>Checkpoint diffusion</a>.</p>")
    return parts
