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

import yaml

from segzoo import __version__
from segzoo.errors import SegzooError
from segzoo.data.plans import Plans
from segzoo.evaluate.metrics import EMPTY_RULE, LESION_METRICS, METRICS, implementation
from segzoo.evaluate.report_tables import COMPARISON, PER_CASE, elsewhere
from segzoo.evaluate.stats import baseline_of
from segzoo.io import read_json, write_text
from segzoo.provenance import source_digest
from segzoo.report.summary import summary_section
from segzoo.weightgen.evaluation_folder import EvaluationFolder

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
    """The G.pt part of the page: the pass/fail criteria first, then what was measured, memorisers beside each."""
    evaluation = EvaluationFolder(folder)
    s = evaluation.summary()
    criteria = "".join(
        f"<tr><td class='{'pass' if c['passed'] else 'fail'}'>{'PASS' if c['passed'] else 'FAIL'}</td>"
        f"<td>{html.escape(c['criterion'])}</td><td>{html.escape(str(c['task']))}</td>"
        f"<td>{html.escape(c['detail'])}</td></tr>" for c in s["criteria"])
    lost = s["not_learned_regions"]
    shots = evaluation.table("oneshot")
    criteria_table = ("<table class='comparison criteria'><tr><th></th><th>criterion</th><th>task</th>"
                      "<th>measured</th></tr>" + criteria + "</table>")
    audit = [f for f in evaluation.figures() if f["file"] == "audit.png"]
    beside = (f"<figure><img src='{rel(folder / audit[0]['file'])}' alt='{html.escape(audit[0]['caption'])}'>"
              f"<figcaption>{html.escape(audit[0]['caption'])}</figcaption></figure>") if audit else ""
    def number(value) -> str:
        return "—" if value is None else f"{value:.3f}"

    per_task = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{number(v['oneshot_dice'])} [{number(v['oneshot_ci'][0])}, "
        f"{number(v['oneshot_ci'][1])}]</td>" + "".join(
            f"<td>{number(v[f'{m}_dice'])}</td>" for m in ("adam_best", "lookup", "mean_k", "nearest", "noise"))
        + "</tr>" for t, v in s["per_task"].items())
    parts = ["<h2>Checkpoint diffusion (G.pt)</h2>",
             "<p>Success criteria (thresholds fixed in advance; every task judged, a failed criterion shown "
             "failed), beside the memorisation audit:</p>",
             f"<div class='side-by-side'>{criteria_table}{beside}</div>",
             f"<p>G.pt ({s['gpt_parameters']:,} parameters) was trained on {s['train_checkpoints']} checkpoints of "
             f"{s['train_runs']} zoo runs from {s['train_parents']} training parents in {s['gpt_train_seconds']:.0f} s"
             f"{' (every start aligned to the first parent by weight matching)' if s['aligned'] else ''}. Every "
             f"one-shot network below starts from one of {s['heldout_parents']} held-out parents it never saw "
             f"({len(shots)} draws), and is scored on the whole test volumes, as the comparison scores its models; "
             f"what Adam reaches from the same parent is the val-chosen best of that parent's own "
             f"{s['heldout_runs']} runs. One network takes {s['sample_seconds_one_network']:.2f} s to sample. "
             "Prompts and every selection use the zoo's validation patches. "
             + (f"Not learned by any zoo run (best validation Dice below 0.3): {', '.join(lost)}; its criteria are "
                "judged all the same. " if lost else "")
             + "Files: " + ", ".join(f"<a href='{rel(f)}'>{f.name}</a>" for f in
                                     map(evaluation.table_file, ("oneshot", "alignment", "finetune", "unification",
                                                                 "insample", "samples", "criteria"))) + ".</p>",
             "<h3>From held-out parents: mean [95 % bootstrap CI] over parents x draws (test volumes)</h3>",
             "<table class='comparison'><tr><th>task</th><th>G.pt one-shot</th><th>Adam from the parent</th>"
             "<th>lookup</th><th>mean of k nearest</th><th>nearest</th><th>noise</th></tr>" + per_task + "</table>",
             "<h3>Prompt alignment</h3>", _table(evaluation.table_file("alignment")),
             "<h3>The one-shot network as an initialisation</h3>", _table(evaluation.table_file("finetune")),
             "<h3>One network for every region</h3>", _table(evaluation.table_file("unification")),
             "<h3>In-sample draws (from training parents G.pt has seen; not part of any criterion)</h3>",
             _table(evaluation.table_file("insample"))]
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
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{' × '.join(map(str, m['patch_size']))} ({m['patch_source']})"
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
    rows = "".join(f"<tr><td><code>{html.escape(m)}</code></td><td>{html.escape(implementation(m))}</td></tr>"
                   for m in metrics)
    detection = evaluate.get("detection") or {}
    return ["<h2>How the metrics are computed</h2>",
            f"<p>{html.escape(EMPTY_RULE)}. Surface Dice tolerance: {evaluate['tolerance_mm']:g} mm. Lesion-wise "
            f"detection: {detection.get('connectivity', 26)}-connected components; a lesion counts as detected "
            f"(or a predicted one as true) when at least {detection.get('min_overlap_voxels', 1)} of its voxels "
            "overlap the other mask.</p>",
            "<table class='comparison'><tr><th>metric</th><th>implementation</th></tr>" + rows + "</table>"]


