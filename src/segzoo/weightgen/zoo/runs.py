"""The checkpoint zoo: where runs start, how a run is trained and stored, and the typed zoo G.pt reads.

Starts (``weightgen.init``); start k's random init is drawn from ``(config seed, k)``:

- ``spawn``    start k is a *parent*: the zoo network trained on every region for ``parent_steps`` from
               init k. Every child run of the parent starts from its final weights.
- ``shared``   start k is init k itself, untrained.
- ``per_seed`` every run starts from its own seed's init (k = the run's seed): G.pt's own protocol.

Starts 0 .. ``parents``-1 are the *training parents*: G.pt trains on their children. The next
``heldout_parents.count`` starts are *held-out parents*, grown the same way from their own inits, with
child runs (``heldout_parents.seeds``) on every task: G.pt never sees them, every reported one-shot
network starts from one, and their children are what Adam reaches from them. A run's seed drives only
its data order, augmentation and snapshot steps.

Files under ``results/zoo/<dataset>/``::

    starts/<start>.safetensors|json          params [1, P]; sidecar: how it was made, val Dice
    runs/<arm>/job<group>/                   one Snakemake job: up to members_per_job runs trained at once
        <task>_lr<lr>_seed<s>.safetensors|json   params [n, P] (row 0: the start, last row: final);
                                             sidecar: task, lr, seed, start, val Dice per snapshot
    index.csv, zoo.json                      one row per checkpoint of every kept run; what was dropped

``<arm>`` is the start's name (``parent0``, ``init0``) or ``per_seed``. Single-task runs train one
head (the others keep the start's values); their foreground patches are centred on that region's
label values (lesion runs see lesions in every foreground patch). ``all`` trains every region.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segzoo.data.preprocessed import Preprocessed
from segzoo.errors import SegzooError
from segzoo.io import new_files, output_dir, read_json, write_json, write_text
from segzoo.models.registry import ZOO_NETWORK
from segzoo.checkpoint import load_checkpoint, save_checkpoint
from segzoo.tracking import tracker
from segzoo.models.flat import flatten, layout_of, unflatten
from segzoo.weightgen.zoo.network import network_options, zoo_model
from segzoo.weightgen.zoo.engine import Engine, Member
from segzoo.weightgen.zoo.plan import ALL, ROLES, imported_start, run_file, start_index, start_name, task_regions
from segzoo.weightgen.zoo.scoring import Batch



def random_init(settings: dict, pre: Preprocessed, data_seed: int, k: int) -> torch.Tensor:
    """Start k's random init [P]: the zoo network as nnU-Net initialises it, under seed (data_seed, k)."""
    torch.manual_seed(int(np.random.SeedSequence([data_seed, k, 5]).generate_state(1)[0]))
    return flatten(zoo_model(pre, settings))


def snapshot_steps(steps: int, count: int, seed: int, task_index: int) -> list[int]:
    """0 (the start), ``count`` distinct random steps in 1..steps-1, and ``steps`` (the final one)."""
    rng = np.random.default_rng([seed, task_index, 11])
    inner = rng.choice(np.arange(1, steps), size=min(count, steps - 1), replace=False)
    return [0, *sorted(int(s) for s in inner), steps]


def adam_from(pre: Preprocessed, splits: Path, task: str, *, lr: float, seed: int, start: torch.Tensor, steps: int,
              settings: dict, observe, device: str, threads: int, dtype: torch.dtype = torch.float32) -> float:
    """Adam on the zoo network from ``start`` [P] for ``steps`` on ``task``: one run alone through the pipeline's
    training loop (the zoo engine's reference); ``observe(step, model, train_loss)`` sees every step; returns the
    loop's seconds."""
    from segzoo.train.loop import Run, train

    trained = task_regions(task, pre.region_names)
    centre = None if task == ALL else list(pre.regions[task])
    initial = unflatten(start.clone(), layout_of(zoo_model(pre, settings)))
    loop = {**settings["train"], "steps": steps, "batch_size": settings["batch_size"],
            "patch_size": settings["patch_size"], "lr": lr, "optimizer": "adam", "weight_decay": 0.0,
            "schedule": "constant", "warmup_steps": 0, "val_every": steps, "checkpoint_every": steps}
    with tempfile.TemporaryDirectory(prefix="segzoo-zoo-") as work:
        train(Run(preprocessed=pre, splits=splits, model=ZOO_NETWORK, model_options=network_options(settings),
                  seed=seed, out=Path(work), settings=loop, device=device, threads=threads, progress=False,
                  loss_regions=trained, centre_values=centre, initial_parameters=initial, observer=observe,
                  dtype=dtype))
        return read_json(Path(work) / "timing.json")["seconds"]


