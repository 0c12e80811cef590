"""``segzoo gpt-sample``: G.pt's one-shot networks (DDIM, MONAI ``DDIMScheduler``) for the evaluation's requests.

Every network is sampled from a start in one shot: the starting checkpoint is the start itself (x = 0) and its
metrics are the start's validation Dice. Under ``gpt.align`` the start is first permuted into G.pt's channel order
and the sample permuted back. The requests (starts, tasks, prompts) are the instrument's
(:func:`segzoo.weightgen.zoo.prompts.requests`), the same for every generator.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segzoo.errors import SegzooError
from segzoo.weightgen.diffusion import noise_schedule
from segzoo.weightgen.gpt.train import TrainedGPT
from segzoo.weightgen.zoo.prompts import requests
from segzoo.weightgen.zoo.runs import Zoo
from segzoo.weightgen.zoo.samples import save_samples

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


def sample_prompts(gpt: TrainedGPT, zoo: Zoo, prompts: pd.DataFrame, ddim_steps: int, seed: int) -> torch.Tensor:
    """Every prompt in one batch: parameters [N, P], row k for prompt row k."""
    starts = [zoo.start_list[s] for s in prompts["start"]]
    start = torch.stack([s.params for s in starts])
    start_metrics = torch.tensor(np.stack([s.dice for s in starts]))
    target = torch.tensor(prompts[[f"prompt_{n}" for n in zoo.regions]].to_numpy(np.float32))
    return generate(gpt, start, list(prompts["task"]), start_metrics=start_metrics, target_metrics=target,
                    ddim_steps=ddim_steps, generator=torch.Generator().manual_seed(seed))


def write_samples(gpt: TrainedGPT, zoo: Zoo, sample_config: dict, seed: int, out: Path) -> dict:
    """Sample every evaluation prompt; write ``<out>.safetensors|json`` (params [N, P]) and ``<out>.csv``
    (one prompt row per network); return the sidecar."""
    prompts = requests(zoo, sample_config)
    prompts = prompts[prompts["task"].isin(gpt.tasks)].reset_index(drop=True)
    if prompts.empty or not (prompts["kind"] == "oneshot").any():
        raise SegzooError("the zoo has no held-out start (weightgen.heldout_parents, fresh_inits) and no task G.pt was "
                          "trained on; nothing to sample")
    params = sample_prompts(gpt, zoo, prompts, sample_config["ddim_steps"], seed)
    began = time.perf_counter()  # one network alone: the fair comparison with Adam's wall time
    sample_prompts(gpt, zoo, prompts.iloc[:1], sample_config["ddim_steps"], seed)
    sidecar = {"generator": "gpt", "label": "G.pt", "budget": 0,
               "ddim_steps": sample_config["ddim_steps"], "aligned": gpt.reference is not None,
               "single_network_seconds": time.perf_counter() - began,
               # what a sample is, so one can be run or exported on its own (segzoo nnunet-export)
               "regions": zoo.regions, "layout": zoo.layout, "architecture": zoo.architecture}
    save_samples(out, params, prompts, sidecar)
    return {**sidecar, "networks": len(params)}
