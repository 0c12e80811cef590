"""``segzoo gpt-evaluate``: G.pt's one-shot networks from parents it never saw, beside Adam and the memorisers.

The protocol:

- every reported one-shot network starts from a *held-out parent*: grown like the training parents from its own
  init, never shown to G.pt (``sample.draws`` draws per parent and task);
- every Dice reported is on the *whole test volumes* (sliding window over the dataset's test cases, the
  comparison's own scoring), except the Adam curves, which are scored on the test patches at each scored step;
- the *validation* patches decide prompts and every selection (a parent's best checkpoint, merge coefficients).

Tables written to the evaluation folder (:mod:`segzoo.weightgen.evaluation.folder`):

- ``samples``      every generated network: kind, start, task, draw, prompt, val Dice (patches), test Dice
                   (volumes), distance to the nearest training checkpoint, the lookup memoriser's pick
- ``oneshot``      per held-out parent, task and draw: the one-shot network vs what Adam reaches from that parent
                   (the val-chosen best checkpoint of its own runs of the task) vs four memorisers on the same
                   prompt: lookup, mean of k nearest, nearest checkpoint, noise at equal distance; each with its
                   distance to the training checkpoints and novelty ratio
- ``alignment``    per task: G.pt's R² (achieved test Dice against the prompts of the ``align`` draws) and the
                   lookup memoriser's R² on the same prompts
- ``finetune``     per draw: Adam steps to reach the held-out parent's best from the draw and from the parent
- ``finetune_curves`` those curves (test patches)
- ``unification``  per held-out parent: G.pt prompted on every region vs that parent's best multi-task checkpoint,
                   its multi-task Adam finals and merges of its single-task finals (with and without the lesion)
- ``insample``     draws from training parents (starts G.pt was trained on), reported apart
- ``criteria``     the pass/fail criteria (segzoo.weightgen.evaluation.criteria)

A region is *learned* when some training checkpoint reaches validation Dice 0.3 on it; this is reported, and
the criteria judge every task whether learned or not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segzoo.data.preprocessed import Preprocessed
from segzoo.io import write_json
from segzoo.weightgen.evaluation import criteria, figures, merge
from segzoo.weightgen.evaluation.audit import Audit
from segzoo.weightgen.evaluation.criteria import mean_ci
from segzoo.weightgen.evaluation.folder import write_evaluation_folder
from segzoo.weightgen.evaluation.finetune import adam_curves, first_step_reaching
from segzoo.weightgen.gpt.train import TrainedGPT
from segzoo.weightgen.gpt.sample import lookup
from segzoo.weightgen.zoo.scoring import Scorer
from segzoo.weightgen.zoo.runs import ALL, Zoo, task_regions

LEARNED = 0.3      # best validation Dice a region needs in the zoo to count as learned
SAMPLE_STEPS = 25  # Adam steps from a one-shot network (Adam from the parent gets the zoo's own length)
MEMORISERS = ("lookup", "mean_k", "nearest", "noise")


def r_squared(achieved: np.ndarray, prompted: np.ndarray) -> float:
    """G.pt's prompt alignment: 1 − Σ(achieved − prompted)² / Σ(prompted − mean prompt)²."""
    total = np.sum((prompted - prompted.mean()) ** 2)
    return float(1 - np.sum((achieved - prompted) ** 2) / total) if total > 0 else float("nan")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else float("nan")


def learned_regions(zoo: Zoo) -> list[str]:
    best = np.max(np.concatenate([r.dice for r in zoo.select("train")]), axis=0)
    return [name for name, value in zip(zoo.regions, best) if value >= LEARNED]


def val_best(zoo: Zoo, role: str, task: str, start: str | None = None) -> tuple[str, int] | None:
    """The checkpoint of the ``role`` runs of ``task`` (from ``start``) with the best validation task Dice."""
    keys = [(r.name, i) for r in zoo.select(role, task, start) for i in range(len(r.params))]
    if not keys:
        return None
    return max(keys, key=lambda key: float(zoo.task_dice(zoo.runs[key[0]].dice[key[1]], task)))


