"""``segzoo graph-sample``: the structure-shared generator's networks for the instrument's requests (DDIM).

Shapes: N requests, P parameters, R regions.

For each request the start's signal is read first: ``grad`` evaluates the task's loss gradient at the start on the
task's fixed batch (one gradient evaluation); ``adam<k>`` reads the start's first k Adam steps (its own run's
snapshots: k gradient evaluations). Then DDIM from noise gives the change x, and the network is
``start + x · σ_layer``, in the start's own channel order (the denoiser is equivariant: it needs no alignment).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segzoo.data.preprocessed import Preprocessed
from segzoo.errors import SegzooError
from segzoo.weightgen.diffusion import noise_schedule
from segzoo.weightgen.graph.signal import arm_budget, prefix_steps, signal_batch
from segzoo.weightgen.graph.train import TrainedGraph, conditioning
from segzoo.weightgen.zoo.engine import Engine
from segzoo.weightgen.zoo.prompts import requests
from segzoo.weightgen.zoo.runs import Zoo
from segzoo.weightgen.zoo.samples import save_samples
from segzoo.weightgen.zoo.scoring import Scorer
from segzoo.weightgen.zoo.settings import ZooSettings

TEMPERATURES = (0.0, 0.5, 1.0)  # candidates when graph.temperature is null


def start_signals(trained: TrainedGraph, zoo: Zoo, table: pd.DataFrame, pre: Preprocessed, splits: Path,
                  zoo_settings: ZooSettings, data_seed: int, device: str) -> torch.Tensor:
    """The conditioning [N, C − 1, P] of each request's start: its gradient on the task's fixed batch, or its own
    run's first Adam steps."""
    arm = trained.settings.arm
    starts = torch.stack([zoo.start_list[s].params for s in table["start"]])
    if arm == "grad":
        engine = Engine(pre, zoo_settings, device)
        signal = torch.zeros_like(starts)
        for task in dict.fromkeys(table["task"]):
            rows = np.flatnonzero((table["task"] == task).to_numpy())
            batch = signal_batch(pre, splits, zoo_settings, task, data_seed, trained.settings.signal_patches)
            keys = {}  # a start's gradient for a task is evaluated once, whatever the prompts
            for r in rows:
                keys.setdefault(table["start"].iloc[r], []).append(r)
            grads = engine.gradients(torch.stack([starts[v[0]] for v in keys.values()]), batch["image"],
                                     batch["label"], task)
            for g, v in zip(grads, keys.values()):
                signal[v] = g
    else:
        steps = prefix_steps(arm)
        found = []
        for start, task in zip(table["start"], table["task"]):
            role = zoo.start_list[start].role
            roles = ("train", "insample") if role == "train" else (role,)
            runs = [r for rl in roles for r in zoo.select(rl, task, start)]
            rows = [runs[0].at_step(s) for s in steps] if runs else [None]
            if not runs or any(r is None for r in rows):
                raise SegzooError(f"{start}: no run of {task} keeps Adam steps {steps} (weightgen.budgets); the "
                                  f"{arm} arm reads them")
            found.append(runs[0].params[rows])
        signal = torch.stack(found)
    return conditioning(arm, starts, signal, trained.origin_scale, trained.scale, zoo.layout)


@torch.no_grad()
def generate(trained: TrainedGraph, starts: torch.Tensor, cond: torch.Tensor, tasks: list[str], *,
             start_metrics: torch.Tensor, target_metrics: torch.Tensor, ddim_steps: int,
             generator: torch.Generator, temperature: float = 1.0, chunk: int = 64) -> torch.Tensor:
    """Parameters [N, P] from starts [N, P], their conditioning [N, C − 1, P] and prompts (metrics [N, R]).
    ``temperature`` scales the initial noise of the (deterministic) DDIM path: 1 samples the learned distribution,
    0 follows the path from its mean."""
    model = trained.model
    dev = next(model.parameters()).device
    task = torch.tensor([trained.tasks.index(t) for t in tasks])
    out = []
    noise = torch.randn(starts.shape, generator=generator) * temperature
    for part in range(0, len(starts), chunk):
        sl = slice(part, part + chunk)
        sampler = noise_schedule(trained.settings.diffusion_steps, ddim_steps)
        x = noise[sl].to(dev)
        for t in sampler.timesteps:
            step = torch.full((len(x),), int(t), device=dev)
            clean = model(torch.cat([x[:, None], cond[sl].to(dev)], dim=1), step, task[sl].to(dev),
                          start_metrics[sl].float().to(dev), target_metrics[sl].float().to(dev))
            x, _ = sampler.step(clean, int(t), x)
        out.append(trained.scale.decode(x.cpu(), starts[sl]))
    return torch.cat(out)


