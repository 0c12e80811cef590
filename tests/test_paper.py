"""The paper folder (segzoo paper): a two-column draft whose sentences are worded by the statistics, compiled with
TeX and read back with pdftotext. Under CI=true TeX must be there (`make install` installs it, .ci/run installs
poppler-utils); elsewhere the PDF checks skip, saying why."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from conftest import PHANTOM, REPO
from segzoo.evaluate.stats import compare
from segzoo.report import findings
from segzoo.report.names import MODELS, REFERENCES, model_name
from segzoo.report.paper import APPENDIX_TITLE, abstract, differences_tables, gpt_section, main_table

COLUMNS = ["model", "region", "metric", "n", "mean", "ci_low", "ci_high", "seeds", "seed_sd", "median_diff",
           "diff_ci_low", "diff_ci_high", "p_vs_baseline", "pairs", "p_holm"]


def _tex_or_skip():
    missing = [c for c in ("latexmk", "pdftotext", "pdfinfo") if shutil.which(c) is None]
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"{', '.join(missing)} missing under CI=true: `make install` installs TeX Live, .ci/run "
                    "poppler-utils")
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install --no-install-recommends texlive-latex-base "
                    "texlive-latex-recommended latexmk poppler-utils)")


def _row(model, region, metric, mean, median, p, n=16):
    return {"model": model, "region": region, "metric": metric, "n": n, "mean": mean, "ci_low": mean - 0.02,
            "ci_high": mean + 0.02, "seeds": 1, "seed_sd": np.nan, "median_diff": median,
            "diff_ci_low": median - 0.01, "diff_ci_high": median + 0.01, "p_vs_baseline": p, "pairs": n,
            "p_holm": p}


def test_every_registry_model_has_a_display_name_and_its_citations_are_in_the_bibliography():
    from segzoo.models.registry import MODELS as REGISTRY

    assert set(REGISTRY) <= set(MODELS), f"add a line for {set(REGISTRY) - set(MODELS)} to segzoo.report.names"
    keys = set(re.findall(r"@\w+\{([^,]+),", REFERENCES.read_text()))
    cited = {k for shown in MODELS.values() for k in shown.cite}
    assert cited and cited <= keys, cited - keys
    assert model_name("nnunet_sc_model") == "nnU-Net (sc_model)" and model_name("someone_elses") == "someone_elses"


def test_a_non_significant_difference_is_never_worded_better_or_worse():
    """Large mean gaps that do not survive Holm (p at, just above and far above 0.05, or untestable) for a
    higher- and a lower-is-better metric: no generated text calls them better or worse; one that survives does."""
    rows = []
    for metric, sign in (("dice", 1), ("hd95_mm", -1), ("lesion_f1", 1)):
        rows += [_row("unet3plus", "sc", metric, 0.5, np.nan, np.nan),
                 _row("ahead", "sc", metric, 0.5 + sign * 0.3, sign * 0.3, 0.05),
                 _row("lucky", "sc", metric, 0.5 + sign * 0.4, sign * 0.4, 0.0500001),
                 _row("far", "sc", metric, 0.5 + sign * 0.45, sign * 0.45, 0.9),
                 _row("alone", "sc", metric, 0.5 + sign * 0.49, sign * 0.49, np.nan)]
    comparison = pd.DataFrame(rows, columns=COLUMNS)
    texts = [findings.results_paragraph(comparison, m, "unet3plus") for m in ("dice", "hd95_mm", "lesion_f1")]
    texts += [d.sentence() + d.brief() for m in ("dice", "hd95_mm") for d in findings.differences(comparison, m,
                                                                                                  "unet3plus")]
    texts += [abstract(comparison, "dice", ["hd95_mm", "lesion_f1"], "unet3plus", ["unet3plus", "ahead"],
                       "the spinal cord", "a phantom", 16, 1, "under one protocol", None),
              *differences_tables(comparison, ["dice", "hd95_mm", "lesion_f1"], "unet3plus")]
    for text in texts:
        text = text.replace("better or worse only where", "")  # the differences table's caption says the rule
        assert "better" not in text and "worse" not in text, text
    assert "None of the 3 tested differences from U-Net 3+ by Dice survives Holm's correction" in texts[0]
    assert "smallest Holm p = 0.05," in texts[0] and "not detected" in texts[-1]

    survives = comparison.assign(p_holm=np.where(comparison["model"] == "ahead", 0.0499, comparison["p_holm"]))
    dice, hd95 = (findings.results_paragraph(survives, m, "unet3plus") for m in ("dice", "hd95_mm"))
    assert "By Dice, ahead segments the spinal cord better than U-Net 3+ (median paired difference +0.300 " \
           "[+0.290, +0.310] over 16 cases, Holm p = 0.0499)." in dice
    assert "ahead segments the spinal cord better" in hd95 and "-0.30 [-0.31, -0.29]" in hd95  # lower is better
    assert dice.count("better") == 1 and "lucky segments" not in dice and "far segments" not in dice
    behind = survives.assign(median_diff=-survives["median_diff"])
    assert "ahead segments the spinal cord worse than" in findings.results_paragraph(behind, "dice", "unet3plus")


def test_the_words_follow_the_statistics_of_a_real_comparison():
    """From compare() on scores where one model leads on every case and one moves around the baseline."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.7, 12)
    scores = pd.DataFrame([{"model": m, "seed": 0, "case": f"c{i}", "region": "sc", "dice": v}
                           for m, values in (("unet3plus", base), ("ms_unet3plus", base + 0.05),
                                             ("diffnet", base + np.tile([0.002, -0.002], 6)))
                           for i, v in enumerate(values)])
    comparison = compare(scores, "dice", seed=0)
    words = {d.model: d.verdict for d in findings.differences(comparison, "dice", "unet3plus")}
    assert words == {"ms_unet3plus": "better", "diffnet": "not detected"}
    text = findings.results_paragraph(comparison, "dice", "unet3plus")
    assert "By Dice, MS U-Net 3+ segments the spinal cord better than U-Net 3+" in text
    assert "DiffNet segments" not in text and "The other tested difference from U-Net 3+ by Dice does not survive" in text


