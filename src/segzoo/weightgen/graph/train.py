"""``segzoo graph-train``: fit the structure-shared generator on the zoo's training runs.

Shapes: B batch, P parameters, C channels per parameter, R regions.

A training example is a pair from one training run: a starting checkpoint i and a later checkpoint j > i (any
checkpoint may start a pair under the ``grad`` arm; under ``adam<k>`` the run's start, whose first k steps the
run kept). The denoiser sees, per parameter, the change x_j = (θ_j − θ_i) / σ_layer noised to a random diffusion
step, the starting weights θ_i / ρ_layer and the start's signal (:mod:`segzoo.weightgen.graph.signal`), and
globally the task, i's and j's val Dice and the step; it learns to return x_j (MONAI ``DDPMScheduler``, prediction
type "sample", MSE over every parameter). σ is the layer scale of the training runs' changes, ρ that of their
starts' weights (:class:`segzoo.weightgen.zoo.layer_scale.LayerScale`). Training examples are parameters ×
checkpoints: one model serves every edge and node of the network, and never sees which start an example came
from. An exponential moving average of the weights is what gets saved and sampled. Example k is drawn from
``(seed, k)``, so a run is reproducible on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from segzoo.checkpoint import load_checkpoint, save_checkpoint
from segzoo.data.preprocessed import Preprocessed
from segzoo.determinism import make_deterministic
from segzoo.io import write_text
from segzoo.tracking import tracker
from segzoo.weightgen.diffusion import noise_schedule
from segzoo.weightgen.graph.model import GraphDenoiser
from segzoo.weightgen.graph.neural_graph import NeuralGraph, neural_graph
from segzoo.weightgen.graph.signal import arm_budget, normalise_per_layer, prefix_steps, signal_batch
from segzoo.weightgen.zoo.engine import Engine
from segzoo.weightgen.zoo.layer_scale import LayerScale
from segzoo.weightgen.zoo.runs import Zoo, ZooRun
from segzoo.weightgen.zoo.settings import ZooSettings


@dataclass(frozen=True)
class GraphSettings:
    """The structure-shared generator's settings (``weightgen.graph``), for one arm."""

    arm: str
    width: int
    layers: int
    steps: int
    batch_size: int
    lr: float
    ema: float
    diffusion_steps: int
    signal_patches: int
    ddim_steps: int
    temperature: float | None = None  # the sampler's noise scale; None: chosen on the training starts' val Dice

    @classmethod
    def from_json(cls, data: dict, arm: str) -> GraphSettings:
        arm_budget(arm)  # refuses an unknown arm
        return cls(arm, **{k: data[k] for k in ("width", "layers", "steps", "batch_size", "lr", "ema",
                                                "diffusion_steps", "signal_patches", "ddim_steps")},
                   temperature=data.get("temperature"))


@dataclass
class TrainedGraph:
    """A trained structure-shared generator with what its inputs and outputs mean."""

    model: GraphDenoiser
    settings: GraphSettings
    scale: LayerScale        # of the weight changes: x = (θ − θ_start) / σ
    origin_scale: LayerScale  # of the starts' own weights
    tasks: list[str]
    regions: list[str]
    sidecar: dict

    @property
    def name(self) -> str:
        return f"graph_{self.settings.arm}"


def channels_of(arm: str) -> int:
    """Input channels per parameter: the noised change, the start's weights, the signal (1 or one per prefix step)."""
    return 2 + (1 if arm == "grad" else len(prefix_steps(arm)))


def conditioning(arm: str, start: torch.Tensor, signal: torch.Tensor, origin_scale: LayerScale, scale: LayerScale,
                 layout: list[list]) -> torch.Tensor:
    """The conditioning channels [B, C − 1, P] of starts [B, P] and their raw signal: ``grad``: the gradient [B, P];
    ``adam<k>``: the prefix snapshots [B, S, P] (after each of :func:`prefix_steps`)."""
    origin = (start.double() / origin_scale.per_parameter).float()
    if arm == "grad":
        return torch.stack([origin, normalise_per_layer(signal.float(), layout)], dim=1)
    moves = [((signal[:, s].double() - start.double()) / scale.per_parameter).float() for s in range(signal.shape[1])]
    return torch.stack([origin, *moves], dim=1)


