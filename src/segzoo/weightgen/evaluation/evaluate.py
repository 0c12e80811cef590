"""``segzoo weightgen-evaluate``: every generator through the same requests, scoring and criteria (the instrument).

The protocol:

- the *test starts* are starts no generator was trained on: held-out parents (grown like the training parents from
  their own inits) and fresh random inits; every generator answers the same requests
  (:func:`segzoo.weightgen.zoo.prompts.requests`) for them: a start, a task, a prompted Dice;
- every headline Dice is on *whole test volumes* (:meth:`Scores.volumes`: MONAI's Gaussian sliding window over the
  preprocessed test cases with the zoo's patch, overlap 0.25, threshold 0.5, Dice per case as the comparison
  computes it, :func:`segzoo.inference.dice.region_dice`; the comparison itself predicts with overlap 0.5 and scores
  on the original grid); ``weightgen.evaluation.test_cases`` may take the first N test cases (in splits order);
- the *validation* patches decide prompts and every selection (Adam's best checkpoint, merge coefficients), and are
  the metric of prompt following (prompt and outcome on the same metric);
- a task that Adam from the held-out parents does not learn on whole volumes (:data:`LEARNED_BY_ADAM`) is shown
  "not learned by Adam" (its rows FAIL, with Adam's numbers); only Adam's best is scored on it.

Tables written to the evaluation folder (:mod:`segzoo.weightgen.evaluation.folder`):

- ``networks``     one row per generator and request: the network's val Dice (patches), test Dice (volumes, where
                   scored), its distance to the nearest training checkpoint of the task and to its start's own Adam
                   run (aligned coordinates);
- ``prompting``    per generator, task and held-out start: R² and Spearman ρ of achieved against prompted val Dice;
- ``finetune``     per generator, start and task: Adam steps (≥ 1) to reach what Adam from the start reaches within
                   the same budget, from the network and from the start; ``finetune_curves`` those curves (test
                   patches);
- ``unification``  per held-out parent: each generator's network for every region against multi-task Adam from the
                   same start at its budget, and merges of the start's own single-task finals;
- ``criteria``     generators × criteria (:mod:`segzoo.weightgen.evaluation.criteria`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from segzoo.data.preprocessed import Preprocessed
from segzoo.errors import SegzooError
from segzoo.io import read_json, write_json
from segzoo.weightgen.evaluation import criteria, figures, merge
from segzoo.weightgen.evaluation.criteria import LEARNED_BY_ADAM
from segzoo.weightgen.evaluation.finetune import adam_curves, first_step_reaching, scored_steps
from segzoo.weightgen.evaluation.folder import write_evaluation_folder
from segzoo.weightgen.evaluation.generators import (Context, Generator, baselines, learned, request_key,
                                                    task_dice)
from segzoo.weightgen.evaluation.settings import EvaluationSettings
from segzoo.weightgen.zoo.plan import ALL
from segzoo.weightgen.zoo.prompts import requests as make_requests
from segzoo.weightgen.zoo.runs import Zoo
from segzoo.weightgen.zoo.schedule import resolve
from segzoo.weightgen.zoo.scoring import Scorer

VOLUME_KINDS = ("oneshot", "insample")  # requests scored on whole volumes (align: on validation patches)


def _key(vector: torch.Tensor) -> str:
    return hashlib.sha1(vector.contiguous().numpy().tobytes()).hexdigest()


class Scores:
    """Each distinct network scored once: Dice per region on the validation patches and on the whole test volumes.
    Networks are told apart by ``keys`` when given (the evaluation keys each network by its weights in the aligned
    coordinates, so a training checkpoint handed out in several starts' channel orders, the same function, is
    scored once), else by their own bytes."""

    def __init__(self, scorer: Scorer, cases: list[str]):
        self.scorer, self.cases = scorer, cases
        self._val, self._volume = {}, {}
        self.volume_networks = 0  # how many distinct networks were scored on volumes (its cost)
        self.volume_seconds = 0.0

    def _many(self, params: torch.Tensor, cache: dict, score, keys: list[str | None] | None = None) -> np.ndarray:
        regions = len(self.scorer.regions)
        if keys is None:
            keys = [_key(p) if torch.isfinite(p).all() else None for p in params]
        todo = list(dict.fromkeys(k for k in keys if k is not None and k not in cache))
        if todo:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            for k, d in zip(todo, score(torch.stack([params[first[k]] for k in todo]))):
                cache[k] = np.asarray(d, dtype=float)
        return np.stack([cache[k] if k is not None else np.full(regions, np.nan) for k in keys]) if keys else \
            np.zeros((0, regions))

    def val(self, params: torch.Tensor, keys: list[str | None] | None = None) -> np.ndarray:
        """[N, R]: pooled Dice on the validation patches."""
        return self._many(params, self._val, lambda p: self.scorer.dice_many(p, "val"), keys)

    def volumes(self, params: torch.Tensor, keys: list[str | None] | None = None) -> np.ndarray:
        """[N, R]: mean Dice over the test volumes."""
        before, began = len(self._volume), time.perf_counter()
        out = self._many(params, self._volume, lambda p: self.scorer.volume_dice_many(p, self.cases), keys)
        self.volume_networks += len(self._volume) - before
        self.volume_seconds += time.perf_counter() - began
        return out


def r_squared(achieved: np.ndarray, prompted: np.ndarray) -> float:
    """G.pt's prompt alignment: 1 − Σ(achieved − prompted)² / Σ(prompted − mean prompt)²."""
    total = np.sum((prompted - prompted.mean()) ** 2)
    return float(1 - np.sum((achieved - prompted) ** 2) / total) if total > 0 else float("nan")


