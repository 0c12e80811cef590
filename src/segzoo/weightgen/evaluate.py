"""``segzoo gpt-evaluate``: does a one-shot G.pt network work, and is it more than a memoriser?

Prompts and every selection (best checkpoint, merge coefficients) use the zoo's *validation* batch;
every number reported is measured on the *test* batch (patches of the test cases), and the headline
networks also on the whole test volumes. Tables written to the evaluation folder
(:mod:`segzoo.weightgen.evaluation_folder`):

- ``samples.csv``     every generated network: prompt, test (and val) Dice, the memorisation audit
- ``alignment.csv``   per held-out run and trained region: R² as G.pt defines it (1 − SSE / variance of
                      the prompts), Pearson r, the same R² for the lookup memoriser; a pooled row per task
- ``oneshot.csv``     per held-out run: one-shot vs best checkpoint (chosen on val) vs the run's own final
                      vs a uniform soup of the task's finals, with every memoriser and the novelty ratio
- ``finetune.csv``    Adam from the one-shot network vs from the start, and steps (time) to match
- ``unification.csv`` every region prompted at once vs merges of single-task finals vs multi-task training
- ``stress.csv``      one-shot networks for a held-out parent G.pt never saw
- ``criteria.csv``    the pass/fail criteria (segzoo.weightgen.criteria)

A region is *learned* when some training checkpoint reaches validation Dice 0.3 on it; regions that
are not learned are reported but left out of the headline numbers and the criteria.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segzoo.data.preprocessed import Preprocessed
from segzoo.io import write_json
from segzoo.weightgen import criteria, figures, merge
from segzoo.weightgen.audit import Audit
from segzoo.weightgen.evaluation_folder import write_evaluation_folder
from segzoo.weightgen.finetune import STEPS, adam_curves, first_step_reaching
from segzoo.weightgen.gpt_train import TrainedGPT
from segzoo.weightgen.sample import lookup
from segzoo.weightgen.scoring import Scorer
from segzoo.weightgen.zoo import ALL, Zoo, task_regions

LEARNED = 0.3  # best validation Dice a region needs in the zoo to count as learned


def r_squared(achieved: np.ndarray, prompted: np.ndarray) -> float:
    """G.pt's prompt alignment: 1 − Σ(achieved − prompted)² / Σ(prompted − mean prompt)²."""
    total = np.sum((prompted - prompted.mean()) ** 2)
    return float(1 - np.sum((achieved - prompted) ** 2) / total) if total > 0 else float("nan")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else float("nan")


def learned_regions(zoo: Zoo) -> list[str]:
    best = np.max(np.concatenate([r.dice for r in zoo.select("train")]), axis=0)
    return [name for name, value in zip(zoo.regions, best) if value >= LEARNED]


def headline_tasks(zoo: Zoo) -> list[str]:
    """Single tasks on a learned region that have held-out runs: the tasks the criteria judge."""
    learned = learned_regions(zoo)
    return [t for t in zoo.tasks if t != ALL and t in learned and zoo.select("heldout", t)]


def best_checkpoint(zoo: Zoo, task: str) -> tuple[str, int]:
    """The training checkpoint of ``task`` with the best validation task Dice."""
    return max(((r.name, i) for r in zoo.select("train", task) for i in range(len(r.params))),
               key=lambda key: zoo.task_dice(zoo.runs[key[0]].dice[key[1]], task))


