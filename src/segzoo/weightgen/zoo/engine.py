"""The zoo engine: many zoo runs trained at once as one computation.

Shapes: M members, P parameters of the zoo network, B patches per step, R regions.

Each member is one zoo run as the pipeline's training loop would train it alone (``zoo.adam_from``): its own
start, data stream (``PatchBatches`` under its seed, its task's foreground centres and the training
augmentation), task (the loss counts only its regions), learning rate, length and snapshot steps. The members'
weights are one tensor [M, P]; one grouped forward (:mod:`segzoo.models.grouped`) gives every member's logits,
the summed per-member losses give every member its own gradient, and Adam (elementwise) updates [M, P] with a
learning rate per member. Members leave the batch when they reach their length, or alone when their loss or
weights stop being finite (``Outcome.stopped`` says why). In float64 member k's weights match its run alone to
about 1e-10 (tests/test_zoo_engine.py). In float32 the grouped convolutions round differently, and Adam's first
steps (about lr x the gradient's sign) make that visible, as they do for the per-run loop on another thread count.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from segzoo.data.loader import PatchBatches
from segzoo.data.preprocessed import Preprocessed
from segzoo.determinism import make_deterministic
from segzoo.errors import SegzooError
from segzoo.io import read_json
from segzoo.models.flat import layout_of
from segzoo.models.grouped import check_template, grouped_forward, stacked
from segzoo.train.loss import member_region_losses
from segzoo.weightgen.zoo.network import zoo_model
from segzoo.weightgen.zoo.plan import ALL, task_regions
from segzoo.weightgen.zoo.settings import ZooSettings

BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which the per-run loop uses
# Networks per scoring forward. Scoring shares one batch of patches (24 in the demo) among the networks; on 2 CPU
# cores one network per forward was fastest (bench/RESULTS.md, "Zoo engine": 0.089 s per network, 0.095 s in fours,
# 0.128 s in eights: the grouped activations outgrow the caches); a GPU takes many.
SCORE_CHUNK = {"cpu": 1, "cuda": 128}


@dataclass
class Member:
    """One run of a batched job; ``keep``: the steps whose weights go to the snapshot callback (0 is the start)."""

    name: str
    task: str
    lr: float
    seed: int
    start: torch.Tensor  # [P]
    steps: int
    keep: set[int] = field(default_factory=set)


@dataclass
class Outcome:
    """How a member ended: ``steps_done`` updates, ``stopped`` None or why it stopped early."""

    name: str
    steps_done: int
    stopped: str | None = None


def pooled_dice(prediction: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Dice per region [R] pooled over the batch: 2 TP / (|pred| + |ref|); 1 where both are empty."""
    dims = (0, *range(2, prediction.ndim))
    tp, size = (prediction * label).sum(dims), prediction.sum(dims) + label.sum(dims)
    return torch.where(size > 0, 2 * tp / size.clamp(min=1), torch.ones_like(size))


