"""``results/<dataset>/index.html``: one static page (no server, relative links) that leads with the answer (a
summary, then a table of contents), then the comparison tables, every figure with its caption, the configuration
used and the code version.

A small inline script counts, once the page has loaded, the images that failed to load and writes
the count to ``<body data-broken-images>``, so a headless browser can check the page.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import yaml

from segzoo import __version__
from segzoo.errors import SegzooError
from segzoo.data.plans import Plans
from segzoo.evaluate.metrics import EMPTY_RULE, LESION_METRICS, METRICS
from segzoo.evaluate.report_tables import COMPARISON, PER_CASE, elsewhere, external_protocols, table_caption
from segzoo.evaluate.stats import baseline_of, wide_table
from segzoo.io import read_json, write_text
from segzoo.provenance import source_digest
from segzoo.report.names import implementation, model_name, region_name
from segzoo.report.summary import summary_section
from segzoo.weightgen.evaluation.folder import EvaluationFolder

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1150px; color: #222; padding: 0 1rem; }
table.comparison { border-collapse: collapse; font-size: 0.85rem; margin-bottom: 1rem; display: block;
                   max-width: 100%; overflow-x: auto; }
table.summary { font-size: 0.95rem; }
nav.toc { background: #f6f8fa; border: 1px solid #ddd; padding: 0.5rem 1rem; margin: 1rem 0; }
nav.toc ol { columns: 2; margin: 0.25rem 0; }
table.comparison th, table.comparison td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #444; }
td.pass { color: #1a7f37; font-weight: bold; } td.fail { color: #cf222e; font-weight: bold; }
pre { background: #f6f6f6; padding: 1rem; overflow-x: auto; }
div.side-by-side { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
div.side-by-side > * { flex: 1 1 480px; min-width: 0; }
"""
CHECK = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.images = images.length;
  document.body.dataset.brokenImages = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;
});
"""


def code_version(repo: Path) -> str:
    """segzoo's version, the git commit when there is one, and a digest of the source files."""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"segzoo {__version__}" + (f", git {commit}" if commit else "") + f", source {source_digest()[:12]}"


def _table(csv: Path, columns: list[str] | None = None) -> str:
    import pandas as pd

    try:
        frame = pd.read_csv(csv)
    except pd.errors.EmptyDataError:  # a table with no rows (e.g. no in-sample draw)
        return "<p>(none)</p>"
    return frame[columns or frame.columns].to_html(index=False, classes="comparison", float_format="%.3f",
                                                  na_rep="—", border=0)


