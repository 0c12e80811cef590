"""The checkpoint zoo: where runs start, how a run is trained and stored, and the typed zoo G.pt reads.

Starts (``weightgen.init``); start k's random init is drawn from ``(config seed, k)``:

- ``spawn``    start k is a *parent*: the zoo network trained on every region for ``parent_steps`` from
               init k. Every child run of the parent starts from its final weights.
- ``shared``   start k is init k itself, untrained.
- ``per_seed`` every run starts from its own seed's init (k = the run's seed): G.pt's own protocol.

Starts 0 .. ``parents``-1 carry the zoo; the next ``stress.parents`` starts are *held-out parents*
(grown the same way from new inits, with a few child runs) for the stress test. A run's seed drives
only its data order, augmentation and snapshot steps.

Files under ``results/zoo/<dataset>/``::

    starts/<start>.safetensors|json          params [1, P]; sidecar: how it was made, val Dice
    runs/<arm>/<task>_lr<lr>_g<group>/       one Snakemake job: several runs (one per seed)
        seed<s>.safetensors|json             params [n, P] (row 0: the start, last row: final);
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
from segzoo.tracking import NO_TRACKING, Tracker, tracker
from segzoo.models.flat import flatten, layout_of, load_vector, unflatten
from segzoo.weightgen.network import network_options, zoo_model
from segzoo.weightgen.plan import ALL, imported_start, start_index, start_name
from segzoo.weightgen.scoring import Batch, loss_and_dice

ROLES = ("train", "heldout", "stress")


def task_regions(task: str, region_names: list[str]) -> list[int]:
    """Channel indices a task trains: one region, or every region for ``all``."""
    if task == ALL:
        return list(range(len(region_names)))
    if task not in region_names:
        raise SegzooError(f"weightgen.tasks: {task!r} is neither a region of this dataset "
                          f"({', '.join(region_names)}) nor 'all'")
    return [region_names.index(task)]


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
              settings: dict, observe, device: str, threads: int) -> float:
    """Adam on the zoo network from ``start`` [P] for ``steps`` on ``task`` (the pipeline's training loop);
    ``observe(step, model, train_loss)`` sees every step; returns the loop's seconds."""
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
                  loss_regions=trained, centre_values=centre, initial_parameters=initial, observer=observe))
        return read_json(Path(work) / "timing.json")["seconds"]


def train_start(pre: Preprocessed, splits: Path, mode: str, k: int, *, settings: dict, out: Path, device: str,
                threads: int, data_seed: int) -> dict:
    """Write start k (``<out>.safetensors|json``): init k, trained on every region for ``parent_steps`` (spawn)."""
    regions = pre.region_names
    init = random_init(settings, pre, data_seed, k)
    batch = Batch.of(pre, splits, "val", settings, data_seed)
    final = {}

    def keep(step, model, loss):
        if step == settings["parent_steps"]:
            final["params"], final["dice"] = flatten(model), loss_and_dice(model, batch, torch.device(device))[1]

    folder = imported_start(mode)
    if folder is not None and k == 0:  # the imported network is the first parent, as it is
        from segzoo.weightgen.imported_start import imported_parameters

        params = imported_parameters(folder, zoo_model(pre, settings))
        model = load_vector(zoo_model(pre, settings), params).to(device)
        final = {"params": params, "dice": loss_and_dice(model, batch, torch.device(device))[1]}
    elif mode == "spawn" or folder is not None:
        adam_from(pre, splits, ALL, lr=settings["parent_lr"], seed=k, start=init, steps=settings["parent_steps"],
                  settings=settings, observe=keep, device=device, threads=threads)
    else:
        model = load_vector(zoo_model(pre, settings), init).to(device)
        final = {"params": init, "dice": loss_and_dice(model, batch, torch.device(device))[1]}
    trained = mode == "spawn" or (folder is not None and k > 0)
    sidecar = {"start": start_name(mode, k), "init": mode, "init_index": k, "regions": regions,
               "steps": settings["parent_steps"] if trained else 0, "val_dice": final["dice"]}
    save_checkpoint(out, {"params": final["params"][None]}, sidecar)
    return sidecar


def train_zoo_run(pre: Preprocessed, splits: Path, task: str, lr: float, seed: int, start: torch.Tensor, *,
                  start_label: str, settings: dict, out: Path, device: str, threads: int, batch: Batch,
                  track: Tracker = NO_TRACKING) -> dict:
    """Train one zoo run from ``start`` [P] and write ``<out>.safetensors|json``; return the sidecar. ``track``
    gets the loss of every step and the validation loss and Dice of every snapshot."""
    region_names = pre.region_names
    trained = task_regions(task, region_names)
    steps = settings["steps"]
    wanted = set(snapshot_steps(steps, settings["checkpoints"], seed, trained[0] if task != ALL else len(trained)))
    rows, params, spent, layout = [], [], [0.0], []
    dev = torch.device(device)

    def observe(step: int, model: torch.nn.Module, train_loss: float | None) -> None:
        if train_loss is not None:
            track.log_metrics(step, {"train/loss": train_loss})
        if step not in wanted:
            return
        began = time.perf_counter()
        val_loss, dice = loss_and_dice(model, batch, dev)
        track.log_metrics(step, {"val/loss": val_loss, **{f"val/dice_{n}": d for n, d in zip(region_names, dice)}})
        params.append(flatten(model))
        layout[:] = layout_of(model)
        rows.append({"step": step, "train_loss": np.nan if train_loss is None else train_loss,
                     "val_loss": val_loss, **{f"dice_{n}": d for n, d in zip(region_names, dice)}})
        spent[0] += time.perf_counter() - began

    seconds = adam_from(pre, splits, task, lr=lr, seed=seed, start=start, steps=steps, settings=settings,
                        observe=observe, device=device, threads=threads)
    if not torch.equal(params[0], start):
        raise SegzooError(f"{out}: the run did not start from its start (internal error)")
    sidecar = {"task": task, "lr": lr, "seed": seed, "start": start_label, "regions": region_names,
               "trained_regions": trained, "architecture": zoo_model(pre, settings).architecture, "layout": layout,
               "seconds_per_step": (seconds - spent[0]) / steps,
               "checkpoints": pd.DataFrame(rows).replace({np.nan: None}).to_dict(orient="list")}
    save_checkpoint(out, {"params": torch.stack(params)}, sidecar)
    return sidecar