class MemberData(Dataset):
    """Member k's training batch at a step: exactly the batches the per-run loop draws for its seed and task.
    ``data[step]`` holds every member's (for DataLoader workers, which draw steps ahead)."""

    def __init__(self, pre: Preprocessed, splits: Path, members: list[Member], settings: ZooSettings):
        train = read_json(splits)["train"]
        loop = settings.train
        self.streams = [PatchBatches(pre, train, settings.patch_size, settings.batch_size,
                                     foreground_fraction=loop["foreground_fraction"], seed=m.seed,
                                     augment=loop["augment"],
                                     centre_values=None if m.task == ALL else list(pre.regions[m.task]))
                        for m in members]

    def batch(self, rows: list[int], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """image [M', B, C, *S], label [M', B, R, *S] of the members ``rows`` at ``step``."""
        drawn = [self.streams[k][step] for k in rows]
        return torch.stack([d["image"] for d in drawn]), torch.stack([d["label"] for d in drawn])

    def __len__(self) -> int:
        return 2**62  # indexed by step

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch(list(range(len(self.streams))), step)


class Engine:
    """The zoo network as a template for grouped forwards of many parameter vectors."""

    def __init__(self, pre: Preprocessed, settings: ZooSettings, device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.template = zoo_model(pre, settings)
        check_template(self.template)
        self.layout = layout_of(self.template)
        self.regions = pre.region_names
        self.device, self.dtype = torch.device(device), dtype

    def logits(self, vectors: torch.Tensor, image: torch.Tensor, training: bool = True) -> torch.Tensor:
        """[M, B, R, *S] of the networks ``vectors`` [M, P] on ``image`` [M, B, C, *S] or shared [B, C, *S]
        (``training``: in the layout the backward pass is fastest in)."""
        return grouped_forward(self.template, stacked(vectors, self.layout), image, channels_last=training)

    @torch.no_grad()
    def score(self, vectors: torch.Tensor, image: torch.Tensor, label: torch.Tensor, chunk: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For K networks [K, P] on one batch (image [N, C, *S], label [N, R, *S]): the loss over every region [K],
        pooled Dice per region [K, R] (2 TP / (|pred| + |ref|), 1 where both are empty) and the masks
        [K, N, R, *S] (bool, on the CPU), ``chunk`` networks per forward (default: SCORE_CHUNK for the device)."""
        chunk = chunk or SCORE_CHUNK.get(self.device.type, 1)
        image, label = image.to(self.device, self.dtype), label.to(self.device, self.dtype)
        losses, dice, masks = [], [], []
        for part in vectors.split(chunk):
            logits = self.logits(part.to(self.device, self.dtype), image, training=False)
            losses.append(member_region_losses(logits, label).mean(1))
            predicted = logits > 0
            dice.append(torch.stack([pooled_dice(p.float(), label) for p in predicted]))
            masks.append(predicted.cpu())
        return torch.cat(losses).cpu(), torch.cat(dice).cpu(), torch.cat(masks)

    def gradients(self, vectors: torch.Tensor, image: torch.Tensor, label: torch.Tensor, task: str,
                  chunk: int = 32) -> torch.Tensor:
        """The task's training loss's gradient [K, P] at K networks [K, P] on one shared batch (image [B, C, *S],
        label [B, R, *S]): one gradient evaluation each, the loss a run of ``task`` trains."""
        trained = task_regions(task, self.regions)
        weight = torch.zeros(len(self.regions), dtype=self.dtype, device=self.device)
        weight[trained] = 1 / len(trained)
        image, label = image.to(self.device, self.dtype), label.to(self.device, self.dtype)
        out = []
        for part in vectors.split(chunk):
            part = part.to(self.device, self.dtype).clone().requires_grad_(True)
            losses = (member_region_losses(self.logits(part, image), label) * weight).sum(1)
            (grad,) = torch.autograd.grad(losses.sum(), part)
            out.append(grad.detach().cpu().float())
        return torch.cat(out) if out else torch.zeros(0, vectors.shape[1])

    def train(self, pre: Preprocessed, splits: Path, members: list[Member], *, settings: ZooSettings, threads: int,
              on_snapshot: Callable[[int, list[Member], torch.Tensor], None],
              on_step: Callable[[int, list[Member], torch.Tensor], None] | None = None) -> list[Outcome]:
        """Adam on every member; ``on_snapshot(step, members, weights [K, P])`` gets the members that keep this
        step (after ``step`` updates) and ``on_step(step, members, losses [K])`` every step's training losses.
        Returns one :class:`Outcome` per member, in order."""
        if not members:
            return []
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise SegzooError(f"zoo engine: two members share a name ({', '.join(sorted(names))})")
        make_deterministic(members[0].seed, threads)
        dev = self.device
        data = MemberData(pre, splits, members, settings)
        weights = torch.stack([m.start for m in members]).to(dev, self.dtype)  # [M, P]
        regions = torch.zeros(len(members), len(self.regions), device=dev, dtype=self.dtype)
        for k, m in enumerate(members):
            trained = task_regions(m.task, self.regions)
            regions[k, trained] = 1 / len(trained)
        lr = torch.tensor([m.lr for m in members], dtype=torch.float64)
        first, second = torch.zeros_like(weights), torch.zeros_like(weights)
        rows = list(range(len(members)))  # the members still training (indices into `members`)
        outcomes = [Outcome(m.name, 0) for m in members]
        self._snapshot(0, rows, members, weights, on_snapshot)
        # train.workers > 0: worker processes draw every member's batches ahead (a step's batches are a function of
        # the seeds and the step, so the result is the same); 0: this process draws the active members' alone
        workers = settings.train["workers"]
        ahead = iter(DataLoader(data, batch_size=None, sampler=range(max(m.steps for m in members)),
                                num_workers=workers, pin_memory=dev.type == "cuda")) if workers else None
        step = 0
        while rows:
            if ahead is None:
                image, label = data.batch(rows, step)
            else:
                image, label = (t[torch.tensor(rows)] for t in next(ahead))
            weights.requires_grad_(True)
            losses = (member_region_losses(self.logits(weights, image.to(dev, self.dtype)), label.to(dev, self.dtype))
                      * regions[rows]).sum(1)  # [M']
            finite = torch.isfinite(losses)
            torch.where(finite, losses, 0).sum().backward()
            with torch.no_grad():
                grad, weights = weights.grad, weights.detach()
                first.lerp_(grad, 1 - BETAS[0])
                second.mul_(BETAS[1]).addcmul_(grad, grad, value=1 - BETAS[1])
                done = step + 1
                size = (lr[rows] / (1 - BETAS[0] ** done)).to(weights)[:, None]
                denominator = second.sqrt() / math.sqrt(1 - BETAS[1] ** done) + EPS
                weights.addcdiv_(first * size, denominator, value=-1)
            if on_step is not None:
                on_step(done, [members[k] for k in rows], losses.detach().cpu())
            healthy = (finite & torch.isfinite(weights).all(1)).cpu()
            for at, k in enumerate(rows):
                outcomes[k].steps_done = done if healthy[at] else step
                if not healthy[at]:
                    what = "training loss" if not finite[at] else "weights"
                    outcomes[k].stopped = f"{what} not finite at step {done}; the run stops after step {step}"
                    print(f"zoo run {members[k].name}: {outcomes[k].stopped} (the other runs go on)", file=sys.stderr)
            self._snapshot(done, [k for at, k in enumerate(rows) if healthy[at]], members,
                           weights[healthy.to(dev)], on_snapshot)
            going = [at for at, k in enumerate(rows) if healthy[at] and done < members[k].steps]
            if len(going) < len(rows):  # members that finished or stopped leave the batch
                keep = torch.tensor(going, dtype=torch.long, device=dev)
                weights, first, second = weights[keep], first[keep], second[keep]
                rows = [rows[at] for at in going]
            step = done
        return outcomes

    def _snapshot(self, step: int, rows: list[int], members: list[Member], weights: torch.Tensor,
                  on_snapshot) -> None:
        """Hand the weights of the members among ``rows`` that keep ``step`` (``weights``: [len(rows), P], in the
        engine's dtype, on the CPU)."""
        wanted = [at for at, k in enumerate(rows) if step in members[k].keep]
        if wanted:
            on_snapshot(step, [members[rows[at]] for at in wanted],
                        weights[torch.tensor(wanted, device=weights.device)].detach().cpu().clone())
