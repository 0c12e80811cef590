"""Small zoos for the tests: the ci preset's zoo settings, typed, and starts and jobs laid out as the rules lay them
out (starts/<start>.safetensors, runs/job<k>/<start>_<task>_lr<lr>_seed<s>.safetensors)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from segzoo.config import load_config
from segzoo.weightgen.zoo import plan as zoo_plan
from segzoo.weightgen.zoo.settings import ZooSettings
from segzoo.weightgen.zoo.train import train_starts, train_zoo_job

from conftest import REPO

CI = load_config(REPO / "config.yaml", REPO / "presets" / "ci.yaml", schema_path=REPO / "schemas" / "config.schema.yaml")
WG = CI["weightgen"]


def ci_settings(**overrides) -> ZooSettings:
    """The ci preset's zoo settings (with its test patches), fields replaced by ``overrides``. Without a pilot run
    (``plateau`` None) unless one is asked for: a test's zoo takes exactly the steps it names."""
    settings = ZooSettings.from_json({**zoo_plan.zoo_settings(CI)["zoo"], "test_patches": WG["test_patches"]})
    return dataclasses.replace(settings, **{"plateau": None, **overrides})


def index_settings(**overrides) -> dict:
    """What zoo-index reads to give runs their roles, from the ci preset, keys replaced by ``overrides``."""
    return {**zoo_plan.index_settings(CI), **overrides}


def starts(pre, splits, settings: ZooSettings, names: list[str], folder: Path, mode: str = "spawn") -> Path:
    """The starts ``names`` written into ``folder`` (parent<k> grown, init<k> a random init)."""
    train_starts(pre, splits, mode, names, settings=settings, out=folder, device="cpu", threads=1, data_seed=0)
    return folder


def job(pre, splits, runs: list[tuple], starts_dir: Path, settings: ZooSettings, out: Path) -> list[dict]:
    """A zoo job of ``runs`` (start, task, lr, seed) on the CPU, one thread, data seed 0."""
    return train_zoo_job(pre, splits, [{"start": s, "task": t, "lr": lr, "seed": seed} for s, t, lr, seed in runs],
                         starts_dir, settings=settings, out=out, device="cpu", threads=1, data_seed=0)