def choose_temperature(trained: TrainedGraph, zoo: Zoo, table: pd.DataFrame, cond: torch.Tensor, starts: torch.Tensor,
                       start_metrics: torch.Tensor, target: torch.Tensor, zoo_settings: ZooSettings,
                       pre: Preprocessed, splits: Path, data_seed: int, seed: int) -> tuple[float, dict]:
    """The generator's temperature: as configured (``graph.temperature``), or (None) the one of
    :data:`TEMPERATURES` whose networks from the *training* starts (the in-sample requests, whose runs it learned
    from) reach the best mean validation Dice; never a held-out start or a test number."""
    if trained.settings.temperature is not None:
        return float(trained.settings.temperature), {}
    seen = np.flatnonzero((table["kind"] == "insample").to_numpy())
    if not len(seen):
        raise SegzooError("graph.temperature is null (chosen on the training starts' requests) but there are none: "
                          "set weightgen.sample.insample_parents or graph.temperature")
    scorer = Scorer(pre, splits, zoo_settings, data_seed)
    tried = {}
    for temperature in TEMPERATURES:
        made = generate(trained, starts[seen], cond[seen], list(table["task"].iloc[seen]),
                        start_metrics=start_metrics[seen], target_metrics=target[seen],
                        ddim_steps=trained.settings.ddim_steps, generator=torch.Generator().manual_seed(seed),
                        temperature=temperature)
        dice = scorer.dice_many(made, "val")
        tried[temperature] = float(np.mean([zoo.task_dice(d, task) for d, task in zip(dice, table["task"].iloc[seen])]))
    return max(tried, key=tried.get), tried


def write_samples(trained: TrainedGraph, zoo: Zoo, pre: Preprocessed, splits: Path, *, zoo_settings: ZooSettings,
                  sample_config: dict, seed: int, data_seed: int, device: str, out: Path) -> dict:
    """Answer every request of the tasks it was trained on; write the samples file (:mod:`segzoo.weightgen.zoo
    .samples`); return its sidecar."""
    table = requests(zoo, sample_config)
    table = table[table["task"].isin(trained.tasks)].reset_index(drop=True)
    if table.empty or not (table["kind"] == "oneshot").any():
        raise SegzooError("the zoo has no held-out start (weightgen.heldout_parents, fresh_inits) and no task the "
                          "generator was trained on; nothing to sample")
    began = time.perf_counter()
    cond = start_signals(trained, zoo, table, pre, splits, zoo_settings, data_seed, device)
    signal_seconds = time.perf_counter() - began
    starts = torch.stack([zoo.start_list[s].params for s in table["start"]])
    start_metrics = torch.tensor(np.stack([zoo.start_list[s].dice for s in table["start"]]))
    target = torch.tensor(table[[f"prompt_{n}" for n in zoo.regions]].to_numpy(np.float32))
    began = time.perf_counter()
    temperature, tried = choose_temperature(trained, zoo, table, cond, starts, start_metrics, target, zoo_settings, pre,
                                            splits, data_seed, seed)
    params = generate(trained, starts, cond, list(table["task"]), start_metrics=start_metrics, target_metrics=target,
                      ddim_steps=trained.settings.ddim_steps, generator=torch.Generator().manual_seed(seed),
                      temperature=temperature)
    sidecar = {"generator": trained.name, "label": f"structure-shared ({trained.settings.arm})",
               "budget": arm_budget(trained.settings.arm), "arm": trained.settings.arm,
               "temperature": temperature, "temperature_val_dice": tried,
               "ddim_steps": trained.settings.ddim_steps, "signal_seconds": signal_seconds,
               "sample_seconds": time.perf_counter() - began,
               "regions": zoo.regions, "layout": zoo.layout, "architecture": zoo.architecture}
    save_samples(out, params, table, sidecar)
    return {**sidecar, "networks": len(params)}
