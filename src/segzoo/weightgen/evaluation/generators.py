"""Generators: (start, task, prompt) → network, one interface for the learned generators and every baseline.

Shapes: P parameters of the zoo network's flat vector, N requests, R regions.

A generator answers every request of the instrument (:func:`segzoo.weightgen.zoo.prompts.requests`) with a network
in its start's channel order. The learned generators (G.pt, the structure-shared generator) answer in their own
jobs and are read from their samples files (:class:`Sampled`); the baselines are computed here from the zoo:

- ``copy``         the start itself (0 gradient evaluations);
- ``task_vector``  the start plus the mean aligned training change of the task (task-vector transfer): each
                   training run's change (final − its start) permuted into the start's channel order (weight
                   matching, :mod:`segzoo.weightgen.zoo.symmetry`), averaged;
- ``lookup``       the training checkpoint of the task whose val Dice is nearest the prompt (ignores the start);
- ``nearest``      among the task's training checkpoints whose val Dice is nearest the prompt (the closest
                   :data:`CANDIDATE_SHARE`, at least k), the one nearest the start in aligned coordinates;
- ``mean_k``       the mean of the k of those nearest the start, in aligned coordinates;
- ``noise``        the start plus Gaussian noise (shaped by σ_layer) as far from it as the start's own Adam best;
- ``adam<b>``      Adam from the start: its own run's checkpoint after b steps (b gradient evaluations);
- ``adam_best``    Adam from the start, its val-chosen best checkpoint (the one-shot yardstick).

Kinds: ``trivial`` (copy, task-vector transfer, lookup, noise: a criterion one of them passes is not
discriminative), ``memoriser`` (nearest, mean-of-k), ``adam`` (Adam from the start) and ``learned``. Distances are
L2 in the normalised change space ``||(θ_a − θ_b) / σ_layer||`` (σ fitted on the training runs' changes), between
networks brought to the first training parent's channel order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from segzoo.errors import SegzooError
from segzoo.weightgen.zoo.layer_scale import LayerScale
from segzoo.weightgen.zoo.plan import task_regions
from segzoo.weightgen.zoo.prompts import lookup
from segzoo.weightgen.zoo.runs import Zoo, ZooRun
from segzoo.weightgen.zoo.samples import load_samples
from segzoo.weightgen.zoo.symmetry import Symmetry, zoo_symmetry

CANDIDATE_SHARE = 0.05  # nearest / mean-of-k: the share of the task's checkpoints whose val Dice is nearest the prompt
REQUEST_KEYS = ["kind", "start", "task", "draw", "quantile"]


def request_key(row) -> tuple:
    return (row["kind"], row["start"], row["task"], int(row["draw"]), round(float(row["quantile"]), 6))


@dataclass
class Context:
    """What the baselines read: the zoo, its starts' own runs, and the aligned coordinates."""

    zoo: Zoo
    seed: int
    neighbours: int
    symmetry: Symmetry = field(init=False)
    reference: torch.Tensor = field(init=False)  # [P]: the first training start, origin of the aligned coordinates
    sigma: torch.Tensor = field(init=False)      # [P]: σ_layer of the training runs' changes
    _perms: dict = field(default_factory=dict, init=False)
    _aligned: dict = field(default_factory=dict, init=False)

    def __post_init__(self):
        zoo = self.zoo
        self.symmetry = zoo_symmetry(zoo.architecture, zoo.layout, zoo.regions)
        self.reference = zoo.starts_of("train")[0].params
        train = zoo.select("train")
        self.sigma = LayerScale.fit(zoo.layout, [r.params - r.start_params for r in train]).per_parameter.float()
        self.regions = zoo.regions

    # the aligned coordinates -----------------------------------------------------------------------------------
    def perm(self, start: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The permutation that brings start ``start``'s channels to the reference's (weight matching), as gather
        indices [P]: to the reference's order and back."""
        if start not in self._perms:
            perm = self.symmetry.match(self.reference, self.start_params(start))
            self._perms[start] = (self.symmetry.gather_index(perm),
                                  self.symmetry.gather_index(Symmetry.inverse(perm)))
        return self._perms[start]

    def to_reference(self, params: torch.Tensor, start: str) -> torch.Tensor:
        """Networks [..., P] in ``start``'s channel order → the reference's."""
        return params[..., self.perm(start)[0]]

    def from_reference(self, params: torch.Tensor, start: str) -> torch.Tensor:
        """Networks [..., P] in the reference's channel order → ``start``'s."""
        return params[..., self.perm(start)[1]]

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """||(a − b) / σ|| over the last axis (direct differences, broadcast)."""
        return ((a - b) / self.sigma).norm(dim=-1)

    def start_params(self, start: str) -> torch.Tensor:
        return self.zoo.start_list[start].params

    def training(self, task: str) -> tuple[list[tuple[str, int]], torch.Tensor, np.ndarray]:
        """The task's training checkpoints: keys (run, row), params [N, P] in the reference's channel order, and
        their val task Dice [N]. A start shared by several runs is listed once."""
        if task not in self._aligned:
            keys, rows, dice, seen = [], [], [], set()
            for run in self.zoo.select("train", task):
                aligned = self.to_reference(run.params, run.start)
                for i in range(len(run.params)):
                    if i == 0 and run.start in seen:
                        continue
                    keys.append((run.name, i))
                    rows.append(aligned[i])
                    dice.append(float(self.zoo.task_dice(run.dice[i], task)))
                seen.add(run.start)
            if not keys:
                self._aligned[task] = ([], torch.zeros(0, len(self.reference)), np.zeros(0))
            else:
                self._aligned[task] = (keys, torch.stack(rows), np.asarray(dice))
        return self._aligned[task]

    # a start's own runs ----------------------------------------------------------------------------------------
    def own_runs(self, start: str, task: str) -> list[ZooRun]:
        """The runs of ``task`` from ``start`` (a held-out or fresh start's own runs; a training start's training
        runs), in seed order."""
        role = self.zoo.start_list[start].role
        roles = ("train", "insample") if role == "train" else (role,)
        return [r for role in roles for r in self.zoo.select(role, task, start)]

    def adam_at(self, start: str, task: str, step: int) -> torch.Tensor | None:
        """Adam from the start after ``step`` updates: its first own run's snapshot (None if not kept)."""
        for run in self.own_runs(start, task):
            row = run.at_step(step)
            if row is not None:
                return run.params[row]
        return None

    def adam_best(self, start: str, task: str) -> torch.Tensor | None:
        """The val-chosen best checkpoint of the start's own runs of ``task``."""
        picks = [(float(self.zoo.task_dice(r.dice[i], task)), r.params[i]) for r in self.own_runs(start, task)
                 for i in range(len(r.params))]
        return max(picks, key=lambda p: p[0])[1] if picks else None


class Generator:
    """``make(context, requests) → params [N, P]`` (NaN rows where it cannot answer)."""

    name: str = ""
    label: str = ""
    kind: str = ""
    budget: int = 0     # gradient evaluations per network
    random: bool = False  # whether draws differ

    def make(self, ctx: Context, requests: pd.DataFrame) -> torch.Tensor:
        out = []
        for _, row in requests.iterrows():
            made = self.one(ctx, row)
            out.append(made if made is not None else torch.full_like(ctx.reference, float("nan")))
        return torch.stack(out) if out else torch.zeros(0, len(ctx.reference))

    def one(self, ctx: Context, row) -> torch.Tensor | None:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"generator": self.name, "label": self.label, "generator_kind": self.kind, "budget": self.budget}


