"""The checkpoint zoo: many short runs of one small network, each keeping ~200 snapshots with metrics.

A zoo run is the pipeline's own training loop (``segzoo.train.loop.train``) with an observer that, at
random steps drawn from the run's seed, copies the flat parameter vector and scores it on a fixed
validation batch (the same for every run, drawn from the config seed). A run file holds

    <run>.safetensors   params [n_checkpoints, P] float32 (row 0: the random init, last row: final)
    <run>.json          task, lr, seed, steps, train/val loss, val Dice per region, layout, timing

Tasks: one region name (single-task: only that output channel is trained, the other heads stay at
their init) or ``all`` (multi-task). The index table (``index.csv``) has one row per checkpoint of
the runs that stayed finite and bounded; the others are dropped and counted in ``zoo.json``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segzoo.data.loader import PatchBatches
from segzoo.errors import SegzooError
from segzoo.io import new_files, read_json, write_json, write_text
from segzoo.models.registry import build_model
from segzoo.train.checkpoint import load_checkpoint, save_checkpoint
from segzoo.train.loss import build_loss
from segzoo.weightgen.params import flatten, layout_of

ALL = "all"


def task_regions(task: str, region_names: list[str]) -> list[int]:
    """Channel indices a task trains: one region, or every region for ``all``."""
    if task == ALL:
        return list(range(len(region_names)))
    if task not in region_names:
        raise SegzooError(f"weightgen.tasks: {task!r} is neither a region of this dataset "
                          f"({', '.join(region_names)}) nor 'all'")
    return [region_names.index(task)]


def validation_batch(preprocessed: Path, splits: Path, patch_size: list[int], count: int, seed: int) -> dict:
    """The fixed batch every zoo checkpoint is scored on: ``count`` patches of the val cases,
    three in four centred on a labelled voxel. ``{"image": [N, C, *patch], "label": [N, R, *patch]}``."""
    cases = read_json(splits)["val"]
    if not cases:
        raise SegzooError(f"{splits}: no validation cases; the zoo scores its checkpoints on them")
    return PatchBatches(preprocessed, cases, patch_size, count, 0.75, seed)[0]


@torch.no_grad()
def score(model: torch.nn.Module, batch: dict, device: torch.device) -> tuple[float, list[float]]:
    """(val loss over every region, pooled Dice per region) of ``model`` on ``batch``.

    Dice pools all patches of the batch (2 TP / (|pred| + |ref|)); a region absent from both
    reference and prediction scores 1.
    """
    was_training = model.training
    model.eval()
    logits = model(batch["image"].to(device)).float()
    model.train(was_training)
    label = batch["label"].to(device)
    loss = float(build_loss()(logits, label))
    pred = (logits > 0).float()
    dims = (0, 2, 3, 4)
    tp, size = (pred * label).sum(dims), pred.sum(dims) + label.sum(dims)
    dice = torch.where(size > 0, 2 * tp / size.clamp(min=1), torch.ones_like(size))
    return loss, [float(d) for d in dice.cpu()]


def snapshot_steps(steps: int, count: int, seed: int, task_index: int) -> list[int]:
    """0 (the init), ``count`` distinct random steps in 1..steps-1, and ``steps`` (the final one)."""
    rng = np.random.default_rng([seed, task_index, 11])
    inner = rng.choice(np.arange(1, steps), size=min(count, steps - 1), replace=False)
    return [0, *sorted(int(s) for s in inner), steps]


def train_zoo_run(preprocessed: Path, splits: Path, task: str, lr: float, seed: int, options: dict,
                  out: Path, device: str, threads: int, data_seed: int) -> dict:
    """Train one zoo run and write ``<out>.safetensors|json``; return the sidecar."""
    from segzoo.train.loop import Run, train

    meta = read_json(preprocessed / "preprocess.json")
    region_names = list(meta["regions"])
    trained = task_regions(task, region_names)
    batch = validation_batch(preprocessed, splits, options["patch_size"], options["val_patches"], data_seed)
    steps = options["steps"]
    wanted = set(snapshot_steps(steps, options["checkpoints"], seed, trained[0] if task != ALL else len(trained)))
    rows, params, spent, layout = [], [], [0.0], []
    dev = torch.device(device)

    def observe(step: int, model: torch.nn.Module, train_loss: float | None) -> None:
        if step not in wanted:
            return
        began = time.perf_counter()
        val_loss, dice = score(model, batch, dev)
        params.append(flatten(model))
        layout[:] = layout_of(model)
        rows.append({"step": step, "train_loss": np.nan if train_loss is None else train_loss,
                     "val_loss": val_loss, **{f"dice_{n}": d for n, d in zip(region_names, dice)}})
        spent[0] += time.perf_counter() - began

    settings = {**options["train"], "steps": steps, "batch_size": options["batch_size"],
                "patch_size": options["patch_size"], "lr": lr, "optimizer": "adam", "weight_decay": 0.0,
                "schedule": "constant", "warmup_steps": 0, "val_every": steps, "checkpoint_every": steps}
    with tempfile.TemporaryDirectory(prefix="segzoo-zoo-") as work:
        train(Run(preprocessed=preprocessed, splits=splits, model="small_unet",
                  model_options={"filters": options["filters"]}, seed=seed, out=Path(work), settings=settings,
                  device=device, threads=threads, progress=False, loss_regions=trained, observer=observe))
        seconds = read_json(Path(work) / "timing.json")["seconds"]
    stacked = torch.stack(params)
    sidecar = {"task": task, "lr": lr, "seed": seed, "regions": region_names, "trained_regions": trained,
               "filters": options["filters"], "layout": layout,
               "seconds_per_step": (seconds - spent[0]) / steps,
               "checkpoints": pd.DataFrame(rows).replace({np.nan: None}).to_dict(orient="list")}
    save_checkpoint(out, {"params": stacked}, sidecar)
    return sidecar


def load_run(path: Path) -> tuple[torch.Tensor, dict]:
    stem = Path(path).with_suffix("") if Path(path).suffix == ".safetensors" else Path(path)
    tensors, meta = load_checkpoint(stem)
    if "params" not in tensors or "checkpoints" not in meta:
        raise SegzooError(f"{stem}.safetensors: not a zoo run file (no params/checkpoints)")
    return tensors["params"], meta


def write_index(run_files: list[Path], out_csv: Path, out_summary: Path, max_abs: float) -> dict:
    """One row per checkpoint of every kept run; runs with non-finite or huge weights are dropped."""
    frames, dropped = [], []
    for path in sorted(run_files):
        params, meta = load_run(path)
        finite = bool(torch.isfinite(params).all())
        largest = float(params.abs().max()) if finite else float("inf")
        if not finite or largest > max_abs:
            reason = "non-finite weights" if not finite else f"max |w| {largest:.3g} > {max_abs}"
            dropped.append({"run": run_name(path), "reason": reason})
            continue
        table = pd.DataFrame(meta["checkpoints"])
        table.insert(0, "index", range(len(table)))
        for key in ("seed", "lr", "task"):
            table.insert(0, key, meta[key])
        table.insert(0, "run", run_name(path))
        frames.append(table)
    if not frames:
        raise SegzooError(f"every zoo run was dropped ({'; '.join(d['run'] + ': ' + d['reason'] for d in dropped)})")
    index = pd.concat(frames, ignore_index=True)
    summary = {"runs_kept": len(frames), "runs_dropped": len(dropped), "dropped": dropped,
               "checkpoints": len(index), "checkpoints_per_task": index.groupby("task").size().to_dict()}
    with new_files(out_csv, out_summary):
        write_text(out_csv, index.to_csv(index=False, float_format="%.6g"))
        write_json(out_summary, summary)
    return summary


def run_name(path: Path) -> str:
    return Path(path).name.removesuffix(".safetensors").removesuffix(".json")


def make_scorer(preprocessed: Path, splits: Path, options: dict, data_seed: int, device: str = "cpu"):
    """``scorer(vector [P]) -> Dice per region`` of a zoo-network parameter vector, on the zoo's
    validation batch (the very batch every zoo checkpoint was scored on)."""
    from segzoo.weightgen.params import load_vector

    meta = read_json(Path(preprocessed) / "preprocess.json")
    batch = validation_batch(preprocessed, splits, options["patch_size"], options["val_patches"], data_seed)
    model = build_model("small_unet", len(meta["channels"]), len(meta["regions"]), filters=options["filters"])
    dev = torch.device(device)
    model.to(dev)

    def scorer(vector: torch.Tensor) -> list[float]:
        load_vector(model, vector.to(dev))
        return score(model, batch, dev)[1]

    return scorer
