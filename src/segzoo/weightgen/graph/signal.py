"""What the structure-shared generator learns about a start from the start's own loss.

Shapes: M networks, P parameters.

- ``grad``:  the gradient of the task's training loss at the start on one fixed batch of training patches of the
  task (:func:`signal_batch`; one gradient evaluation), each layer divided by its root mean square (scale-free: the
  direction, as Adam's first step sees it);
- ``adam<k>``: the start's first k Adam steps (k gradient evaluations): the displacements after 1 and after k
  steps, divided by the layer scale of the zoo's changes. They are the start's own run's snapshots at those steps
  (the zoo keeps them: ``weightgen.budgets``), the same Adam the evaluation compares against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segzoo.data.loader import PatchBatches
from segzoo.data.preprocessed import Preprocessed
from segzoo.io import read_json
from segzoo.models.flat import layer_sizes
from segzoo.weightgen.zoo.plan import ALL
from segzoo.weightgen.zoo.settings import ZooSettings

SIGNAL_SEED = 13  # the fixed batch of a task is drawn from (config seed, this, task)


def arm_budget(arm: str) -> int:
    """Gradient evaluations an arm spends per network: ``grad`` 1, ``adam<k>`` k."""
    if arm == "grad":
        return 1
    if arm.startswith("adam") and arm[4:].isdigit() and int(arm[4:]) >= 1:
        return int(arm[4:])
    raise ValueError(f"unknown signal arm {arm!r} (grad or adam<k>)")


def prefix_steps(arm: str) -> list[int]:
    """The Adam steps whose displacements an ``adam<k>`` arm reads: 1 and k."""
    k = arm_budget(arm)
    return sorted({1, k})


def signal_batch(pre: Preprocessed, splits: Path, settings: ZooSettings, task: str, data_seed: int,
                 patches: int) -> dict[str, torch.Tensor]:
    """The task's fixed batch of training patches (foreground centred on the task's regions, as its runs train)."""
    cases = read_json(splits)["train"]
    centre = None if task == ALL else list(pre.regions[task])
    seed = int(np.random.SeedSequence([data_seed, SIGNAL_SEED, *task.encode()]).generate_state(1)[0])
    return PatchBatches(pre, cases, settings.patch_size, patches,
                        foreground_fraction=settings.train["foreground_fraction"], seed=seed, centre_values=centre)[0]


def normalise_per_layer(flat: torch.Tensor, layout: list[list]) -> torch.Tensor:
    """[..., P] with each layer divided by its root mean square (a layer of zeros stays zero)."""
    out, at = [], 0
    for n in layer_sizes(layout):
        part = flat[..., at:at + n]
        rms = part.square().mean(-1, keepdim=True).sqrt()
        out.append(torch.where(rms > 0, part / rms.clamp(min=1e-30), torch.zeros_like(part)))
        at += n
    return torch.cat(out, dim=-1)