class Evaluation:
    """G.pt's samples scored with their audit (``samples``); one method per table of the evaluation."""

    def __init__(self, zoo: Zoo, gpt: TrainedGPT, *, params: torch.Tensor, prompts: pd.DataFrame,
                 sample_seconds: float, scorer: Scorer, settings: dict, seed: int, threads: int = 1):
        self.zoo, self.gpt, self.scorer, self.settings, self.threads = zoo, gpt, scorer, settings, threads
        self.params, self.prompts, self.sample_seconds = params, prompts.reset_index(drop=True), sample_seconds
        self.audit = Audit(zoo, gpt.scale, scorer, settings["audit"]["neighbours"], seed)
        self.learned = learned_regions(zoo)
        self.samples = self._score_samples()

    def _task_dice(self, dice, task: str) -> float:
        return float(self.zoo.task_dice(np.asarray(dice), task))

    def _score_samples(self) -> pd.DataFrame:
        """Every sample's test and val Dice and its audit, each kind of network scored in one batched pass."""
        regions = self.zoo.regions
        prompts = self.prompts
        test, masks = self.scorer.score(self.params)
        val = self.scorer.dice_many(self.params, "val")
        targets = prompts[[f"prompt_{n}" for n in regions]].to_numpy(float)
        keys = [lookup(self.zoo, task, target) for task, target in zip(prompts["task"], targets)]
        audits = self.audit.rows(self.params, list(prompts["task"]), keys, masks, list(prompts["kind"] != "align"))
        rows = []
        for k, prompt in prompts.iterrows():
            task = prompt["task"]
            rows.append({**prompt.to_dict(), **{f"dice_{n}": v for n, v in zip(regions, test[k])},
                         **{f"val_dice_{n}": v for n, v in zip(regions, val[k])},
                         **{f"lookup_dice_{n}": v for n, v in zip(regions, self.audit.test_dice(keys[k]))},
                         "task_prompt": self._task_dice(targets[k], task), "task_dice": self._task_dice(test[k], task),
                         "task_dice_val": self._task_dice(val[k], task), **audits[k]})
        return pd.DataFrame(rows)

    def alignment(self) -> pd.DataFrame:
        align = self.samples[self.samples["kind"] == "align"]
        rows = []
        for task, of_task in align.groupby("task"):
            for region in [self.zoo.regions[r] for r in task_regions(task, self.zoo.regions)]:
                groups = [(run, g) for run, g in of_task.groupby("run")] + [("pooled", of_task)]
                for run, g in groups:
                    p = g[f"prompt_{region}"].to_numpy()
                    a, v, m = (g[f"{c}_{region}"].to_numpy() for c in ("dice", "val_dice", "lookup_dice"))
                    rows.append({"task": task, "region": region, "run": run, "n": len(g),
                                 "learned": region in self.learned, "r2": r_squared(a, p), "pearson_r": pearson(a, p),
                                 "mean_abs_error": float(np.abs(a - p).mean()), "r2_val": r_squared(v, p),
                                 "r2_lookup": r_squared(m, p)})
        return pd.DataFrame(rows)

    def oneshot(self) -> pd.DataFrame:
        rows, zoo = [], self.zoo
        best = self.samples[self.samples["kind"] == "best"]
        runs = [zoo.runs[r] for r in best["run"]]
        finals = {r.name: [t.params[-1] for t in zoo.select("train", r.task) if t.start == r.start] for r in runs}
        soups = [r.name for r in runs if finals[r.name]]
        own = self.scorer.dice_many(torch.stack([r.params[-1] for r in runs])) if runs else []
        soup = dict(zip(soups, self.scorer.dice_many(torch.stack(
            [merge.soup(zoo.runs[n].start_params, torch.stack(finals[n])) for n in soups])))) if soups else {}
        best_keys = {task: best_checkpoint(zoo, task) for task in best["task"]}
        self.audit.prefetch(list(best_keys.values()))
        headline_done = set()
        for (_, s), run, own_dice in zip(best.iterrows(), runs, own):
            task = s["task"]
            best_key = best_keys[task]
            final_d = float(self.audit.nearest(run.params[-1])[1][0])
            row = {"run": run.name, "task": task, "learned": all(zoo.regions[r] in self.learned
                                                                 for r in task_regions(task, zoo.regions)),
                   "prompt": s["task_prompt"], "oneshot_dice": s["task_dice"], "oneshot_dice_val": s["task_dice_val"],
                   "best_checkpoint_dice": self._task_dice(self.audit.test_dice(best_key), task),
                   "best_checkpoint_dice_val": self._task_dice(zoo.runs[best_key[0]].dice[best_key[1]], task),
                   "own_final_dice": self._task_dice(own_dice, task),
                   "soup_dice": self._task_dice(soup[run.name], task) if run.name in soup else np.nan,
                   **{c: s[c] for c in ("nearest_dice", "mean_k_dice", "noise_dice", "lookup_dice", "mask_agreement",
                                        "d_nearest")},
                   "heldout_final_d_nearest": final_d, "novelty_ratio": s["d_nearest"] / final_d}
            if task not in headline_done:  # the headline networks: whole test volumes too
                headline_done.add(task)
                row["oneshot_volume_dice"] = self._task_dice(self.scorer.volume_dice(self.params[s.name]), task)
                row["best_checkpoint_volume_dice"] = self._task_dice(
                    self.scorer.volume_dice(self.audit.checkpoint(best_key)), task)
            rows.append(row)
        return pd.DataFrame(rows)

    def finetune(self, shots: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Curves and a summary row per headline task: Adam from the one-shot network vs from the start (every
        arm of every task trained at once)."""
        tasks = headline_tasks(self.zoo)
        steps = self.settings["steps"]
        arms, picked = [], {}
        for task in tasks:
            run = self.zoo.select("heldout", task)[0]
            k = int(self.samples[(self.samples["kind"] == "best") & (self.samples["run"] == run.name)].index[0])
            picked[task] = run
            for source, start, length in (("one-shot", self.params[k], max(STEPS)),
                                          ("start", run.start_params, steps)):
                arms.append({"name": f"{task}/{source}", "task": task, "lr": run.lr, "seed": run.seed, "start": start,
                             "steps": length})
        if not arms:
            return pd.DataFrame(), pd.DataFrame()
        table = adam_curves(self.scorer, self.zoo, arms, settings=self.settings, threads=self.threads)
        curves, rows = [], []
        for task in tasks:
            run = picked[task]
            shot = shots[shots["run"] == run.name].iloc[0]
            target = shot["best_checkpoint_dice"]
            per_source = {}
            for source in ("one-shot", "start"):
                curve = table[table["name"] == f"{task}/{source}"][["step", "task_dice"]].reset_index(drop=True)
                curves.append(curve.assign(task=task, run=run.name, source=source))
                per_source[source] = curve
            match = first_step_reaching(per_source["start"], shot["oneshot_dice"])
            rows.append({"task": task, "run": run.name, "lr": run.lr, "best_checkpoint_dice": target,
                         "oneshot_dice": shot["oneshot_dice"], "start_dice": _dice_at(per_source["start"], 0),
                         **{f"{src}_dice_at_{n}": _dice_at(per_source[src], n) for src in ("one-shot", "start")
                            for n in STEPS},
                         "one-shot_steps_to_best": first_step_reaching(per_source["one-shot"], target),
                         "start_steps_to_best": first_step_reaching(per_source["start"], target),
                         "start_steps_budget": steps, "start_steps_to_oneshot": match,
                         "start_seconds_to_oneshot": match * run.seconds_per_step,
                         "sample_seconds": self.sample_seconds})
        return pd.concat(curves, ignore_index=True), pd.DataFrame(rows)

    def unification(self) -> pd.DataFrame:
        zoo, regions, rows = self.zoo, self.zoo.regions, []
        learned = [regions.index(n) for n in self.learned]

        def add(method: str, dice, note: str, volume=None):
            dice = np.asarray(dice, dtype=float)
            rows.append({"method": method, **{f"dice_{n}": v for n, v in zip(regions, dice)},
                         "mean_dice": float(dice[learned].mean()) if learned else np.nan,
                         "volume_mean_dice": float(np.nanmean(np.asarray(volume)[learned])) if volume is not None
                         else np.nan, "note": note})

        unify = self.samples[self.samples["kind"] == "unify"]
        if len(unify):
            first = self.params[int(unify.index[0])]
            add(criteria.UNIFIED, unify[[f"dice_{n}" for n in regions]].mean().to_numpy(),
                f"mean over {len(unify)} one-shot networks (held-out multi-task runs' starts)",
                self.scorer.volume_dice(first))
            nearest = list(zip(unify["nearest_run"], unify["nearest_index"]))
            self.audit.prefetch(nearest)
            add("nearest training checkpoint to it", np.mean([self.audit.test_dice(k) for k in nearest], 0),
                "memoriser")
        for name, dice, note in self._merges():
            add(name, dice, note)
        multi = zoo.select("train", ALL)
        if multi:
            key = best_checkpoint(zoo, ALL)
            add("best multi-task checkpoint", self.audit.test_dice(key), f"{key[0]} #{key[1]}, chosen on val")
        held = zoo.select("heldout", ALL)
        if held:
            add(criteria.MULTITASK_ADAM, self.scorer.dice_many(torch.stack([r.params[-1] for r in held])).mean(0),
                f"finals of the {len(held)} held-out multi-task runs ({self.settings['steps']} Adam steps from "
                "the start)")
        return pd.DataFrame(rows)

    def _merges(self) -> list[tuple[str, np.ndarray, str]]:
        """Soup, task arithmetic and TIES of the single-task finals that share the held-out runs' start
        (per task the final with the best val task Dice); λ and the kept share chosen on val."""
        zoo = self.zoo
        held = zoo.select("heldout")
        start = held[0].start if held else zoo.select("train")[0].start
        finals, base = [], None
        for task in [t for t in zoo.tasks if t != ALL]:
            runs = [r for r in zoo.select("train", task) if r.start == start]
            if runs:
                pick = max(runs, key=lambda r: zoo.task_dice(r.dice[-1], task))
                finals.append(pick.params[-1])
                base = pick.start_params
        if len(finals) < 2:
            return []
        finals = torch.stack(finals)
        learned = [zoo.regions.index(n) for n in self.learned]
        lams = (0.25, 0.5, 0.75, 1.0, 1.25)
        grid = [(k, x) for k in (0.1, 0.2, 0.5, 1.0) for x in (0.5, 1.0, 1.5, 2.0)]
        candidates = ([merge.task_arithmetic(base, finals, x) for x in lams]
                      + [merge.ties(base, finals, *kx) for kx in grid])
        val = self.scorer.dice_many(torch.stack(candidates), "val")[:, learned].mean(1)  # every candidate at once
        lam = lams[int(np.argmax(val[:len(lams)]))]
        keep, lam_t = grid[int(np.argmax(val[len(lams):]))]
        note = f"{len(finals)} single-task finals from {start}"
        test = self.scorer.dice_many(torch.stack([merge.soup(base, finals), candidates[lams.index(lam)],
                                                  candidates[len(lams) + grid.index((keep, lam_t))]]))
        return [("uniform soup", test[0], note), (f"task arithmetic (λ={lam})", test[1], note),
                (f"TIES (keep {keep:.0%}, λ={lam_t})", test[2], note)]

    def stress(self) -> pd.DataFrame:
        picked = self.samples[self.samples["kind"] == "stress"]
        runs = [self.zoo.runs[r] for r in picked["run"]]
        if not runs:
            return pd.DataFrame()
        dice = self.scorer.dice_many(torch.stack([r.start_params for r in runs] + [r.params[-1] for r in runs]))
        rows = []
        for i, ((_, s), run) in enumerate(zip(picked.iterrows(), runs)):
            task = s["task"]
            rows.append({"run": run.name, "start": run.start, "task": task, "prompt": s["task_prompt"],
                         "oneshot_dice": s["task_dice"], "start_dice": self._task_dice(dice[i], task),
                         "own_final_dice": self._task_dice(dice[len(runs) + i], task),
                         "nearest_dice": s["nearest_dice"], "d_nearest": s["d_nearest"]})
        return pd.DataFrame(rows)


def headline(tables: dict[str, pd.DataFrame], tasks: list[str]) -> dict:
    """The headline numbers (test patches), per headline task where they have one."""
    shots, aligned, unified = tables["oneshot"], tables["alignment"], tables["unification"]
    per_task = {key: {t: _number(shots.loc[shots["task"] == t, column].mean()) for t in tasks}
                for key, column in (("oneshot_dice", "oneshot_dice"), ("best_checkpoint_dice", "best_checkpoint_dice"),
                                    ("noise_dice", "noise_dice"), ("lookup_dice", "lookup_dice"))}
    pooled = aligned[aligned["run"] == "pooled"] if len(aligned) else aligned
    per_task["alignment_r2"] = {t: _number(pooled.loc[(pooled["task"] == t) & (pooled["region"] == t), "r2"].iloc[0])
                                for t in tasks if ((pooled["task"] == t) & (pooled["region"] == t)).any()}

    def best(pattern: str) -> float | None:
        values = unified.loc[unified["method"].str.fullmatch(pattern), "mean_dice"] if len(unified) else []
        return _number(max(values)) if len(values) else None

    return {**per_task, "novelty_ratio": _number(shots.loc[shots["task"].isin(tasks), "novelty_ratio"].median()),
            "unified_mean_dice": best(re.escape(criteria.UNIFIED)),
            "best_merge_mean_dice": best(f"({criteria.MERGES}).*"),
            "multitask_adam_mean_dice": best(re.escape(criteria.MULTITASK_ADAM))}


def _dice_at(curve: pd.DataFrame, step: int) -> float:
    found = curve.loc[curve["step"] == step, "task_dice"]
    return float(found.iloc[0]) if len(found) else np.nan


def _number(value) -> float | None:
    """A float for JSON, None for NaN."""
    return None if value is None or np.isnan(value) else float(value)


def write_evaluation(evaluation: Evaluation, gpt_sidecar: dict, loss: pd.DataFrame | None, out: Path) -> dict:
    """Every table, figure, the criteria and the summary into the new folder ``out`` (all or nothing);
    ``loss`` is G.pt's loss curve (for its figure)."""
    shots = evaluation.oneshot()
    curves, tuned = evaluation.finetune(shots)
    tables = {"samples": evaluation.samples, "alignment": evaluation.alignment(), "oneshot": shots,
              "finetune": tuned, "finetune_curves": curves, "unification": evaluation.unification(),
              "stress": evaluation.stress()}
    verdicts = criteria.judge(tables, headline_tasks(evaluation.zoo))
    tables["criteria"] = verdicts
    zoo = evaluation.zoo
    summary = {"train_runs": len(zoo.select("train")), "heldout_runs": len(zoo.select("heldout")),
               "stress_runs": len(zoo.select("stress")), "train_checkpoints": gpt_sidecar["train_checkpoints"],
               "gpt_parameters": gpt_sidecar["parameters"], "gpt_train_seconds": gpt_sidecar["seconds"],
               "sample_seconds_one_network": evaluation.sample_seconds, "learned_regions": evaluation.learned,
               "not_learned_regions": [r for r in zoo.regions if r not in evaluation.learned],
               **headline(tables, headline_tasks(zoo)),
               "criteria_passed": int(verdicts["passed"].sum()), "criteria_total": len(verdicts),
               "criteria": verdicts.replace({np.nan: None}).to_dict(orient="records")}
    write_evaluation_folder(out, tables, summary, lambda folder: figures.write_all(tables, zoo.regions, folder, loss))
    return summary


def evaluate_samples(gpt_stem: Path, samples_stem: Path, index: Path, pre: Preprocessed, splits: Path, *,
                     settings: dict, data_seed: int, seed: int, device: str, threads: int, out: Path,
                     summary_path: Path | None) -> dict:
    """``segzoo gpt-evaluate``: load everything, evaluate, write the folder (and the summary without timings)."""
    from segzoo.weightgen.gpt_train import load_gpt
    from segzoo.weightgen.sample import load_samples
    from segzoo.weightgen.zoo import load_zoo

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