def weightgen_section(folder: Path, rel) -> list[str]:
    """The checkpoint-diffusion part of the page: the generators × criteria table first (beside the memorisation
    audit), then what was measured: every generator's Dice per task, prompt following, fine-tuning, unification."""
    import pandas as pd

    from segzoo.weightgen.evaluation.criteria import CRITERIA, matrix, mean_ci

    evaluation = EvaluationFolder(folder)
    s = evaluation.summary()
    criteria = evaluation.table("criteria")

    def number(value) -> str:
        return "—" if value is None or not np.isfinite(value) else f"{value:.3f}"

    def cells(frame: pd.DataFrame) -> str:
        def one(value) -> str:
            text = html.escape(str(value))
            kind = "pass" if text.startswith("PASS") else "fail" if text.startswith("FAIL") else ""
            return f"<td class='{kind}'>{text}</td>"

        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
        body = "".join("<tr>" + "".join(one(v) for v in row) + "</tr>" for row in frame.itertuples(index=False))
        return f"<table class='comparison criteria'><tr>{head}</tr>{body}</table>"

    headline = "; ".join(f"<b>{html.escape(s['generators'][n]['label'])}</b>: {h['heldout']['passed']} of "
                         f"{h['heldout']['of']} discriminative criteria pass"
                         for n, h in s["headline"].items() if s["generators"][n]["generator_kind"] == "learned"
                         and "heldout" in h)
    audit = [f for f in evaluation.figures() if f["file"] == "audit.png"]
    beside = (f"<figure><img src='{rel(folder / audit[0]['file'])}' alt='{html.escape(audit[0]['caption'])}'>"
              f"<figcaption>{html.escape(audit[0]['caption'])}</figcaption></figure>") if audit else ""
    lost = s["not_learned_by_adam"]
    resolvable = ", ".join(f"{t} {number(v)}" for t, v in s["smallest_resolvable_difference"].items()
                           if v is not None)
    networks = evaluation.table("networks")
    shots = networks[(networks["kind"] == "oneshot") & (networks["role"] == "heldout")]
    per_start = shots.groupby(["generator", "label", "task", "start"], sort=False)["task_dice"].mean().reset_index()
    rows = []
    for (name, label), g in per_start.groupby(["generator", "label"], sort=False):
        row = {"generator": label}
        for task, h in g.groupby("task", sort=False):
            mean, low, high = mean_ci(h["task_dice"], 0)
            row[task] = f"{number(mean)} [{number(low)}, {number(high)}]" if np.isfinite(mean) else "—"
        rows.append(row)
    per_task = pd.DataFrame(rows).fillna("—")
    parts = ["<h2>Checkpoint diffusion: every generator through every criterion</h2>",
             f"<p>From {s['heldout_parents']} held-out parents no generator saw: {headline}. A criterion that a "
             "trivial generator (copy, task-vector transfer, lookup, noise) passes is marked not discriminative and no "
             "PASS on it counts. Thresholds are fixed in advance; every task is judged"
             + (f" ({', '.join(lost)}: not learned by Adam from these starts on whole volumes, so every row FAILs)"
                if lost else "") + f". The smallest difference these starts resolve (80 % power, from the spread of "
             f"the learned generators' paired differences with Adam@25): {resolvable or '—'}.</p>",
             f"<div class='side-by-side'>{cells(matrix(criteria))}{beside}</div>",
             "<p>The criteria: " + "; ".join(f"<i>{c}</i>: {html.escape(d)}" for c, d in CRITERIA.items()) + ".</p>",
             f"<p>The zoo: {s['train_runs']} training runs from {s['train_parents']} training parents; "
             f"{s['heldout_runs']} runs from the held-out parents (what Adam reaches from them)"
             + (f"; {s['fresh_runs']} runs from {s['fresh_inits']} fresh random inits" if s["fresh_inits"] else "")
             + f". Every Dice in the table is the mean over the held-out parents of each parent's mean over draws, on "
             f"whole test volumes ({s['test_cases']} test cases: the zoo network's sliding window over the "
             "preprocessed volumes, overlap 0.25, threshold 0.5; the comparison predicts with overlap 0.5 and scores "
             "on the original grid), with a 95 % bootstrap CI over parents. Prompts and every selection use the "
             "validation patches. Files: " + ", ".join(
                 f"<a href='{rel(f)}'>{f.name}</a>" for f in map(evaluation.table_file, (
                     "criteria", "networks", "prompting", "finetune", "unification"))) + ".</p>",
             "<h3>Every generator from the held-out parents (test volumes)</h3>",
             per_task.to_html(index=False, classes="comparison", border=0),
             "<h3>Prompt following (validation patches, per start)</h3>", _table(evaluation.table_file("prompting")),
             "<h3>The networks as initialisations (test patches)</h3>", _table(evaluation.table_file("finetune")),
             "<h3>One network for every region</h3>", _table(evaluation.table_file("unification"))]
    for fig in [f for f in evaluation.figures() if f["file"] != "audit.png"]:
        parts.append(f"<figure><img src='{rel(folder / fig['file'])}' alt='{html.escape(fig['caption'])}'>"
                     f"<figcaption>{html.escape(fig['caption'])}</figcaption></figure>")
    return parts


