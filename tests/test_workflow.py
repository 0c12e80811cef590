"""Real Snakemake runs on the ci preset (no mocks): phantom or user data through the whole pipeline."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import PHANTOM, digest, snakemake, workflow_copy
from test_verify import shape_mismatch

pytestmark = pytest.mark.slow


def test_ci_preset_runs_the_data_stage(ci_run):
    wf, result = ci_run
    ci = yaml.safe_load((wf / "presets" / "ci.yaml").read_text())
    splits = json.loads((wf / "results" / "splits" / PHANTOM / "splits.json").read_text())
    assert not set(splits["test"]) & set(splits["train"] + splits["val"])
    assert len(splits["train"] + splits["val"] + splits["test"]) == ci["phantom"]["cases"] + ci["phantom"]["test_cases"]
    assert splits["test_source"] == "imagesTs" and len(splits["test"]) == ci["phantom"]["test_cases"]
    pre = wf / "results" / "preprocessed" / PHANTOM
    assert len(list(pre.glob("*_seg.npy"))) == ci["phantom"]["cases"] + ci["phantom"]["test_cases"]
    for rule in ("phantom", "verify", "preprocess", "splits"):
        assert (wf / "results" / "logs" / rule / f"{PHANTOM}.log").exists()
        assert (wf / "results" / "benchmarks" / rule / f"{PHANTOM}.tsv").exists()
    assert f"results/splits/{PHANTOM}/splits.json" in result.stdout  # the closing summary


def test_second_run_has_nothing_to_do(ci_run):
    wf, _ = ci_run
    result = snakemake(wf, "-n", "--cores", "all", "--configfile", "presets/ci.yaml")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def test_without_gpu_resources_gives_identical_outputs(ci_run, tmp_path):
    wf, _ = ci_run
    other = workflow_copy(tmp_path / "wf")
    targets = [f"results/splits/{PHANTOM}/splits.json", f"results/verify/{PHANTOM}.json"]  # what is compared
    result = snakemake(other, *targets, "--cores", "all", "--configfile", "presets/ci.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    for folder in ("raw", "preprocessed", "splits", "verify"):
        assert digest(other / "results" / folder) == digest(wf / "results" / folder), folder


@pytest.fixture(scope="module")
def edited_copy(ci_run, tmp_path_factory):
    """A copy of the ci preset's finished run (other tests expect ci_run's folder as is) whose source files the tests
    below edit one at a time, each put back as it was (content and time) afterwards."""
    return Path(shutil.copytree(ci_run[0], tmp_path_factory.mktemp("edits") / "wf", symlinks=True))


def _scheduled_after_editing(wf: Path, module: str) -> set[str]:
    """The rules `snakemake -n` schedules after a line is added to ``src/segzoo/<module>``."""
    path = wf / "src" / "segzoo" / module
    text, stat = path.read_text(), path.stat()
    try:
        path.write_text(text + "\n# an edit\n")  # Snakemake compares content, not only mtime
        result = snakemake(wf, "-n", "--cores", "all", "--configfile", "presets/ci.yaml")
        assert result.returncode == 0, result.stderr[-3000:]
        return set(re.findall(r"^rule (\w+):", result.stdout + result.stderr, re.M))
    finally:
        path.write_text(text)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("module, reruns, stays", [
    # train's verb reaches it only through train/loop.py -> train/validate.py; the generators' training does not
    # reach it, but reruns on the zoo the zoo jobs write again
    ("inference/window.py", {"train", "infer", "postprocessing", "zoo_job", "weightgen_evaluate"},
     {"splits", "preprocess"}),
    # the splits rule's own code; training reruns through its output, splits.json
    ("data/splits.py", {"splits", "train"}, {"preprocess", "verify"}),
    # only the page's verb reaches it: nothing is trained, predicted or scored again
    ("report/page.py", {"page", "site_index"}, {"train", "infer", "evaluate", "zoo_job", "gpt_train", "figures"}),
])
def test_editing_a_module_reruns_the_rules_whose_verb_reaches_it(edited_copy, module, reruns, stays):
    scheduled = _scheduled_after_editing(edited_copy, module)
    assert reruns <= scheduled and not stays & scheduled, scheduled


def test_a_module_that_cannot_change_results_reruns_nothing(edited_copy):
    from segzoo.imports import NO_RERUN

    assert "segzoo.tracking" in NO_RERUN
    assert _scheduled_after_editing(edited_copy, "tracking.py") == set()


def test_lint_has_nothing_to_say(tmp_path):
    wf = workflow_copy(tmp_path / "wf")
    result = snakemake(wf, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_bad_config_names_the_key(tmp_path):
    wf = workflow_copy(tmp_path / "wf")
    (wf / "bad.yaml").write_text("phantom:\n  cases: many\n  colour: red\n")
    result = snakemake(wf, "-n", "--cores", "1", "--configfile", "bad.yaml")
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "phantom.cases: 'many' is not of type 'integer'" in out and "phantom.colour: unknown key" in out


def test_broken_user_dataset_stops_at_verify(dataset_copy, tmp_path):
    bad_file, _ = shape_mismatch(dataset_copy)
    before = digest(dataset_copy)
    wf = workflow_copy(tmp_path / "wf")
    result = snakemake(wf, "--cores", "all", "--config", f"dataset={{raw: {dataset_copy}}}")
    assert result.returncode != 0
    log = (wf / "results" / "logs" / "verify" / f"{dataset_copy.name}.log").read_text()
    assert f"error: {bad_file}: label shape" in log
    assert not (wf / "results" / "verify" / f"{dataset_copy.name}.json").exists()
    assert not (wf / "results" / "preprocessed").exists()
    assert digest(dataset_copy) == before


def test_the_console_says_one_line_per_job_start_and_end(ci_run):
    """profiles/default's logger: a start and a done line per job with its wildcards and the jobs done so far; the
    commands stay in Snakemake's log file."""
    wf, result = ci_run
    lines = result.stderr.splitlines()
    starts = [line for line in lines if re.match(r"\d\d:\d\d:\d\d start ", line)]
    done = [line for line in lines if re.match(r"\d\d:\d\d:\d\d done  .* in \d+ s \[\d+/\d+\]$", line)]
    total = int(re.search(r"^(\d+) jobs to run: ", result.stderr, re.M).group(1))
    assert len(starts) == len(done) == total
    assert f"[{total}/{total}]" in done[-1]
    assert any(f"train dataset={PHANTOM} model=unet3plus seed=0" in line for line in starts)
    assert "Shell command" not in result.stderr and "--settings" not in result.stderr
    assert len(lines) < 2 * total + 20
    logs = sorted((wf / ".snakemake" / "log").glob("*.snakemake.log"))
    assert "segzoo train" in logs[-1].read_text()  # the full record is still kept