def oof_section(tables: Path, metrics: list[str], rel) -> list[str]:
    """The cross-validation comparison: every non-test case scored once, by the fold run that held it out."""
    parts = ["<h2>Cross-validation (out of fold)</h2>",
             "<p>Every non-test case predicted once, by the final checkpoint of the fold run that held it out (no "
             "checkpoint or postprocessing chosen on it); same statistics as above over these cases. Files: "
             f"<a href='{rel(tables / COMPARISON)}'>{COMPARISON}</a>, "
             f"<a href='{rel(tables / PER_CASE)}'>{PER_CASE}</a>.</p>"]
    for metric in metrics:
        table = tables / f"{metric}.html"
        if not table.is_file():
            if metric in LESION_METRICS:
                continue  # no region is scored as instances
            raise SegzooError(f"{table}: missing (run `segzoo compare` on the out-of-fold scores)")
        parts.append(f"<h3>{html.escape(METRICS[metric].label)}</h3>" + table.read_text())
    return parts


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
    baseline = baseline_of(comparison)
    rel = lambda p: Path(os.path.relpath(Path(p).resolve(), out.parent.resolve())).as_posix()  # noqa: E731
    parts = [f"<h1>segzoo results: {html.escape(dataset)}</h1>",
             f"<p>Code: {html.escape(code_version(repo))}. Models: {', '.join(config['train']['models'])}; "
             f"seeds: {', '.join(map(str, config['train']['seeds']))}.</p>",
             "<h2>Comparison</h2>",
             "<p>Mean [95 % bootstrap CI] over the n test cases with a value (seeds averaged per case; a region "
             "absent from both reference and prediction has no Dice and drops out); Δ: the median of the paired "
             f"differences from the baseline, {html.escape(baseline)} [95 % bootstrap CI], the effect size; p: paired "
             f"Wilcoxon test against {html.escape(baseline)} over the cases both models have a value for, "
             "Holm-corrected. Files: "
             f"<a href='{rel(tables / COMPARISON)}'>{COMPARISON}</a>, "
             f"<a href='{rel(tables / PER_CASE)}'>{PER_CASE}</a>.</p>"]
    for metric in config["evaluate"]["metrics"]:
        table = tables / f"{metric}.html"
        if not table.is_file():
            if metric in LESION_METRICS:
                continue  # no region is scored as instances
            raise SegzooError(f"{table}: missing (run `segzoo compare` with metric {metric})")
        parts.append(f"<h3>{html.escape(METRICS[metric].label)} <small>({METRICS[metric].better} is better; "
                     f"<code>{html.escape(metric)}</code>)</small></h3>" + table.read_text())
    parts += metrics_section(config["evaluate"]["metrics"], config["evaluate"])
    if oof_tables is not None:
        parts += oof_section(oof_tables, config["evaluate"]["metrics"], rel)
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
    if plans:
        external = {row: e["protocol"] for row, e in config.get("compare", {}).get("external", {}).items()}
        rows = list(dict.fromkeys(comparison["model"]))
        terms = "; ".join(filter(None, [Plans(plans).terms(rows), elsewhere(rows, Plans(plans), external)]))
    else:
        terms = None
    lead = summary_section(comparison, config["evaluate"]["metrics"], gpt, terms)
    body, toc = with_anchors(parts[:2] + lead + parts[2:])
    body.insert(2 + len(lead), toc)  # the answer, then where to find the rest
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>segzoo: {html.escape(dataset)}</title><style>{STYLE}</style><script>{CHECK}</script></head>"
            "<body>" + "\n".join(body) + "</body></html>\n")
    write_text(out, page, overwrite=True)
    return out