def train_start(pre: Preprocessed, splits: Path, mode: str, k: int, *, settings: dict, out: Path, device: str,
                threads: int, data_seed: int) -> dict:
    """Write start k (``<out>.safetensors|json``): init k, trained on every region for ``parent_steps`` (spawn)
    by the zoo engine."""
    regions = pre.region_names
    init = random_init(settings, pre, data_seed, k)
    batch = Batch.of(pre, splits, "val", settings, data_seed)
    engine = Engine(pre, settings, device)
    folder = imported_start(mode)
    if folder is not None and k == 0:  # the imported network is the first parent, as it is
        from segzoo.weightgen.zoo.imported_start import imported_parameters

        params = imported_parameters(folder, zoo_model(pre, settings))
    elif mode == "spawn" or folder is not None:
        steps, final = settings["parent_steps"], {}
        parent = Member(start_name(mode, k), ALL, settings["parent_lr"], k, init, steps, {steps})
        engine.train(pre, splits, [parent], settings=settings, threads=threads,
                     on_snapshot=lambda step, members, weights: final.update(params=weights[0].float()))
        if "params" not in final:
            raise SegzooError(f"{out}: start {parent.name} did not finish its {steps} steps (its loss or weights "
                              "stopped being finite; see above)")
        params = final["params"]
    else:
        params = init
    trained = mode == "spawn" or (folder is not None and k > 0)
    dice = engine.score(params[None], batch.image, batch.label)[1][0]
    sidecar = {"start": start_name(mode, k), "init": mode, "init_index": k, "regions": regions,
               "steps": settings["parent_steps"] if trained else 0, "val_dice": [float(d) for d in dice]}
    save_checkpoint(out, {"params": params[None]}, sidecar)
    return sidecar


def zoo_members(task_lr_seeds: list[dict], starts: dict[int, tuple[torch.Tensor, str]], settings: dict,
                region_names: list[str]) -> list[Member]:
    """Engine members for runs ``{"task", "lr", "seed"}`` from ``starts`` (seed → (start [P], its name))."""
    steps = settings["steps"]
    out = []
    for run in task_lr_seeds:
        task, seed = run["task"], int(run["seed"])
        trained = task_regions(task, region_names)
        keep = set(snapshot_steps(steps, settings["checkpoints"], seed, trained[0] if task != ALL else len(trained)))
        out.append(Member(run_file(task, run["lr"], seed), task, float(run["lr"]), seed, starts[seed][0], steps, keep))
    return out


