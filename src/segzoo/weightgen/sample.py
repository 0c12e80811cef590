"""``segzoo gpt-sample``: one-shot networks from G.pt with a few DDIM steps (MONAI ``DDIMScheduler``).

The evaluation prompts start from the random init of every held-out run (never seen in training):

- ``align``  : the task's regions prompted at quantiles (10 %..100 %) of the training zoo's Dice
  for that task; other regions keep the init's values;
- ``best``   : the task's best training Dice, then recursive prompting: the output is scored and fed
  back as the new start, ``recursions`` times (one row per round);
- ``unify``  : every region at its best Dice anywhere in the training zoo, task ``all``, recursively;
- ``seen``   : in-sample control, one *training* run per task: its own init, prompted with its own
  final Dice (what G.pt can do on inits it has seen).

All prompts of a round are sampled in one batch. The noise of each prompt comes from the seed.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from monai.networks.schedulers import DDIMScheduler

from segzoo.weightgen.gpt import GPT
from segzoo.weightgen.zoo import ALL, task_regions


@torch.no_grad()
def ddim_sample(model: GPT, scale: float, start: torch.Tensor, task: torch.Tensor, start_metrics: torch.Tensor,
                target_metrics: torch.Tensor, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Parameters [B, P] (raw scale) for starting parameters ``start`` [B, P] and the prompts."""
    ddim = DDIMScheduler(num_train_timesteps=model.diffusion_steps, schedule="linear_beta",
                         prediction_type="sample", clip_sample=False)
    ddim.set_timesteps(steps)
    dev = next(model.parameters()).device
    start = start.to(dev) / scale
    x = torch.randn(start.shape, generator=generator).to(dev)
    for t in ddim.timesteps:
        clean = model(x, start, torch.full((len(x),), int(t), device=dev), task.to(dev), start_metrics.to(dev),
                      target_metrics.to(dev))
        x, _ = ddim.step(clean, int(t), x)
    return (x * scale).cpu()


def evaluation_prompts(zoo, tasks: list[str], count: int) -> pd.DataFrame:
    """One row per first-round prompt: kind, held-out run, task, target Dice per region."""
    train = zoo.index[zoo.index["run"].isin(zoo.train_runs)]
    rows = []
    for run in zoo.heldout_runs:
        task = zoo.meta[run]["task"]
        init = zoo.dice(run)[0]
        trained = task_regions(task, zoo.regions)
        of_task = train[train["task"] == task]
        if of_task.empty:
            continue
        for kind, quantiles in (("align", np.linspace(0.1, 1.0, count)), ("best", [1.0])):
            for q in quantiles:
                target = init.copy()
                for r in trained:
                    target[r] = of_task[f"dice_{zoo.regions[r]}"].quantile(q)
                rows.append({"kind": kind, "run": run, "task": task, "quantile": float(q),
                             **{f"prompt_{n}": float(v) for n, v in zip(zoo.regions, target)}})
        if ALL in tasks:
            rows.append({"kind": "unify", "run": run, "task": ALL, "quantile": 1.0,
                         **{f"prompt_{n}": float(train[f"dice_{n}"].max()) for n in zoo.regions}})
    for task in tasks:  # in-sample check: a training run's own init and final metrics
        seen = sorted(r for r in zoo.train_runs if zoo.meta[r]["task"] == task)
        if seen:
            rows.append({"kind": "seen", "run": seen[0], "task": task, "quantile": np.nan,
                         **{f"prompt_{n}": float(v) for n, v in zip(zoo.regions, zoo.dice(seen[0])[-1])}})
    return pd.DataFrame(rows)


def sample_prompts(model: GPT, meta: dict, zoo, prompts: pd.DataFrame, steps: int, recursions: int, seed: int,
                   scorer) -> tuple[torch.Tensor, pd.DataFrame]:
    """Sample every prompt (batched), then the recursive rounds of ``best``/``unify`` prompts.

    ``scorer(vector) -> Dice per region`` measures a network (the start metrics of the next round).
    Returns params [N, P] and a table with one row per generated network.
    """
    regions = meta["regions"]
    target = torch.tensor(prompts[[f"prompt_{n}" for n in regions]].to_numpy(np.float32))
    start = torch.stack([zoo.params[r][0] for r in prompts["run"]])
    start_metrics = torch.tensor(np.stack([zoo.dice(r)[0] for r in prompts["run"]]))
    task = torch.tensor([meta["tasks"].index(t) for t in prompts["task"]])
    generator = torch.Generator().manual_seed(seed)
    outputs, tables = [], []
    active = np.ones(len(prompts), bool)
    for round_ in range(1, max(1, recursions) + 1):
        rows = np.flatnonzero(active)
        began = time.perf_counter()
        made = ddim_sample(model, meta["scale"], start[rows], task[rows], start_metrics[rows], target[rows], steps,
                           generator)
        seconds = (time.perf_counter() - began) / len(rows)
        outputs.append(made)
        table = prompts.iloc[rows].copy()
        table.insert(1, "round", round_)
        table["seconds_per_network"] = seconds
        tables.append(table)
        start[rows] = made
        start_metrics[rows] = torch.tensor(np.stack([scorer(v) for v in made]), dtype=torch.float32)
        active &= np.isin(prompts["kind"].to_numpy(), ["best", "unify"])
        if not active.any():
            break
    return torch.cat(outputs), pd.concat(tables, ignore_index=True)


def single_prompt_seconds(model: GPT, meta: dict, zoo, steps: int, seed: int) -> float:
    """Wall time to sample one network alone (batch of one), the fair comparison with Adam."""
    run = zoo.heldout_runs[0]
    start = zoo.params[run][:1]
    metrics = torch.tensor(zoo.dice(run)[:1])
    task = torch.tensor([meta["tasks"].index(zoo.meta[run]["task"])])
    generator = torch.Generator().manual_seed(seed)
    began = time.perf_counter()
    ddim_sample(model, meta["scale"], start, task, metrics, metrics, steps, generator)
    return time.perf_counter() - began