class Copy(Generator):
    name, label, kind = "copy", "copy of the start", "trivial"

    def one(self, ctx, row):
        return ctx.start_params(row["start"]).clone()


class TaskVector(Generator):
    name, label, kind = "task_vector", "start + mean aligned training change", "trivial"

    def __init__(self):
        self._mean = {}

    def one(self, ctx, row):
        task = row["task"]
        if task not in self._mean:
            runs = ctx.zoo.select("train", task)
            changes = [ctx.to_reference(r.params[-1] - r.start_params, r.start) for r in runs]
            self._mean[task] = torch.stack(changes).mean(0) if changes else None
        if self._mean[task] is None:
            return None
        return ctx.start_params(row["start"]) + ctx.from_reference(self._mean[task], row["start"])


def _prompt(ctx: Context, row) -> np.ndarray:
    return np.array([row[f"prompt_{n}"] for n in ctx.regions], dtype=float)


class Lookup(Generator):
    name, label, kind = "lookup", "lookup memoriser", "trivial"

    def one(self, ctx, row):
        pick = lookup(ctx.zoo, row["task"], _prompt(ctx, row))
        if pick is None:
            return None
        run = ctx.zoo.runs[pick[0]]
        # in the start's channel order, like every generator's network (the same function)
        return ctx.from_reference(ctx.to_reference(run.params[pick[1]], run.start), row["start"])