class Evaluation:
    """Every generator's networks for every request, scored; one method per table."""

    def __init__(self, zoo: Zoo, generators: dict[str, Generator], scorer: Scorer, settings: EvaluationSettings,
                 seed: int, threads: int = 1):
        self.zoo, self.scorer, self.settings, self.seed, self.threads = zoo, scorer, settings, seed, threads
        self.generators = generators
        self.context = Context(zoo, seed, settings.neighbours)
        self.requests = make_requests(zoo, settings.sample).reset_index(drop=True)
        cases = read_json(scorer.splits)["test"]
        self.scores = Scores(scorer, cases[:settings.test_cases] if settings.test_cases else cases)
        self.regions = zoo.regions
        self.tasks = zoo.tasks
        self.params = {name: g.make(self.context, self.requests) for name, g in generators.items()}
        self.keys = {name: [self._aligned_key(p, s) if torch.isfinite(p).all() else None
                            for p, s in zip(params, self.requests["start"])] for name, params in self.params.items()}
        self.adam_learned = self._adam_learned()
        self.networks = self._networks()

    # which tasks are judged ------------------------------------------------------------------------------------
    def _adam_learned(self) -> dict[str, float]:
        """Per task with requests: the mean over held-out parents of Adam's val-chosen best on volumes."""
        rows = self.requests[(self.requests["kind"] == "oneshot") & (self.requests["role"] == "heldout")
                             & (self.requests["draw"] == 0)]
        out = {}
        if "adam_best" not in self.params:
            return out
        dice = self.scores.volumes(self.params["adam_best"][list(rows.index)],
                                   [self.keys["adam_best"][k] for k in rows.index])
        for task in dict.fromkeys(rows["task"]):
            mine = (rows["task"] == task).to_numpy()
            out[task] = float(np.nanmean([task_dice(d, task, self.regions) for d in dice[mine]]))
        return out

    def _aligned_key(self, vector: torch.Tensor, start: str) -> str:
        """What tells a network from ``start`` apart: its weights in the aligned coordinates."""
        return _key(self.context.to_reference(vector, start))

    def learned_by_adam(self, task: str) -> bool:
        return self.adam_learned.get(task, np.nan) >= LEARNED_BY_ADAM

    # the networks table ------------------------------------------------------------------------------------------
    def _networks(self) -> pd.DataFrame:
        req, ctx, regions = self.requests, self.context, self.regions
        volume_rows = req["kind"].isin(VOLUME_KINDS) & req["task"].map(self.learned_by_adam)
        frames = []
        self.scoring_cost = {}  # per generator: distinct networks it added to the volume scoring, and their seconds
        for name, generator in self.generators.items():
            params = self.params[name]
            before, seconds = self.scores.volume_networks, self.scores.volume_seconds
            keys = self.keys[name]
            # validation Dice where it is a criterion's metric (prompt following), whole volumes where the criteria
            # read them (one-shot and in-sample requests of the tasks Adam learns)
            val = np.full((len(req), len(regions)), np.nan)
            aligned = np.flatnonzero((req["kind"] == "align").to_numpy())
            if len(aligned):
                val[aligned] = self.scores.val(params[aligned], [keys[k] for k in aligned])
            volume = np.full_like(val, np.nan)
            wanted = np.flatnonzero(volume_rows.to_numpy()
                                    | ((name == "adam_best") & (req["kind"] == "oneshot").to_numpy()))
            if len(wanted):
                volume[wanted] = self.scores.volumes(params[wanted], [keys[k] for k in wanted])
            table = req.copy()
            for key, value in generator.describe().items():
                table.insert(0, key, value)
            table[[f"val_dice_{n}" for n in regions]] = val
            table[[f"dice_{n}" for n in regions]] = volume
            table["task_dice_val"] = [task_dice(v, t, regions) for v, t in zip(val, req["task"])]
            table["task_dice"] = [task_dice(v, t, regions) for v, t in zip(volume, req["task"])]
            table["task_prompt"] = [task_dice(req.loc[k, [f"prompt_{n}" for n in regions]].to_numpy(float), t,
                                              regions) for k, t in zip(req.index, req["task"])]
            d_train, d_own = [], []
            for k, row in req.iterrows():
                if row["kind"] == "align" or not torch.isfinite(params[k]).all():
                    d_train.append(np.nan)
                    d_own.append(np.nan)
                    continue
                d_train.append(self._d_train(params[k], row["start"], row["task"]))
                d_own.append(self._d_own(params[k], row["start"], row["task"]))
            table["d_train"], table["d_own"] = d_train, d_own
            frames.append(table)
            self.scoring_cost[name] = {"volume_networks": self.scores.volume_networks - before,
                                       "volume_seconds": self.scores.volume_seconds - seconds}
        return pd.concat(frames, ignore_index=True)

    def _d_train(self, vector: torch.Tensor, start: str, task: str) -> float:
        """Distance to the nearest training checkpoint of the task, in aligned coordinates."""
        keys, aligned, _ = self.context.training(task)
        if not keys:
            return np.nan
        return float(self.context.distance(aligned, self.context.to_reference(vector, start)).min())

    def _d_own(self, vector: torch.Tensor, start: str, task: str) -> float:
        """Distance to the nearest checkpoint (after ≥ 1 step) of the start's own Adam runs of the task."""
        rows = [r.params[1:] for r in self.context.own_runs(start, task) if len(r.params) > 1]
        if not rows:
            return np.nan
        return float(self.context.distance(torch.cat(rows), vector).min())

    # the other tables --------------------------------------------------------------------------------------------
    def prompting(self) -> pd.DataFrame:
        """Per generator, task and held-out start: achieved against prompted val task Dice over the align prompts."""
        align = self.networks[self.networks["kind"] == "align"]
        rows = []
        for (name, task, start), g in align.groupby(["generator", "task", "start"], sort=False):
            p, a = g["task_prompt"].to_numpy(float), g["task_dice_val"].to_numpy(float)
            ok = np.isfinite(a)
            rho = stats.spearmanr(p[ok], a[ok]).statistic if ok.sum() > 2 and np.ptp(a[ok]) > 0 else np.nan
            rows.append({"generator": name, "task": task, "start": start, "prompts": int(ok.sum()),
                         "r2": r_squared(a[ok], p[ok]) if ok.sum() > 1 else np.nan, "spearman": float(rho),
                         "mean_abs_error": float(np.abs(a[ok] - p[ok]).mean()) if ok.any() else np.nan})
        return pd.DataFrame(rows)

    def finetune(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Adam (``finetune_steps``, the start's own run's task, learning rate and data seed) from each start and from
        draw 0 of each learned and trivial generator's network, all trained at once by the zoo engine and scored on
        the test patches; the steps (≥ 1) each needs to reach the best Dice Adam from the start reaches in the same
        budget."""
        steps = self.settings.finetune_steps
        shots = self.networks[(self.networks["kind"] == "oneshot") & (self.networks["role"] == "heldout")
                              & (self.networks["draw"] == 0)]
        chosen = [n for n, g in self.generators.items() if g.kind in ("learned", "trivial") and n != "copy"]
        arms = []
        for (start, task), _ in shots.groupby(["start", "task"], sort=False):
            if not self.learned_by_adam(task):
                continue
            runs = self.context.own_runs(start, task)
            if not runs:
                continue
            lr, seed = runs[0].lr, runs[0].seed
            arms.append({"name": f"{start}|{task}|start", "task": task, "lr": lr, "seed": seed,
                         "start": self.context.start_params(start), "steps": steps})
            for name in chosen:
                k = self.requests.index[(self.requests["kind"] == "oneshot") & (self.requests["start"] == start)
                                        & (self.requests["task"] == task) & (self.requests["draw"] == 0)][0]
                vector = self.params[name][k]
                if torch.isfinite(vector).all():
                    arms.append({"name": f"{start}|{task}|{name}", "task": task, "lr": lr, "seed": seed,
                                 "start": vector, "steps": steps})
        if not arms:
            return pd.DataFrame(), pd.DataFrame()
        curves = adam_curves(self.scorer, self.zoo, arms, settings=self.settings.zoo, threads=self.threads)
        parts = curves["name"].str.split("|", expand=True)
        curves = curves.assign(start=parts[0], task=parts[1], source=parts[2]).drop(columns="name")
        rows = []
        for (start, task), c in curves.groupby(["start", "task"], sort=False):
            base = c[c["source"] == "start"]
            target = float(base["task_dice"].max())
            if not target > float(base.loc[base["step"] == 0, "task_dice"].iloc[0]):
                continue  # Adam from this start does not improve within the budget: nothing to reach
            start_steps = first_step_reaching(base, target)
            for name in ["copy", *chosen]:
                curve = base if name == "copy" else c[c["source"] == name]
                if curve.empty:
                    continue
                rows.append({"generator": name, "start": start, "task": task, "target_dice": target,
                             "dice_at_0": float(curve.loc[curve["step"] == 0, "task_dice"].iloc[0]),
                             "steps_to_target": first_step_reaching(curve, target), "start_steps": start_steps,
                             "budget": steps})
        return curves, pd.DataFrame(rows)

    def unification(self) -> pd.DataFrame:
        """Per held-out parent: every generator's network for every region (task all, mean over draws) against
        multi-task Adam from the same start at the generator's budget; merges of the start's own single-task finals
        beside them."""
        shots = self.networks[(self.networks["kind"] == "oneshot") & (self.networks["role"] == "heldout")
                              & (self.networks["task"] == ALL)]
        rows = []
        for (name, start), g in shots.groupby(["generator", "start"], sort=False):
            dice = g[[f"dice_{n}" for n in self.regions]].to_numpy(float).mean(0)
            budget = int(g["budget"].iloc[0])
            adam = self.context.start_params(start) if budget == 0 else self.context.adam_at(start, ALL, budget)
            if adam is None:  # beyond the run: its final
                runs = self.context.own_runs(start, ALL)
                adam = runs[0].params[-1] if runs else None
            adam_dice = (self.scores.volumes(adam[None], [self._aligned_key(adam, start)])[0] if adam is not None
                         else np.full(len(self.regions), np.nan))
            with np.errstate(all="ignore"):
                rows.append({"generator": name, "start": start, "budget": budget,
                             "mean_dice": float(np.nanmean(dice)), "adam_mean_dice": float(np.nanmean(adam_dice)),
                             **{f"dice_{n}": v for n, v in zip(self.regions, dice)}})
        table = pd.DataFrame(rows)
        merges = [m for start in dict.fromkeys(shots["start"]) for m in self._merges(start)]
        return pd.concat([table, pd.DataFrame(merges)], ignore_index=True) if merges else table

    def _merges(self, start: str) -> list[dict]:
        """The start's own single-task finals (per task the final with the best val task Dice) merged: the best on
        val of soup, task arithmetic (λ) and TIES (kept share, λ), with every task vector and without the lesion's
        (a region named *lesion*)."""
        finals, names = [], []
        for task in [t for t in self.tasks if t != ALL]:
            runs = self.context.own_runs(start, task)
            if runs:
                pick = max(runs, key=lambda r: self.zoo.task_dice(r.dice[-1], task))
                finals.append(pick.params[-1])
                names.append(task)
        base = self.context.start_params(start)
        variants = [("merge of every task vector", list(range(len(finals))))]
        kept = [i for i, n in enumerate(names) if "lesion" not in n]
        if len(kept) < len(finals):
            variants.append(("merge without the lesion vector", kept))
        out = []
        for label, chosen in variants:
            if len(chosen) < 2:
                continue
            vectors = torch.stack([finals[i] for i in chosen])
            candidates = [("soup", merge.soup(base, vectors))]
            candidates += [(f"task arithmetic λ={x}", merge.task_arithmetic(base, vectors, x))
                           for x in (0.25, 0.5, 0.75, 1.0, 1.25)]
            candidates += [(f"TIES keep {k:.0%} λ={x}", merge.ties(base, vectors, k, x))
                           for k in (0.1, 0.2, 0.5, 1.0) for x in (0.5, 1.0, 1.5, 2.0)]
            stacked = torch.stack([c for _, c in candidates])
            val = self.scores.val(stacked, [self._aligned_key(c, start) for c in stacked]).mean(1)
            name, vector = candidates[int(np.argmax(val))]
            dice = self.scores.volumes(vector[None], [self._aligned_key(vector, start)])[0]
            with np.errstate(all="ignore"):
                out.append({"generator": label, "start": start, "budget": np.nan, "mean_dice": float(np.nanmean(dice)),
                            "adam_mean_dice": np.nan, **{f"dice_{n}": v for n, v in zip(self.regions, dice)},
                            "note": f"{name} (val-chosen of {len(candidates)}) of {', '.join(names[i] for i in chosen)}"})
        return out


def write_evaluation(evaluation: Evaluation, losses: dict[str, pd.DataFrame], out: Path) -> dict:
    """Every table, figure, the criteria and the summary into the new folder ``out`` (all or nothing); ``losses``:
    each learned generator's training loss curve (for its figure)."""
    curves, tuned = evaluation.finetune()
    tables = {"networks": evaluation.networks, "prompting": evaluation.prompting(), "finetune": tuned,
              "finetune_curves": curves, "unification": evaluation.unification()}
    judged = criteria.judge(tables, evaluation)
    tables["criteria"] = judged.table
    zoo = evaluation.zoo
    summary = {"train_runs": len(zoo.select("train")), "insample_runs": len(zoo.select("insample")),
               "heldout_runs": len(zoo.select("heldout")), "fresh_runs": len(zoo.select("fresh")),
               "train_parents": len(zoo.starts_of("train")), "heldout_parents": len(zoo.starts_of("heldout")),
               "fresh_inits": len(zoo.starts_of("fresh")), "tasks": evaluation.tasks,
               "test_cases": len(evaluation.scores.cases),
               "adam_best_by_task": evaluation.adam_learned,
               "not_learned_by_adam": [t for t in evaluation.tasks if not evaluation.learned_by_adam(t)],
               "volume_networks_scored": evaluation.scores.volume_networks,
               "volume_scoring_seconds": evaluation.scores.volume_seconds,
               "volume_scoring_seconds_by_generator": evaluation.scoring_cost,
               "generators": {n: g.describe() | ({"sidecar": {k: v for k, v in g.sidecar.items()
                                                            if k not in ("layout", "architecture", "regions")}}
                                                 if hasattr(g, "sidecar") else {})
                              for n, g in evaluation.generators.items()},
               **judged.summary}
    write_evaluation_folder(out, tables, summary,
                            lambda folder: figures.write_all(tables, zoo.regions, folder, losses, judged))
    return summary


def evaluate_generators(samples: list[Path], index: Path, pre: Preprocessed, splits: Path, *,
                        settings: EvaluationSettings, losses: dict[str, Path], data_seed: int, seed: int, device: str,
                        threads: int, out: Path, summary_path: Path | None) -> dict:
    """``segzoo weightgen-evaluate``: load the zoo and the learned generators' samples, evaluate every generator,
    write the folder (and the summary without timings)."""
    from segzoo.weightgen.zoo.runs import load_zoo

    zoo = load_zoo(index)
    settings = dataclasses.replace(settings, zoo=resolve(settings.zoo, Path(index).parent / "starts"))
    scorer = Scorer(pre, splits, settings.zoo, data_seed, device)
    generators = {**baselines(settings.zoo.budgets, settings.zoo.steps), **learned(samples)}
    evaluation = Evaluation(zoo, generators, scorer, settings, seed=seed, threads=threads)
    for name, g in generators.items():
        if g.kind == "learned":
            asked = evaluation.requests[evaluation.requests["task"].isin(set(g.table["task"]))]
            missing = {request_key(r) for _, r in asked.iterrows()} - set(g.rows)
            if missing:
                raise SegzooError(f"{name}: its samples answer other requests than this zoo asks ({len(missing)} "
                                  "missing); rerun its sampling")
    summary = write_evaluation(evaluation, {n: pd.read_csv(p) for n, p in losses.items()}, out)
    if summary_path:  # the numbers without timings, so that reruns give the same file
        write_json(summary_path, without_timings(summary))
    return summary


def without_timings(value):
    """``value`` with every key that names seconds left out, at any depth (the generators' sidecars time their
    sampling): what stays is a function of the config and the code."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value