def plan_section(plans, rel) -> list[str]:
    """The plan the data and the runs followed: spacing, normalisation, each model's patch and batch (and what each
    patch side must be a multiple of: nnU-Net's networks pool a thick-slice axis less)."""
    data = plans.data
    schemes = ", ".join(f"{html.escape(n['channel'])}: {n['scheme']} ({html.escape(n['source'])})"
                        for n in plans.normalization)
    rows = "".join(f"<tr><td>{html.escape(model_name(name))}</td><td>{' × '.join(map(str, m['patch_size']))} "
                   f"({m['patch_source']})"
                   f"</td><td>{m['batch_size']} ({m['batch_source']})</td>"
                   f"<td>{' × '.join(map(str, m.get('divisors', [m['divisor']])))}</td>"
                   f"<td>{m['estimated_mb']:.0f} of {data['memory_mb']:g}{'' if m['within_budget'] else ' (over)'}</td>"
                   "</tr>" for name, m in data["models"].items())
    spacing = " × ".join(f"{s:.3g}" for s in plans.target_spacing)
    return ["<h2>Plan</h2>",
            f"<p>From the fingerprint of {plans.fingerprint['cases']} training cases "
            f"(<a href='{rel(plans.path)}'>plans.json</a>): target spacing {spacing} mm "
            f"({html.escape(data['spacing_source'])}); median image after resampling "
            f"{' × '.join(f'{s:g}' for s in data['median_shape'])} voxels; normalisation {schemes}.</p>",
            "<table><tr><th>model</th><th>patch (voxels)</th><th>batch</th><th>divisor</th>"
            "<th>estimated training memory (MiB)</th></tr>" + rows + "</table>"]


def metrics_section(metrics: list[str], evaluate: dict) -> list[str]:
    """How each metric is computed (library and version, or segzoo, and the definition): distance metrics in
    particular differ between tools."""
    rows = "".join(f"<tr><td>{html.escape(METRICS[m].name)} (<code>{html.escape(m)}</code>)</td>"
                   f"<td>{html.escape(implementation(m, evaluate))}</td></tr>" for m in metrics)
    detection = evaluate.get("detection") or {}
    return ["<h2>How the metrics are computed</h2>",
            f"<p>{html.escape(EMPTY_RULE)}. Surface Dice tolerance: {evaluate['tolerance_mm']:g} mm. Lesion-wise "
            f"detection: {detection.get('connectivity', 26)}-connected components; a lesion counts as detected "
            f"(or a predicted one as true) when at least {detection.get('min_overlap_voxels', 1)} of its voxels "
            "overlap the other mask.</p>",
            "<table class='comparison'><tr><th>metric</th><th>implementation</th></tr>" + rows + "</table>"]


def comparison_tables(tables: Path, metrics: list[str], caption: str, level: str = "h3") -> list[str]:
    """One table per metric a region has values of, from ``comparison.csv``: models as rows, regions as columns,
    every model and region by its display name (:mod:`segzoo.report.names`)."""
    import pandas as pd

    comparison = pd.read_csv(tables / COMPARISON)
    if comparison.empty:
        raise SegzooError(f"{tables / COMPARISON}: no rows (run `segzoo compare` first)")
    parts = []
    for metric in metrics:
        rows = comparison[comparison["metric"] == metric]
        if rows.empty:
            if metric in LESION_METRICS:
                continue  # no region is scored as instances
            raise SegzooError(f"{tables / COMPARISON}: no rows for metric {metric} (run `segzoo compare` with it)")
        wide = wide_table(rows).rename(index=model_name, columns=region_name)
        parts.append(f"<{level}>{html.escape(METRICS[metric].label)} <small>({METRICS[metric].better} is better; "
                     f"<code>{html.escape(metric)}</code>)</small></{level}><p class='caption'>{html.escape(caption)}."
                     "</p>" + wide.to_html(classes="comparison", border=0))
    return parts


def oof_section(tables: Path, metrics: list[str], rel, caption: str) -> list[str]:
    """The cross-validation comparison: every non-test case scored once, by the fold run that held it out."""
    parts = ["<h2>Cross-validation (out of fold)</h2>",
             "<p>Every non-test case predicted once, by the final checkpoint of the fold run that held it out (no "
             "checkpoint or postprocessing chosen on it); same statistics as above over these cases. Files: "
             f"<a href='{rel(tables / COMPARISON)}'>{COMPARISON}</a>, "
             f"<a href='{rel(tables / PER_CASE)}'>{PER_CASE}</a>.</p>"]
    return parts + comparison_tables(tables, metrics, caption)


def with_anchors(parts: list[str]) -> tuple[list[str], str]:
    """Give every section heading (``<h2>``) an id made from its text and return the parts with a table of
    contents linking to them."""
    seen: dict[str, int] = {}
    entries = []

    def anchor(match: re.Match) -> str:
        title = match.group(1)
        slug = re.sub(r"[^a-z0-9]+", "-", html.unescape(re.sub(r"<[^>]+>", "", title)).lower()).strip("-") or "s"
        seen[slug] = seen.get(slug, 0) + 1
        slug = slug if seen[slug] == 1 else f"{slug}-{seen[slug]}"
        entries.append(f"<li><a href='#{slug}'>{title}</a></li>")
        return f"<h2 id='{slug}'>{title}</h2>"

    anchored = [re.sub(r"<h2>(.*?)</h2>", anchor, part) for part in parts]
    return anchored, "<nav class='toc'><b>Contents</b><ol>" + "".join(entries) + "</ol></nav>"