class Examples:
    """Every training run's checkpoints on the device, and the signal of each checkpoint that may start a pair."""

    def __init__(self, runs: list[ZooRun], arm: str, gradient: Callable[[ZooRun, list[int]], torch.Tensor],
                 scale: LayerScale, origin_scale: LayerScale, layout: list[list], tasks: list[str]):
        self.runs, self.arm = runs, arm
        self.params = [r.params for r in runs]
        self.dice = [torch.from_numpy(r.dice) for r in runs]
        self.task = torch.tensor([tasks.index(r.task) for r in runs])
        prefix = prefix_steps(arm) if arm != "grad" else []
        self.starts, self.cond = [], []  # per run: the rows that may start a pair, and their conditioning [n, C-1, P]
        for run in runs:
            if arm == "grad":
                rows = list(range(len(run.params) - 1))
                signal = gradient(run, rows)
            else:
                at = [run.at_step(s) for s in prefix]
                rows = [0] if all(a is not None for a in at) else []
                signal = run.params[at][None] if rows else torch.zeros(0, len(prefix), run.params.shape[1])
            self.starts.append(rows)
            self.cond.append(conditioning(arm, run.params[rows], signal, origin_scale, scale, layout) if rows
                             else None)
        usable = [k for k, rows in enumerate(self.starts) if rows]
        if not usable:
            raise ValueError(f"no training run can start a pair for arm {arm} (its prefix steps {prefix} "
                             "are not kept: weightgen.budgets)")
        self.usable = np.array(usable)
        self.scale = scale

    def batch(self, rng: np.random.Generator, size: int):
        """(x0 [B, P], conditioning [B, C-1, P], task [B], start metrics [B, R], target metrics [B, R])."""
        picks = self.usable[rng.integers(len(self.usable), size=size)]
        x0, cond, task, d_i, d_j = [], [], [], [], []
        for k in picks:
            rows = self.starts[k]
            a = int(rng.integers(len(rows)))
            i = rows[a]
            j = int(rng.integers(i + 1, len(self.params[k])))
            x0.append(self.scale.encode(self.params[k][j], self.params[k][i]).float())
            cond.append(self.cond[k][a])
            task.append(self.task[k])
            d_i.append(self.dice[k][i])
            d_j.append(self.dice[k][j])
        return torch.stack(x0), torch.stack(cond), torch.stack(task), torch.stack(d_i), torch.stack(d_j)


