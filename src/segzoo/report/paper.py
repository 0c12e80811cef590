"""The paper folder (``segzoo paper``): what a two-column paper takes from a dataset's results, and its PDF.

``results/<dataset>/paper/``::

    main.tex            a two-column article: the methods written from the configuration and the plan (data,
                        protocol, models, training, metrics and how each is computed, statistics), the tables
                        and the figures
    tables/<metric>.tex one booktabs table per metric: mean [95 % CI] per model and region, the best in bold, a
                        mark where a model differs from the reference after Holm, the caption says what each means
    figures/*.pdf       every figure of the report as PDF, the architecture diagrams included
    main.pdf            compiled with latexmk (or pdflatex twice) when TeX is installed

Compiling needs TeX Live's base and recommended LaTeX packages (Debian: ``texlive-latex-base``,
``texlive-latex-recommended``, ``latexmk``); without them the folder is written and a note says how to install TeX.
The PDF is made reproducible (``SOURCE_DATE_EPOCH``): the same results give the same bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from segzoo.data.plans import Plans
from segzoo.errors import SegzooError
from segzoo.evaluate.metrics import EMPTY_RULE, METRICS, implementation
from segzoo.evaluate.report_tables import COMPARISON, PER_CASE, elsewhere
from segzoo.evaluate.stats import baseline_of
from segzoo.io import output_dir, read_json, write_text

ALPHA = 0.05
FLOATS_PER_PAGE = 6
TEX_INSTALL = ("install TeX to compile it: Debian/Ubuntu `apt-get install texlive-latex-base texlive-latex-recommended "
               "latexmk`, macOS `brew install --cask mactex-no-gui`; then run `latexmk -pdf main.tex` in {folder}")
_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_UNICODE = {"×": r"$\times$", "−": "-", "Δ": r"$\Delta$", "≥": r"$\geq$", "≤": r"$\leq$", "±": r"$\pm$",
            "α": r"$\alpha$", "∩": r"$\cap$", "∪": r"$\cup$", "→": r"$\to$", "·": r"$\cdot$", "…": "...",
            "²": r"$^2$", "³": r"$^3$", "µ": r"$\mu$", "–": "--", "—": "---"}


def tex(text: object) -> str:
    """``text`` with LaTeX's special characters escaped (and a few Unicode signs written the TeX way)."""
    return "".join(_SPECIAL.get(c, _UNICODE.get(c, c)) for c in str(text))


def metric_table(comparison: pd.DataFrame, metric: str, terms: str, digits: int = 3) -> str:
    """A booktabs table of one metric: models as rows, regions as columns, ``mean [low, high]``; per region the
    best mean in bold; ``*`` where a model differs from the reference model after Holm (p < 0.05)."""
    rows = comparison[comparison["metric"] == metric]
    if rows.empty:
        raise SegzooError(f"{COMPARISON}: no rows for metric {metric}")
    better_high = METRICS[metric].better == "higher"
    models = list(dict.fromkeys(rows["model"]))
    regions = list(dict.fromkeys(rows["region"]))
    best = {}
    for region in regions:
        scored = rows[(rows["region"] == region)].dropna(subset=["mean"])
        if len(scored):
            best[region] = scored.loc[scored["mean"].idxmax() if better_high else scored["mean"].idxmin(), "model"]
    lines = [r"\begin{table*}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "c" * len(regions) + "}",
             r"\toprule", "model & " + " & ".join(tex(r) for r in regions) + r" \\", r"\midrule"]
    for model in models:
        cells = []
        for region in regions:
            r = rows[(rows["model"] == model) & (rows["region"] == region)]
            if r.empty or np.isnan(r["mean"].iloc[0]):
                cells.append("--")
                continue
            r = r.iloc[0]
            value = f"{r['mean']:.{digits}f}"
            value = rf"\textbf{{{value}}}" if best.get(region) == model else value
            mark = "$^{*}$" if not np.isnan(r["p_holm"]) and r["p_holm"] < ALPHA else ""
            spread = rf" $\pm${r['seed_sd']:.{digits}f}" if r["seeds"] > 1 else ""
            cells.append(f"{value}{mark}{spread} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]")
        lines.append(tex(model) + " & " + " & ".join(cells) + r" \\")
    n = int(rows["n"].max())
    seeds = int(rows["seeds"].max())
    caption = (f"{METRICS[metric].label} ({METRICS[metric].better} is better): mean over the test cases with a "
               f"value (up to {n}) and its 95 % bootstrap CI; the best mean per region in bold. $^{{*}}$: differs "
               f"from {baseline_of(comparison)} in a paired two-sided Wilcoxon signed-rank test, Holm-corrected over "
               f"every model and region, p < {ALPHA}. "
               + (f"$\\pm$: standard deviation of the mean over {seeds} training seeds. " if seeds > 1 else
                  "One training seed. ")
               + f"Terms: {terms}.")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_caption(caption)}}}", rf"\label{{tab:{metric}}}",
              r"\end{table*}"]
    return "\n".join(lines) + "\n"


