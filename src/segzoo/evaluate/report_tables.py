"""Writing the comparison: per-case scores and models × regions tables as CSV, Markdown and HTML."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from segzoo.errors import SegzooError
from segzoo.evaluate.metrics import METRICS
from segzoo.evaluate.stats import compare, wide_table
from segzoo.io import new_files, output_dir, write_json

PER_CASE = "per_case.csv"  # every score: model, seed, case, region, one column per metric
COMPARISON = "comparison.csv"  # long form: model, region, metric, mean, CI, n, p, ...


def write_tables(score_files: list[Path], out_dir: Path, metrics: list[str], seed: int,
                 summary: Path | None = None) -> list[Path]:
    """``per_case.csv``, ``comparison.csv`` (long form) and, per metric, ``<metric>.md`` / ``.html`` (wide);
    with ``summary``, also the means as nested JSON (model -> region -> metric), the file DVC shows as metrics."""
    scores = pd.concat([_read_scores(f) for f in score_files], ignore_index=True)
    long = pd.concat([compare(scores, m, seed) for m in metrics], ignore_index=True)
    written = []
    with new_files(*([summary] if summary else [])), output_dir(out_dir) as tmp:
        if summary:
            write_json(summary, mean_summary(long))
        scores.to_csv(tmp / PER_CASE, index=False, float_format="%.6g")
        long.to_csv(tmp / COMPARISON, index=False, float_format="%.6g")
        for metric in metrics:
            wide = wide_table(long[long["metric"] == metric])
            (tmp / f"{metric}.md").write_text(f"### {metric}: mean [95% CI] over the n test cases with a value "
                                              f"(p: paired Wilcoxon vs unet3plus, Holm)\n\n" + wide.to_markdown()
                                              + "\n")
            (tmp / f"{metric}.html").write_text(wide.to_html(classes="comparison", border=0))
        written = sorted(p.name for p in tmp.iterdir())
    return [out_dir / name for name in written]


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
