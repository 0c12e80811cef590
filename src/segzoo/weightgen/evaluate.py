"""``segzoo gpt-evaluate``: how good are G.pt's one-shot networks, and how much do they memorise?

Every number is measured on the zoo's fixed validation batch (the metric G.pt was conditioned on)
and stands next to its memorisation audit: the L2 distance of the network to the nearest training
checkpoint, and the Dice of three baselines built from that neighbourhood (the nearest checkpoint
itself, the average of the k nearest, the nearest plus Gaussian noise of the same norm as the
distance). "Task Dice" is the mean Dice over the regions a task trains.

Tables (CSV): ``samples.csv`` (every generated network), ``alignment.csv`` (R² of achieved vs
prompted Dice per task and region), ``oneshot.csv`` (one-shot vs best training checkpoint vs Adam
from the same init), ``adam_curves.csv``, ``unification.csv``; ``summary.json`` holds the headlines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segzoo.io import output_dir, write_json
from segzoo.weightgen.zoo import ALL, task_regions


def r_squared(achieved: np.ndarray, prompted: np.ndarray) -> float:
    """Coefficient of determination of ``achieved`` by the identity ``achieved = prompted``."""
    residual = np.sum((achieved - prompted) ** 2)
    total = np.sum((achieved - achieved.mean()) ** 2)
    return float(1 - residual / total) if total > 0 else float("nan")


class Neighbours:
    """Nearest training checkpoints of a parameter vector (L2), run by run to bound memory."""

    def __init__(self, zoo, runs: list[str]):
        self.zoo, self.runs = zoo, runs

    def distances(self, vector: torch.Tensor) -> tuple[np.ndarray, list[tuple[str, int]]]:
        d, keys = [], []
        for run in self.runs:
            d.append(torch.cdist(vector[None], self.zoo.params[run])[0].numpy())
            keys += [(run, i) for i in range(len(self.zoo.params[run]))]
        return np.concatenate(d), keys

    def nearest(self, vector: torch.Tensor, k: int) -> tuple[list[float], list[tuple[str, int]]]:
        d, keys = self.distances(vector)
        order = np.argsort(d, kind="stable")[:k]
        return [float(d[i]) for i in order], [keys[i] for i in order]


def task_dice(dice: np.ndarray, task: str, regions: list[str]) -> float:
    return float(np.mean([dice[r] for r in task_regions(task, regions)]))


def score_samples(zoo, train_runs: list[str], params: torch.Tensor, samples: pd.DataFrame, scorer, k: int,
                  seed: int) -> pd.DataFrame:
    """Achieved Dice per region, distances and the three baselines for every generated network."""
    regions = zoo.regions
    neighbours = Neighbours(zoo, train_runs)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for vector, (_, sample) in zip(params, samples.iterrows()):
        achieved = np.asarray(scorer(vector))
        dists, keys = neighbours.nearest(vector, k)
        nearest = zoo.params[keys[0][0]][keys[0][1]]
        average = torch.stack([zoo.params[r][i] for r, i in keys]).mean(0)
        noise = torch.randn(vector.shape, generator=generator)
        noisy = nearest + noise / noise.norm() * dists[0]
        nearest_dice = zoo.dice(keys[0][0])[keys[0][1]]
        task = sample["task"]
        prompted = np.array([sample[f"prompt_{n}"] for n in regions])
        rows.append({**sample.to_dict(), **{f"dice_{n}": float(v) for n, v in zip(regions, achieved)},
                     "task_prompt": task_dice(prompted, task, regions), "task_dice": task_dice(achieved, task, regions),
                     "d_nearest": dists[0], "d_nearest_relative": dists[0] / float(nearest.norm()),
                     "nearest_run": keys[0][0], "nearest_index": keys[0][1],
                     "nearest_task_dice": task_dice(nearest_dice, task, regions),
                     f"average{k}_task_dice": task_dice(np.asarray(scorer(average)), task, regions),
                     "noisy_task_dice": task_dice(np.asarray(scorer(noisy)), task, regions)})
    return pd.DataFrame(rows)


def alignment(scored: pd.DataFrame, regions: list[str]) -> pd.DataFrame:
    """R² of achieved vs prompted Dice for each task's trained regions (first-round ``align`` prompts)."""
    rows = []
    align = scored[(scored["kind"] == "align") & (scored["round"] == 1)]
    for task, group in align.groupby("task"):
        for r in task_regions(task, regions):
            name = regions[r]
            a, p = group[f"dice_{name}"].to_numpy(), group[f"prompt_{name}"].to_numpy()
            rows.append({"task": task, "region": name, "n": len(a), "r2": r_squared(a, p),
                         "pearson_r": float(np.corrcoef(a, p)[0, 1]) if a.std() > 0 and p.std() > 0 else np.nan,
                         "mean_abs_error": float(np.abs(a - p).mean())})
    return pd.DataFrame(rows)


