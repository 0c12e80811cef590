"""The segzoo image without root: rootless Podman as an ordinary user runs `segzoo verify` and the ci preset's data
stage and one training, with results/ on a bind mount, and gets the checkpoint the session's ci run got outside.

tests/container_image.py builds the image (`.ci/run` does, under CI=true, where this test must run).
"""

from __future__ import annotations

import csv
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import PHANTOM, WORKFLOW, workflow_copy
from container_image import IMAGE, USER, missing, podman

pytestmark = pytest.mark.slow
TRAINING = f"results/train/{PHANTOM}/unet3plus/seed0/best.safetensors"  # one training of the ci preset


@pytest.fixture(scope="module")
def image():
    why = missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI=true the container test must run, but: {why}")
        pytest.skip(f"no segzoo image: {why}")
    return IMAGE


def run(*args: str, volumes: tuple[str, ...] = ()):
    """`podman run` of the image as USER: no network (nothing is downloaded at run time), and the image's user
    (uid 1000) mapped to USER, so what it writes in a bind mount is USER's."""
    return podman("run", "--rm", "--pull=never", "--network=none", "--userns=keep-id:uid=1000,gid=1000",
                  *(f"--volume={v}" for v in volumes), IMAGE, *args, capture_output=True, text=True, check=False)


@pytest.fixture
def results():
    """An empty results/ folder of USER's (pytest's own temporary folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="segzoo-container-"))
    try:
        folder.chmod(0o755)
        (folder / "results").mkdir()
        shutil.chown(folder / "results", USER, USER)
        yield folder / "results"
    finally:
        shutil.rmtree(folder)


def test_the_image_holds_the_workflow_and_its_user_is_not_root(image):
    listed = run("sh", "-c", "id -u; ls -A /work; for c in segzoo snakemake dot; do command -v $c; done")
    assert listed.returncode == 0, listed.stderr
    uid, *rest = listed.stdout.split()
    assert uid == "1000"
    assert set(WORKFLOW) <= set(rest)  # what a run needs, as the tests copy it (.dockerignore admits it)
    assert "/opt/venv/bin/segzoo" in rest and "/opt/venv/bin/snakemake" in rest and "/usr/bin/dot" in rest


def test_the_ci_preset_in_the_container_gives_the_checkpoint_of_the_run_outside(image, results, ci_run):
    began = time.perf_counter()
    result = run("snakemake", TRAINING, "--cores", "all", "--resources", "gpu=2", "--configfile", "presets/ci.yaml",
                 volumes=(f"{results}:/work/results",))
    seconds = time.perf_counter() - began
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # segzoo verify by hand, on the phantom the run made: the report the workflow's verify job wrote
    verify = run("segzoo", "verify", f"results/raw/{PHANTOM}", "--report", "results/verify-again.json",
                 volumes=(f"{results}:/work/results",))
    assert verify.returncode == 0, verify.stderr[-3000:]
    assert (results / "verify-again.json").read_text() == (results / "verify" / f"{PHANTOM}.json").read_text()

    inside = results.parent / TRAINING
    outside = ci_run[0] / TRAINING
    assert inside.read_bytes() == outside.read_bytes()  # the same bytes as the ci run outside the container
    caller = pwd.getpwnam(USER).pw_uid
    written = [p for p in results.rglob("*")]
    assert written and {p.lstat().st_uid for p in written} == {caller}  # the caller's files, not a sub-uid's
    ran = {p.parent.name for p in results.glob("benchmarks/*/*")}  # one benchmark folder per rule
    assert {"phantom", "verify", "preprocess", "splits", "train"} <= ran

    def job_seconds(root: Path) -> float:
        files = [p.relative_to(results.parent) for p in results.glob("benchmarks/**/*.tsv")]
        return sum(float(next(csv.DictReader((root / f).open(), delimiter="\t"))["s"]) for f in files)

    print(f"\n  in the container: {seconds:.0f} s; its jobs {job_seconds(results.parent):.0f} s, the same jobs outside "
          f"in the session's ci run {job_seconds(ci_run[0]):.0f} s")


def test_under_the_apptainer_method_each_job_runs_this_checkouts_code_in_the_configured_image(tmp_path):
    """config `container` with `--software-deployment-method apptainer`: Snakemake wraps each job in `apptainer exec
    IMAGE`. Apptainer has no Debian 12 package, so a stand-in records the call and runs the job's command here, with
    this venv's Python in place of the image's (which the tests above run for real)."""
    wf = workflow_copy(tmp_path / "wf")
    calls, fake = tmp_path / "calls.jsonl", tmp_path / "bin" / "apptainer"
    fake.parent.mkdir()
    fake.write_text(f"""#!{sys.executable}
import json, os, sys
if sys.argv[1:] == ["--version"]:
    sys.exit(print("apptainer version 1.3.4"))
with open({str(calls)!r}, "a") as f:
    print(json.dumps(sys.argv[1:]), file=f)
os.environ["PATH"] = {str(Path(sys.executable).parent)!r} + ":" + os.environ["PATH"]  # the image's Python, stood in for
os.execvp("bash", ["bash", "-c", sys.argv[-1]])  # apptainer exec [options] IMAGE bash -c COMMAND
""")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:/usr/bin:/bin"}
    result = subprocess.run([str(Path(sys.executable).parent / "snakemake"), f"results/raw/{PHANTOM}",
                             "--cores", "1", "--configfile", "presets/ci.yaml", "--software-deployment-method",
                             "apptainer", "--config", "container=/images/segzoo.sif"], cwd=wf, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(jobs) == 1, jobs  # the phantom job, in the image, running this checkout's src/
    job = jobs[0]
    assert job[0] == "exec" and job[job.index("--home") + 1] == str(wf), job
    assert job[-4:-1] == ["/images/segzoo.sif", "bash", "-c"], job
    assert job[-1].startswith(f"export PYTHONPATH={wf / 'src'}; segzoo() {{ python -m segzoo"), job
    assert json.loads((wf / "results" / "raw" / PHANTOM / "dataset.json").read_text())["numTraining"] == 6
