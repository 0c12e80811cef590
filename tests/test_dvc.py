"""DVC over the Snakemake pipeline, for real: git + DVC repositories made from this checkout, the ci preset,
`dvc repro`, a local remote. No mocks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_segzoo

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
CI = ["--configfile", "presets/ci.yaml"]


def sh(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """A command from the venv (dvc, snakemake) or the system (git), as a user would type it."""
    env = {**os.environ, "PATH": f"{BIN}:/usr/bin:/bin", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x", "DVC_NO_ANALYTICS": "1"}
    env.pop("DVC_STAGE", None)
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


MODELS = ["unet3plus", "diffnet"]  # two of the ci preset's four models: every stage still runs, in half the time


def checkout_repo(dest: Path) -> Path:
    """This checkout's files (tracked and not ignored, as a clone would have them) in a new git repository, the
    ci preset training two of its models, with dvc.yaml written for it and committed."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    preset = yaml.safe_load((dest / "presets" / "ci.yaml").read_text())
    preset["train"]["models"] = MODELS
    (dest / "presets" / "ci.yaml").write_text(yaml.safe_dump(preset, sort_keys=False))
    sh(dest, "git", "init", "-q")
    sh(dest, sys.executable, "-m", "segzoo", "dvc-sync", *CI)
    sh(dest, "git", "add", "-A")
    sh(dest, "git", "commit", "-qm", "segzoo with dvc.yaml for the ci preset")
    return dest


def repro(repo: Path) -> tuple[subprocess.CompletedProcess, float]:
    began = time.perf_counter()
    result = sh(repo, "dvc", "repro")
    return result, time.perf_counter() - began


def stages_run(result: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", result.stdout))


def metrics_files(repo: Path) -> dict[str, bytes]:
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    paths = [next(iter(m)) for s in stages.values() for m in s.get("metrics", [])]
    return {p: (repo / p).read_bytes() for p in paths}


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """`dvc repro` of the ci preset in a fresh git + DVC repository; dvc.lock and metrics committed."""
    repo = checkout_repo(tmp_path_factory.mktemp("dvc_a"))
    result, seconds = repro(repo)
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "reproduced")
    return repo, result, seconds