def adam_curves(zoo) -> pd.DataFrame:
    """Held-out runs' own trajectories: Adam from the very init G.pt starts from."""
    rows = []
    for run in zoo.heldout_runs:
        task = zoo.meta[run]["task"]
        steps = zoo.meta[run]["checkpoints"]["step"]
        for step, dice in zip(steps, zoo.dice(run)):
            rows.append({"run": run, "task": task, "step": step, "task_dice": task_dice(dice, task, zoo.regions)})
    return pd.DataFrame(rows)


def oneshot(scored: pd.DataFrame, zoo, train_runs: list[str], curves: pd.DataFrame, single_seconds: float,
            k: int) -> pd.DataFrame:
    """One row per held-out run and round of its ``best`` prompt."""
    train = zoo.index[zoo.index["run"].isin(train_runs)]
    rows = []
    neighbours = Neighbours(zoo, train_runs)
    best_runs = scored[scored["kind"] == "best"]
    final_distance = {run: neighbours.nearest(zoo.params[run][-1], 1)[0][0] for run in best_runs["run"].unique()}
    for _, s in best_runs.iterrows():
        run, task = s["run"], s["task"]
        of_task = train[train["task"] == task]
        best = max(task_dice(row, task, zoo.regions) for row in
                   of_task[[f"dice_{n}" for n in zoo.regions]].to_numpy())
        curve = curves[curves["run"] == run]
        reached = curve[curve["task_dice"] >= s["task_dice"]]
        steps = int(reached["step"].iloc[0]) if len(reached) else np.nan
        adam_seconds = steps * zoo.meta[run]["seconds_per_step"] if len(reached) else np.nan
        rows.append({"run": run, "task": task, "round": s["round"], "prompt": s["task_prompt"],
                     "oneshot_dice": s["task_dice"], "best_zoo_dice": best,
                     "oneshot_minus_best": s["task_dice"] - best,
                     "init_dice": float(curve["task_dice"].iloc[0]), "adam_final_dice": float(curve["task_dice"].iloc[-1]),
                     "adam_steps_total": int(curve["step"].iloc[-1]), "adam_steps_to_match": steps,
                     "adam_seconds_to_match": adam_seconds, "sample_seconds": single_seconds,
                     "adam_over_sample_time": adam_seconds / single_seconds if len(reached) else np.nan,
                     "d_nearest": s["d_nearest"], "heldout_final_d_nearest": final_distance[run],
                     "nearest_task_dice": s["nearest_task_dice"], f"average{k}_task_dice": s[f"average{k}_task_dice"],
                     "noisy_task_dice": s["noisy_task_dice"]})
    return pd.DataFrame(rows)


def unification(scored: pd.DataFrame, zoo, train_runs: list[str], scorer) -> pd.DataFrame:
    """G.pt prompted for every region at once vs a soup of single-task bests vs multi-task training."""
    regions = zoo.regions
    train = zoo.index[zoo.index["run"].isin(train_runs)]
    rows = []

    def add(method: str, dice, note: str, d=np.nan):
        rows.append({"method": method, **{f"dice_{n}": float(v) for n, v in zip(regions, dice)},
                     "mean_dice": float(np.mean(dice)), "d_nearest": d, "note": note})

    unify = scored[scored["kind"] == "unify"]
    for round_, group in unify.groupby("round"):
        add(f"G.pt unify (round {round_})", group[[f"dice_{n}" for n in regions]].mean().to_numpy(),
            f"mean over {len(group)} held-out inits", float(group["d_nearest"].mean()))
        add(f"nearest checkpoint (round {round_})", _nearest_dice(group, zoo),
            "the training checkpoint closest to each G.pt network")
    for label, runs, pick in (("training", train_runs, "best"), ("held-out", zoo.heldout_runs, "final")):
        soups = [scorer(torch.stack(vectors).mean(0)) for vectors in _single_task_groups(zoo, runs, pick)]
        if soups:
            add(f"soup of single-task {pick}s ({label} inits)", np.mean(soups, axis=0),
                f"weight average of the {pick} single-task checkpoints that share one init; mean over "
                f"{len(soups)} inits")
    multi = train[train["task"] == ALL]
    if not multi.empty:
        mean = multi[[f"dice_{n}" for n in regions]].mean(1)
        add("best multi-task checkpoint", multi.loc[mean.idxmax(), [f"dice_{n}" for n in regions]].to_numpy(float),
            "Adam on all regions, best checkpoint of the training zoo")
    for run in zoo.heldout_runs:
        if zoo.meta[run]["task"] == ALL:
            add(f"Adam from held-out init ({run})", zoo.dice(run)[-1], "final checkpoint of a held-out multi-task run")
    return pd.DataFrame(rows)