def _caption(text: str) -> str:
    """Escape a caption but keep the math written into it."""
    parts = text.split("$")
    return "".join(tex(p) if i % 2 == 0 else f"${p}$" for i, p in enumerate(parts))


def methods(config: dict, plans: Plans, dataset: str, models: list[str], metrics: list[str], n_test: int,
            baseline: str) -> str:
    """The methods section, written from the configuration and the plan."""
    train = config["train"]
    phantom = config.get("phantom", {})
    data = (f"The embedded spinal-cord MRI phantom ({phantom.get('cases')} training and {phantom.get('test_cases')} "
            f"test cases of {' x '.join(map(str, phantom.get('shape', [])))} voxels)"
            if not config["dataset"]["raw"] else f"The dataset {dataset}")
    spacing = " x ".join(f"{s:.3g}" for s in plans.target_spacing)
    augment = train["augment"]
    flips = ", ".join("XYZ"[a] for a in augment.get("flip_axes", [])) or "none"
    model_lines = "; ".join(f"{m} ({', '.join(f'{k} {v}' for k, v in config['models'][m].items())})"
                            for m in models if m in config["models"])
    metric_lines = " ".join(f"{METRICS[m].name}: {implementation(m)}." for m in metrics)
    text = [
        r"\section{Methods}",
        tex(f"{data} was resampled to {spacing} mm and normalised as planned from its fingerprint (nnU-Net's rules). "
            f"The test set has {n_test} cases and is never used for selection."),
        "",
        tex(f"Models: {model_lines}. Comparison: {plans.terms(models)}. Every model was trained for "
            f"{train['steps']} steps with {train['optimizer']} (learning rate {train['lr']}, weight decay "
            f"{train['weight_decay']}, {train['schedule']} schedule), {train['foreground_fraction']:.0%} of each "
            f"batch centred on a labelled voxel, flips along {flips}, intensity scaling {augment.get('intensity')} "
            f"and noise {augment.get('noise')}; seeds {', '.join(map(str, train['seeds']))}. The checkpoint with "
            "the best validation Dice is evaluated."),
        "",
        tex(f"Metrics, per test case and region: {metric_lines} {EMPTY_RULE}. Lesion-wise detection uses "
            f"{config['evaluate']['detection']['connectivity']}-connected components; a lesion is detected when at "
            f"least {config['evaluate']['detection']['min_overlap_voxels']} of its voxels overlap the prediction. "
            f"Statistics: the mean with a 95 % percentile bootstrap CI over cases (scipy.stats.bootstrap, 2000 "
            f"resamples); against {baseline}, the median of the paired differences with its bootstrap CI and a "
            f"paired two-sided Wilcoxon signed-rank test, Holm-corrected."),
    ]
    return "\n".join(text) + "\n"