def train_zoo_job(pre: Preprocessed, splits: Path, task: str, lr: float, seeds: list[int], start_file: Path | None, *,
                  settings: dict, out: Path, device: str, threads: int, data_seed: int,
                  tracking: dict | None = None) -> list[dict]:
    """Several runs in one job (one per seed) into the new folder ``out``: ``seed<s>.safetensors|json``.

    ``start_file``: the start every run begins at (spawn, shared); None: each seed's own init (per_seed).
    ``tracking``: W&B / MLflow (segzoo.tracking), one tracked run per seed, named dataset/task/lr/seed/start.
    """
    task_regions(task, pre.region_names)  # refuse an unknown task before any training
    batch = Batch.of(pre, splits, "val", settings, data_seed)
    if start_file is not None:
        tensors, start_sidecar = load_checkpoint(start_file)
        starts = {s: (tensors["params"][0], start_sidecar["start"]) for s in seeds}
    else:
        starts = {s: (random_init(settings, pre, data_seed, s), f"init{s}") for s in seeds}
    sidecars = []
    with output_dir(out) as tmp:
        for seed in seeds:
            vector, label = starts[seed]
            described = {"dataset": pre.dataset, "task": task, "lr": lr, "seed": seed, "start": label,
                         "zoo": settings, "device": device, "threads": threads, "data_seed": data_seed}
            # A tracking failure ends the job here: output_dir removes every run of it.
            with tracker(tracking, f"{pre.dataset}/{task}/lr{lr:g}/seed{seed}/{label}", described, kind="zoo",
                         group=pre.dataset) as track:
                sidecar = train_zoo_run(pre, splits, task, lr, seed, vector, start_label=label, settings=settings,
                                        out=tmp / f"seed{seed}", device=device, threads=threads, batch=batch,
                                        track=track)
                final = {k: v[-1] for k, v in sidecar["checkpoints"].items() if k.startswith(("dice_", "val_loss"))}
                track.log_summary({"seconds_per_step": sidecar["seconds_per_step"], "final": final})
                track.log_checkpoint(out / f"seed{seed}.safetensors")  # where the job's folder puts it
            sidecars.append(sidecar)
    return sidecars


def load_run(path: Path) -> tuple[torch.Tensor, dict]:
    stem = Path(path).with_suffix("") if Path(path).suffix == ".safetensors" else Path(path)
    tensors, sidecar = load_checkpoint(stem)
    if "params" not in tensors or "checkpoints" not in sidecar:
        raise SegzooError(f"{stem}.safetensors: not a zoo run file (no params/checkpoints)")
    return tensors["params"], sidecar


def run_name(path: Path) -> str:
    """``<arm>/<task>_lr<lr>/seed<s>`` from ``.../runs/<arm>/<task>_lr<lr>_g<group>/seed<s>.safetensors``."""
    path = Path(path)
    job = path.parent.name.rsplit("_g", 1)[0]
    return f"{path.parent.parent.name}/{job}/{path.name.removesuffix('.safetensors')}"


def role_of(arm: str, seed: int, heldout_seeds: list[int], parents: int) -> str:
    """train, heldout (a held-out data seed; under per_seed also a new init) or stress (a child of a
    held-out parent: arm k >= ``parents``)."""
    if arm != "per_seed" and start_index(arm) >= parents:
        return "stress"
    return "heldout" if seed in heldout_seeds else "train"


def write_index(job_dirs: list[Path], out_csv: Path, out_summary: Path, max_abs: float, heldout_seeds: list[int],
                parents: int) -> dict:
    """One row per checkpoint of every kept run; runs with non-finite or huge weights are dropped."""
    frames, dropped = [], []
    for path in sorted(p for d in job_dirs for p in Path(d).glob("seed*.safetensors")):
        params, sidecar = load_run(path)
        name = run_name(path)
        finite = bool(torch.isfinite(params).all())
        largest = float(params.abs().max()) if finite else float("inf")
        if not finite or largest > max_abs:
            reason = "non-finite weights" if not finite else f"max |w| {largest:.3g} > {max_abs}"
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

    def select(self, role: str, task: str | None = None) -> list[ZooRun]:
        return [r for _, r in sorted(self.runs.items()) if r.role == role and (task is None or r.task == task)]

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