def _nearest_dice(group: pd.DataFrame, zoo) -> np.ndarray:
    return np.mean([zoo.dice(r)[i] for r, i in zip(group["nearest_run"], group["nearest_index"])], axis=0)


def write_evaluation(zoo, gpt_meta: dict, params: torch.Tensor, samples: pd.DataFrame, single_seconds: float,
                     scorer, k: int, seed: int, out: Path) -> dict:
    """Every table, figure and the summary into the folder ``out`` (all or nothing)."""
    from segzoo.weightgen import figures

    train_runs = gpt_meta["train_runs"]
    scored = score_samples(zoo, train_runs, params, samples, scorer, k, seed)
    aligned = alignment(scored, zoo.regions)
    curves = adam_curves(zoo)
    shots = oneshot(scored, zoo, train_runs, curves, single_seconds, k)
    unified = unification(scored, zoo, train_runs, scorer)
    first = shots[shots["round"] == 1]
    seen = scored[scored["kind"] == "seen"]
    summary = {
        "train_runs": len(train_runs), "heldout_runs": len(zoo.heldout_runs),
        "train_checkpoints": gpt_meta["train_checkpoints"], "gpt_parameters": gpt_meta["parameters"],
        "gpt_train_seconds": gpt_meta["seconds"], "sample_seconds_one_network": single_seconds,
        "alignment_r2": {f"{row.task}/{row.region}": round(row.r2, 4) for row in aligned.itertuples()},
        "oneshot_dice_mean": float(first["oneshot_dice"].mean()), "best_zoo_dice_mean": float(first["best_zoo_dice"].mean()),
        "oneshot_below_best": int((first["oneshot_minus_best"] < 0).sum()), "oneshot_rows": len(first),
        "adam_steps_to_match_median": float(first["adam_steps_to_match"].median()),
        "adam_never_matched": int(first["adam_steps_to_match"].isna().sum()),
        "d_nearest_median": float(scored["d_nearest"].median()),
        "seen_abs_error_mean": float((seen["task_dice"] - seen["task_prompt"]).abs().mean()),
        "seen_nearest_in_own_run": int((seen["nearest_run"] == seen["run"]).sum()), "seen_rows": len(seen),
        "seen_d_nearest_median": float(seen["d_nearest"].median()),
        "heldout_final_d_nearest_median": float(first["heldout_final_d_nearest"].median()),
    }
    with output_dir(out) as tmp:
        for name, table in (("samples", scored), ("alignment", aligned), ("oneshot", shots), ("adam_curves", curves),
                            ("unification", unified)):
            table.to_csv(tmp / f"{name}.csv", index=False, float_format="%.6g")
        listed = figures.write_all(scored, aligned, shots, curves, unified, zoo.regions, tmp)
        write_json(tmp / "figures.json", listed)
        write_json(tmp / "summary.json", summary)
    return summary


def _single_task_groups(zoo, runs: list[str], pick: str) -> list[list[torch.Tensor]]:
    """Per (seed, lr) group of single-task runs (they share an init): each run's best or final weights."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for run in runs:
        meta = zoo.meta[run]
        if meta["task"] == ALL:
            continue
        dice = zoo.dice(run)[:, task_regions(meta["task"], zoo.regions)].mean(1)
        row = int(np.argmax(dice)) if pick == "best" else -1
        groups.setdefault((meta["seed"], meta["lr"]), []).append(zoo.params[run][row])
    return [g for g in groups.values() if len(g) > 1]
