"""A generated network as an initialisation: Adam from it vs Adam from its start, scored on the test patches.

Both curves are the zoo's own training (the zoo engine: same task, learning rate and data seed as the start's own
run), scored on the test batch at steps spaced about 1.5x apart (0, 1, 2, 3, 5, 8, 12, 18, 27, ... and the last).
"""

from __future__ import annotations

import pandas as pd
import torch

from segzoo.weightgen.zoo.engine import Member
from segzoo.weightgen.zoo.scoring import Scorer
from segzoo.weightgen.zoo.runs import Zoo


def scored_steps(steps: int) -> set[int]:
    """0, 1, 2, 3 and then about 1.5x apart up to ``steps`` (every step is a scoring of every arm: its cost)."""
    found, step = {0, 1, 2, 3}, 3
    while step < steps:
        step = max(step + 1, round(step * 1.5))
        found.add(min(step, steps))
    return {s for s in found if s <= steps} | {steps}


def adam_curves(scorer: Scorer, zoo: Zoo, arms: list[dict], *, settings: dict, threads: int) -> pd.DataFrame:
    """Test task Dice at the scored steps of Adam from each arm's start, every arm trained at once by the zoo engine
    (one member each) and scored in batches. An arm: ``{"name", "task", "lr", "seed", "start" [P], "steps"}``;
    the table has one row per (name, step)."""
    members = [Member(a["name"], a["task"], a["lr"], a["seed"], a["start"], a["steps"], scored_steps(a["steps"]))
               for a in arms]
    batch, rows = scorer.batch("test"), []

    def snapshot(step: int, group: list[Member], weights: torch.Tensor) -> None:
        dice = scorer.engine.score(weights, batch.image, batch.label)[1].numpy()
        for member, d in zip(group, dice):
            rows.append({"name": member.name, "step": step, "task_dice": float(zoo.task_dice(d, member.task))})

    scorer.engine.train(scorer.pre, scorer.splits, members, settings=settings, threads=threads, on_snapshot=snapshot)
    return pd.DataFrame(rows).sort_values(["name", "step"], kind="stable", ignore_index=True)


def first_step_reaching(curve: pd.DataFrame, value: float) -> float:
    """The first scored step whose task Dice is at least ``value`` (NaN if none)."""
    reached = curve[curve["task_dice"] >= value]
    return float(reached["step"].iloc[0]) if len(reached) else float("nan")
