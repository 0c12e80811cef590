"""The zoo's files, read: a run file typed (:class:`RunFile`), the index of every kept checkpoint, and the typed
zoo (:class:`Zoo`) every generator and the evaluation read.

Files under ``results/zoo/<dataset>/``::

    starts/<start>.safetensors|json          params [1, P]; sidecar: how it was made, val Dice
    runs/job<group>/<start>_<task>_lr<lr>_seed<s>.safetensors|json
                                             params [n, P] (row 0: the start, last row: final); sidecar: start,
                                             task, lr, seed, val loss and Dice per snapshot
    index.csv, zoo.json                      one row per checkpoint of every kept run; the tasks, what was dropped
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segzoo.checkpoint import load_checkpoint
from segzoo.errors import SegzooError
from segzoo.io import new_files, read_json, write_json, write_text
from segzoo.weightgen.zoo.plan import ALL, ROLES, run_role, start_index, start_role, task_regions

SUMMARY = "zoo.json"  # beside index.csv
STARTS = "starts"     # the folder of start files beside index.csv


@dataclass(frozen=True)
class RunFile:
    """A zoo run file: its checkpoints ``params`` [n, P] (row 0 the start) and what its sidecar says of them."""

    stem: Path
    start: str
    task: str
    lr: float
    seed: int
    regions: list[str]
    layout: list[list]
    architecture: dict
    steps: list[int]
    dice: np.ndarray          # [n, R]: val Dice per snapshot and region
    seconds_per_step: float
    stopped: str | None
    params: torch.Tensor = field(repr=False)

    @classmethod
    def read(cls, path: str | Path) -> RunFile:
        stem = Path(path).with_suffix("") if Path(path).suffix == ".safetensors" else Path(path)
        tensors, sidecar = load_checkpoint(stem)
        try:
            table = sidecar["checkpoints"]
            dice = np.array([table[f"dice_{r}"] for r in sidecar["regions"]], dtype=np.float32).T
            return cls(stem, sidecar["start"], sidecar["task"], float(sidecar["lr"]), int(sidecar["seed"]),
                       list(sidecar["regions"]), sidecar["layout"], sidecar["architecture"], list(table["step"]),
                       dice, float(sidecar["seconds_per_step"]), sidecar.get("stopped"), tensors["params"])
        except KeyError as e:
            raise SegzooError(f"{stem}.safetensors: not a zoo run file (its sidecar or tensors lack {e})") from None

    @property
    def name(self) -> str:
        """``<start>/<task>_lr<lr>/seed<s>``."""
        return f"{self.start}/{self.task}_lr{self.lr}/seed{self.seed}"


def write_index(job_dirs: list[Path], out_csv: Path, out_summary: Path, settings: dict, tasks: list[str]) -> dict:
    """One row per checkpoint of every kept run; runs that stopped early or have non-finite or huge weights
    (``settings["max_abs_weight"]``) are dropped. ``settings``: the weightgen keys that give each run its role
    (:data:`segzoo.weightgen.zoo.plan.INDEX_KEYS`); ``tasks``: the zoo's tasks, recorded so that a task whose runs
    were all dropped is still judged."""
    frames, dropped, max_abs, start_roles = [], [], settings["max_abs_weight"], {}
    for path in sorted(p for d in job_dirs for p in Path(d).glob("*_seed*.safetensors")):
        run = RunFile.read(path)
        start_roles[run.start] = start_role(settings, run.start)
        finite = bool(torch.isfinite(run.params).all())
        largest = float(run.params.abs().max()) if finite else float("inf")
        if run.stopped or not finite or largest > max_abs:
            reason = (f"stopped early: {run.stopped}" if run.stopped else
                      "non-finite weights" if not finite else f"max |w| {largest:.3g} > {max_abs}")
            dropped.append({"run": run.name, "reason": reason})
            continue
        table = pd.DataFrame(load_checkpoint(run.stem)[1]["checkpoints"])
        table.insert(0, "index", range(len(table)))
        for key, value in (("seed", run.seed), ("lr", run.lr), ("task", run.task), ("start", run.start),
                           ("role", run_role(settings, run.start, run.seed)),
                           ("file", str(Path(path).relative_to(Path(path).parents[1]))), ("run", run.name)):
            table.insert(0, key, value)
        frames.append(table)
    if not frames:
        raise SegzooError(f"every zoo run was dropped ({'; '.join(d['run'] + ': ' + d['reason'] for d in dropped)})")
    index = pd.concat(frames, ignore_index=True)
    runs = index.drop_duplicates("run")
    train = index[index["role"] == "train"]
    # a start shared by several runs is one checkpoint: its rows 0 count once per task
    distinct = train[train["index"] > 0].groupby("task").size().add(
        train[train["index"] == 0].drop_duplicates(["task", "start"]).groupby("task").size(), fill_value=0)
    summary = {"tasks": list(tasks), "start_roles": dict(sorted(start_roles.items(), key=lambda s: start_index(s[0]))),
               "runs_kept": len(frames), "runs_dropped": len(dropped), "dropped": dropped,
               "checkpoints": len(index), "runs_per_role": runs.groupby("role").size().to_dict(),
               "checkpoints_per_task": {t: int(distinct.get(t, 0)) for t in tasks}}
    with new_files(out_csv, out_summary):
        write_text(out_csv, index.to_csv(index=False, float_format="%.6g"))
        write_json(out_summary, summary)
    return summary


@dataclass
class ZooRun:
    """One kept run: its checkpoints ``params`` [n, P] (row 0 the start) and their val Dice ``dice`` [n, R]."""

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

    def at_step(self, step: int) -> int | None:
        """The row of the snapshot taken after ``step`` updates (None if the run did not keep it)."""
        return self.steps.index(step) if step in self.steps else None


@dataclass
class Start:
    """A start of the zoo: its weights [P], its val Dice [R] and its role (train, heldout, fresh)."""

    name: str
    role: str
    params: torch.Tensor
    dice: np.ndarray


@dataclass
class Zoo:
    """The kept runs of a zoo (index.csv + run files) and its starts, with the facts every consumer needs."""

    regions: list[str]
    layout: list[list]
    architecture: dict
    runs: dict[str, ZooRun] = field(default_factory=dict)
    task_list: list[str] = field(default_factory=list)   # the configured tasks, kept or not
    start_list: dict[str, Start] = field(default_factory=dict)

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

    def starts_of(self, role: str) -> list[Start]:
        """The starts of a role, in index order (from the starts folder: a start whose runs were all dropped is
        still there)."""
        if not self.start_list:  # a zoo without its starts folder: each start from its runs' row 0
            for run in self.runs.values():
                self.start_list.setdefault(run.start, Start(run.start, "train" if run.role == "insample" else run.role,
                                                            run.start_params, run.dice[0]))
        return sorted((s for s in self.start_list.values() if s.role == role),
                      key=lambda s: (len(s.name), s.name))

    @property
    def tasks(self) -> list[str]:
        """The zoo's tasks: as configured (when known), else those with runs; ``all`` last."""
        found = set(self.task_list) or {r.task for r in self.runs.values()}
        return sorted(found, key=lambda t: (t == ALL, t))

    def task_dice(self, dice: np.ndarray, task: str) -> np.ndarray:
        """Mean Dice over the task's regions, for ``dice`` [..., R]."""
        return np.asarray(dice)[..., task_regions(task, self.regions)].mean(-1)


