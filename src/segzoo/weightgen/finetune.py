"""A generated network as an initialisation: Adam from it vs Adam from the start, scored on the test patches.

Both curves are the zoo's own training (``zoo.adam_from``: same loop, task, learning rate and data
seed as the held-out run), scored on the test batch at every step up to 10 and every 5th step after.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from segzoo.weightgen.scoring import Scorer, loss_and_dice
from segzoo.weightgen.zoo import Zoo, adam_from

STEPS = (5, 10, 25)  # Adam steps from the one-shot network at which its Dice is reported


def scored_steps(steps: int) -> set[int]:
    return set(range(min(steps, 10) + 1)) | set(range(0, steps + 1, 5)) | {steps}


def adam_curve(scorer: Scorer, zoo: Zoo, task: str, *, lr: float, seed: int, start: torch.Tensor, steps: int,
               settings: dict, threads: int) -> pd.DataFrame:
    """Test task Dice of Adam from ``start`` [P] at the scored steps."""
    wanted, rows = scored_steps(steps), []
    batch = scorer.batches["test"]

    def observe(step, model, loss):
        if step in wanted:
            dice = np.asarray(loss_and_dice(model, batch, scorer.device)[1])
            rows.append({"step": step, "task_dice": float(zoo.task_dice(dice, task))})

    adam_from(scorer.pre, scorer.splits, task, lr=lr, seed=seed, start=start, steps=steps, settings=settings,
              observe=observe, device=str(scorer.device), threads=threads)
    return pd.DataFrame(rows)


def first_step_reaching(curve: pd.DataFrame, value: float) -> float:
    """The first scored step whose task Dice is at least ``value`` (NaN if none)."""
    reached = curve[curve["task_dice"] >= value]
    return float(reached["step"].iloc[0]) if len(reached) else float("nan")
