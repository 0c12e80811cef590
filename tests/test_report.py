"""The report: figures from the real ci run, the static page in headless Chromium, snakemake --report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from segzoo.models.blocks import count_parameters
from segzoo.models.registry import build_model
from segzoo.report.architecture import trace
from segzoo.weightgen.evaluation.folder import EvaluationFolder

from conftest import PHANTOM, snakemake

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.parametrize("name,options", [("unet3plus", {"base": 4, "levels": 4, "cgm": True}),
                                          ("diffnet", {}), ("ms_diffnet", {})])
def test_architecture_trace_covers_every_parameter(name, options):
    model = build_model(name, 1, 3, **options)
    components = trace(model, (1, 1, 16, 16, 16))
    assert sum(c["parameters"] for c in components) == count_parameters(model)
    assert all(c["shapes"] for c in components)  # every component ran in the forward pass


@pytest.mark.slow
def test_figures_are_all_written_and_listed(ci_run):
    wf, _ = ci_run
    folder = wf / "results" / "figures" / PHANTOM
    figures = json.loads((folder / "figures.json").read_text())
    files = {f["file"] for f in figures}
    assert files == {p.name for p in folder.glob("*.png")}
    sections = {f["section"] for f in figures}
    assert sections == {"Learning curves", "Per-case scores", "Qualitative results", "Calibration", "Architectures"}
    assert sum(f.startswith("overlay_") for f in files) == 4 * 3  # best, median, worst per model
    diagrams = [f for f in figures if f["file"].startswith("architecture_")]
    assert len(diagrams) == 4 and all(f["also"] == [f["file"][:-3] + "svg", f["file"][:-3] + "pdf"] for f in diagrams)
    assert all((folder / name).stat().st_size > 0 for f in figures for name in f.get("also", []))
    assert sum(f.startswith("parameters_") for f in files) == 4  # each diagram's parameter chart
    for name in files:
        assert mpimg.imread(folder / name).shape[0] > 100
    page = (wf / "results" / PHANTOM / "index.html").read_text()
    assert all(f"../figures/{PHANTOM}/{name}" in page for name in files)
    assert "file://" not in page and "/tmp/" not in page  # relative links only


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Chromium is not installed (.ci/run installs it with apt)")
        pytest.skip("Chromium is not installed here (apt-get install chromium); CI installs it and runs this test")
    return found


@pytest.mark.slow
def test_page_loads_every_image_in_headless_chromium(ci_run, tmp_path):
    wf, _ = ci_run
    browser = _chromium()
    url = (wf / "results" / PHANTOM / "index.html").as_uri()
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'a'}", "--virtual-time-budget=10000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    body = dom[dom.index("<body"):dom.index(">", dom.index("<body"))]
    figures = json.loads((wf / "results" / "figures" / PHANTOM / "figures.json").read_text())
    weightgen = EvaluationFolder(wf / "results" / "weightgen" / PHANTOM / "evaluation").figures()
    assert f'data-images="{len(figures) + len(weightgen)}"' in body
    assert 'data-broken-images="0"' in body, body
    metric_tables = len(list((wf / "results" / "tables" / PHANTOM).glob("*.html")))
    assert metric_tables == 11  # 7 voxel metrics and 4 lesion-wise ones (the lesion region)
    # the summary, a table per metric, how the metrics are computed, the plan, and the weight generation's: the
    # generators x criteria, every generator's Dice, then prompt following, fine-tuning and one network for every
    # region where they have rows
    evaluation = EvaluationFolder(wf / "results" / "weightgen" / PHANTOM / "evaluation")
    measured = sum(len(evaluation.table(t)) > 0 for t in ("prompting", "finetune", "unification"))
    assert dom.count("<table") == 1 + metric_tables + 1 + 1 + 2 + measured and "unet3plus" in dom
    assert '<h2 id="plan">Plan</h2>' in dom and "Checkpoint diffusion: every generator through every criterion" in dom
    assert 'class="comparison criteria"' in dom  # the G.pt section leads with its pass/fail criteria
    shot = tmp_path / "page.png"
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'b'}", "--window-size=1200,2000",
                    f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert mpimg.imread(shot).shape[:2] == (2000, 1200)


@pytest.mark.slow
def test_snakemake_report_zip_holds_the_figures(ci_run, tmp_path):
    wf = Path(shutil.copytree(ci_run[0], tmp_path / "wf", symlinks=True))  # other tests expect ci_run's folder as is
    result = snakemake(wf, "--report", "report.zip", "--configfile", "presets/ci.yaml")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    names = zipfile.ZipFile(wf / "report.zip").namelist()
    assert any(n.endswith("learning_curves.png") for n in names)
    assert any(n.endswith("dice.html") for n in names)


@pytest.mark.slow
def test_page_written_elsewhere_still_links_to_every_file(ci_run, tmp_path):
    import re

    from conftest import REPO, run_segzoo
    from segzoo.config import load_config
    wf, _ = ci_run
    config = load_config(REPO / "config.yaml", REPO / "presets" / "ci.yaml", schema_path=REPO / "schemas" / "config.schema.yaml")
    out = tmp_path / "elsewhere" / "index.html"
    result = run_segzoo("page", "--dataset", PHANTOM, "--figures", f"results/figures/{PHANTOM}", "--tables",
                        f"results/tables/{PHANTOM}", "--weightgen", f"results/weightgen/{PHANTOM}/evaluation",
                        "--config-json", json.dumps(config), "--out", out, cwd=wf)
    assert result.returncode == 0, result.stderr
    links = re.findall(r"(?:src|href)='([^'#][^']*)'", out.read_text())  # '#…': the page's own sections
    assert links and all((out.parent / link).is_file() for link in links)