def test_the_main_table_bolds_the_best_and_marks_what_survives_holm():
    rows = [_row(m, r, metric, mean, np.nan if m == "unet3plus" else 0.1, p)
            for metric in ("dice", "hd95_mm") for m, r, mean, p in
            [("unet3plus", "sc", 0.9, np.nan), ("diffnet", "sc", 0.8, 0.001), ("unet3plus", "lesion", 0.5, np.nan),
             ("diffnet", "lesion", 0.55, 0.2)]]
    table = main_table(pd.DataFrame(rows, columns=COLUMNS), ["dice", "hd95_mm"], "unet3plus")
    assert r"\textbf{0.900}" in table and r"\textbf{0.550}" in table and "0.800$^{*}$" in table
    assert r"\textbf{0.80}$^{*}$" in table and r"\textbf{0.50}" in table  # HD95: lower is better, 2 decimals
    assert "0.550$^{*}$" not in table and "[0.880, 0.920]" in table and "U-Net 3+" in table and "DiffNet" in table
    assert "seed spread not measured" in table and r"\toprule" in table and "Holm" in table


def test_the_gpt_section_renders_whatever_criteria_the_evaluation_wrote(tmp_path):
    """Many generators judged alike (more columns than the main table holds): the headline counts per learned
    generator in the main part, the learned generators beside the trivial ones in its table, every generator in the
    appendix (six per part), and no audit figure when the folder has none."""
    from segzoo.weightgen.evaluation.criteria import CRITERIA, TRIVIAL

    learned = ["gpt", "graph_grad"]
    others = [*TRIVIAL, "nearest", "mean_k", "adam1", "adam10"]
    criteria = list(CRITERIA)[:4]
    rows = [{"starts": "heldout", "generator": g, "criterion": c, "task": t, "applicable": True, "value": 0.1 * k,
             "threshold": "≥ 0.9", "passed": k % 2 == 0, "discriminative": k < 2, "detail": "measured " * 12}
            for g in learned + others for k, c in enumerate(criteria) for t in ("sc", "all")]
    pd.DataFrame(rows).to_csv(tmp_path / "criteria.csv", index=False)
    summary = {"train_parents": 2, "heldout_parents": 8,
               "generators": {g: {"generator_kind": "learned" if g in learned else "baseline", "label": g.upper()}
                              for g in learned + others},
               "headline": {"gpt": {"heldout": {"passed": 1, "of": 4}}, "graph_grad": {"heldout": {"passed": 0,
                                                                                                   "of": 4}}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "figures.json").write_text("[]")
    (tmp_path / "networks.csv").write_text("")  # no network rows: the one-shot sentence is left out
    (tmp_path / "figures").mkdir()
    text, floats, headline = gpt_section(tmp_path, tmp_path / "figures")
    assert headline == ("From held-out starts, GPT passed 1 of 4 discriminative criteria; GRAPH_GRAD passed 0 of 4 "
                        "discriminative criteria.")
    assert r"\label{tab:criteria}" in text and "8 held-out parents" in text and "fig:audit" not in text
    main = text[text.index(r"\label{tab:criteria}") - 4000:]
    header = next(line for line in main.splitlines() if line.startswith("task & criterion"))
    assert header.split(" & ")[3:] == [g.replace("_", " ") + (r" \\" if g == TRIVIAL[-1] else "")
                                       for g in [*learned, *TRIVIAL]]
    assert len(floats) == 2 and r"\label{tab:criteria-all}" in floats[0] and "part 2." in floats[1]
    columns = "".join(floats)
    assert all(g.replace("_", " ") in columns for g in learned + others)
    assert columns.count("PASS") + columns.count("FAIL") == len(rows)


@pytest.mark.slow
def test_the_paper_compiles_and_its_abstract_holds_the_comparison(ci_run):
    wf, _ = ci_run
    paper = wf / "results" / PHANTOM / "paper"
    assert {p.name for p in paper.iterdir()} >= {"main.tex", "references.bib", "figures"}
    figures = json.loads((wf / "results" / "figures" / PHANTOM / "figures.json").read_text())
    assert all(any(f.endswith(".pdf") for f in fig.get("also", [])) for fig in figures)  # every figure as PDF
    assert {p.name for p in (paper / "figures").iterdir()} >= {"architecture_unet3plus.pdf", "scores_dice.pdf",
                                                               "gpt_audit.pdf"}
    _tex_or_skip()
    assert (paper / "main.pdf").is_file(), (wf / "results" / "logs" / "paper" / f"{PHANTOM}.log").read_text()
    pdf = str(paper / "main.pdf")
    text = subprocess.run(["pdftotext", pdf, "-"], capture_output=True, text=True, check=True).stdout
    pages = text.split("\f")
    main_part = next(i for i, page in enumerate(pages) if "Appendix:" in page)
    assert 1 <= main_part <= 8, f"the main part has {main_part} pages"
    assert not re.findall(r"(?<![A-Za-z])\?", text)  # every citation and reference resolved ("?", "??")
    assert "References" in text and "Arridge" in text and "Huang" in text and "Peebles" in text
    assert APPENDIX_TITLE.split(":")[0] in pages[main_part]

    # The abstract (the left column of page 1): each number in it is a value of comparison.csv as printed.
    width = float(re.search(r"Page size:\s+([\d.]+)", subprocess.run(["pdfinfo", pdf], capture_output=True,
                                                                      text=True).stdout).group(1))
    column = subprocess.run(["pdftotext", "-f", "1", "-l", "1", "-x", "0", "-y", "0", "-W", str(int(width / 2)),
                             "-H", "2000", pdf, "-"], capture_output=True, text=True, check=True).stdout
    summary = column[column.index("Abstract") + len("Abstract"):column.index("Introduction")].replace("\u2212", "-")
    summary = " ".join(summary.split())
    comparison = pd.read_csv(wf / "results" / "tables" / PHANTOM / "comparison.csv")
    dice = comparison[comparison["metric"] == "dice"]
    printed = {f"{v:.3f}" for c in ("mean", "ci_low", "ci_high") for v in dice[c].dropna()}
    printed |= {f"{v:+.3f}" for c in ("median_diff", "diff_ci_low", "diff_ci_high") for v in dice[c].dropna()}
    printed |= {f"{v:.3g}" for v in dice["p_holm"].dropna()}
    numbers = re.findall(r"[+-]?\d+\.\d+", summary)
    assert numbers and all(n in printed for n in numbers), (numbers, summary)
    for region, group in dice.dropna(subset=["mean"]).groupby("region"):
        best = group.loc[group["mean"].idxmax()]
        assert f"{best['mean']:.3f} [{best['ci_low']:.3f}, {best['ci_high']:.3f}]" in summary, region
    cases = pd.read_csv(wf / "results" / "tables" / PHANTOM / "per_case.csv")["case"].nunique()
    assert "seed spread not measured" in summary and f"{cases} test cases" in summary
    gpt = json.loads((wf / "results" / "weightgen" / PHANTOM / "evaluation" / "summary.json").read_text())
    for name, by_role in gpt["headline"].items():  # the learned generators' headline: discriminative criteria only
        if gpt["generators"][name]["generator_kind"] == "learned":
            h = by_role["heldout"]
            assert f"passed {h['passed']} of {h['of']} discriminative criteria" in summary

    prose = " ".join(pages[:main_part])
    assert "MS U-Net 3+" in prose and "evaluate.tolerance" not in prose and "deep_supervision" not in prose
    for word in ("better than", "worse than"):  # only where a difference survives Holm
        for sentence in re.findall(rf"By [^.]*? {word} [^.]*?Holm p = ([\d.e-]+)", " ".join(text.split())):
            assert float(sentence) < findings.ALPHA


def test_without_tex_the_folder_is_written_and_says_how_to_install_it(ci_run, tmp_path, monkeypatch, capsys):
    from segzoo.config import load_config
    from segzoo.report.paper import write_paper

    wf, _ = ci_run
    results = wf / "results"
    config = load_config(REPO / "config.yaml", REPO / "presets" / "ci.yaml",
                         schema_path=REPO / "schemas" / "config.schema.yaml")
    monkeypatch.setenv("PATH", str(tmp_path / "no_tex"))  # neither latexmk nor pdflatex
    pdf = write_paper(PHANTOM, tables=results / "tables" / PHANTOM, figures_dir=results / "figures" / PHANTOM,
                      plans=results / "plans" / PHANTOM / "plans.json", config=config, out=tmp_path / "paper",
                      weightgen=results / "weightgen" / PHANTOM / "evaluation")
    assert pdf is None and not (tmp_path / "paper" / "main.pdf").exists()
    assert (tmp_path / "paper" / "references.bib").read_text() == REFERENCES.read_text()
    assert ("apt-get install --no-install-recommends texlive-latex-base texlive-latex-recommended latexmk"
            in capsys.readouterr().out)
    main = (tmp_path / "paper" / "main.tex").read_text()
    assert r"\documentclass[twocolumn" in main and r"\begin{abstract}" in main and r"\bibliography{references}" in main
    assert main.index(r"\bibliography{references}") < main.index(r"\appendix") < main.index(r"\label{tab:differences}")
    assert main.count(r"\label{tab:main}") == 1 and r"\section{Checkpoint diffusion}" in main
    assert r"\citep{huang2020unet3plus}" in main and r"\citep{arridge2020diffnet}" in main
