"""The training loop: determinism, resume after SIGKILL through real Snakemake, outputs, GPU requests."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from segzoo.config import load_config
from segzoo.train.loop import Run, train

from conftest import PHANTOM, REPO, prepared_phantom, snakemake, workflow_copy

CI = load_config(REPO / "config.yaml", REPO / "presets" / "ci.yaml", schema_path=REPO / "schemas" / "config.schema.yaml")
SETTINGS = {k: v for k, v in CI["train"].items() if k not in ("models", "seeds", "threads")}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepared_phantom(tmp_path_factory.mktemp("data"), seed=4)


def _run(prepared, out: Path, model="unet3plus", seed=0, **overrides) -> Run:
    pre, splits = prepared
    return Run(preprocessed=pre, splits=splits, model=model, model_options=CI["models"][model], seed=seed,
               out=out, settings={**SETTINGS, **overrides}, progress=False)


@pytest.mark.parametrize("model", ["unet3plus", "ms_unet3plus", "diffnet", "ms_diffnet"])
def test_same_seed_gives_bit_identical_checkpoints(prepared, tmp_path, model):
    a = train(_run(prepared, tmp_path / "a", model))
    b = train(_run(prepared, tmp_path / "b", model))
    assert a == b
    for name in ("final.safetensors", "best.safetensors", "metrics.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    train(_run(prepared, tmp_path / "c", model, seed=1))
    assert (tmp_path / "c" / "final.safetensors").read_bytes() != (tmp_path / "a" / "final.safetensors").read_bytes()


def test_outputs_and_learning_curves(prepared, tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)  # inside a git repo without DVC: dvclive must not `dvc init` it
    metrics = train(_run(prepared, tmp_path / "r"))
    assert not (tmp_path / ".dvc").exists()
    best = json.loads((tmp_path / "r" / "best.json").read_text())
    final = json.loads((tmp_path / "r" / "final.json").read_text())
    assert final["step"] == SETTINGS["steps"] and final["seed"] == 0 and final["config_hash"]
    assert best["metrics"]["val_dice"] == metrics["best_val_dice"]
    assert set(metrics["best_val_dice_per_region"]) == {"canal", "sc", "lesion"}
    curve = (tmp_path / "r" / "dvclive" / "plots" / "metrics" / "val" / "dice.tsv").read_text().splitlines()
    assert len(curve) == 1 + SETTINGS["steps"] // SETTINGS["val_every"]
    assert not (tmp_path / "r" / "dvc.yaml").exists()


def test_a_run_with_other_settings_does_not_resume_stale_state(prepared, tmp_path):
    train(_run(prepared, tmp_path / "r"))
    fresh = train(_run(prepared, tmp_path / "fresh", lr=0.001))
    changed = train(_run(prepared, tmp_path / "r", lr=0.001))  # same folder, new settings: starts over
    assert changed == fresh


def test_loss_falls_over_a_longer_run(prepared, tmp_path):
    train(_run(prepared, tmp_path / "r", steps=40, val_every=20))
    losses = [float(line.split("\t")[-1]) for line in
              (tmp_path / "r" / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1:]]
    assert losses[-1] < losses[0]


def _train_process(snakemake_pid: int):
    for child in psutil.Process(snakemake_pid).children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if any(part.endswith("segzoo") for part in cmd) and "train" in cmd:
            return child
    return None


@pytest.mark.slow
def test_sigkilled_training_resumes_under_snakemake_bit_identical(tmp_path):
    target = f"results/train/{PHANTOM}/unet3plus/seed0/final.safetensors"
    long_run = ["--configfile", "presets/ci.yaml", "long.yaml"]
    wf = workflow_copy(tmp_path / "killed")
    (wf / "long.yaml").write_text("train: {steps: 60, checkpoint_every: 5, val_every: 20}\n")
    prep = snakemake(wf, f"results/splits/{PHANTOM}/splits.json", "--cores", "1", *long_run)
    assert prep.returncode == 0
    reference = Path(shutil.copytree(wf, tmp_path / "reference", symlinks=True))  # the same data, trained unbroken
    snakemake_bin = str(Path(sys.executable).parent / "snakemake")
    unbroken = subprocess.Popen([snakemake_bin, target, "--cores", "1", *long_run], cwd=reference,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.Popen([snakemake_bin, target, "--cores", "1", *long_run], cwd=wf,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = wf / "results" / "train" / PHANTOM / "unet3plus" / "seed0" / "state" / "last.json"
    deadline = time.time() + 120
    while not (state.exists() and json.loads(state.read_text())["step"] >= 10):
        assert time.time() < deadline and proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.02)
    victim = _train_process(proc.pid)
    assert victim is not None
    victim.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    killed_at = json.loads(state.read_text())["step"]
    assert killed_at < 60 and not (wf / target).exists()
    done = unbroken.communicate(timeout=300)[0]
    assert unbroken.returncode == 0, done[-3000:]

    rerun = snakemake(wf, target, "--cores", "1", *long_run)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    log = (wf / "results" / "logs" / "train" / PHANTOM / "unet3plus" / "seed0.log").read_text()
    assert f"resuming results/train/{PHANTOM}/unet3plus/seed0 at step" in log
    for name in ("final.safetensors", "best.safetensors", "metrics.json"):
        a = (wf / target).with_name(name).read_bytes()
        b = (reference / target).with_name(name).read_bytes()
        assert a == b, f"{name} differs from the uninterrupted run (killed at step {killed_at})"
    curves = (wf / target).parent / "dvclive" / "plots" / "metrics"
    reference_curves = (reference / target).parent / "dvclive" / "plots" / "metrics"
    for tsv in reference_curves.rglob("*.tsv"):
        assert (curves / tsv.relative_to(reference_curves)).read_text() == tsv.read_text(), tsv.name


@pytest.mark.slow
@pytest.mark.parametrize("gpus,expected", [("0", False), ("2", True)])
def test_training_jobs_ask_for_a_gpu_only_on_cuda(tmp_path, monkeypatch, gpus, expected):
    monkeypatch.setenv("SEGZOO_GPU_COUNT", gpus)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    wf = workflow_copy(tmp_path / "wf")
    result = snakemake(wf, "-n", "--cores", "all", "--resources", "gpu=2", "--configfile", "presets/ci.yaml",
                       "--printshellcmds")
    assert result.returncode == 0, result.stdout[-2000:]
    out = result.stdout
    assert ("gpu=1" in out) == expected
    assert ("--device cuda" in out) == expected and out.count("rule train:") == 4


@pytest.mark.parametrize("patch", [[12, 16, 16], [8, 8, 8]])
def test_a_patch_the_model_cannot_take_is_a_clear_error(prepared, tmp_path, patch):
    from segzoo.errors import SegzooError
    with pytest.raises(SegzooError, match=r"train.patch_size .* multiple of 8"):
        train(_run(prepared, tmp_path / "r", patch_size=patch))
    assert not (tmp_path / "r").exists()


def test_cli_rejects_malformed_settings(prepared, tmp_path):
    from conftest import run_segzoo
    pre, splits = prepared
    result = run_segzoo("train", "--data", pre.folder, "--splits", splits, "--model", "unet3plus", "--seed", "0",
                        "--out", tmp_path / "r", "--settings", "{not json", "--device", "cpu")
    assert result.returncode == 1 and "--settings: not a JSON object" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("change,message", [
    ({"model": "unet"}, "unknown model 'unet'"),
    ({"settings": '{"train": {}, "model": {}}'}, "train settings lack"),
    ({"settings": None, "options": {"widht": 4}}, "models.unet3plus:"),
    ({"data": "/nonexistent"}, "/nonexistent/preprocess.json: missing"),
    ({"device": "cuda"}, "device cuda"),
])
def test_cli_errors_are_one_line(prepared, tmp_path, monkeypatch, change, message):
    from conftest import run_segzoo
    monkeypatch.setenv("SEGZOO_GPU_COUNT", "0")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pre, splits = prepared
    settings = change.get("settings") or json.dumps({"train": SETTINGS, "model": change.get("options", {})})
    result = run_segzoo("train", "--data", change.get("data", pre.folder), "--splits", splits, "--model",
                        change.get("model", "unet3plus"), "--seed", "0", "--out", tmp_path / "r", "--settings",
                        settings, "--device", change.get("device", "cpu"))
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_curves_logged_after_the_saved_state_are_dropped_on_resume(tmp_path):
    from segzoo.train.loop import _truncate_curves
    tsv = tmp_path / "plots" / "metrics" / "val" / "dice.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("step\tdice\n6\t0.1\n12\t0.2\n18\t0.3\n")
    _truncate_curves(tmp_path, 12)
    assert tsv.read_text() == "step\tdice\n6\t0.1\n12\t0.2\n"
