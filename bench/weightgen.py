"""Weight generation (G.pt): run the stage and print every success criterion as PASS/FAIL with its numbers.

    .venv/bin/python bench/weightgen.py --run /tmp/wg                 # fresh copy: data stage, then the timed stage
    .venv/bin/python bench/weightgen.py --run /tmp/wg-shared --init shared   # the `shared` row (not the demo)
    .venv/bin/python bench/weightgen.py --workdir .                   # read a finished run (e.g. after `make demo`)
    .venv/bin/python bench/weightgen.py --run /tmp/wg-seed7 --seed 7  # another config seed (phantom, splits, zoo)
    .venv/bin/python bench/weightgen.py --rerun /tmp/wg /tmp/wg-unaligned 'weightgen: {gpt: {align: false}}' 

``--run`` copies the workflow into a new folder, runs the data stage, then times the weight-generation
stage alone (zoo + G.pt + sampling + evaluation) with ``--cores 2``. ``--rerun A B YAML`` copies the finished
run A to B and reruns there what YAML changes (for G.pt keys, G.pt, sampling and evaluation on the same zoo). ``--workdir`` reads what a run left:
the zoo summary, the Snakemake benchmarks, the evaluation tables, and the last Snakemake log's
"Elapsed time" (for a whole ``make demo``: the 15-minute budget). Prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd

from segzoo.weightgen.evaluation.evaluate import MEMORISERS
from segzoo.weightgen.evaluation.folder import EvaluationFolder

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = ["Snakefile", "rules", "schemas", "envs", "presets", "profiles", "config.yaml", "src"]
DATASET = "Dataset001_SpinalPhantom"
OVERRIDE = "override.yaml"
STAGE_BUDGET_S = 600   # zoo + G.pt + evaluation, 2 cores
DEMO_BUDGET_S = 900    # the whole `make demo`


def snakemake(workdir: Path, *args: str) -> float:
    began = time.perf_counter()
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--cores", "2", "--resources", "gpu=2", *args]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"snakemake {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - began


def run_data_stage(workdir: Path, extra: list[str] = ()) -> Path:
    """A workflow copy in ``workdir`` (made once) with the demo phantom preprocessed and split; its results/."""
    if not (workdir / "results" / "splits" / DATASET / "splits.json").is_file():
        if workdir.exists() and any(p.name != OVERRIDE for p in workdir.iterdir()):
            sys.exit(f"{workdir}: exists but holds no finished data stage; give a new folder")
        workdir.mkdir(parents=True, exist_ok=True)
        for name in WORKFLOW:
            src = REPO / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / name)
        snakemake(workdir, *extra, "--", f"results/splits/{DATASET}/splits.json")
    return workdir / "results"


def run_stage(workdir: Path, init: str | None, seed: int | None) -> float:
    """A fresh workflow copy (``seed``, ``init``: config overrides); the data stage; then the weight-generation
    stage alone, timed."""
    if workdir.exists():
        sys.exit(f"{workdir}: already exists; give a new folder")
    overrides = ([f"seed: {seed}"] if seed is not None else []) + ([f"weightgen:\n  init: {init}"] if init else [])
    extra = []
    if overrides:
        workdir.mkdir(parents=True)
        (workdir / OVERRIDE).write_text("\n".join(overrides) + "\n")
        extra = ["--configfile", OVERRIDE]
    run_data_stage(workdir, extra)
    return snakemake(workdir, *extra, "--", f"results/weightgen/{DATASET}/evaluation")


def rerun(finished: Path, workdir: Path, overrides: str) -> float:
    """A copy of the finished run with ``overrides`` (YAML, e.g. ``weightgen: {gpt: {align: false}}``) laid over
    its configuration: Snakemake reruns what they change (for G.pt keys: G.pt, sampling and evaluation; the zoo
    is reused)."""
    if workdir.exists():
        sys.exit(f"{workdir}: already exists; give a new folder")
    shutil.copytree(finished, workdir, symlinks=True)
    (workdir / "rerun.yaml").write_text(overrides + "\n")
    files = [OVERRIDE, "rerun.yaml"] if (workdir / OVERRIDE).is_file() else ["rerun.yaml"]
    return snakemake(workdir, "--configfile", *files, "--", f"results/weightgen/{DATASET}/evaluation")


def seconds(tsv: Path) -> float:
    return float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])


def demo_elapsed(workdir: Path) -> float | None:
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    for log in reversed(logs):
        found = re.search(r"Elapsed time: (\d+):(\d+):(\d+(?:\.\d+)?)", log.read_text())
        if found and "rule all" in log.read_text().replace("localrule all", "rule all"):
            h, m, s = found.groups()
            return int(h) * 3600 + int(m) * 60 + float(s)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="new folder: copy the workflow there and run the stage")
    parser.add_argument("--init", choices=["spawn", "shared", "per_seed"], help="with --run: weightgen.init")
    parser.add_argument("--seed", type=int, help="with --run: the config seed (a new phantom, splits and zoo)")
    parser.add_argument("--rerun", nargs=3, metavar=("FINISHED", "NEW", "YAML"),
                        help="copy a finished run and rerun it there with YAML laid over its configuration")
    parser.add_argument("--workdir", type=Path, default=REPO, help="a finished run's folder (default: this checkout)")
    args = parser.parse_args()
    stage_wall = run_stage(args.run, args.init, args.seed) if args.run else None
    if args.rerun:
        print(f"rerun with {args.rerun[2]}: {rerun(Path(args.rerun[0]), Path(args.rerun[1]), args.rerun[2]):.0f} s\n")
    workdir = args.run or (Path(args.rerun[1]) if args.rerun else args.workdir)
    results = workdir / "results"
    zoo = json.loads((results / "zoo" / DATASET / "zoo.json").read_text())
    ev = EvaluationFolder(results / "weightgen" / DATASET / "evaluation")
    summary = ev.summary()
    bench = results / "benchmarks"
    zoo_jobs = [seconds(t) for t in (bench / "zoo" / DATASET / "runs").rglob("*.tsv")]
    starts = [seconds(t) for t in (bench / "zoo" / DATASET / "starts").rglob("*.tsv")]
    stage = {n: seconds(bench / "weightgen" / DATASET / f"{n}.tsv")
             for n in ("gpt_train", "gpt_sample", "gpt_evaluate")}
    print(f"{date.today()}: {platform.node()}, {platform.machine()}, python {platform.python_version()}; "
          f"workdir {workdir}; aligned: {summary['aligned']}\n")
    print("| parents (train / held out) | runs (train / in-sample / held-out) | checkpoints per task (train) | "
          "zoo starts: count, sum | zoo jobs: count, sum | G.pt train | sample | evaluate | one network sampled |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    roles = zoo["runs_per_role"]
    print(f"| {summary['train_parents']} / {summary['heldout_parents']} | {roles.get('train', 0)} / "
          f"{roles.get('insample', 0)} / {roles.get('heldout', 0)} | {zoo['checkpoints_per_task']} | "
          f"{len(starts)}, {sum(starts):.0f} s | {len(zoo_jobs)}, {sum(zoo_jobs):.0f} s | {stage['gpt_train']:.0f} s | "
          f"{stage['gpt_sample']:.0f} s | {stage['gpt_evaluate']:.0f} s | "
          f"{summary['sample_seconds_one_network']:.3f} s |")
    criteria = ev.table("criteria")
    rows = [(bool(c.passed), c.criterion, c.task, c.detail) for c in criteria.itertuples()]
    if stage_wall is not None:
        rows.append((stage_wall <= STAGE_BUDGET_S, "zoo + G.pt + evaluation ≤ 10 min wall (2 cores)", "time",
                     f"{stage_wall:.0f} s"))
    demo = demo_elapsed(workdir)
    if demo is not None:
        rows.append((demo <= DEMO_BUDGET_S, "whole `make demo` pipeline ≤ 15 min", "time",
                     f"{demo:.0f} s (Snakemake's elapsed time of the last full run)"))
    print(f"\n{sum(p for p, *_ in rows)} of {len(rows)} criteria pass\n")
    print("| | criterion | task | measured |\n| --- | --- | --- | --- |")
    for passed, name, task, detail in rows:
        print(f"| {'PASS' if passed else 'FAIL'} | {name} | {task} | {detail} |")
    if summary["not_learned_regions"]:
        print(f"\nNot learned by any zoo run (best val Dice < 0.3; judged all the same): "
              f"{', '.join(summary['not_learned_regions'])}")
    shots = ev.table("oneshot")
    if len(shots):
        columns = ["oneshot_dice", "adam_best_dice", *[f"{m}_dice" for m in MEMORISERS], "novelty_ratio"]
        print("\noneshot (whole test volumes, mean over held-out parents x draws; novelty: median):\n")
        means = shots.groupby("task", sort=False)[columns].mean()
        means["novelty_ratio"] = shots.groupby("task", sort=False)["novelty_ratio"].median()
        print(means.to_markdown(floatfmt=".3f"))
    for name in ("alignment", "finetune", "unification", "insample"):
        table = ev.table(name)
        if table.empty:
            continue
        if name == "finetune":
            table = table.groupby("task", sort=False)[["target_dice", "sample_dice_at_0", "sample_dice_at_5",
                                                        "sample_steps_to_best", "parent_steps_to_best"]].median()
            print("\nfinetune (median over draws; steps NaN: not within the budget):\n")
            print(table.to_markdown(floatfmt=".3f"))
            continue
        if name == "unification":
            table = table.groupby("method", sort=False)[[c for c in table.columns if c.startswith(("dice_", "mean"))]
                                                          ].mean().reset_index()
        print(f"\n{name}:\n")
        print(table.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