class Evaluation:
    """G.pt's samples scored (``samples``); one method per table of the evaluation."""

    def __init__(self, zoo: Zoo, gpt: TrainedGPT, *, params: torch.Tensor, prompts: pd.DataFrame,
                 sample_seconds: float, scorer: Scorer, settings: dict, seed: int, threads: int = 1):
        self.zoo, self.gpt, self.scorer, self.settings, self.threads = zoo, gpt, scorer, settings, threads
        self.params, self.prompts, self.sample_seconds = params, prompts.reset_index(drop=True), sample_seconds
        self.seed = seed
        self.audit = Audit(zoo, gpt.scale, scorer, settings["audit"]["neighbours"], seed)
        self.learned = learned_regions(zoo)
        self.tasks = [t for t in zoo.tasks if t in set(self.prompts["task"])]
        self.near = [self.audit.nearest(v) for v in params]  # k nearest training checkpoints of each sample
        self.samples = self._score_samples()
        self.adam = {(s, t): val_best(zoo, "heldout", t, s) for s in zoo.starts("heldout") for t in self.tasks}

    def task_dice(self, dice, task: str) -> float:
        with np.errstate(all="ignore"):
            return float(np.nanmean(np.asarray(dice, dtype=float)[..., task_regions(task, self.zoo.regions)]))

    def d_nearest(self, vector: torch.Tensor) -> float:
        return float(self.audit.distances(vector).min())

    def _score_samples(self) -> pd.DataFrame:
        """Every sample's val Dice (patches), test Dice (whole volumes) and nearest training checkpoint."""
        regions, prompts = self.zoo.regions, self.prompts
        val = self.scorer.dice_many(self.params, "val")
        volume = self.scorer.volume_dice_many(self.params)
        targets = prompts[[f"prompt_{n}" for n in regions]].to_numpy(float)
        rows = []
        for k, prompt in prompts.iterrows():
            task = prompt["task"]
            (keys, d) = self.near[k]
            pick = lookup(self.zoo, task, targets[k])
            rows.append({**prompt.to_dict(), **{f"dice_{n}": v for n, v in zip(regions, volume[k])},
                         **{f"val_dice_{n}": v for n, v in zip(regions, val[k])},
                         "task_prompt": self.task_dice(targets[k], task), "task_dice": self.task_dice(volume[k], task),
                         "task_dice_val": self.task_dice(val[k], task), "d_nearest": float(d[0]),
                         "nearest_run": keys[0][0], "nearest_index": keys[0][1],
                         "lookup_run": pick[0], "lookup_index": pick[1]})
        return pd.DataFrame(rows)

    def _final_distance(self, start: str, task: str) -> float:
        """The mean distance to the nearest training checkpoint of the held-out parent's own finals of ``task``:
        how far an independent run lands (the novelty ratio's denominator)."""
        finals = [r.params[-1] for r in self.zoo.select("heldout", task, start)]
        return float(np.mean([self.d_nearest(f) for f in finals])) if finals else np.nan

    def oneshot(self) -> pd.DataFrame:
        """Per held-out parent, task and draw: the one-shot network, Adam from that parent and the memorisers, every
        Dice on the whole test volumes."""
        shots = self.samples[self.samples["kind"] == "oneshot"]
        if shots.empty:
            return pd.DataFrame()
        audit, zoo = self.audit, self.zoo
        index = list(shots.index)
        lookups = list(zip(shots["lookup_run"], shots["lookup_index"]))
        nearest = [self.near[k][0][0] for k in index]
        mean_k = torch.stack([torch.stack([audit.checkpoint(key) for key in self.near[k][0]]).mean(0) for k in index])
        noise = torch.stack([audit.noise_at(audit.checkpoint(self.near[k][0][0]), float(self.near[k][1][0]))
                             for k in index])
        adam_keys = [self.adam[(s, t)] for s, t in zip(shots["start"], shots["task"])]
        checkpoints = dict(zip(lookups + nearest + [k for k in adam_keys if k],
                               audit.volume_dice(lookups + nearest + [k for k in adam_keys if k])))
        scored = self.scorer.volume_dice_many(torch.cat([mean_k, noise]))
        finals = {(s, t): self._final_distance(s, t) for s, t in set(zip(shots["start"], shots["task"]))}
        rows = []
        for at, (k, s) in enumerate(shots.iterrows()):
            task, start, key = s["task"], s["start"], adam_keys[at]
            final_d = finals[(start, task)]
            memoriser = {"lookup": (checkpoints[lookups[at]], audit.checkpoint(lookups[at])),
                         "mean_k": (scored[at], mean_k[at]),
                         "nearest": (checkpoints[nearest[at]], audit.checkpoint(nearest[at])),
                         "noise": (scored[len(index) + at], noise[at])}
            row = {"start": start, "task": task, "draw": s["draw"], "prompt": s["task_prompt"],
                   "oneshot_dice": s["task_dice"], "oneshot_dice_val": s["task_dice_val"],
                   "adam_best_dice": self.task_dice(checkpoints[key], task) if key else np.nan,
                   "adam_best": f"{key[0]} #{key[1]} (step {zoo.runs[key[0]].steps[key[1]]})" if key else "",
                   "adam_best_d_nearest": self.d_nearest(audit.checkpoint(key)) if key else np.nan,
                   "d_nearest": s["d_nearest"], "heldout_final_d_nearest": final_d,
                   "novelty_ratio": s["d_nearest"] / final_d}
            for name, (dice, vector) in memoriser.items():
                d = self.d_nearest(vector)
                row |= {f"{name}_dice": self.task_dice(dice, task), f"{name}_d_nearest": d,
                        f"{name}_novelty_ratio": d / final_d}
            rows.append(row)
        return pd.DataFrame(rows)

    def alignment(self) -> pd.DataFrame:
        """Per task, over the ``align`` draws: G.pt's R² and the lookup memoriser's on the same prompts."""
        align = self.samples[self.samples["kind"] == "align"]
        rows = []
        for task, g in align.groupby("task", sort=False):
            keys = list(zip(g["lookup_run"], g["lookup_index"]))
            looked = np.array([self.task_dice(d, task) for d in self.audit.volume_dice(keys)])
            p, a, v = (g[c].to_numpy(float) for c in ("task_prompt", "task_dice", "task_dice_val"))
            rows.append({"task": task, "n": len(g), "parents": g["start"].nunique(), "r2": r_squared(a, p),
                         "pearson_r": pearson(a, p), "mean_abs_error": float(np.abs(a - p).mean()),
                         "r2_lookup": r_squared(looked, p), "pearson_r_lookup": pearson(looked, p),
                         "r2_val": r_squared(v, p)})
        return pd.DataFrame(rows)

    def finetune(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Adam from every one-shot draw (``SAMPLE_STEPS``) and from its held-out parent (the zoo's length), with the
        parent's run's task, learning rate and data seed, all trained at once; steps until the test-patch Dice
        reaches that of the parent's val-chosen best checkpoint."""
        shots = self.samples[self.samples["kind"] == "oneshot"]
        arms, steps = [], self.settings["steps"]
        for (start, task), key in self.adam.items():
            if key is None:
                continue
            run = self.zoo.runs[key[0]]
            arms.append({"name": f"{start}/{task}/parent", "task": task, "lr": run.lr, "seed": run.seed,
                         "start": run.start_params, "steps": steps})
            for k, s in shots[(shots["start"] == start) & (shots["task"] == task)].iterrows():
                arms.append({"name": f"{start}/{task}/draw{s['draw']}", "task": task, "lr": run.lr, "seed": run.seed,
                             "start": self.params[k], "steps": SAMPLE_STEPS})
        if not arms:
            return pd.DataFrame(), pd.DataFrame()
        table = adam_curves(self.scorer, self.zoo, arms, settings=self.settings, threads=self.threads)
        curves = table.assign(start=table["name"].str.split("/").str[0], task=table["name"].str.split("/").str[1],
                              source=table["name"].str.split("/").str[2])
        rows = []
        for _, s in shots.iterrows():
            start, task, key = s["start"], s["task"], self.adam.get((s["start"], s["task"]))
            if key is None:
                continue
            target = self.task_dice(self.audit.test_dice(key), task)
            parent = curves[curves["name"] == f"{start}/{task}/parent"]
            draw = curves[curves["name"] == f"{start}/{task}/draw{s['draw']}"]
            rows.append({"start": start, "task": task, "draw": s["draw"], "target_dice": target,
                         "sample_dice_at_0": _dice_at(draw, 0), "sample_dice_at_5": _dice_at(draw, 5),
                         "parent_dice_at_0": _dice_at(parent, 0),
                         "sample_steps_to_best": first_step_reaching(draw, target),
                         "parent_steps_to_best": first_step_reaching(parent, target),
                         "sample_budget": SAMPLE_STEPS, "parent_budget": steps,
                         "parent_seconds_per_step": self.zoo.runs[key[0]].seconds_per_step,
                         "sample_seconds": self.sample_seconds})
        return curves.drop(columns="name"), pd.DataFrame(rows)

    def unification(self) -> pd.DataFrame:
        """Per held-out parent: G.pt prompted on every region (mean over draws) vs the parent's best multi-task
        checkpoint (val-chosen), its multi-task Adam finals and merges of its single-task finals."""
        zoo, regions, rows = self.zoo, self.zoo.regions, []
        draws = self.samples[(self.samples["kind"] == "oneshot") & (self.samples["task"] == ALL)]

        def add(start: str, method: str, dice, note: str):
            dice = np.asarray(dice, dtype=float)
            with np.errstate(all="ignore"):
                rows.append({"start": start, "method": method, **{f"dice_{n}": v for n, v in zip(regions, dice)},
                             "mean_dice": float(np.nanmean(dice)), "note": note})

        for start in zoo.starts("heldout"):
            mine = draws[draws["start"] == start]
            if len(mine):
                add(start, criteria.UNIFIED, mine[[f"dice_{n}" for n in regions]].mean().to_numpy(),
                    f"mean over {len(mine)} draws")
            key = self.adam.get((start, ALL))
            if key:
                add(start, criteria.BEST_MULTITASK, self.audit.volume_dice([key])[0], f"{key[0]} #{key[1]}, val-chosen")
            finals = [r.params[-1] for r in zoo.select("heldout", ALL, start)]
            if finals:
                add(start, criteria.MULTITASK_ADAM, self.scorer.volume_dice_many(torch.stack(finals)).mean(0),
                    f"final of {len(finals)} run(s), {self.settings['steps']} Adam steps")
            for name, dice, note in self._merges(start):
                add(start, name, dice, note)
        return pd.DataFrame(rows)

    def _merges(self, start: str) -> list[tuple[str, np.ndarray, str]]:
        """Merges of the held-out parent's single-task finals (per task the final with the best val task Dice): the
        best on val of soup, task arithmetic (λ) and TIES (kept share, λ), with every task vector and without the
        lesion's (a region named *lesion*)."""
        zoo = self.zoo
        finals, names, base = [], [], None
        for task in [t for t in zoo.tasks if t != ALL]:
            runs = zoo.select("heldout", task, start)
            if runs:
                pick = max(runs, key=lambda r: zoo.task_dice(r.dice[-1], task))
                finals.append(pick.params[-1])
                names.append(task)
                base = pick.start_params
        out = []
        variants = [("merge of every task vector", list(range(len(finals))))]
        kept = [i for i, n in enumerate(names) if "lesion" not in n]
        if len(kept) < len(finals):
            variants.append(("merge without the lesion vector", kept))
        for label, chosen in variants:
            if len(chosen) < 2:
                continue
            vectors = torch.stack([finals[i] for i in chosen])
            candidates = [("soup", merge.soup(base, vectors))]
            candidates += [(f"task arithmetic λ={x}", merge.task_arithmetic(base, vectors, x))
                           for x in (0.25, 0.5, 0.75, 1.0, 1.25)]
            candidates += [(f"TIES keep {k:.0%} λ={x}", merge.ties(base, vectors, k, x))
                           for k in (0.1, 0.2, 0.5, 1.0) for x in (0.5, 1.0, 1.5, 2.0)]
            val = self.scorer.dice_many(torch.stack([c for _, c in candidates]), "val").mean(1)
            name, chosen_vector = candidates[int(np.argmax(val))]
            out.append((label, self.scorer.volume_dice_many(chosen_vector[None])[0],
                        f"{name} (val-chosen of {len(candidates)}) of {', '.join(names[i] for i in chosen)}"))
        return out

    def insample(self) -> pd.DataFrame:
        """Draws from training parents: G.pt saw these starts, so they are in-sample and reported apart."""
        draws = self.samples[self.samples["kind"] == "insample"]
        return draws[["start", "task", "task_prompt", "task_dice", "task_dice_val", "d_nearest"]].rename(
            columns={"task_prompt": "prompt", "task_dice": "oneshot_dice", "task_dice_val": "oneshot_dice_val"}
        ).reset_index(drop=True)


def _dice_at(curve: pd.DataFrame, step: int) -> float:
    found = curve.loc[curve["step"] == step, "task_dice"]
    return float(found.iloc[0]) if len(found) else np.nan


def _number(value) -> float | None:
    """A float for JSON, None for NaN."""
    return None if value is None or not np.isfinite(value) else float(value)


def headline(tables: dict[str, pd.DataFrame], tasks: list[str], seed: int) -> dict:
    """Per task: the mean one-shot Dice over held-out parents x draws with its bootstrap CI, Adam's and each
    memoriser's mean, G.pt's and the lookup's R² (all whole test volumes)."""
    shots, aligned = tables["oneshot"], tables["alignment"]
    out = {}
    for task in tasks:
        s = shots[shots["task"] == task] if len(shots) else shots
        if s.empty:
            continue
        mean, low, high = mean_ci(s["oneshot_dice"], seed)
        a = aligned[aligned["task"] == task] if len(aligned) else aligned
        out[task] = {"oneshot_dice": _number(mean), "oneshot_ci": [_number(low), _number(high)], "draws": len(s),
                     "parents": int(s["start"].nunique()), "adam_best_dice": _number(s["adam_best_dice"].mean()),
                     **{f"{m}_dice": _number(s[f"{m}_dice"].mean()) for m in MEMORISERS},
                     "novelty_ratio": _number(s["novelty_ratio"].median()),
                     "r2": _number(a["r2"].iloc[0]) if len(a) else None,
                     "r2_lookup": _number(a["r2_lookup"].iloc[0]) if len(a) else None}
    return out


def write_evaluation(evaluation: Evaluation, gpt_sidecar: dict, loss: pd.DataFrame | None, out: Path) -> dict:
    """Every table, figure, the criteria and the summary into the new folder ``out`` (all or nothing);
    ``loss`` is G.pt's loss curve (for its figure)."""
    curves, tuned = evaluation.finetune()
    tables = {"samples": evaluation.samples, "oneshot": evaluation.oneshot(), "alignment": evaluation.alignment(),
              "finetune": tuned, "finetune_curves": curves, "unification": evaluation.unification(),
              "insample": evaluation.insample()}
    tasks = evaluation.tasks
    verdicts = criteria.judge(tables, [t for t in tasks if t != ALL], evaluation.seed)
    tables["criteria"] = verdicts
    zoo = evaluation.zoo
    summary = {"train_runs": len(zoo.select("train")), "insample_runs": len(zoo.select("insample")),
               "heldout_runs": len(zoo.select("heldout")), "train_parents": len(zoo.starts("train")),
               "heldout_parents": len(zoo.starts("heldout")), "train_checkpoints": gpt_sidecar["train_checkpoints"],
               "aligned": bool(gpt_sidecar["gpt_config"].get("align")),
               "gpt_parameters": gpt_sidecar["parameters"], "gpt_train_seconds": gpt_sidecar["seconds"],
               "sample_seconds_one_network": evaluation.sample_seconds, "learned_regions": evaluation.learned,
               "not_learned_regions": [r for r in zoo.regions if r not in evaluation.learned],
               "per_task": headline(tables, tasks, evaluation.seed),
               "criteria_passed": int(verdicts["passed"].sum()), "criteria_total": len(verdicts),
               "criteria": verdicts.replace({np.nan: None}).to_dict(orient="records")}
    write_evaluation_folder(out, tables, summary, lambda folder: figures.write_all(tables, zoo.regions, folder, loss))
    return summary


def evaluate_samples(gpt_stem: Path, samples_stem: Path, index: Path, pre: Preprocessed, splits: Path, *,
                     settings: dict, data_seed: int, seed: int, device: str, threads: int, out: Path,
                     summary_path: Path | None) -> dict:
    """``segzoo gpt-evaluate``: load everything, evaluate, write the folder (and the summary without timings)."""
    from segzoo.weightgen.gpt.train import load_gpt
    from segzoo.weightgen.gpt.sample import load_samples
    from segzoo.weightgen.zoo.runs import load_zoo

    gpt = load_gpt(gpt_stem, device)
    params, prompts, sample_sidecar = load_samples(samples_stem)
    scoring_settings = {**settings["zoo"], "test_patches": settings["test_patches"], "audit": settings["audit"]}
    scorer = Scorer(pre, splits, scoring_settings, data_seed, device)
    evaluation = Evaluation(load_zoo(index), gpt, params=params, prompts=prompts,
                            sample_seconds=sample_sidecar["single_network_seconds"], scorer=scorer,
                            settings=scoring_settings, seed=seed, threads=threads)
    loss_csv = Path(f"{gpt_stem}_loss.csv")
    summary = write_evaluation(evaluation, gpt.sidecar, pd.read_csv(loss_csv) if loss_csv.is_file() else None, out)
    if summary_path:  # the numbers without timings, so that reruns give the same file
        write_json(summary_path, {k: v for k, v in summary.items() if "seconds" not in k})
    return summary
