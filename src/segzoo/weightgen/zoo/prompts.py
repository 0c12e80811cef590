"""The requests every generator answers: a start, a task and a prompted Dice per region (all from the *validation*
metrics of the training zoo; no test number), one table row each (:func:`requests`).

- ``oneshot``   per test start (held-out parent, fresh init), task and draw (``draws``, each its own noise): the
                best val Dice of any training checkpoint of the task (task ``all``: the one network for every
                region);
- ``align``     per held-out parent and task, ``prompts`` quantiles (10 %..100 %) of the training checkpoints' val
                Dice for the task: every held-out parent gets every prompt, so prompt following is measured per
                start (R² per start, then averaged);
- ``insample``  per training parent (the first ``insample_parents``) and task: the ``oneshot`` prompt from a start
                the learned generators were trained on (transfer: held-out against training starts).

A prompt names every region, but a single-task run never aims at the regions it does not train; those are filled
from the zoo with the values of the training checkpoint of the same task whose task Dice is nearest the prompt (the
lookup memoriser's pick), so every prompt is one that some checkpoint of the data has. A task with no training run
left (all dropped) gets no request; the evaluation still judges it (FAIL, "no training runs").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from segzoo.weightgen.zoo.plan import ALL, task_regions
from segzoo.weightgen.zoo.runs import Zoo

KINDS = ("oneshot", "align", "insample")


def lookup(zoo: Zoo, task: str, target: np.ndarray) -> tuple[str, int] | None:
    """The training checkpoint of ``task`` whose val Dice on the task's regions is nearest ``target`` [R]."""
    regions = task_regions(task, zoo.regions)
    best, pick = np.inf, None
    for run in zoo.select("train", task):
        distance = np.abs(run.dice[:, regions] - target[regions]).sum(1)
        i = int(np.argmin(distance))
        if distance[i] < best:
            best, pick = distance[i], (run.name, i)
    return pick


def fill_untrained(zoo: Zoo, task: str, target: np.ndarray) -> np.ndarray:
    """``target`` [R] with the regions ``task`` does not train taken from the lookup checkpoint."""
    if task == ALL:
        return target
    run, i = lookup(zoo, task, target)
    filled = zoo.runs[run].dice[i].astype(np.float64).copy()
    regions = task_regions(task, zoo.regions)
    filled[regions] = target[regions]
    return filled


def best_target(zoo: Zoo, task: str) -> np.ndarray:
    """The val Dice vector [R] of the training checkpoint of ``task`` with the best task Dice."""
    best = max(((r, int(np.argmax(zoo.task_dice(r.dice, task)))) for r in zoo.select("train", task)),
               key=lambda pick: zoo.task_dice(pick[0].dice[pick[1]], task))
    return best[0].dice[best[1]].astype(np.float64)


def requests(zoo: Zoo, sample: dict) -> pd.DataFrame:
    """One row per network every generator makes: kind, start, role, task, draw, quantile, prompt per region
    (``sample``: the ``draws``, ``prompts`` and ``insample_parents`` settings)."""
    rows = []
    tests = [s.name for role in ("heldout", "fresh") for s in zoo.starts_of(role)]
    held = [s.name for s in zoo.starts_of("heldout")]
    seen = [s.name for s in zoo.starts_of("train")][:sample["insample_parents"]]
    roles = {s: zoo.start_list[s].role for s in zoo.start_list}

    def add(kind: str, start: str, task: str, draw: int, quantile: float, target: np.ndarray):
        rows.append({"kind": kind, "start": start, "role": roles[start], "task": task, "draw": draw,
                     "quantile": quantile,
                     **{f"prompt_{n}": float(v) for n, v in zip(zoo.regions, fill_untrained(zoo, task, target))}})

    for task in [t for t in zoo.tasks if zoo.select("train", t)]:
        best = best_target(zoo, task)
        for start in tests:
            for draw in range(sample["draws"]):
                add("oneshot", start, task, draw, 1.0, best)
        dice = np.concatenate([r.dice for r in zoo.select("train", task)])
        for start in held:
            for q in np.linspace(0.1, 1.0, sample["prompts"]):
                add("align", start, task, 0, float(q), np.quantile(dice, q, axis=0))
        for start in seen:
            add("insample", start, task, 0, 1.0, best)
    return pd.DataFrame(rows)
