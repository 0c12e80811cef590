"""The paper folder (segzoo paper): LaTeX tables from the comparison, figures as PDF, main.tex, and main.pdf compiled
with TeX, read back with pdftotext. Under CI=true TeX must be there (.ci/run installs it); elsewhere the PDF checks
skip, saying why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from conftest import PHANTOM, REPO
from segzoo.report.paper import metric_table, tex

pytestmark = pytest.mark.slow


def _tex_or_skip():
    missing = [c for c in ("latexmk", "pdftotext") if shutil.which(c) is None]
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"{', '.join(missing)} missing under CI=true: .ci/run installs TeX Live and poppler-utils")
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install texlive-latex-base "
                    "texlive-latex-recommended latexmk poppler-utils)")


def test_a_metric_table_bolds_the_best_and_marks_what_differs_after_holm():
    rows = [{"model": m, "region": r, "metric": "dice", "n": 16, "mean": mean, "ci_low": mean - 0.02,
             "ci_high": mean + 0.02, "seeds": 1, "seed_sd": np.nan, "median_diff": np.nan, "diff_ci_low": np.nan,
             "diff_ci_high": np.nan, "p_vs_baseline": p, "pairs": 16, "p_holm": p}
            for m, r, mean, p in [("unet3plus", "sc", 0.9, np.nan), ("diffnet", "sc", 0.8, 0.001),
                                  ("unet3plus", "lesion", 0.5, np.nan), ("diffnet", "lesion", 0.55, 0.2)]]
    table = metric_table(pd.DataFrame(rows), "dice", "protocol equal: every model trained on patch 48×48×16")
    assert r"\textbf{0.900} [0.880, 0.920]" in table and r"\textbf{0.550} [0.530, 0.570]" in table
    assert "0.800$^{*}$ [0.780, 0.820]" in table and "0.500 [" in table and "0.550$^{*}$" not in table
    assert r"\toprule" in table and r"\bottomrule" in table and "Holm" in table and r"48$\times$48$\times$16" in table
    assert tex("50% of a_b & {c}") == r"50\% of a\_b \& \{c\}"


def test_the_paper_compiles_and_its_text_holds_the_dice_table(ci_run):
    wf, _ = ci_run
    paper = wf / "results" / PHANTOM / "paper"
    assert (paper / "main.tex").is_file() and (paper / "tables" / "dice.tex").is_file()
    figures = json.loads((wf / "results" / "figures" / PHANTOM / "figures.json").read_text())
    assert all(any(f.endswith(".pdf") for f in fig.get("also", [])) for fig in figures)  # every figure as PDF
    assert {p.name for p in (paper / "figures").iterdir()} >= {"learning_curves.pdf", "architecture_unet3plus.pdf"}
    _tex_or_skip()
    assert (paper / "main.pdf").is_file(), (wf / "results" / "logs" / "paper" / f"{PHANTOM}.log").read_text()
    text = subprocess.run(["pdftotext", str(paper / "main.pdf"), "-"], capture_output=True, text=True).stdout
    comparison = pd.read_csv(wf / "results" / "tables" / PHANTOM / "comparison.csv")
    dice = comparison[(comparison["metric"] == "dice")].dropna(subset=["mean"])
    assert len(dice) >= 4
    for row in dice.itertuples():
        assert f"{row.mean:.3f}" in text, (row.model, row.region, row.mean)
    assert "protocol" in text and "Wilcoxon" in text


def test_without_tex_the_folder_is_written_and_says_how_to_install_it(ci_run, tmp_path, monkeypatch, capsys):
    from segzoo.config import load_config
    from segzoo.report.paper import write_paper

    wf, _ = ci_run
    results = wf / "results"
    config = load_config(REPO / "config.yaml", REPO / "presets" / "ci.yaml",
                         schema_path=REPO / "schemas" / "config.schema.yaml")
    monkeypatch.setenv("PATH", str(tmp_path / "no_tex"))  # neither latexmk nor pdflatex
    pdf = write_paper(PHANTOM, tables=results / "tables" / PHANTOM, figures_dir=results / "figures" / PHANTOM,
                      plans=results / "plans" / PHANTOM / "plans.json", config=config, out=tmp_path / "paper")
    assert pdf is None and (tmp_path / "paper" / "main.tex").is_file() and not (tmp_path / "paper" / "main.pdf").exists()
    assert "apt-get install texlive-latex-base texlive-latex-recommended latexmk" in capsys.readouterr().out
    main = (tmp_path / "paper" / "main.tex").read_text()
    assert r"\documentclass[twocolumn" in main and r"\input{tables/dice}" in main and "protocol equal" in main
