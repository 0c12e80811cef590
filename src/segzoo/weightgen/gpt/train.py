"""``segzoo gpt-train``: fit G.pt on the zoo's training runs (held-out and in-sample runs are never loaded).

A training example is a pair from one run: a starting checkpoint i and a later (or the same)
checkpoint j >= i, both as normalised changes from the run's start, ``x = (θ − θ_start) / σ_layer``
(σ fitted on the training runs' changes). Under ``gpt.align`` every training parent's channels are first permuted to match the first training parent's
(:mod:`segzoo.weightgen.zoo.symmetry`), its runs with it (the same functions), and the first parent is kept as the
reference that new starts are aligned to when sampling. The model sees x_j noised to a random diffusion step, x_i,
the start's own weights, i's and j's validation Dice per region and the run's task, and learns to
return x_j (MONAI ``DDPMScheduler``, prediction type "sample", MSE). A share of the pairs start at the
start itself (i = 0), the situation one-shot generation is used in. An exponential moving average of
G.pt's weights (``torch.optim.swa_utils``) is what gets saved and sampled. On CUDA the forward pass runs
under bfloat16 autocast (``gpt.bf16``). Example k is drawn from
``(seed, k)``, so a run is reproducible on the CPU.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from segzoo.io import write_text
from segzoo.checkpoint import load_checkpoint, save_checkpoint
from segzoo.determinism import make_deterministic
from segzoo.tracking import tracker
from segzoo.weightgen.diffusion import noise_schedule
from segzoo.weightgen.gpt.model import GPT
from segzoo.weightgen.zoo.layer_scale import LayerScale
from segzoo.weightgen.zoo.symmetry import Symmetry, zoo_symmetry
from segzoo.weightgen.zoo.runs import Zoo, ZooRun


@dataclass(frozen=True)
class GPTSettings:
    """G.pt's settings (``weightgen.gpt``), typed."""

    chunk: int
    width: int
    layers: int
    heads: int
    steps: int
    batch_size: int
    lr: float
    ema: float
    diffusion_steps: int
    init_start_fraction: float
    bf16: bool
    token_layers: str = "per_token"
    align: bool = True
    threads: int = 1

    @classmethod
    def from_json(cls, data: dict) -> GPTSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class TrainedGPT:
    """A trained G.pt with what its inputs and outputs mean."""

    model: GPT
    scale: LayerScale         # of the weight changes: x = (θ − θ_start) / σ
    origin_scale: LayerScale  # of the starts' own weights (the origin tokens)
    tasks: list[str]
    regions: list[str]
    sidecar: dict
    reference: torch.Tensor | None = None  # [P]: the start every start is aligned to (gpt.align), else None
    symmetry: Symmetry | None = None

    def canonical(self, start_params: torch.Tensor) -> tuple[torch.Tensor, dict | None]:
        """A start [P] in G.pt's coordinates (its channels matched to the reference; unchanged without
        alignment) and the permutation that did it (None without alignment)."""
        if self.reference is None:
            return start_params, None
        perm = self.symmetry.match(self.reference, start_params)
        return self.symmetry.apply(start_params, perm), perm

    def restore(self, params: torch.Tensor, perm: dict | None) -> torch.Tensor:
        """Generated parameters [..., P] back in their own start's channel order."""
        return params if perm is None else self.symmetry.apply(params, Symmetry.inverse(perm))

    def origin(self, start_params: torch.Tensor) -> torch.Tensor:
        """θ_start [B, P] → the origin tokens' input [B, P] (float32)."""
        return (start_params.double() / self.origin_scale.per_parameter).float()

    def task_ids(self, tasks: list[str]) -> torch.Tensor:
        return torch.tensor([self.tasks.index(t) for t in tasks])


def _starts(runs: list[ZooRun]) -> list[torch.Tensor]:
    """Each distinct start once (a parent, a shared init, or every per_seed init)."""
    return list({run.start: run.start_params for run in runs}.values())


def train_gpt(zoo: Zoo, gpt_config: dict | GPTSettings, seed: int, out: Path, device: str = "cpu", threads: int = 1,
              tracking: dict | None = None, dataset: str = "") -> dict:
    """Fit G.pt; write ``<out>.safetensors|json`` (EMA weights) and ``<out>_loss.csv``; return the sidecar.

    ``tracking``: W&B / MLflow (segzoo.tracking), one run named ``<dataset>/gpt/seed<seed>``."""
    make_deterministic(seed, threads)
    gpt_config = gpt_config if isinstance(gpt_config, GPTSettings) else GPTSettings.from_json(gpt_config)
    settings = {"dataset": dataset, "seed": seed, "gpt": asdict(gpt_config), "device": device, "threads": threads,
                "out": str(out)}
    with tracker(tracking, f"{dataset}/gpt/seed{seed}", settings, kind="gpt", group=dataset) as track:
        sidecar = _train_gpt(zoo, gpt_config, seed, out, device, track)
        track.log_summary({k: sidecar[k] for k in ("final_loss", "seconds", "parameters", "train_checkpoints")})
        track.log_checkpoint(Path(f"{out}.safetensors"))
    return sidecar  # a tracking failure raises before this: `segzoo gpt-train` then removes the outputs