def write_page(dataset: str, *, figures_dir: Path, tables: Path, weightgen: Path | None, config: dict, out: Path,
               repo: Path, plans: Path | None = None, oof_tables: Path | None = None) -> Path:
    """Write ``out`` (normally ``results/<dataset>/index.html``) from the figures folder, the comparison tables and
    (when the stage ran) the G.pt evaluation folder; links are relative to ``out``'s folder."""
    import pandas as pd

    figures = read_json(figures_dir / "figures.json")
    comparison = pd.read_csv(tables / COMPARISON)
    models = list(dict.fromkeys(comparison["model"]))
    plan = Plans(plans) if plans else None
    terms = plan.terms(models) if plan else None
    other = elsewhere(models, plan, external_protocols(config))  # rows not trained on these terms
    caption = table_caption(terms, int(comparison["seeds"].max()) if len(comparison) else 1, other)
    baseline = model_name(baseline_of(comparison))
    rel = lambda p: Path(os.path.relpath(Path(p).resolve(), out.parent.resolve())).as_posix()  # noqa: E731
    parts = [f"<h1>segzoo results: {html.escape(dataset)}</h1>",
             f"<p>Code: {html.escape(code_version(repo))}. Models: {html.escape(', '.join(map(model_name, models)))}; "
             f"seeds: {', '.join(map(str, config['train']['seeds']))}.</p>",
             "<h2>Comparison</h2>",
             "<p>Mean [95 % bootstrap CI] over the n test cases with a value (seeds averaged per case; a region "
             "absent from both reference and prediction has no Dice and drops out); Δ: the median of the paired "
             f"differences from the baseline, {html.escape(baseline)} [95 % bootstrap CI], the effect size; p: paired "
             f"Wilcoxon test against {html.escape(baseline)} over the cases both models have a value for, "
             "Holm-corrected. Files: "
             f"<a href='{rel(tables / COMPARISON)}'>{COMPARISON}</a>, "
             f"<a href='{rel(tables / PER_CASE)}'>{PER_CASE}</a>.</p>"]
    parts += comparison_tables(tables, config["evaluate"]["metrics"], caption)
    parts += metrics_section(config["evaluate"]["metrics"], config["evaluate"])
    if oof_tables is not None:
        parts += oof_section(oof_tables, config["evaluate"]["metrics"], rel, caption)
    if plans is not None:
        parts += plan_section(Plans(plans), rel)
    section = None
    for fig in figures:
        if fig["section"] != section:
            section = fig["section"]
            parts.append(f"<h2>{html.escape(section)}</h2>")
        also = "".join(f" <a href='{rel(figures_dir / f)}'>{html.escape(Path(f).suffix[1:].upper())}</a>"
                       for f in fig.get("also", []))
        parts.append(f"<figure><img src='{rel(figures_dir / fig['file'])}' alt='{html.escape(fig['caption'])}'>"
                     f"<figcaption>{html.escape(fig['caption'])}{' Also as:' + also if also else ''}</figcaption>"
                     "</figure>")
    if weightgen is not None:
        parts += weightgen_section(weightgen, rel)
    parts.append("<h2>Configuration</h2><pre>" + html.escape(yaml.safe_dump(config, sort_keys=False)) + "</pre>")
    gpt = EvaluationFolder(weightgen).summary() if weightgen is not None else None
    lead = summary_section(comparison, config["evaluate"]["metrics"], gpt,
                           "; ".join(filter(None, [terms, other])) if plan else None)
    body, toc = with_anchors(parts[:2] + lead + parts[2:])
    body.insert(2 + len(lead), toc)  # the answer, then where to find the rest
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>segzoo: {html.escape(dataset)}</title><style>{STYLE}</style><script>{CHECK}</script></head>"
            "<body>" + "\n".join(body) + "</body></html>\n")
    write_text(out, page, overwrite=True)
    return out