def train_zoo_job(pre: Preprocessed, splits: Path, runs: list[dict], start_file: Path | None, *,
                  settings: dict, out: Path, device: str, threads: int, data_seed: int,
                  tracking: dict | None = None) -> list[dict]:
    """The runs ``{"task", "lr", "seed"}`` trained at once by the zoo engine into the new folder ``out``: one
    ``<task>_lr<lr>_seed<seed>.safetensors|json`` each (params [n, P]: row 0 the start, the last the final
    step; sidecar: task, lr, seed, start, snapshot steps with their validation loss and Dice). Each snapshot
    is scored when it is taken, the members that keep that step in one batched forward.

    ``start_file``: the start every run begins at (spawn, shared); None: each seed's own init (per_seed).
    ``tracking``: W&B / MLflow (segzoo.tracking), one tracked run per member, named dataset/task/lr/seed/start,
    written after training (the members' curves, step by step, one member at a time).
    """
    region_names = pre.region_names
    for run in runs:
        task_regions(run["task"], region_names)  # refuse an unknown task before any training
    batch = Batch.of(pre, splits, "val", settings, data_seed)
    if start_file is not None:
        tensors, start_sidecar = load_checkpoint(start_file)
        starts = {int(r["seed"]): (tensors["params"][0], start_sidecar["start"]) for r in runs}
    else:
        starts = {int(r["seed"]): (random_init(settings, pre, data_seed, int(r["seed"])), f"init{r['seed']}")
                  for r in runs}
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
        for member, outcome in zip(members, outcomes):
            label = starts[member.seed][1]
            got = kept[member.name]
            if not torch.equal(got["params"][0], member.start.float()):
                raise SegzooError(f"{out}: run {member.name} did not start from its start (internal error)")
            sidecar = {"task": member.task, "lr": member.lr, "seed": member.seed, "start": label,
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
           out: Path, settings: dict, device: str, threads: int, data_seed: int) -> None:
    """One tracked run per member, replayed in step order (a tracking failure ends the job: nothing is kept)."""
    if not tracking:
        return
    for member, sidecar in zip(members, sidecars):
        label = sidecar["start"]
        described = {"dataset": dataset, "task": member.task, "lr": member.lr, "seed": member.seed, "start": label,
                     "zoo": settings, "device": device, "threads": threads, "data_seed": data_seed}
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


def load_run(path: Path) -> tuple[torch.Tensor, dict]:
    stem = Path(path).with_suffix("") if Path(path).suffix == ".safetensors" else Path(path)
    tensors, sidecar = load_checkpoint(stem)
    if "params" not in tensors or "checkpoints" not in sidecar:
        raise SegzooError(f"{stem}.safetensors: not a zoo run file (no params/checkpoints)")
    return tensors["params"], sidecar


def run_name(path: Path) -> str:
    """``<arm>/<task>_lr<lr>/seed<s>`` from ``.../runs/<arm>/job<group>/<task>_lr<lr>_seed<s>.safetensors``."""
    path = Path(path)
    task_lr, seed = path.name.removesuffix(".safetensors").rsplit("_seed", 1)
    return f"{path.parent.parent.name}/{task_lr}/seed{seed}"


def role_of(arm: str, seed: int, heldout_seeds: list[int], parents: int) -> str:
    """heldout (a child of a held-out parent: arm k >= ``parents``; under per_seed a held-out seed, whose init is
    new too), insample (a training parent's child with a held-out seed: G.pt never sees the run, but saw its
    start) or train."""
    if arm != "per_seed" and start_index(arm) >= parents:
        return "heldout"
    if seed in heldout_seeds:
        return "heldout" if arm == "per_seed" else "insample"
    return "train"


def write_index(job_dirs: list[Path], out_csv: Path, out_summary: Path, max_abs: float, heldout_seeds: list[int],
                parents: int) -> dict:
    """One row per checkpoint of every kept run; runs with non-finite or huge weights are dropped."""
    frames, dropped = [], []
    for path in sorted(p for d in job_dirs for p in Path(d).glob("*_seed*.safetensors")):
        params, sidecar = load_run(path)
        name = run_name(path)
        finite = bool(torch.isfinite(params).all())
        largest = float(params.abs().max()) if finite else float("inf")
        if sidecar.get("stopped") or not finite or largest > max_abs:
            reason = (f"stopped early: {sidecar['stopped']}" if sidecar.get("stopped") else
                      "non-finite weights" if not finite else f"max |w| {largest:.3g} > {max_abs}")
            dropped.append({"run": name, "reason": reason})
            continue
        arm = Path(path).parent.parent.name
        table = pd.DataFrame(sidecar["checkpoints"])
        table.insert(0, "index", range(len(table)))
        for key, value in (("seed", sidecar["seed"]), ("lr", sidecar["lr"]), ("task", sidecar["task"]),
                           ("start", sidecar["start"]), ("role", role_of(arm, sidecar["seed"], heldout_seeds, parents)),
                           ("file", str(Path(path).relative_to(Path(path).parents[2]))), ("run", name)):
            table.insert(0, key, value)
        frames.append(table)
    if not frames:
        raise SegzooError(f"every zoo run was dropped ({'; '.join(d['run'] + ': ' + d['reason'] for d in dropped)})")
    index = pd.concat(frames, ignore_index=True)
    runs = index.drop_duplicates("run")
    summary = {"runs_kept": len(frames), "runs_dropped": len(dropped), "dropped": dropped,
               "checkpoints": len(index), "runs_per_role": runs.groupby("role").size().to_dict(),
               "checkpoints_per_task": index[index["role"] == "train"].groupby("task").size().to_dict()}
    with new_files(out_csv, out_summary):
        write_text(out_csv, index.to_csv(index=False, float_format="%.6g"))
        write_json(out_summary, summary)
    return summary