class _Near(Generator):
    kind = "memoriser"

    def neighbours(self, ctx, row) -> torch.Tensor | None:
        """The task's training checkpoints nearest the prompt (the candidates), the k nearest the start first."""
        keys, aligned, dice = ctx.training(row["task"])
        if not keys:
            return None
        target = float(ctx.zoo.task_dice(_prompt(ctx, row), row["task"]))
        count = max(ctx.neighbours, math.ceil(CANDIDATE_SHARE * len(keys)))
        candidates = np.argsort(np.abs(dice - target), kind="stable")[:count]
        start = ctx.to_reference(ctx.start_params(row["start"]), row["start"])
        d = ctx.distance(aligned[candidates], start).numpy()
        return aligned[candidates[np.argsort(d, kind="stable")]]


class Nearest(_Near):
    name, label = "nearest", "nearest checkpoint (aligned)"

    def one(self, ctx, row):
        found = self.neighbours(ctx, row)
        return None if found is None else ctx.from_reference(found[0], row["start"])


class MeanK(_Near):
    name, label = "mean_k", "mean of k nearest (aligned)"

    def one(self, ctx, row):
        found = self.neighbours(ctx, row)
        return None if found is None else ctx.from_reference(found[:ctx.neighbours].mean(0), row["start"])


class Noise(Generator):
    name, label, kind, random = "noise", "noise at Adam's distance", "trivial", True

    def one(self, ctx, row):
        start, best = ctx.start_params(row["start"]), ctx.adam_best(row["start"], row["task"])
        if best is None:
            return None
        distance = float(ctx.distance(best, start))
        key = [ctx.seed, *[int(b) for b in f"{row['start']}|{row['task']}|{int(row['draw'])}".encode()]]
        noise = torch.from_numpy(np.random.default_rng(key).standard_normal(len(start))).float()
        return start + noise / float((noise * 1.0).norm()) * distance * ctx.sigma


class AdamAt(Generator):
    kind = "adam"

    def __init__(self, steps: int):
        self.steps = self.budget = steps
        self.name, self.label = f"adam{steps}", f"Adam@{steps}"

    def one(self, ctx, row):
        return ctx.adam_at(row["start"], row["task"], self.steps)


class AdamBest(Generator):
    name, label, kind = "adam_best", "Adam's val-chosen best", "adam"

    def __init__(self, steps: int):
        self.budget = steps

    def one(self, ctx, row):
        return ctx.adam_best(row["start"], row["task"])


class Sampled(Generator):
    """A learned generator's answers, read from its samples file (row k answers request k)."""

    kind = "learned"

    def __init__(self, stem):
        self.params, self.table, self.sidecar = load_samples(stem)
        self.name, self.label, self.budget = self.sidecar["generator"], self.sidecar["label"], self.sidecar["budget"]
        self.random = True
        self.rows = {request_key(r): k for k, r in self.table.iterrows()}

    def make(self, ctx, requests):
        out = []
        for _, row in requests.iterrows():
            k = self.rows.get(request_key(row))
            out.append(self.params[k] if k is not None else torch.full_like(ctx.reference, float("nan")))
        return torch.stack(out) if out else torch.zeros(0, len(ctx.reference))


def baselines(budgets: list[int], steps: int) -> dict[str, Generator]:
    """The baseline generators, by name (the registry is this one dict): the trivial ones, the memorisers, and
    Adam from the start at every budget and at its val-chosen best (``steps``: the runs' length)."""
    found = [Copy(), TaskVector(), Lookup(), Nearest(), MeanK(), Noise(),
             *[AdamAt(b) for b in sorted(set(budgets)) if b < steps], AdamBest(steps)]
    return {g.name: g for g in found}


def learned(stems: list) -> dict[str, Generator]:
    found = {}
    for stem in stems:
        g = Sampled(stem)
        if g.name in found:
            raise SegzooError(f"{stem}: a second samples file of generator {g.name!r}")
        found[g.name] = g
    return found


def task_dice(dice, task: str, regions: list[str]) -> float:
    """Mean Dice over the task's regions (NaN-aware: a region absent from every case and not predicted is left out)."""
    with np.errstate(all="ignore"):
        return float(np.nanmean(np.asarray(dice, dtype=float)[..., task_regions(task, regions)]))
