"""``segzoo gpt-sample``: one-shot networks from G.pt (DDIM, MONAI ``DDIMScheduler``) for evaluation prompts.

Every network is sampled from a start in one shot: the starting checkpoint is the start itself (x = 0) and
its metrics are the start's validation Dice. Under ``gpt.align`` the start is first permuted into G.pt's
channel order and the sample permuted back. Prompts, one table row each (all from the *validation* metrics
of the training zoo; no test number):

- ``oneshot``   per held-out parent, task and draw (``sample.draws``, each its own noise): the best val Dice of
  any training checkpoint of the task (the headline; task ``all`` is the one network for every region);
- ``align``     per task, ``sample.prompts`` quantiles (10 %..100 %) of the training checkpoints' val Dice for
  the task, spread over the held-out parents in turn;
- ``insample``  per training parent (the first ``sample.insample_parents``) and task: the ``oneshot`` prompt
  from a start G.pt was trained on, reported apart as in-sample.

A prompt names every region, but a single-task run never aims at the regions it does not train; so
those are filled from the zoo: they take the values of the training checkpoint of the same task
whose task Dice is nearest the prompt (the lookup memoriser's pick). Every prompt is then one that
some checkpoint of the data actually has.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segzoo.errors import SegzooError
from segzoo.io import write_text
from segzoo.checkpoint import load_checkpoint, save_checkpoint
from segzoo.weightgen.gpt.model import noise_schedule
from segzoo.weightgen.gpt.train import TrainedGPT
from segzoo.weightgen.zoo.runs import ALL, Zoo, task_regions

KINDS = ("oneshot", "align", "insample")


@torch.no_grad()
def generate(gpt: TrainedGPT, start_params: torch.Tensor, tasks: list[str], *, start_metrics: torch.Tensor,
             target_metrics: torch.Tensor, ddim_steps: int, generator: torch.Generator,
             guidance: float = 1.0) -> torch.Tensor:
    """Parameters [B, P] from starts ``start_params`` [B, P] for the prompts (metrics [B, R]).

    ``guidance`` w ≠ 1: guidance on the prompt, ``null + w (prompted − null)``, where the null prediction is
    G.pt's for the start's own metrics as the target (G.pt is not trained with prompt dropout, so "no
    improvement asked" stands in for the unconditional model)."""
    model = gpt.model
    dev = next(model.parameters()).device
    keys = [row.numpy().tobytes() for row in start_params]
    canonical = {}  # a start's bytes -> (its aligned form, the permutation): each distinct start matched once
    for key, row in zip(keys, start_params):
        if key not in canonical:
            canonical[key] = gpt.canonical(row)
    start_params = torch.stack([canonical[k][0] for k in keys])
    sampler = noise_schedule(model.diffusion_steps, ddim_steps)
    zero = torch.zeros(start_params.shape, device=dev)
    origin = gpt.origin(start_params).to(dev)
    task = gpt.task_ids(tasks).to(dev)
    start_metrics, target_metrics = start_metrics.float().to(dev), target_metrics.float().to(dev)
    x = torch.randn(start_params.shape, generator=generator).to(dev)
    for t in sampler.timesteps:
        step = torch.full((len(x),), int(t), device=dev)
        clean = model(x, zero, origin, step, task, start_metrics, target_metrics)
        if guidance != 1.0:
            null = model(x, zero, origin, step, task, start_metrics, start_metrics)
            clean = null + guidance * (clean - null)
        x, _ = sampler.step(clean, int(t), x)
    params = gpt.scale.decode(x.cpu(), start_params)
    return torch.stack([gpt.restore(p, canonical[k][1]) for p, k in zip(params, keys)])


def lookup(zoo: Zoo, task: str, target: np.ndarray) -> tuple[str, int]:
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


def evaluation_prompts(zoo: Zoo, tasks: list[str], sample_config: dict) -> pd.DataFrame:
    """One row per network to sample: kind, start (whose weights it starts from), task, draw, quantile, prompt per
    region."""
    rows = []
    held = list(zoo.starts("heldout"))
    seen = list(zoo.starts("train"))[:sample_config["insample_parents"]]

    def add(kind: str, start: str, task: str, draw: int, quantile: float, target: np.ndarray):
        rows.append({"kind": kind, "start": start, "task": task, "draw": draw, "quantile": quantile,
                     **{f"prompt_{n}": float(v) for n, v in zip(zoo.regions, fill_untrained(zoo, task, target))}})

    for task in [t for t in tasks if zoo.select("train", t)]:
        best = _best_target(zoo, task)
        for start in held:
            for draw in range(sample_config["draws"]):
                add("oneshot", start, task, draw, 1.0, best)
        dice = np.concatenate([r.dice for r in zoo.select("train", task)])
        for i, q in enumerate(np.linspace(0.1, 1.0, sample_config["prompts"])):
            if held:
                add("align", held[i % len(held)], task, 0, float(q), np.quantile(dice, q, axis=0))
        for start in seen:
            add("insample", start, task, 0, 1.0, best)
    return pd.DataFrame(rows)


def _best_target(zoo: Zoo, task: str) -> np.ndarray:
    """The val Dice vector of the training checkpoint of ``task`` with the best task Dice."""
    best = max(((r, int(np.argmax(zoo.task_dice(r.dice, task)))) for r in zoo.select("train", task)),
               key=lambda pick: zoo.task_dice(pick[0].dice[pick[1]], task))
    return best[0].dice[best[1]].astype(np.float64)


def sample_prompts(gpt: TrainedGPT, zoo: Zoo, prompts: pd.DataFrame, ddim_steps: int, seed: int) -> torch.Tensor:
    """Every prompt in one batch: parameters [N, P], row k for prompt row k."""
    starts = {**zoo.starts("train"), **zoo.starts("heldout")}
    runs = [starts[s] for s in prompts["start"]]
    start = torch.stack([r.start_params for r in runs])
    start_metrics = torch.tensor(np.stack([r.dice[0] for r in runs]))
    target = torch.tensor(prompts[[f"prompt_{n}" for n in zoo.regions]].to_numpy(np.float32))
    return generate(gpt, start, list(prompts["task"]), start_metrics=start_metrics, target_metrics=target,
                    ddim_steps=ddim_steps, generator=torch.Generator().manual_seed(seed))


def write_samples(gpt: TrainedGPT, zoo: Zoo, sample_config: dict, seed: int, out: Path) -> dict:
    """Sample every evaluation prompt; write ``<out>.safetensors|json`` (params [N, P]) and ``<out>.csv``
    (one prompt row per network); return the sidecar."""
    prompts = evaluation_prompts(zoo, gpt.tasks, sample_config)
    if prompts.empty or not (prompts["kind"] == "oneshot").any():
        raise SegzooError("the zoo has no held-out parent (weightgen.heldout_parents) with runs of a task G.pt was "
                          "trained on; nothing to sample")
    params = sample_prompts(gpt, zoo, prompts, sample_config["ddim_steps"], seed)
    began = time.perf_counter()  # one network alone: the fair comparison with Adam's wall time
    sample_prompts(gpt, zoo, prompts.iloc[:1], sample_config["ddim_steps"], seed)
    sidecar = {"networks": len(params), "ddim_steps": sample_config["ddim_steps"], "aligned": gpt.reference is not None,
               "single_network_seconds": time.perf_counter() - began,
               # what a sample is, so one can be run or exported on its own (segzoo nnunet-export)
               "regions": zoo.regions, "layout": zoo.layout, "architecture": zoo.architecture}
    save_checkpoint(out, {"params": params}, sidecar)
    write_text(Path(f"{out}.csv"), prompts.to_csv(index=False, float_format="%.6g"))
    return sidecar


def load_samples(stem: Path) -> tuple[torch.Tensor, pd.DataFrame, dict]:
    """What :func:`write_samples` wrote: params [N, P], the prompt table, the sidecar."""
    tensors, sidecar = load_checkpoint(stem)
    table = Path(f"{stem}.csv")
    if not table.is_file():
        raise SegzooError(f"{table}: missing (written by `segzoo gpt-sample` beside the samples)")
    prompts = pd.read_csv(table)
    if len(prompts) != len(tensors["params"]):
        raise SegzooError(f"{table}: {len(prompts)} prompts for {len(tensors['params'])} sampled networks")
    return tensors["params"], prompts, sidecar
