"""Shared test helpers: tiny phantom datasets and running the real `segzoo` CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from segzoo.data.phantom import PhantomSpec, write_phantom_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = PhantomSpec(shape=(24, 24, 10), spacing=(1.0, 1.0, 3.0))


def run_segzoo(*args, cwd=None) -> subprocess.CompletedProcess:
    """Run the real CLI in a fresh interpreter, as Snakemake does."""
    return subprocess.run([sys.executable, "-m", "segzoo", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


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


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory):
    """A finished ci-preset run. While developing, SEGZOO_TEST_CI_RUN=<folder of a finished run of this code>
    reuses one (a copy of it, so the folder stays as it was); CI always runs it afresh."""
    reuse = os.environ.get("SEGZOO_TEST_CI_RUN")
    wf = workflow_copy(tmp_path_factory.mktemp("wf")) if not reuse else \
        Path(shutil.copytree(reuse, tmp_path_factory.mktemp("reused") / "wf", symlinks=True))
    result = snakemake(wf, "--cores", "all", "--resources", "gpu=2", "--configfile", "presets/ci.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    return wf, result
