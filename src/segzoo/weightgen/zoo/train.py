"""Training the zoo: its starts (one job grows every parent at once) and its runs (jobs of many runs at once).

A start is written as ``starts/<start>.safetensors|json`` (params [1, P]; sidecar: how it was made, val Dice). A
run begins at its start and is trained by the zoo engine (:mod:`segzoo.weightgen.zoo.engine`) for ``steps`` Adam
steps on its task; it keeps its start (row 0), ``checkpoints`` snapshots at random steps, the ``budgets`` steps and
its final step, each scored on the fixed validation patches when taken (:mod:`segzoo.weightgen.zoo.runs` reads the
files back). Single-task runs train one head (the others keep the start's values); their foreground patches are
centred on that region's label values (lesion runs see lesions in every foreground patch). ``all`` trains every
region. A run's seed drives only its data order, augmentation and snapshot steps.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segzoo.checkpoint import load_checkpoint, save_checkpoint
from segzoo.data.preprocessed import Preprocessed
from segzoo.errors import SegzooError
from segzoo.io import output_dir, read_json, write_json
from segzoo.models.flat import flatten, layout_of, unflatten
from segzoo.models.registry import ZOO_NETWORK
from segzoo.tracking import tracker
from segzoo.weightgen.zoo.engine import Engine, Member
from segzoo.weightgen.zoo.network import zoo_model
from segzoo.weightgen.zoo.plan import ALL, grown, imported_start, run_file, start_index, task_regions
from segzoo.weightgen.zoo.schedule import FILE as SCHEDULE, patch_from_plans, pilot_steps, resolve
from segzoo.weightgen.zoo.scoring import Batch
from segzoo.weightgen.zoo.settings import ZooSettings


def random_init(settings: ZooSettings, pre: Preprocessed, data_seed: int, k: int) -> torch.Tensor:
    """Init k [P]: the zoo network as nnU-Net initialises it, under seed (data_seed, k)."""
    torch.manual_seed(int(np.random.SeedSequence([data_seed, k, 5]).generate_state(1)[0]))
    return flatten(zoo_model(pre, settings))


def snapshot_steps(steps: int, count: int, seed: int, task_index: int, budgets: list[int] = ()) -> list[int]:
    """0 (the start), ``count`` distinct random steps in 1..steps-1, the ``budgets`` below ``steps``, and ``steps``
    (the final one)."""
    rng = np.random.default_rng([seed, task_index, 11])
    inner = rng.choice(np.arange(1, steps), size=min(count, steps - 1), replace=False)
    kept = {int(s) for s in inner} | {b for b in budgets if b < steps}
    return [0, *sorted(kept), steps]


def adam_from(pre: Preprocessed, splits: Path, task: str, *, lr: float, seed: int, start: torch.Tensor, steps: int,
              settings: ZooSettings, observe, device: str, threads: int, dtype: torch.dtype = torch.float32) -> float:
    """Adam on the zoo network from ``start`` [P] for ``steps`` on ``task``: one run alone through the pipeline's
    training loop (the zoo engine's reference); ``observe(step, model, train_loss)`` sees every step; returns the
    loop's seconds."""
    from segzoo.train.loop import Run, train

    trained = task_regions(task, pre.region_names)
    centre = None if task == ALL else list(pre.regions[task])
    initial = unflatten(start.clone(), layout_of(zoo_model(pre, settings)))
    loop = {**settings.train, "steps": steps, "batch_size": settings.batch_size,
            "patch_size": settings.patch_size, "lr": lr, "optimizer": "adam", "weight_decay": 0.0,
            "schedule": "constant", "warmup_steps": 0, "val_every": steps, "checkpoint_every": steps}
    with tempfile.TemporaryDirectory(prefix="segzoo-zoo-") as work:
        train(Run(preprocessed=pre, splits=splits, model=ZOO_NETWORK, model_options=settings.network_options,
                  seed=seed, out=Path(work), settings=loop, device=device, threads=threads, progress=False,
                  loss_regions=trained, centre_values=centre, initial_parameters=initial, observer=observe,
                  dtype=dtype))
        return read_json(Path(work) / "timing.json")["seconds"]


def train_starts(pre: Preprocessed, splits: Path, mode: str, names: list[str], *, settings: ZooSettings, out: Path,
                 device: str, threads: int, data_seed: int, plans: Path | None = None) -> list[dict]:
    """Write every start of ``names`` into the new folder ``out`` (``<start>.safetensors|json``): ``init<k>`` is init
    k itself; ``parent<k>`` is init k trained on every region for ``parent_steps`` (every parent at once, by the zoo
    engine), except parent 0 under ``imported:<folder>``, which is the imported network as it is. Beside them the
    zoo's schedule (:mod:`segzoo.weightgen.zoo.schedule`): its patch (from ``plans`` when ``patch_size`` is None)
    and its runs' length (a pilot run until val Dice stops improving, when ``plateau`` is set)."""
    schedule = {"patch_size": settings.patch_size, "patch_source": "config"}
    if settings.patch_size is None:
        if plans is None:
            raise SegzooError("weightgen.patch_size is null: the zoo's patch comes from the plan (pass --plans)")
        schedule = {"patch_size": patch_from_plans(plans, settings), "patch_source": str(plans)}
        settings = dataclasses.replace(settings, patch_size=schedule["patch_size"])
    batch = Batch.of(pre, splits, "val", settings, data_seed)
    engine = Engine(pre, settings, device)
    folder = imported_start(mode)
    params = {name: random_init(settings, pre, data_seed, start_index(name)) for name in names}
    weightgen = {"init": mode}
    growing = [Member(name, ALL, settings.parent_lr, start_index(name), params[name], settings.parent_steps,
                      {settings.parent_steps}) for name in names if grown(weightgen, name)]
    if folder is not None and "parent0" in names:  # the imported network is the first parent, as it is
        from segzoo.weightgen.zoo.imported_start import imported_parameters

        params["parent0"] = imported_parameters(folder, zoo_model(pre, settings))
    finals = {}
    if growing:
        def keep(step, members, weights):
            finals.update({m.name: w.float() for m, w in zip(members, weights)})

        outcomes = engine.train(pre, splits, growing, settings=settings, threads=threads, on_snapshot=keep)
        stopped = [o for o in outcomes if o.name not in finals]
        if stopped:
            raise SegzooError(f"{out}: start(s) {', '.join(o.name for o in stopped)} did not finish their "
                              f"{settings.parent_steps} steps ({'; '.join(str(o.stopped) for o in stopped)})")
        params.update(finals)
    dice = engine.score(torch.stack([params[n] for n in names]), batch.image, batch.label)[1]
    schedule["steps"] = settings.steps
    if settings.plateau:
        pilot = names[0]

        def train_member(steps: int, keep: set[int]) -> dict[int, torch.Tensor]:
            got = {}
            engine.train(pre, splits, [Member(f"{pilot}_pilot", ALL, settings.lrs[0], 0, params[pilot], steps, keep)],
                         settings=settings, threads=threads,
                         on_snapshot=lambda step, members, weights: got.update({step: weights[0].float()}))
            return got

        def score(vectors: torch.Tensor) -> np.ndarray:
            return engine.score(vectors, batch.image, batch.label)[1].mean(1).numpy()

        schedule.update(pilot_steps(train_member, score, settings), pilot_start=pilot)
    sidecars = []
    with output_dir(out) as tmp:
        write_json(tmp / SCHEDULE, schedule)
        for name, d in zip(names, dice):
            sidecar = {"start": name, "init": mode, "init_index": start_index(name), "regions": pre.region_names,
                       "steps": settings.parent_steps if name in finals else 0, "val_dice": [float(v) for v in d]}
            save_checkpoint(tmp / name, {"params": params[name][None]}, sidecar)
            sidecars.append(sidecar)
    return sidecars


def zoo_members(runs: list[dict], starts: dict[str, torch.Tensor], settings: ZooSettings,
                region_names: list[str]) -> list[Member]:
    """Engine members for runs ``{"start", "task", "lr", "seed"}`` from ``starts`` (name → params [P])."""
    out = []
    for run in runs:
        task, seed = run["task"], int(run["seed"])
        trained = task_regions(task, region_names)
        keep = set(snapshot_steps(settings.steps, settings.checkpoints, seed,
                                  trained[0] if task != ALL else len(trained), settings.budgets))
        out.append(Member(run_file(run["start"], task, run["lr"], seed), task, float(run["lr"]), seed,
                          starts[run["start"]], settings.steps, keep))
    return out


def train_zoo_job(pre: Preprocessed, splits: Path, runs: list[dict], starts_dir: Path, *, settings: ZooSettings,
                  out: Path, device: str, threads: int, data_seed: int, tracking: dict | None = None) -> list[dict]:
    """The runs ``{"start", "task", "lr", "seed"}`` trained at once by the zoo engine into the new folder ``out``:
    one ``<start>_<task>_lr<lr>_seed<seed>.safetensors|json`` each (params [n, P]: row 0 the start, the last the
    final step; sidecar: start, task, lr, seed, snapshot steps with their validation loss and Dice). Each snapshot
    is scored when it is taken, the members that keep that step in one batched forward. ``starts_dir`` holds
    ``<start>.safetensors`` for every start the runs name.

    ``tracking``: W&B / MLflow (segzoo.tracking), one tracked run per member, named dataset/task/lr/seed/start,
    written after training (the members' curves, step by step, one member at a time).
    """
    region_names = pre.region_names
    for run in runs:
        task_regions(run["task"], region_names)  # refuse an unknown task before any training
    settings = resolve(settings, starts_dir)
    starts = {}
    for name in dict.fromkeys(r["start"] for r in runs):
        file = Path(starts_dir) / f"{name}.safetensors"
        if not file.is_file():
            raise SegzooError(f"{file}: missing (the zoo's starts are written by `segzoo zoo-starts`)")
        starts[name] = load_checkpoint(file.with_suffix(""))[0]["params"][0]
    batch = Batch.of(pre, splits, "val", settings, data_seed)
    members = zoo_members(runs, starts, settings, region_names)
    engine = Engine(pre, settings, device)
    kept = {m.name: {"params": [], "rows": []} for m in members}
    curves = {m.name: [] for m in members}
    spent = [0.0]

    def snapshot(step: int, group: list[Member], weights: torch.Tensor) -> None:
        began = time.perf_counter()
        losses, dice, _ = engine.score(weights, batch.image, batch.label)
        for member, vector, loss, d in zip(group, weights, losses, dice):
            train_loss = curves[member.name][-1] if step else np.nan
            kept[member.name]["params"].append(vector.float())
            kept[member.name]["rows"].append({"step": step, "train_loss": train_loss, "val_loss": float(loss),
                                              **{f"dice_{n}": float(v) for n, v in zip(region_names, d)}})
        spent[0] += time.perf_counter() - began

    def step_losses(step: int, group: list[Member], losses: torch.Tensor) -> None:
        for member, loss in zip(group, losses.tolist()):
            curves[member.name].append(loss)

    began = time.perf_counter()
    outcomes = engine.train(pre, splits, members, settings=settings, threads=threads, on_snapshot=snapshot,
                            on_step=step_losses)
    member_steps = sum(o.steps_done for o in outcomes)
    per_step = (time.perf_counter() - began - spent[0]) / max(member_steps, 1)
    sidecars = []
    with output_dir(out) as tmp:
        for run, member, outcome in zip(runs, members, outcomes):
            got = kept[member.name]
            if not torch.equal(got["params"][0], member.start.float()):
                raise SegzooError(f"{out}: run {member.name} did not start from its start (internal error)")
            sidecar = {"task": member.task, "lr": member.lr, "seed": member.seed, "start": run["start"],
                       "regions": region_names, "trained_regions": task_regions(member.task, region_names),
                       "architecture": engine.template.architecture, "layout": engine.layout,
                       # the job's training seconds (snapshot scoring excluded) per step of one member
                       "seconds_per_step": per_step, "members_in_job": len(members),
                       "stopped": outcome.stopped,
                       "checkpoints": pd.DataFrame(got["rows"]).replace({np.nan: None}).to_dict(orient="list")}
            save_checkpoint(tmp / member.name, {"params": torch.stack(got["params"])}, sidecar)
            sidecars.append(sidecar)
        _track(tracking, pre.dataset, members, sidecars, curves, out, settings, device, threads, data_seed)
    return sidecars


def _track(tracking: dict | None, dataset: str, members: list[Member], sidecars: list[dict], curves: dict,
           out: Path, settings: ZooSettings, device: str, threads: int, data_seed: int) -> None:
    """One tracked run per member, replayed in step order (a tracking failure ends the job: nothing is kept)."""
    if not tracking:
        return
    for member, sidecar in zip(members, sidecars):
        label = sidecar["start"]
        described = {"dataset": dataset, "task": member.task, "lr": member.lr, "seed": member.seed, "start": label,
                     "zoo": settings.to_json(), "device": device, "threads": threads, "data_seed": data_seed}
        with tracker(tracking, f"{dataset}/{member.task}/lr{member.lr:g}/seed{member.seed}/{label}", described,
                     kind="zoo", group=dataset) as track:
            snapshots = {row_step: i for i, row_step in enumerate(sidecar["checkpoints"]["step"])}
            table = sidecar["checkpoints"]
            for step in range(len(curves[member.name]) + 1):
                if step:
                    track.log_metrics(step, {"train/loss": curves[member.name][step - 1]})
                if step in snapshots:
                    i = snapshots[step]
                    track.log_metrics(step, {"val/loss": table["val_loss"][i],
                                             **{f"val/dice_{n}": table[f"dice_{n}"][i] for n in sidecar["regions"]}})
            final = {k: v[-1] for k, v in table.items() if k.startswith(("dice_", "val_loss"))}
            track.log_summary({"seconds_per_step": sidecar["seconds_per_step"], "final": final})
            track.log_checkpoint(out / f"{member.name}.safetensors")  # where the job's folder puts it
