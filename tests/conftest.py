"""Shared test helpers: tiny phantom datasets and running the real `segzoo` CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from segzoo.data.phantom import PhantomSpec, write_phantom_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = PhantomSpec(shape=(24, 24, 10), spacing=(1.0, 1.0, 3.0))


def run_segzoo(*args, cwd=None) -> subprocess.CompletedProcess:
    """Run the real CLI in a fresh interpreter, as Snakemake does."""
    return subprocess.run([sys.executable, "-m", "segzoo", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


def prepared_phantom(root: Path, *, seed: int, cases: int = 6, **spec) -> tuple:
    """A 32×32×16 phantom dataset under ``root``, preprocessed, with train/val/test splits: the data of the tests that
    train in-process. Returns ``(Preprocessed, splits.json)``; ``spec`` overrides PhantomSpec fields."""
    from segzoo.data.preprocess import preprocess_dataset
    from segzoo.data.splits import splits_for_preprocessed
    from segzoo.io import write_json

    raw = write_phantom_dataset(root / "raw" / "D", cases=cases, seed=seed,
                                spec=PhantomSpec(shape=(32, 32, 16), spacing=(1.0, 1.0, 3.0), **spec))
    pre = preprocess_dataset(raw, root / "pre" / "D")
    write_json(root / "splits.json", splits_for_preprocessed(pre, 0, 0.2, 0.2))
    return pre, root / "splits.json"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A sound 4-case phantom dataset, shared read-only by tests (copy it before breaking it)."""
    root = tmp_path_factory.mktemp("raw") / "Dataset901_Tiny"
    return write_phantom_dataset(root, cases=4, seed=3, spec=TINY)


@pytest.fixture
def dataset_copy(tiny_dataset, tmp_path) -> Path:
    """A private copy of the tiny dataset that a test may break."""
    return Path(shutil.copytree(tiny_dataset, tmp_path / tiny_dataset.name))


WORKFLOW = ["Snakefile", "rules", "schemas", "envs", "presets", "profiles", "config.yaml", "src"]
PHANTOM = "Dataset001_SpinalPhantom"


def workflow_copy(dest: Path) -> Path:
    """The workflow files in a fresh folder, so each run starts from nothing."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    return dest


def snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The Snakemake installed beside this Python, with a PATH that does not hold the venv (as a user's might)."""
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(Path(sys.executable).parent / "snakemake"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _shared_folder(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this session sees (each worker has its own base temp below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory):
    """A finished ci-preset run, made once per test session and shared by the xdist workers (the first to ask
    runs it under a file lock; the others wait and read its result). Tests treat its folder as read-only:
    one that runs Snakemake in it for real copies it first. While developing, SEGZOO_TEST_CI_RUN=<folder of a
    finished run of this code> reuses one (a copy of it, so the folder stays as it was); CI always runs it afresh."""
    shared = _shared_folder(tmp_path_factory)
    wf, stdout, stderr = shared / "ci_run" / "wf", shared / "ci_run" / "stdout", shared / "ci_run" / "stderr"
    with FileLock(str(shared / "ci_run.lock")):
        if not stderr.exists():
            reuse = os.environ.get("SEGZOO_TEST_CI_RUN")
            if reuse:
                shutil.copytree(reuse, wf, symlinks=True)
            else:
                workflow_copy(wf)
            result = snakemake(wf, "--cores", "all", "--resources", "gpu=2", "--configfile", "presets/ci.yaml")
            stdout.write_text(result.stdout)
            if result.returncode != 0:
                (shared / "ci_run" / "failed").touch()
            stderr.write_text(result.stderr)
    assert not (shared / "ci_run" / "failed").exists(), stderr.read_text()[-3000:]
    return wf, subprocess.CompletedProcess([], 0, stdout.read_text(), stderr.read_text())


# Modules that take minutes, longest first: `make test` runs two pytest-xdist workers that each take whole
# modules in collection order, so starting the long ones first keeps one worker from finishing the session alone.
LONG_MODULES = ["test_dvc", "test_own_data", "test_slurm", "test_training", "test_weightgen", "test_nnunet_pipeline",
                "test_nnunet_interop", "test_workflow", "test_tracking", "test_onnx_export", "test_predict",
                "test_ddp", "test_report", "test_container"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.module.__name__ if item.module else "", len(rank)))
