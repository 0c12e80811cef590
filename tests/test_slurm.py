"""The ci preset through a real SLURM (slurmctld + slurmd on localhost, two fake GPUs) with profiles/slurm."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PHANTOM, snakemake, workflow_copy
from slurm_cluster import local_cluster, missing

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI=true the SLURM test must run, but: {why}")
        pytest.skip(f"no local SLURM: {why}")
    with local_cluster(tmp_path_factory.mktemp("slurm"), cpus=2, memory_mb=16000) as env:
        yield env


def test_training_jobs_run_through_sbatch_with_one_gpu_each(cluster, tmp_path):
    wf = workflow_copy(tmp_path / "wf")
    # The computing happens on the CPU (the GPUs are fake), but every training job asks SLURM for one GPU.
    # Each sbatch job costs seconds of scheduling, so the data stage runs here first, without SLURM, and the
    # cluster gets the two trainings (the rest of the pipeline runs the same commands in the ci run): two models
    # are enough to see two training jobs on two GPUs at once.
    # 100 steps (ci: 12) keep each training running for seconds, not one: two jobs dispatched together then
    # overlap however their imports and SLURM's launch stagger them (at 12 steps a run has missed by 0.1 s).
    (wf / "slurm_test.yaml").write_text("device: cpu\nweightgen: {enabled: false}\n"
                                        "train: {models: [unet3plus, diffnet], steps: 100}\n")
    data = snakemake(wf, f"results/splits/{PHANTOM}/splits.json", f"results/plans/{PHANTOM}/plans.json", "--cores",
                     "2", "--configfile", "presets/ci.yaml", "slurm_test.yaml")
    assert data.returncode == 0, data.stderr[-3000:]
    targets = [f"results/train/{PHANTOM}/{model}/seed0/best.safetensors" for model in ("unet3plus", "diffnet")]
    env = {**cluster, "PATH": f"{BIN}:/usr/bin:/bin", "SEGZOO_SLURM_PARTITION": "debug"}
    began = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "snakemake"), *targets, "--profile", "profiles/slurm", "--configfile", "presets/ci.yaml",
         "slurm_test.yaml", "--set-resources", "train:gpu=1", "--slurm-status-command", "squeue",
         "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2"],
        cwd=wf, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - began
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    record = sorted((wf / ".snakemake" / "log").glob("*.snakemake.log"))[-1].read_text()  # Snakemake's full log
    assert re.search(r"^train\s+2\ntotal\s+2$", record, re.M)  # only the trainings went to the cluster
    runs = sorted((wf / "results" / "train" / PHANTOM).glob("*/seed0/timing.json"))
    assert len(runs) == 2
    timing = [json.loads(p.read_text()) for p in runs]
    assert all(t["slurm_job_id"] for t in timing)  # each training ran inside its own sbatch job
    assert len({t["slurm_job_id"] for t in timing}) == 2
    assert {t["cuda_visible_devices"] for t in timing} <= {"0", "1"}
    overlapping = [(a, b) for a, b in itertools.combinations(timing, 2)
                   if a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]]
    assert overlapping, "no two training jobs ran at the same time"
    assert all(a["cuda_visible_devices"] != b["cuda_visible_devices"] for a, b in overlapping)
    print(f"\n  SLURM run of two trainings: {seconds:.0f} s, {len(overlapping)} overlapping training pair(s)")
