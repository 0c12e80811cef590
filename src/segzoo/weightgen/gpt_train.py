"""``segzoo gpt-train``: fit G.pt on the zoo's training runs (held-out seeds are never loaded).

A training example is a pair from one run: a starting checkpoint i and a later (or the same)
checkpoint j >= i; the model sees j's parameters noised to a random diffusion step, i's parameters,
i's and j's validation Dice per region and the run's task, and learns to return j's parameters
(MONAI ``DDPMScheduler``, prediction type "sample", MSE). A share of the pairs start at the random
init, the situation one-shot generation is used in. Parameters are divided by one global scale, the
standard deviation of every parameter of every training checkpoint. Example k is drawn from
``(seed, k)``, so a run is reproducible on the CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.networks.schedulers import DDPMScheduler

from segzoo.errors import SegzooError
from segzoo.io import write_text
from segzoo.train.checkpoint import load_checkpoint, save_checkpoint
from segzoo.train.loop import make_deterministic
from segzoo.weightgen.gpt import GPT
from segzoo.weightgen.zoo import load_run


@dataclass
class Zoo:
    """The kept runs of a zoo, split into training and held-out runs by seed."""

    index: pd.DataFrame          # one row per checkpoint (index.csv)
    params: dict[str, torch.Tensor]  # run → [n_checkpoints, P]
    meta: dict[str, dict]        # run → sidecar
    regions: list[str]
    heldout_seeds: list[int]

    @property
    def train_runs(self) -> list[str]:
        return sorted(r for r, m in self.meta.items() if m["seed"] not in self.heldout_seeds)

    @property
    def heldout_runs(self) -> list[str]:
        return sorted(r for r, m in self.meta.items() if m["seed"] in self.heldout_seeds)

    def dice(self, run: str) -> np.ndarray:
        """[n_checkpoints, R] validation Dice of one run's checkpoints (from its sidecar, as the index has it)."""
        checkpoints = self.meta[run]["checkpoints"]
        return np.array([checkpoints[f"dice_{r}"] for r in self.regions], dtype=np.float32).T


def load_zoo(index_csv: Path, runs_dir: Path, heldout_seeds: list[int], only: str | None = None) -> Zoo:
    """Read the index and the run files it names; ``only="train"`` skips the held-out runs' weights."""
    if not Path(index_csv).is_file():
        raise SegzooError(f"{index_csv}: missing (run `segzoo zoo-index` first)")
    index = pd.read_csv(index_csv)
    params, meta = {}, {}
    for run, seed in index.groupby("run")["seed"].first().items():
        if only == "train" and seed in heldout_seeds:
            continue
        params[run], meta[run] = load_run(Path(runs_dir) / f"{run}.safetensors")
    regions = next(iter(meta.values()))["regions"]
    zoo = Zoo(index, params, meta, regions, list(heldout_seeds))
    if only != "heldout" and not zoo.train_runs:
        raise SegzooError(f"{index_csv}: every run has a held-out seed {heldout_seeds}; none is left to train on")
    return zoo


def scheduler(diffusion_steps: int) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=diffusion_steps, schedule="linear_beta", prediction_type="sample",
                         clip_sample=False)


def layer_sizes(layout: list[list]) -> list[int]:
    return [int(np.prod(shape)) for _, shape in layout]


def train_gpt(zoo: Zoo, tasks: list[str], options: dict, seed: int, out: Path, device: str = "cpu",
              threads: int = 1) -> dict:
    """Fit G.pt; write ``<out>.safetensors|json`` and ``<out>_loss.csv``; return the sidecar."""
    make_deterministic(seed, threads)
    runs = zoo.train_runs
    layout = zoo.meta[runs[0]]["layout"]
    scale = float(torch.cat([zoo.params[r].reshape(-1) for r in runs]).std())
    params = [zoo.params[r] / scale for r in runs]
    dice = [torch.from_numpy(zoo.dice(r)) for r in runs]
    task_of = [tasks.index(zoo.meta[r]["task"]) for r in runs]
    dev = torch.device(device)
    model = GPT(layer_sizes(layout), len(zoo.regions), len(tasks), options["chunk"], options["width"],
                options["layers"], options["heads"], options["diffusion_steps"]).to(dev)
    noise_schedule = scheduler(options["diffusion_steps"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=options["lr"], weight_decay=0.0)
    losses, began = [], time.perf_counter()
    for step in range(options["steps"]):
        rng = np.random.default_rng([seed, step])
        picks = rng.integers(len(runs), size=options["batch_size"])
        start, future, m_start, m_future, task = [], [], [], [], []
        for r in picks:
            n = len(params[r])
            j = int(rng.integers(n))
            i = 0 if rng.random() < options["init_start_fraction"] else int(rng.integers(j + 1))
            start.append(params[r][i]), future.append(params[r][j])
            m_start.append(dice[r][i]), m_future.append(dice[r][j]), task.append(task_of[r])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        future = torch.stack(future)
        noise = torch.randn(future.shape, generator=generator)
        t = torch.randint(0, options["diffusion_steps"], (len(picks),), generator=generator)
        noised = noise_schedule.add_noise(future, noise, t)
        predicted = model(noised.to(dev), torch.stack(start).to(dev), t.to(dev), torch.tensor(task, device=dev),
                          torch.stack(m_start).to(dev), torch.stack(m_future).to(dev))
        loss = torch.nn.functional.mse_loss(predicted, future.to(dev))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - began
    sidecar = {"tasks": tasks, "regions": zoo.regions, "layout": layout, "scale": scale, "options": options,
               "seed": seed, "train_runs": runs, "heldout_seeds": zoo.heldout_seeds,
               "train_checkpoints": int(sum(len(p) for p in params)), "seconds": seconds,
               "parameters": sum(p.numel() for p in model.parameters()),
               "final_loss": float(np.mean(losses[-max(1, len(losses) // 10):]))}
    save_checkpoint(out, {k: v for k, v in model.state_dict().items()}, sidecar)
    curve = pd.DataFrame({"step": np.arange(1, len(losses) + 1), "loss": losses})
    write_text(Path(f"{out}_loss.csv"), curve.to_csv(index=False, float_format="%.6g"))
    return sidecar


def load_gpt(stem: Path, device: str = "cpu") -> tuple[GPT, dict]:
    tensors, meta = load_checkpoint(stem)
    o = meta["options"]
    model = GPT(layer_sizes(meta["layout"]), len(meta["regions"]), len(meta["tasks"]), o["chunk"], o["width"],
                o["layers"], o["heads"], o["diffusion_steps"])
    model.load_state_dict(tensors)
    return model.to(device).eval(), meta
