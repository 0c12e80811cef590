"""Writing the comparison: per-case scores and models × regions tables as CSV, Markdown and HTML."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from segzoo.data.plans import Plans
from segzoo.errors import SegzooError
from segzoo.evaluate.metrics import METRICS
from segzoo.evaluate.stats import BASELINE, compare, wide_table
from segzoo.io import new_files, output_dir, write_json

TABLE_LEGEND = ("mean [95% CI] over the n test cases with a value; Δ: median paired difference from {baseline} "
                "[95% bootstrap CI]; p: paired Wilcoxon vs {baseline}, Holm-corrected")
PER_CASE = "per_case.csv"  # every score: model, seed, case, region, one column per metric
COMPARISON = "comparison.csv"  # long form: model, region, metric, mean, CI, n, p, ...


def write_tables(score_files: list[Path], out_dir: Path, metrics: list[str], seed: int,
                 summary: Path | None = None, plans: Path | None = None, baseline: str = BASELINE,
                 external: dict[str, str] | None = None) -> list[Path]:
    """``per_case.csv``, ``comparison.csv`` (long form) and, per metric a region has values of, ``<metric>.md`` /
    ``.html`` (wide), each captioned with the comparison's terms (the protocol in ``plans``, :meth:`Plans.terms`),
    the seeds and the rows not trained on those terms; with ``summary``, also the means as nested JSON (model ->
    region -> metric), the file DVC shows.

    ``baseline``: the row every difference and test is taken against. ``external``: rows whose label maps were made
    outside segzoo, each with how (for the caption)."""
    scores = pd.concat([_read_scores(f) for f in score_files], ignore_index=True)
    names = list(dict.fromkeys(scores["model"]))
    if baseline not in names:
        raise SegzooError(f"baseline {baseline!r} is not a row of the comparison (rows: {', '.join(names)}); "
                          "set compare.baseline to one of them")
    planned = Plans(plans) if plans else None
    terms = planned.terms(names) if planned else None
    long = pd.concat([compare(scores, m, seed, baseline) for m in metrics], ignore_index=True)
    caption = table_caption(terms, int(scores.groupby("model")["seed"].nunique().max()),
                            elsewhere(names, planned, external or {}))
    legend = TABLE_LEGEND.format(baseline=baseline)
    written = []
    with new_files(*([summary] if summary else [])), output_dir(out_dir) as tmp:
        if summary:
            write_json(summary, mean_summary(long))
        scores.to_csv(tmp / PER_CASE, index=False, float_format="%.6g")
        long.to_csv(tmp / COMPARISON, index=False, float_format="%.6g")
        for metric in metrics:
            rows = long[long["metric"] == metric]
            if rows.empty:
                continue  # no region is scored by it (lesion-wise metrics without instance regions)
            wide = wide_table(rows)
            (tmp / f"{metric}.md").write_text(f"### {metric}: {legend}\n\n{caption}.\n\n" + wide.to_markdown()
                                              + "\n")
            (tmp / f"{metric}.html").write_text(f"<p class='caption'>{html.escape(caption)}.</p>"
                                                + wide.to_html(classes="comparison", border=0))
        written = sorted(p.name for p in tmp.iterdir())
    return [out_dir / name for name in written]


def table_caption(terms: str | None, seeds: int, elsewhere_rows: str | None = None) -> str:
    """What every table of the comparison is over: the protocol (``terms``), the seeds, and the rows made on other
    terms (:func:`elsewhere`)."""
    return "; ".join(filter(None, [terms, f"{seeds} training seed{'s' if seeds > 1 else ''} per model" +
                                   (" (± the spread of the mean over seeds)" if seeds > 1 else
                                    " (no seed spread: one seed)"), elsewhere_rows]))


def external_protocols(config: dict) -> dict[str, str]:
    """``compare.external`` as ``{row: how its label maps were made}`` (what :func:`elsewhere` says of each)."""
    return {row: e["protocol"] for row, e in ((config.get("compare") or {}).get("external") or {}).items()}


def elsewhere(rows: list[str], plans: Plans | None, external: dict[str, str]) -> str | None:
    """The caption's sentence on rows not trained on the comparison's terms: external label maps (with how they were
    made) and any other row the plan did not plan (an imported nnU-Net model, trained by nnU-Net)."""
    planned = set(plans.data["models"]) if plans else set(rows) - set(external)
    other = [r for r in rows if r not in planned]
    if not other:
        return None
    said = [f"{r} ({external[r]})" if r in external else f"{r} (trained outside segzoo)" for r in other]
    return (f"not trained on these terms: {'; '.join(said)}: {'its' if len(other) == 1 else 'their'} protocol "
            "differs (data handling, patch, schedule, epochs), so a difference from the baseline mixes protocol "
            "with architecture")


def mean_summary(long: pd.DataFrame) -> dict:
    """``{model: {region: {metric: mean}}}``, 6 significant digits, NaN as null (stable across reruns)."""
    out: dict = {}
    for row in long.itertuples():
        mean = None if pd.isna(row.mean) else float(f"{row.mean:.6g}")
        out.setdefault(row.model, {}).setdefault(row.region, {})[row.metric] = mean
    return out


def _read_scores(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise SegzooError(f"{path}: missing (run `segzoo evaluate` first)")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise SegzooError(f"{path}: not a readable CSV ({e})") from None
    missing = [c for c in ["model", "seed", "case", "region", *METRICS] if c not in table.columns]
    if missing:
        raise SegzooError(f"{path}: missing column(s) {', '.join(missing)} (not a `segzoo evaluate` table)")
    return table
