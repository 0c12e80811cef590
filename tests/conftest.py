"""Shared test helpers: tiny phantom datasets and running the real `segzoo` CLI."""

from __future__ import annotations

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
