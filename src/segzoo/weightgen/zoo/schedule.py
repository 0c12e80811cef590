"""The zoo sized from the dataset: its patch from the plan and its length from a pilot run (``starts/schedule.json``).

- ``weightgen.patch_size: null``: the zoo network trains on the patch the plan gives the compared models
  (``plans.json``; under ``compare.protocol equal`` one patch for all, under ``budget`` the smallest), rounded down
  to the zoo network's divisor;
- ``weightgen.plateau`` (``every``, ``patience``, ``min_delta``): the first training parent's multi-task run is
  trained as a pilot, its val Dice scored every ``every`` steps; the zoo's runs are as long as that pilot took to stop
  improving by ``min_delta`` for ``patience`` checks, at most ``weightgen.steps`` and at least one step past the
  largest budget. Without it every run takes ``weightgen.steps``.

The starts job writes the schedule once; every zoo consumer (runs, generators, evaluation) reads its settings through
:func:`resolve`, so all of them use the same patch and length.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from segzoo.errors import SegzooError
from segzoo.io import read_json
from segzoo.weightgen.zoo.settings import ZooSettings

FILE = "schedule.json"  # in the starts folder


def zoo_divisor(settings: ZooSettings) -> int:
    """What a patch side must be a multiple of: one halving per stage after the first."""
    return 2 ** (len(settings.features) - 1)


def patch_from_plans(plans: Path, settings: ZooSettings) -> list[int]:
    """The compared models' planned patch (the smallest along each axis), rounded down to the zoo network's divisor."""
    models = read_json(plans).get("models", {})
    if not models:
        raise SegzooError(f"{plans}: plans no model; the zoo's patch (weightgen.patch_size: null) comes from the plan")
    patch = np.min([m["patch_size"] for m in models.values()], axis=0)
    divisor = zoo_divisor(settings)
    return [int(max(divisor, (side // divisor) * divisor)) for side in patch]


def plateau_step(steps: list[int], dice: list[float], *, patience: int, min_delta: float) -> int | None:
    """The step of the best val Dice once ``patience`` checks in a row have not improved on it by ``min_delta``
    (None while it still improves)."""
    best, best_step, stale = -np.inf, None, 0
    for step, value in zip(steps, dice):
        if value > best + min_delta:
            best, best_step, stale = value, step, 0
        else:
            stale += 1
            if stale >= patience:
                return best_step
    return None


def pilot_steps(train_member, score, settings: ZooSettings) -> dict:
    """Train the pilot (``train_member(steps, keep) -> {step: weights}``) up to ``settings.steps``, scoring its val
    Dice at every ``plateau.every`` steps (``score(weights [K, P]) -> [K]``); the steps the zoo's runs take."""
    plan = settings.plateau
    keep = set(range(plan["every"], settings.steps + 1, plan["every"])) | {settings.steps}
    snapshots = train_member(settings.steps, keep)
    steps = sorted(snapshots)
    dice = [float(d) for d in score(torch.stack([snapshots[s] for s in steps]))]
    stop = plateau_step(steps, dice, patience=plan["patience"], min_delta=plan["min_delta"])
    floor = max([b + 1 for b in settings.budgets] or [1])
    chosen = settings.steps if stop is None else int(min(settings.steps, max(floor, stop)))
    return {"steps": chosen, "pilot": {"steps": steps, "val_dice": dice, "plateau_at": stop, "cap": settings.steps,
                                       **plan}}


def resolve(settings: ZooSettings, starts_dir: Path | None) -> ZooSettings:
    """``settings`` with the schedule's patch and length (when the starts folder holds one)."""
    file = Path(starts_dir) / FILE if starts_dir is not None else None
    if file is None or not file.is_file():
        if settings.patch_size is None:
            raise SegzooError(f"{file}: missing; weightgen.patch_size is null, so the zoo's patch comes from the "
                              "schedule its starts job writes")
        return settings
    schedule = read_json(file)
    return dataclasses.replace(settings, steps=int(schedule["steps"]), patch_size=list(schedule["patch_size"]))