def test_committed_dvc_yaml_matches_the_snakemake_dag():
    """The drift test: regenerating dvc.yaml from the rules and config.yaml gives the committed file."""
    result = run_segzoo("dvc-sync", "--check", cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_repro_makes_every_stage_then_a_second_repro_does_nothing(reproduced, capsys):
    repo, first, seconds = reproduced
    assert stages_run(first) == {"data", "train", "evaluate", "weightgen", "report"}
    assert (repo / "results" / "index.html").is_file() and (repo / "dvc.lock").is_file()
    again, noop_seconds = repro(repo)
    assert stages_run(again) == set() and "didn't change" in again.stdout
    assert "up to date" in sh(repo, "dvc", "status").stdout
    began = time.perf_counter()
    dry = sh(repo, "snakemake", "-n", *CI)
    snakemake_seconds = time.perf_counter() - began
    assert "Nothing to be done" in dry.stdout + dry.stderr
    with capsys.disabled():
        print(f"\n  dvc repro: {seconds:.0f} s; no-op dvc repro {noop_seconds:.1f} s; no-op snakemake -n "
              f"{snakemake_seconds:.1f} s")


def test_metrics_and_plots_are_kept_by_git_and_the_rest_by_dvc(reproduced):
    repo, _, _ = reproduced
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    kept = [next(iter(e)) for s in stages.values() for key in ("metrics", "plots") for e in s.get(key, [])]
    cached = [next(iter(e)) for s in stages.values() for e in s["outs"]]
    tracked = set(sh(repo, "git", "ls-files", "results").stdout.split())
    for path in kept:  # committed by the fixture: not ignored by git
        assert any(t == path or t.startswith(path + "/") for t in tracked), path
    ignored = sh(repo, "git", "check-ignore", *cached, check=False).stdout.split()
    assert sorted(ignored) == sorted(cached)
    assert not list((repo / "results").rglob(".gitignore"))  # DVC wrote no .gitignore files into results/
    weights = repo / stages["train"]["outs"][0].popitem()[0]
    cache_file = next(p for p in (repo / ".dvc" / "cache").rglob("*") if p.is_file() and p.samefile(weights))
    assert cache_file.stat().st_nlink >= 2  # linked, not stored twice


def test_metrics_show_and_plots_show_read_the_outputs(reproduced, tmp_path):
    repo, _, _ = reproduced
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json").stdout)
    flat = json.dumps(shown)
    assert "comparison.json" in flat and "best_val_dice" in flat and "adam_best_by_task" in flat
    assert "unet3plus" in flat and "dice" in flat
    sh(repo, "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "dice" in page and "gpt_loss" in page


def test_push_delete_pull_then_snakemake_has_nothing_to_do(reproduced, tmp_path):
    repo, _, _ = reproduced
    before = metrics_files(repo)
    sh(repo, "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    sh(repo, "dvc", "push")
    shutil.rmtree(repo / "results")
    sh(repo, "git", "checkout", "--", "results")  # metrics and plots: git keeps them (cache: false)
    sh(repo, "dvc", "pull")
    assert (repo / "results/train/Dataset001_SpinalPhantom/unet3plus/seed0/best.safetensors").is_file()
    sh(repo, "snakemake", "--touch", "--cores", "1", *CI)  # DVC restores files in any order: fix the times
    dry = sh(repo, "snakemake", "-n", *CI)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    assert metrics_files(repo) == before
    assert "up to date" in sh(repo, "dvc", "status").stdout


def test_dvc_repro_and_a_plain_snakemake_run_from_clean_copies_give_identical_metrics(reproduced, ci_run):
    """The plain run (tests/conftest.py: `snakemake --configfile presets/ci.yaml` in a fresh copy, no DVC) trains all
    four models; each model's numbers do not depend on the others, so the two must agree wherever both have one."""
    repo, _, _ = reproduced
    other, _ = ci_run
    metrics = metrics_files(repo)
    assert len(metrics) == len(MODELS) + 2  # each training, the comparison's means, the G.pt evaluation
    for path, content in metrics.items():
        theirs = (other / path).read_bytes()
        if path.endswith("comparison.json"):  # {model: {region: {metric: mean}}}
            ours, theirs = json.loads(content), json.loads(theirs)
            assert list(ours) == MODELS and ours == {m: theirs[m] for m in MODELS}
        else:
            assert content == theirs, path


def test_dvc_status_follows_the_code_a_stage_reaches(reproduced):
    """A module the train verb reaches only through other modules changes the train stage (and what follows); the
    page's module changes the report stage alone. Each file is put back, and DVC (content hashes) agrees."""
    repo, _, _ = reproduced
    for module, changed, unchanged in (("inference/window.py", {"train", "evaluate", "weightgen"}, {"data"}),
                                       ("report/page.py", {"report"}, {"data", "train", "evaluate", "weightgen"})):
        path = repo / "src" / "segzoo" / module
        text = path.read_text()
        path.write_text(text + "\n# an edit\n")
        try:
            status = json.loads(sh(repo, "dvc", "status", "--json").stdout)
        finally:
            path.write_text(text)
        stages = set(status)
        assert changed <= stages and not unchanged & stages, (module, status)
        for stage in changed:  # each because the edited file is among its dependencies
            assert f"src/segzoo/{module}" in json.dumps(status[stage]), (stage, status[stage])
    assert "up to date" in sh(repo, "dvc", "status").stdout


def test_one_training_param_reruns_only_downstream_stages_and_a_direct_run_stays_in_sync(reproduced):
    """Runs last: it changes the repository's preset."""
    repo, _, _ = reproduced
    preset = repo / "presets" / "ci.yaml"
    config = yaml.safe_load(preset.read_text())
    config["train"]["steps"] = 6  # one training parameter
    preset.write_text(yaml.safe_dump(config))
    zoo_before = {p: p.stat().st_mtime_ns for p in (repo / "results" / "zoo").rglob("*.safetensors")}
    result, _ = repro(repo)
    assert stages_run(result) == {"train", "evaluate", "report"}
    assert {p: p.stat().st_mtime_ns for p in zoo_before} == zoo_before
    assert json.loads((repo / "results/train/Dataset001_SpinalPhantom/unet3plus/seed0/metrics.json")
                      .read_text())["steps"] == 6
    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "--json").stdout)
    assert any("best_val_dice" in key for changes in diff.values() for key in changes)  # against HEAD

    # A direct Snakemake run leaves DVC in sync by itself (the workflow's onsuccess runs `dvc commit`).
    config["weightgen"]["evaluation"]["neighbours"] = 1  # a key the preset sets (DVC tracks the keys a file holds)
    preset.write_text(yaml.safe_dump(config))
    assert "changed" in sh(repo, "dvc", "status").stdout
    run = sh(repo, "snakemake", "--cores", "all", *CI)
    assert "recorded stage(s)" in run.stdout + run.stderr
    assert "up to date" in sh(repo, "dvc", "status").stdout


def test_dvc_sync_refuses_to_replace_a_hand_written_dvc_yaml(tmp_path):
    repo = tmp_path / "r"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns(".git", ".venv", "results", ".snakemake", ".dvc"))
    (repo / "dvc.yaml").write_text("stages: {}\n")
    result = run_segzoo("dvc-sync", cwd=repo)
    assert result.returncode != 0 and "not written by `segzoo dvc-sync`" in result.stderr
    assert (repo / "dvc.yaml").read_text() == "stages: {}\n"
