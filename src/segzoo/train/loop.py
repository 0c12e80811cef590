"""The one training loop every model goes through.

Run folder (``out``)::

    state/last.safetensors|json   resumable state: weights, optimizer, step, best so far (rewritten often)
    state/best.safetensors|json   weights with the best validation Dice so far
    best.safetensors|json         declared outputs, written at the end (weights + metrics)
    final.safetensors|json
    metrics.json                  final and best validation Dice per region
    dvclive/                      learning curves (dvclive, without touching dvc.yaml)

A run whose ``state/last`` carries the same fingerprint (settings, model, seed, data, splits and the
segzoo source) resumes from it; otherwise it starts afresh. Every random choice of step k is drawn
from ``(seed, k)``, so a resumed run ends bit-identical to an uninterrupted one on the CPU.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from segzoo import provenance
from segzoo.checkpoint import flatten_state, load_checkpoint, save_checkpoint, unflatten_state
from segzoo.data.loader import PatchBatches
from segzoo.data.preprocessed import Preprocessed
from segzoo.data.splits import fold_split
from segzoo.determinism import make_deterministic
from segzoo.errors import SegzooError
from segzoo.io import read_json, write_json
from segzoo.inference.mirroring import trained_axes
from segzoo.models.blocks import count_parameters
from segzoo.models.contract import side_divisors
from segzoo.models.registry import build_model
from segzoo.tracking import NO_TRACKING, Tracker, tracker
from segzoo.train.distributed import Context
from segzoo.train.loss import build_loss
from segzoo.train.validate import validation_dice

NOT_IN_FINGERPRINT = {"workers", "checkpoint_every"}  # settings that never change the weights
REQUIRED = {"steps", "batch_size", "patch_size", "optimizer", "lr", "weight_decay", "schedule", "val_every",
            "checkpoint_every", "foreground_fraction", "sw_batch_size", "workers", "bf16", "augment"}


@dataclass
class Run:
    """Everything one training run needs; ``settings`` is the config's ``train`` section."""

    preprocessed: Preprocessed
    splits: Path
    model: str
    model_options: dict
    seed: int
    out: Path
    settings: dict
    device: str = "cpu"
    threads: int = 1
    progress: bool = True
    loss_regions: list[int] | None = None  # train only these region channels (None: all)
    centre_values: list[int] | None = None  # foreground patches centred on these label values (None: any label)
    initial_parameters: dict[str, torch.Tensor] | None = None  # start here instead of the seed's random init
    observer: Callable[[int, torch.nn.Module, float | None], None] | None = None
    """Called with (0, model, None) before the first step and (step, model, train loss) after each one."""
    fold: int | None = None  # cross-validation: train on this fold's train cases, validate on its val cases
    tracking: dict | None = None  # W&B / MLflow (segzoo.tracking); never part of the fingerprint: it changes no weight
    dtype: torch.dtype = torch.float32  # of the weights and batches; float64 serves equivalence checks (zoo engine)


def fingerprint(run: Run) -> str:
    """What decides the weights: if any of it changes, a saved state must not be resumed."""
    settings = {k: v for k, v in run.settings.items() if k not in NOT_IN_FINGERPRINT}
    threads = run.threads if run.device == "cpu" else None  # CPU results depend on the thread count
    parameters = [part for name, tensor in sorted((run.initial_parameters or {}).items())
                  for part in (name.encode(), tensor.detach().cpu().contiguous().numpy().tobytes())]
    return provenance.fingerprint(
        {"model": run.model, "options": run.model_options, "seed": run.seed, "loss_regions": run.loss_regions,
         "centre_values": run.centre_values, "processes": Context.from_env().world, "settings": settings,
         "threads": threads, "device": run.device, **({"fold": run.fold} if run.fold is not None else {}),
         **({"dtype": str(run.dtype)} if run.dtype != torch.float32 else {})},
        run.preprocessed.plan_bytes, run.splits.read_bytes(), *parameters)


def learning_rate(step: int, total: int, settings: dict) -> float:
    """Schedule as a pure function of the step (nothing to checkpoint): poly (nnU-Net), cosine or constant."""
    lr, kind = settings["lr"], settings["schedule"]
    warmup = settings.get("warmup_steps", 0)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "poly":
        return lr * (1 - progress) ** 0.9
    if kind == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * progress))
    return lr


def build_optimizer(model: torch.nn.Module, settings: dict) -> torch.optim.Optimizer:
    name, lr, wd = settings["optimizer"], settings["lr"], settings["weight_decay"]
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd, momentum=0.99, nesterov=True)
    raise SegzooError(f"train.optimizer: unknown optimizer {name!r} (adamw, adam, sgd)")


