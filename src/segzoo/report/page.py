"""``results/index.html``: one static page (no server, relative links) with the comparison tables,
every figure with its caption, the configuration used and the code version.

A small inline script counts, once the page has loaded, the images that failed to load and writes
the count to ``<body data-broken-images>``, so a headless browser can check the page.
"""

from __future__ import annotations

import html
import os
import subprocess
from pathlib import Path

import yaml

from segzoo import __version__
from segzoo.errors import SegzooError
from segzoo.io import read_json
from segzoo.train.loop import source_digest

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1150px; color: #222; }
table.comparison { border-collapse: collapse; font-size: 0.85rem; margin-bottom: 1rem; }
table.comparison th, table.comparison td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #444; } pre { background: #f6f6f6; padding: 1rem; overflow-x: auto; }
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


def write_page(results: Path, dataset: str, config: dict, out: Path, repo: Path) -> Path:
    """Write ``out`` (normally ``results/index.html``); links are relative to its folder."""
    figures_dir = results / "figures" / dataset
    figures = read_json(figures_dir / "figures.json")
    tables = results / "tables" / dataset
    rel = lambda p: Path(os.path.relpath(Path(p).resolve(), out.parent.resolve())).as_posix()  # noqa: E731
    parts = [f"<h1>segzoo results: {html.escape(dataset)}</h1>",
             f"<p>Code: {html.escape(code_version(repo))}. Models: {', '.join(config['train']['models'])}; "
             f"seeds: {', '.join(map(str, config['train']['seeds']))}.</p>",
             "<h2>Comparison</h2>",
             "<p>Mean [95 % bootstrap CI] over the n test cases with a value (seeds averaged per case; a region "
             "absent from both reference and prediction has no Dice and drops out); p: paired Wilcoxon test against "
             "unet3plus over the cases both models have a value for, Holm-corrected. Files: "
             f"<a href='{rel(tables / 'comparison.csv')}'>comparison.csv</a>, "
             f"<a href='{rel(tables / 'per_case.csv')}'>per_case.csv</a>.</p>"]
    for metric in config["evaluate"]["metrics"]:
        table = tables / f"{metric}.html"
        if not table.is_file():
            raise SegzooError(f"{table}: missing (run `segzoo compare` with metric {metric})")
        parts.append(f"<h3>{html.escape(metric)}</h3>" + table.read_text())
    section = None
    for fig in figures:
        if fig["section"] != section:
            section = fig["section"]
            parts.append(f"<h2>{html.escape(section)}</h2>")
        parts.append(f"<figure><img src='{rel(figures_dir / fig['file'])}' alt='{html.escape(fig['caption'])}'>"
                     f"<figcaption>{html.escape(fig['caption'])}</figcaption></figure>")
    parts.append("<h2>Configuration</h2><pre>" + html.escape(yaml.safe_dump(config, sort_keys=False)) + "</pre>")
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>segzoo: {html.escape(dataset)}</title><style>{STYLE}</style><script>{CHECK}</script></head>"
            "<body>" + "\n".join(parts) + "</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    tmp.write_text(page)
    tmp.replace(out)
    return out