def fit(graph: NeuralGraph, examples: Examples, settings: GraphSettings, *, regions: int, tasks: int, seed: int,
        device: torch.device, track=None) -> tuple[GraphDenoiser, list[float]]:
    """The denoiser fitted on ``examples`` (DDPM, prediction type "sample"); returns its EMA and the loss per step."""
    dev = torch.device(device)
    model = GraphDenoiser(graph, channels=channels_of(settings.arm), regions=regions, tasks=tasks,
                          width=settings.width, layers=settings.layers, diffusion_steps=settings.diffusion_steps).to(dev)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema))
    schedule = noise_schedule(settings.diffusion_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    generator = torch.Generator(device=dev).manual_seed(seed)
    losses = []
    for step in range(settings.steps):
        x0, cond, task, d_i, d_j = (t.to(dev) for t in examples.batch(np.random.default_rng([seed, step]),
                                                                         settings.batch_size))
        noise = torch.randn(x0.shape, generator=generator, device=dev)
        t = torch.randint(0, settings.diffusion_steps, (len(x0),), generator=generator, device=dev)
        predicted = model(torch.cat([schedule.add_noise(x0, noise, t)[:, None], cond], dim=1), t, task, d_i, d_j)
        loss = torch.nn.functional.mse_loss(predicted, x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema.update_parameters(model)
        losses.append(float(loss.detach()))
        if track is not None and track.enabled and ((step + 1) % 100 == 0 or step + 1 == settings.steps):
            for k, value in enumerate(losses[(step // 100) * 100:], (step // 100) * 100 + 1):
                track.log_metrics(k, {"train/loss": value})
    return ema.module.eval(), losses


def build_graph(zoo: Zoo) -> NeuralGraph:
    from segzoo.models.nnunet import build_network

    channels = int(zoo.layout[0][1][1])
    return neural_graph(build_network(zoo.architecture, channels, len(zoo.regions)), zoo.layout)


def train_graph(zoo: Zoo, pre: Preprocessed, splits: Path, *, zoo_settings: ZooSettings, settings: GraphSettings,
                seed: int, data_seed: int, out: Path, device: str = "cpu", threads: int = 1,
                tracking: dict | None = None, dataset: str = "") -> dict:
    """Fit one arm; write ``<out>.safetensors|json`` (EMA weights) and ``<out>_loss.csv``; return the sidecar."""
    make_deterministic(seed, threads)
    dev = torch.device(device)
    runs = zoo.select("train")
    tasks = sorted({r.task for r in runs})
    scale = LayerScale.fit(zoo.layout, [r.params - r.start_params for r in runs])
    origin_scale = LayerScale.fit(zoo.layout, [torch.stack(list({r.start: r.start_params for r in runs}.values()))])
    engine = Engine(pre, zoo_settings, device)
    batches = {t: signal_batch(pre, splits, zoo_settings, t, data_seed, settings.signal_patches) for t in tasks}

    def gradient(run: ZooRun, rows: list[int]) -> torch.Tensor:
        return engine.gradients(run.params[rows], batches[run.task]["image"], batches[run.task]["label"], run.task)

    began = time.perf_counter()
    examples = Examples(runs, settings.arm, gradient, scale, origin_scale, zoo.layout, tasks)
    signal_seconds = time.perf_counter() - began
    graph = build_graph(zoo)
    name = f"graph_{settings.arm}"
    described = {"dataset": dataset, "seed": seed, "graph": asdict(settings), "device": device, "threads": threads}
    with tracker(tracking, f"{dataset}/{name}/seed{seed}", described, kind="graph", group=dataset) as track:
        model, losses = fit(graph, examples, settings, regions=len(zoo.regions), tasks=len(tasks), seed=seed,
                            device=dev, track=track)
        seconds = time.perf_counter() - began
        sidecar = {"generator": name, "arm": settings.arm, "budget": arm_budget(settings.arm),
                   "settings": asdict(settings), "tasks": tasks, "regions": zoo.regions, "layout": zoo.layout,
                   "architecture": zoo.architecture, "sigma": scale.sigma, "origin_sigma": origin_scale.sigma,
                   "seed": seed, "data_seed": data_seed, "train_runs": [r.name for r in runs],
                   "train_examples": int(sum(len(s) for s in examples.starts)),
                   "train_checkpoints": int(sum(len(p) for p in examples.params)),
                   "graph": {"edges": graph.edges, "nodes": graph.nodes},
                   "parameters": sum(p.numel() for p in model.parameters()),
                   "signal_seconds": signal_seconds, "seconds": seconds,
                   "final_loss": float(np.mean(losses[-max(1, len(losses) // 10):])) if losses else float("nan")}
        save_checkpoint(out, dict(model.state_dict()), sidecar)
        curve = pd.DataFrame({"step": np.arange(1, len(losses) + 1), "loss": losses})
        write_text(Path(f"{out}_loss.csv"), curve.to_csv(index=False, float_format="%.6g"))
        track.log_summary({k: sidecar[k] for k in ("final_loss", "seconds", "parameters")})
        track.log_checkpoint(Path(f"{out}.safetensors"))
    return sidecar


def load_graph(stem: Path, device: str = "cpu") -> TrainedGraph:
    tensors, sidecar = load_checkpoint(stem)
    settings = GraphSettings(**sidecar["settings"])
    model = GraphDenoiser(_graph_of(sidecar), channels=channels_of(settings.arm), regions=len(sidecar["regions"]),
                          tasks=len(sidecar["tasks"]), width=settings.width, layers=settings.layers,
                          diffusion_steps=settings.diffusion_steps)
    model.load_state_dict(tensors)
    layout = sidecar["layout"]
    return TrainedGraph(model.to(device).eval(), settings, LayerScale(layout, sidecar["sigma"]),
                        LayerScale(layout, sidecar["origin_sigma"]), sidecar["tasks"], sidecar["regions"], sidecar)


def _graph_of(sidecar: dict) -> NeuralGraph:
    from segzoo.models.nnunet import build_network

    channels = int(sidecar["layout"][0][1][1])
    return neural_graph(build_network(sidecar["architecture"], channels, len(sidecar["regions"])), sidecar["layout"])