def train(run: Run) -> dict:
    """Train (or resume) one model; write checkpoints and metrics under ``run.out``; return the metrics."""
    s = run.settings
    missing = sorted(REQUIRED - set(s))
    if missing:
        raise SegzooError(f"train settings lack {', '.join(missing)} (the config's train section has them all)")
    unplanned = [k for k in ("patch_size", "batch_size") if s[k] is None]
    if unplanned:
        raise SegzooError(f"train.{' and train.'.join(unplanned)} null: planned values come from plans.json "
                          "(`segzoo train --plans`, written by `segzoo plan`), or set them in the config")
    make_deterministic(run.seed, run.threads)
    device = torch.device(run.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SegzooError("device cuda: torch sees no usable GPU here (a CPU-only build, or no driver); "
                          "set device: cpu")
    ctx = Context.from_env()
    if ctx.active and s["batch_size"] % ctx.world:
        raise SegzooError(f"train.batch_size {s['batch_size']}: with {ctx.world} processes it must be a multiple "
                          f"of {ctx.world} (each process trains on an equal slice of the batch)")
    if ctx.active and run.observer is not None:
        raise SegzooError("an observed run (a zoo run) trains in one process; it was started with "
                          f"{ctx.world} (torchrun)")
    device = ctx.start(device)
    try:
        with _tracker(run, ctx) as track:
            return _train(run, ctx, device, track)
    finally:
        ctx.stop()


def _tracker(run: Run, ctx: Context):
    """The run's W&B / MLflow runs (process 0 only; a no-op when tracking is off), named dataset/model/seed."""
    dataset = run.preprocessed.dataset
    fold = f"/fold{run.fold}" if run.fold is not None else ""
    settings = {"dataset": dataset, "model": run.model, "model_options": run.model_options, "seed": run.seed,
                "fold": run.fold, "train": run.settings, "device": run.device, "threads": run.threads,
                "processes": ctx.world, "out": str(run.out)}
    return tracker(run.tracking if ctx.main else None, f"{dataset}/{run.model}/seed{run.seed}{fold}", settings,
                   kind="train", group=dataset)


def _train(run: Run, ctx: Context, device: torch.device, track: Tracker = NO_TRACKING) -> dict:
    s = run.settings
    pre = run.preprocessed
    splits = fold_split(read_json(run.splits), run.fold, run.splits)
    region_names = pre.region_names
    model = build_model(run.model, len(pre.channels), len(region_names), **run.model_options)
    need = side_divisors(model)
    if any(p % d for p, d in zip(s["patch_size"], need)) or \
            (max(need) > 1 and np.prod([p // d for p, d in zip(s["patch_size"], need)]) < 2):
        sides = need[0] if len(set(need)) == 1 else "×".join(map(str, need))
        raise SegzooError(f"train.patch_size {s['patch_size']}: for model {run.model} every side must be a multiple "
                          f"of {sides}, and the coarsest level must keep more than one voxel (instance norm)")
    if run.initial_parameters is not None:
        _load_parameters(model, run.initial_parameters)
    model.to(device, dtype=run.dtype)
    optimizer = build_optimizer(model, s)
    loss_fn = build_loss(run.loss_regions, ctx.global_sum if ctx.active else None)
    key = fingerprint(run)
    state_dir = run.out / "state"
    start, best, losses = 0, {"dice": -1.0, "step": None, "per_region": None}, []
    resumed = _resume(state_dir, key, model, optimizer)
    ctx.barrier()  # every process has read the state before process 0 may remove it
    if resumed:
        start, best, losses = resumed
        if ctx.main:
            _truncate_curves(run.out / "dvclive", start)  # rows logged after the state was saved
            print(f"resuming {run.out} at step {start}", file=sys.stderr)
    elif state_dir.exists() and ctx.main:
        shutil.rmtree(state_dir)  # state of another configuration or code version
    net = ctx.wrap(model, device)  # DDP averages gradients over processes; `model` stays the plain module
    total = s["steps"]
    batches = PatchBatches(pre, splits["train"], s["patch_size"], s["batch_size"],
                           foreground_fraction=s["foreground_fraction"], seed=run.seed, augment=s["augment"],
                           centre_values=run.centre_values)
    loader = DataLoader(batches, batch_size=None, sampler=range(start, total), num_workers=s["workers"],
                        pin_memory=device.type == "cuda", persistent_workers=False)
    # Learning curves (not dvc.yaml); an observed run (a zoo run) keeps what its observer records instead.
    live = _live(run.out, resume=bool(resumed)) if ctx.main and run.observer is None else None
    autocast = device.type == "cuda" and s["bf16"]
    sidecar = {"model": run.model, "model_options": run.model_options, "seed": run.seed, "config_hash": key,
               **({"fold": run.fold} if run.fold is not None else {}),
               "regions": pre.regions, "channels": pre.channels, "patch_size": s["patch_size"],
               "parameters": count_parameters(model),
               "mirror_axes": trained_axes(s["augment"]),  # test-time mirroring may use these flips (predict --tta)
               # what `segzoo predict` needs to preprocess new images exactly as these were
               "preprocessing": {"target_spacing": pre.spacing, "label_values": pre.label_values,
                                 "normalization": pre.normalization, "spacing_range": pre.spacing_range}}
    data_wait, began = 0.0, time.perf_counter()
    bar = tqdm(total=total, initial=start, desc=f"{run.model} seed {run.seed}", disable=not (run.progress and ctx.main),
               mininterval=1.0 if sys.stderr.isatty() else 30.0, file=sys.stderr)
    model.train()
    if run.observer is not None and start == 0:
        run.observer(0, model, None)
    fetch_start = time.perf_counter()
    for step, batch in zip(range(start, total), loader):
        data_wait += time.perf_counter() - fetch_start
        torch.manual_seed(int(np.random.SeedSequence([run.seed, step]).generate_state(1)[0]))  # dropout etc.
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total, s)
        image = ctx.shard(batch["image"]).to(device, run.dtype, non_blocking=True)
        label = ctx.shard(batch["label"]).to(device, run.dtype, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            outputs = net(image)
            loss = loss_fn(outputs, label)
            aux = model.auxiliary_loss(label)
            if aux is not None:
                loss = loss + aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))  # since the last validation
        train_loss = losses[-1]
        done = step + 1
        bar.update(1)
        track.log_metrics(done, {"train/loss": train_loss, "train/lr": optimizer.param_groups[0]["lr"]})
        if run.observer is not None:
            run.observer(done, model, losses[-1])
        validate = ctx.main and (done % s["val_every"] == 0 or done == total)
        if validate:
            dice = validation_dice(model, pre, splits["val"], patch_size=s["patch_size"],
                                   sw_batch_size=s["sw_batch_size"], device=device, autocast=autocast)
            per_region = {n: _nanmean(dice[:, i]) for i, n in enumerate(region_names)}
            mean = _nanmean(dice) or 0.0
            train_loss = float(np.mean(losses))
            losses = []
            if live is not None:
                _log(live, done, train_loss, mean, per_region)
            track.log_metrics(done, {"val/dice": mean, **{f"val/dice_{n}": v for n, v in per_region.items()},
                                     "time/seconds": time.perf_counter() - began,
                                     "time/data_wait_seconds": data_wait})
            bar.set_postfix(loss=f"{train_loss:.3f}", dice=f"{mean:.3f}")
            if mean > best["dice"]:
                best = {"dice": mean, "step": done, "per_region": per_region}
                save_checkpoint(state_dir / "best", _model_tensors(model),
                                {**sidecar, "step": done, "metrics": {"val_dice": mean, **_prefixed(per_region)}})
        if ctx.main and (validate or done % s["checkpoint_every"] == 0):
            _save_state(state_dir / "last", model, optimizer, {**sidecar, "step": done, "best": best,
                                                                "loss_window": losses, "train_loss": train_loss})
        fetch_start = time.perf_counter()
    bar.close()
    if not ctx.main:
        ctx.barrier()  # process 0 is writing the outputs
        return {}
    elapsed, finished = time.perf_counter() - began, time.time()
    timing = {"seconds": elapsed, "data_wait_fraction": data_wait / max(elapsed, 1e-9), "processes": ctx.world,
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "started_at": finished - elapsed,
              "finished_at": finished}
    if live is not None:
        live.end()
    metrics = _finish(run, state_dir, best, timing)
    if track.enabled:
        try:
            track.log_summary({**metrics, **timing, "config_hash": key, "resumed_from_step": start})
            track.log_checkpoint(run.out / "final.safetensors")
            track.finish()
        except SegzooError:  # the run's outputs go too; its state stays, so a rerun resumes at the end
            for name in ("final.safetensors", "final.json", "best.safetensors", "best.json", "metrics.json",
                         "timing.json"):
                (run.out / name).unlink(missing_ok=True)
            raise
    ctx.barrier()
    return metrics


def _load_parameters(model: torch.nn.Module, parameters: dict[str, torch.Tensor]) -> None:
    """Copy ``parameters`` (every one of ``model.named_parameters()``, same shapes) into ``model``."""
    own = dict(model.named_parameters())
    if set(own) != set(parameters) or any(own[n].shape != parameters[n].shape for n in own):
        raise SegzooError("initial parameters do not match the model: names or shapes differ")
    with torch.no_grad():
        for name, p in own.items():
            p.copy_(parameters[name])


def _resume(state_dir: Path, key: str, model, optimizer):
    if not (state_dir / "last.json").exists():
        return None
    try:
        tensors, state = load_checkpoint(state_dir / "last")
    except SegzooError as e:
        print(f"not resuming: {e}", file=sys.stderr)
        return None
    if state.get("config_hash") != key:
        print(f"not resuming {state_dir}: it was made with other settings, data or code", file=sys.stderr)
        return None
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(unflatten_state(state["optimizer"], tensors))
    return state["step"], state["best"], state["loss_window"]


def _truncate_curves(folder: Path, step: int) -> None:
    """Drop dvclive rows past ``step``: a resumed run logs them again, as an uninterrupted run would once."""
    for tsv in folder.glob("plots/metrics/**/*.tsv"):
        lines = tsv.read_text().splitlines()
        kept = lines[:1] + [line for line in lines[1:] if int(line.split("\t")[0]) <= step]
        if len(kept) != len(lines):
            tsv.write_text("\n".join(kept) + "\n")


def _model_tensors(model) -> dict[str, torch.Tensor]:
    """State-dict tensors under ``model.``; copies, because safetensors refuses aliased tensors (MONAI's
    and nnU-Net's networks list weights under two names)."""
    return {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}


def _save_state(stem: Path, model, optimizer, state: dict) -> None:
    tensors = _model_tensors(model)
    skeleton = flatten_state(optimizer.state_dict(), "optim", tensors)
    save_checkpoint(stem, tensors, {**state, "optimizer": skeleton})


def _finish(run: Run, state_dir: Path, best: dict, timing: dict) -> dict:
    """Declared outputs from the state: best weights, final weights (no optimizer), metrics."""
    tensors, last = load_checkpoint(state_dir / "last")
    final = {k: v for k, v in tensors.items() if k.startswith("model.")}
    keep = {k: last[k] for k in ("model", "model_options", "seed", "config_hash", "regions", "channels", "patch_size",
                                 "parameters", "mirror_axes", "preprocessing", "step", "fold") if k in last}
    save_checkpoint(run.out / "final", final, {**keep, "metrics": {"train_loss": last["train_loss"]}})
    best_tensors, best_meta = load_checkpoint(state_dir / "best")
    save_checkpoint(run.out / "best", best_tensors, {k: v for k, v in best_meta.items() if k != "tensors_sha256"})
    metrics = {"model": run.model, "seed": run.seed, "steps": last["step"], "best_step": best["step"],
               "best_val_dice": best["dice"], "best_val_dice_per_region": best["per_region"],
               "final_train_loss": last["train_loss"], "parameters": last["parameters"]}
    write_json(run.out / "metrics.json", metrics, overwrite=True)
    write_json(run.out / "timing.json", timing, overwrite=True)  # kept apart: metrics must be reproducible
    return metrics


def _live(out: Path, resume: bool):
    from dvclive import Live

    class QuietLive(Live):
        """dvclive's Live, minus one side effect: outside a DVC repo but inside a git one, Live runs
        ``dvc init`` there. segzoo only wants the metric files, so it skips DVC set-up in that case."""

        def _init_dvc(self):
            if any((p / ".dvc").is_dir() for p in (Path.cwd(), *Path.cwd().parents)):
                super()._init_dvc()

    return QuietLive(dir=str(out / "dvclive"), resume=resume, report=None, dvcyaml=False, save_dvc_exp=False)


def _log(live, step: int, train_loss: float, mean: float, per_region: dict) -> None:
    live.step = step
    live.log_metric("train/loss", train_loss)
    live.log_metric("val/dice", mean)
    for name, value in per_region.items():
        if value is not None:
            live.log_metric(f"val/dice_{name}", value)
    live.next_step()


def _nanmean(values: np.ndarray) -> float | None:
    """Mean over the non-NaN entries (cases where the region was absent and not predicted are left out)."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def _prefixed(per_region: dict) -> dict:
    return {f"val_dice_{k}": v for k, v in per_region.items()}