def aligned_runs(zoo: Zoo, runs: list[ZooRun]) -> tuple[list[ZooRun], torch.Tensor]:
    """``runs`` with every start's channels matched to the first start's (each run permuted with its start), and
    that reference start [P]."""
    symmetry = zoo_symmetry(zoo.architecture, zoo.layout, zoo.regions)
    starts = {name: run.start_params for name, run in zoo.starts("train").items()}  # in start order
    reference = next(iter(starts.values()))
    perms = {name: symmetry.match(reference, params) for name, params in starts.items()}
    return [replace(r, params=symmetry.apply(r.params, perms[r.start])) for r in runs], reference


def _train_gpt(zoo: Zoo, gpt_config: GPTSettings, seed: int, out: Path, device: str, track) -> dict:
    runs = zoo.select("train")
    reference = None
    if gpt_config.align:
        runs, reference = aligned_runs(zoo, runs)
    tasks = sorted({r.task for r in runs})
    scale = LayerScale.fit(zoo.layout, [r.params - r.start_params for r in runs])
    origin_scale = LayerScale.fit(zoo.layout, [s[None] for s in _starts(runs)])
    dev = torch.device(device)
    # Every training checkpoint on the device: x [N, P], its val Dice [N, R]; per run its first row.
    x = torch.cat([scale.encode(r.params, r.start_params).float() for r in runs]).to(dev)
    dice = torch.cat([torch.from_numpy(r.dice) for r in runs]).to(dev)
    counts = np.array([len(r.params) for r in runs])
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    origin = torch.stack([(r.start_params.double() / origin_scale.per_parameter).float() for r in runs]).to(dev)
    task_of = torch.tensor([tasks.index(r.task) for r in runs], device=dev)
    model = GPT.from_config(zoo.layout, len(zoo.regions), len(tasks), asdict(gpt_config)).to(dev)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(gpt_config.ema))
    schedule = noise_schedule(gpt_config.diffusion_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=gpt_config.lr, weight_decay=0.0, fused=True)
    autocast = dev.type == "cuda" and gpt_config.bf16
    generator = torch.Generator(device=dev).manual_seed(seed)  # diffusion noise and steps
    losses, began = [], time.perf_counter()
    for step in range(gpt_config.steps):
        rng = np.random.default_rng([seed, step])  # which pairs
        picks = rng.integers(len(runs), size=gpt_config.batch_size)
        j = rng.integers(counts[picks])
        i = np.where(rng.random(len(picks)) < gpt_config.init_start_fraction, 0, rng.integers(j + 1))
        target_rows, start_rows = (torch.from_numpy(first[picks] + k).to(dev) for k in (j, i))
        run_rows = torch.from_numpy(picks).to(dev)
        target = x[target_rows]
        noise = torch.randn(target.shape, generator=generator, device=dev)
        t = torch.randint(0, gpt_config.diffusion_steps, (len(picks),), generator=generator, device=dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            predicted = model(schedule.add_noise(target, noise, t), x[start_rows], origin[run_rows], t,
                              task_of[run_rows], dice[start_rows], dice[target_rows])
        loss = torch.nn.functional.mse_loss(predicted.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema.update_parameters(model)
        losses.append(loss.detach())
        if track.enabled and ((step + 1) % 100 == 0 or step + 1 == gpt_config.steps):
            first_step = (step // 100) * 100  # the losses of these steps, read from the device in one go
            for k, value in enumerate(torch.stack(losses[first_step:]).float().cpu().tolist(), first_step + 1):
                track.log_metrics(k, {"train/loss": value})
            track.log_metrics(step + 1, {"time/seconds": time.perf_counter() - began})
    losses = torch.stack(losses).cpu().numpy() if losses else np.zeros(0)
    seconds = time.perf_counter() - began
    sidecar = {"tasks": tasks, "regions": zoo.regions, "layout": zoo.layout, "architecture": zoo.architecture,
               "sigma": scale.sigma, "origin_sigma": origin_scale.sigma, "gpt_config": asdict(gpt_config), "seed": seed,
               "train_runs": [r.name for r in runs], "train_checkpoints": len(x),
               "seconds": seconds, "parameters": sum(p.numel() for p in model.parameters()),
               "final_loss": float(np.mean(losses[-max(1, len(losses) // 10):]))}
    tensors = dict(ema.module.state_dict())
    if reference is not None:
        tensors[REFERENCE] = reference.clone()
    save_checkpoint(out, tensors, sidecar)
    curve = pd.DataFrame({"step": np.arange(1, len(losses) + 1), "loss": losses})
    write_text(Path(f"{out}_loss.csv"), curve.to_csv(index=False, float_format="%.6g"))
    return sidecar


REFERENCE = "aligned_to_start"  # the G.pt file's extra tensor under gpt.align: the reference start [P]


def load_gpt(stem: Path, device: str = "cpu") -> TrainedGPT:
    tensors, sidecar = load_checkpoint(stem)
    reference = tensors.pop(REFERENCE, None)
    model = GPT.from_config(sidecar["layout"], len(sidecar["regions"]), len(sidecar["tasks"]), sidecar["gpt_config"])
    model.load_state_dict(tensors)
    layout = sidecar["layout"]
    symmetry = zoo_symmetry(sidecar["architecture"], layout, sidecar["regions"]) if reference is not None else None
    return TrainedGPT(model.to(device).eval(), LayerScale(layout, sidecar["sigma"]),
                      LayerScale(layout, sidecar["origin_sigma"]), sidecar["tasks"], sidecar["regions"], sidecar,
                      reference, symmetry)