def write_paper(dataset: str, *, tables: Path, figures_dir: Path, plans: Path, config: dict, out: Path,
                compile_pdf: bool = True) -> Path | None:
    """Write the paper folder ``out``; compile ``main.pdf`` when TeX is installed. Returns the PDF's path, or None
    (no TeX: a note says how to install it)."""
    comparison = pd.read_csv(Path(tables) / COMPARISON)
    plan = Plans(plans)
    models = list(dict.fromkeys(comparison["model"]))
    metrics = [m for m in config["evaluate"]["metrics"] if (comparison["metric"] == m).any()]
    figures = read_json(Path(figures_dir) / "figures.json")
    n_test = int(pd.read_csv(Path(tables) / PER_CASE)["case"].nunique())
    with output_dir(out) as tmp:
        (tmp / "tables").mkdir()
        (tmp / "figures").mkdir()
        external = {row: e["protocol"] for row, e in config.get("compare", {}).get("external", {}).items()}
        terms = "; ".join(filter(None, [plan.terms(models), elsewhere(models, plan, external)]))
        for metric in metrics:
            (tmp / "tables" / f"{metric}.tex").write_text(metric_table(comparison, metric, terms))
        blocks, placed = [], 0
        for fig in figures:
            pdf = next((f for f in fig.get("also", []) if f.endswith(".pdf")), None)
            if pdf is None:
                continue
            if placed and placed % FLOATS_PER_PAGE == 0:
                blocks.append(r"\clearpage")  # LaTeX holds at most 18 floats waiting for a place
            placed += 1
            shutil.copy(Path(figures_dir) / pdf, tmp / "figures" / pdf)
            wide = fig["section"] in ("Architectures", "Per-case scores", "Learning curves")
            env = "figure*" if wide else "figure"
            blocks.append("\n".join([rf"\begin{{{env}}}[t]", r"\centering",
                                     rf"\includegraphics[width=\{'textwidth' if wide else 'columnwidth'}]"
                                     rf"{{figures/{pdf}}}", rf"\caption{{{tex(fig['caption'])}}}", rf"\end{{{env}}}"]))
        body = [r"\documentclass[twocolumn,10pt]{article}", r"\usepackage[T1]{fontenc}", r"\usepackage{booktabs}",
                r"\usepackage{graphicx}", r"\usepackage[margin=2cm]{geometry}",
                rf"\title{{{tex(f'Comparing segmentation models on {dataset}')}}}", r"\author{segzoo}", r"\date{}",
                r"\begin{document}", r"\maketitle",
                methods(config, plan, dataset, models, metrics, n_test, baseline_of(comparison)),
                r"\section{Results}",
                rf"Table~\ref{{tab:{metrics[0]}}} gives {tex(METRICS[metrics[0]].name)}; the tables after it the other "
                "metrics, and the figures the learning curves, every test case's scores, example cases, calibration "
                "and how each model is wired.",
                *[rf"\input{{tables/{m}}}" for m in metrics], *blocks, r"\end{document}"]
        write_text(tmp / "main.tex", "\n".join(body) + "\n")
        pdf = _compile(tmp) if compile_pdf else None
    return out / "main.pdf" if pdf else None


def _compile(folder: Path) -> bool:
    """``main.pdf`` from ``main.tex`` with latexmk (else pdflatex twice); False when TeX is not installed."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1"}  # reproducible PDF bytes
    if shutil.which("latexmk"):
        commands = [["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "main.tex"]]
    elif shutil.which("pdflatex"):
        commands = [["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"]] * 2
    else:
        print("main.pdf not made: " + TEX_INSTALL.format(folder="the paper folder"))
        return False
    for command in commands:
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        if result.returncode:
            log = (folder / "main.log").read_text(errors="replace") if (folder / "main.log").is_file() else ""
            errors = [line for line in log.splitlines() if line.startswith("!")][:5]
            raise SegzooError(f"{folder.name}/main.tex: {command[0]} failed: " + ("; ".join(errors) or
                                                                                   result.stdout[-500:]))
    for aux in folder.iterdir():  # keep the sources and the PDF
        if aux.suffix in (".aux", ".log", ".fls", ".fdb_latexmk", ".out"):
            aux.unlink()
    return (folder / "main.pdf").is_file()