def load_zoo(index_csv: Path, roles: tuple[str, ...] = ROLES) -> Zoo:
    """The runs of ``index.csv`` whose role is in ``roles`` (their files sit beside it under ``runs/``), the zoo's
    tasks (``zoo.json``) and its starts (``starts/``, when there)."""
    index_csv = Path(index_csv)
    if not index_csv.is_file():
        raise SegzooError(f"{index_csv}: missing (run `segzoo zoo-index` first)")
    index = pd.read_csv(index_csv)
    zoo = None
    for name, rows in index.groupby("run", sort=True):
        first = rows.iloc[0]
        if first["role"] not in roles:
            continue
        run = RunFile.read(index_csv.parent / "runs" / first["file"])
        if zoo is None:
            zoo = Zoo(run.regions, run.layout, run.architecture)
        zoo.runs[name] = ZooRun(name, first["role"], run.task, run.lr, run.seed, run.start, run.params, run.dice,
                                run.steps, run.seconds_per_step)
    if zoo is None or not zoo.select("train"):
        raise SegzooError(f"{index_csv}: no training runs (every run is held out or dropped)")
    summary = read_json(index_csv.parent / SUMMARY) if (index_csv.parent / SUMMARY).is_file() else {}
    zoo.task_list = list(summary.get("tasks", []))
    folder = index_csv.parent / STARTS
    for name, role in summary.get("start_roles", {}).items():
        file = folder / f"{name}.safetensors"
        if file.is_file():
            tensors, sidecar = load_checkpoint(file.with_suffix(""))
            zoo.start_list[name] = Start(name, role, tensors["params"][0], np.asarray(sidecar["val_dice"], np.float32))
    return zoo
