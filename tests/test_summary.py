"""The page leads with the answer: the summary is computed from the comparison's own statistics, and every
entry of the table of contents reaches a section."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from segzoo.evaluate.stats import compare
from segzoo.report.summary import region_answers, summary_section
from segzoo.weightgen.evaluation.folder import EvaluationFolder

from conftest import PHANTOM, REPO, run_segzoo


def _scores(seed: int = 0) -> pd.DataFrame:
    """Ten test cases: 'ahead' beats the baseline on every case, 'level' moves around it by tiny symmetric
    amounts, 'behind' trails it on every case."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 0.7, 10)
    jitter = np.array([0.001, -0.001] * 5)
    rows = []
    for model, values in (("unet3plus", base), ("ahead", base + 0.1), ("level", base + jitter),
                          ("behind", base - 0.2)):
        rows += [{"model": model, "seed": 0, "case": f"c{i}", "region": "sc", "dice": v} for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_the_best_model_and_the_holm_significant_differences_come_from_the_comparison():
    comparison = compare(_scores(), "dice", seed=0)
    [answer] = region_answers(comparison, "dice")
    ahead = comparison[comparison["model"] == "ahead"].iloc[0]
    assert answer["best"] == "ahead" and answer["mean"] == pytest.approx(ahead["mean"])
    assert answer["ci"] == (pytest.approx(ahead["ci_low"]), pytest.approx(ahead["ci_high"]))
    directions = {s["model"]: s["direction"] for s in answer["significant"]}
    assert directions == {"ahead": "better", "behind": "worse"}  # 'level' does not survive Holm
    assert all(s["p"] < 0.05 for s in answer["significant"]) and answer["tests"] == 3
    effects = {s["model"]: s["effect"] for s in answer["significant"]}
    assert effects["ahead"][0] == pytest.approx(0.1) and effects["behind"][0] == pytest.approx(-0.2)
    text = "".join(summary_section(comparison, ["dice"], None, "protocol equal: every model trained on patch 8"))
    assert "<b>ahead</b> better by 0.100 (median paired difference +0.100 [+0.100, +0.100]" in text
    assert "<b>behind</b> worse by 0.200" in text and "protocol equal: every model trained on patch 8" in text
    assert "1 training seed per model (one seed: a difference smaller than seed-to-seed variation" in text


def test_the_summary_names_the_baseline_the_differences_were_taken_against():
    comparison = compare(_scores(), "dice", seed=0, baseline="behind")
    [answer] = region_answers(comparison, "dice")
    # against 'behind', every other model is better on every case: three Holm-significant differences
    assert {s["model"]: s["direction"] for s in answer["significant"]} == {
        "unet3plus": "better", "ahead": "better", "level": "better"}
    text = "".join(summary_section(comparison, ["dice"], None))
    assert "differs from the baseline, <b>behind</b>" in text and "<th>differs from behind after Holm</th>" in text
    assert "U-Net 3+" in text and "differs from U-Net 3+" not in text  # by its display name (report/names.py)


def test_a_lower_is_better_metric_picks_the_smallest_mean():
    scores = _scores().rename(columns={"dice": "hd95_mm"})
    [answer] = region_answers(compare(scores, "hd95_mm", seed=0), "hd95_mm")
    assert answer["best"] == "behind"
    assert {s["model"]: s["direction"] for s in answer["significant"]} == {"ahead": "worse", "behind": "better"}


def test_the_weight_generation_verdict_counts_discriminative_criteria_of_the_learned_generators():
    gpt = {"headline": {"gpt": {"heldout": {"passed": 1, "of": 4, "rows": 30}},
                        "lookup": {"heldout": {"passed": 0, "of": 4, "rows": 30}}},
           "generators": {"gpt": {"label": "G.pt", "generator_kind": "learned"},
                          "lookup": {"label": "lookup memoriser", "generator_kind": "trivial"}},
           "not_learned_by_adam": ["lesion"]}
    text = "".join(summary_section(compare(_scores(), "dice", seed=0), ["dice"], gpt))
    assert "G.pt 1 of 4" in text and "lookup memoriser" not in text  # baselines are judged, not headlined
    assert "not learned by Adam, every row failed: lesion" in text


@pytest.mark.slow
def test_the_page_opens_with_the_summary_and_its_contents_reach_every_section(ci_run, tmp_path):
    from segzoo.config import load_config
    wf, _ = ci_run
    config = load_config(REPO / "config.yaml", REPO / "presets" / "ci.yaml",
                         schema_path=REPO / "schemas" / "config.schema.yaml")
    out = tmp_path / "page" / "index.html"
    result = run_segzoo("page", "--dataset", PHANTOM, "--figures", f"results/figures/{PHANTOM}", "--tables",
                        f"results/tables/{PHANTOM}", "--weightgen", f"results/weightgen/{PHANTOM}/evaluation",
                        "--config-json", json.dumps(config), "--out", out, cwd=wf)
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    headings = re.findall(r"<h2 id='([^']+)'>", page)
    assert headings[0] == "summary" and "comparison" in headings
    assert page.index("<nav class='toc'>") < page.index("<h2 id='comparison'>")
    assert sorted(re.findall(r"<li><a href='#([^']+)'>", page)) == sorted(headings)
    assert len(set(headings)) == len(headings)
    gpt = EvaluationFolder(wf / "results" / "weightgen" / PHANTOM / "evaluation").summary()
    h = gpt["headline"]["gpt"]["heldout"]
    assert f"G.pt {h['passed']} of {h['of']}" in page  # the summary's verdict: discriminative criteria only
    assert "<b>MS U-Net 3+</b>" in page or "<td>MS U-Net 3+</td>" in page  # models by their display names
    assert "<th>spinal cord</th>" in page and "<td>ms_unet3plus</td>" not in page