@dataclass
class ZooRun:
    """One run: its checkpoints ``params`` [n, P] (row 0 the start) and their val Dice ``dice`` [n, R]."""

    name: str
    role: str
    task: str
    lr: float
    seed: int
    start: str
    params: torch.Tensor
    dice: np.ndarray
    steps: list[int]
    seconds_per_step: float

    @property
    def start_params(self) -> torch.Tensor:
        return self.params[0]


@dataclass
class Zoo:
    """The kept runs of a zoo (index.csv + run files), with the facts every consumer needs."""

    regions: list[str]
    layout: list[list]
    architecture: dict
    runs: dict[str, ZooRun] = field(default_factory=dict)

    def select(self, role: str, task: str | None = None, start: str | None = None) -> list[ZooRun]:
        return [r for _, r in sorted(self.runs.items())
                if r.role == role and (task is None or r.task == task) and (start is None or r.start == start)]

    def starts(self, role: str) -> dict[str, ZooRun]:
        """Each distinct start of the runs of ``role`` (a parent, or an init), with one of its runs (whose row 0
        holds the start's weights and val Dice), in start order."""
        found = {}
        for run in self.select(role):
            found.setdefault(run.start, run)
        return dict(sorted(found.items(), key=lambda item: (len(item[0]), item[0])))

    @property
    def tasks(self) -> list[str]:
        return sorted({r.task for r in self.runs.values()}, key=lambda t: (t == ALL, t))

    def task_dice(self, dice: np.ndarray, task: str) -> np.ndarray:
        """Mean Dice over the task's regions, for ``dice`` [..., R]."""
        return np.asarray(dice)[..., task_regions(task, self.regions)].mean(-1)


def load_zoo(index_csv: Path, roles: tuple[str, ...] = ROLES) -> Zoo:
    """The runs of ``index.csv`` whose role is in ``roles`` (their files sit beside it under ``runs/``)."""
    if not Path(index_csv).is_file():
        raise SegzooError(f"{index_csv}: missing (run `segzoo zoo-index` first)")
    index = pd.read_csv(index_csv)
    zoo = None
    for name, rows in index.groupby("run", sort=True):
        first = rows.iloc[0]
        if first["role"] not in roles:
            continue
        params, sidecar = load_run(Path(index_csv).parent / "runs" / first["file"])
        if zoo is None:
            zoo = Zoo(sidecar["regions"], sidecar["layout"], sidecar["architecture"])
        dice = np.array([sidecar["checkpoints"][f"dice_{r}"] for r in zoo.regions], dtype=np.float32).T
        zoo.runs[name] = ZooRun(name, first["role"], sidecar["task"], float(sidecar["lr"]), int(sidecar["seed"]),
                                sidecar["start"], params, dice, list(sidecar["checkpoints"]["step"]),
                                sidecar["seconds_per_step"])
    if zoo is None or not zoo.select("train"):
        raise SegzooError(f"{index_csv}: no training runs (every run is held out or dropped)")
    return zoo
