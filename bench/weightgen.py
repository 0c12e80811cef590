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

from segzoo.weightgen.evaluation.criteria import matrix
from segzoo.weightgen.evaluation.folder import EvaluationFolder

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = ["Snakefile", "rules", "schemas", "envs", "presets", "profiles", "config.yaml", "src"]
DATASET = "Dataset001_SpinalPhantom"
OVERRIDE = "override.yaml"
STAGE_BUDGET_S = 480   # zoo + generators + evaluation, 2 cores (issue 31)
DEMO_BUDGET_S = 1200   # the whole `make demo`


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


def run_stage(workdir: Path, init: str | None, seed: int | None, preset: str | None = None) -> float:
    """A fresh workflow copy (``seed``, ``init``: config overrides; ``preset``: a config file of the repository laid
    over config.yaml first); the data stage; then the weight-generation stage alone, timed."""
    if workdir.exists():
        sys.exit(f"{workdir}: already exists; give a new folder")
    overrides = ([f"seed: {seed}"] if seed is not None else []) + ([f"weightgen:\n  init: {init}"] if init else [])
    extra = ["--configfile", preset] if preset else []
    if overrides:
        workdir.mkdir(parents=True)
        (workdir / OVERRIDE).write_text("\n".join(overrides) + "\n")
        extra = ["--configfile", *([preset] if preset else []), OVERRIDE]
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
    parser.add_argument("--configfile", help="with --run: a config file of this repository laid over config.yaml "
                        "(e.g. presets/weightgen_full.yaml)")
    parser.add_argument("--rerun", nargs=3, metavar=("FINISHED", "NEW", "YAML"),
                        help="copy a finished run and rerun it there with YAML laid over its configuration")
    parser.add_argument("--workdir", type=Path, default=REPO, help="a finished run's folder (default: this checkout)")
    args = parser.parse_args()
    stage_wall = run_stage(args.run, args.init, args.seed, args.configfile) if args.run else None
    if args.rerun:
        print(f"rerun with {args.rerun[2]}: {rerun(Path(args.rerun[0]), Path(args.rerun[1]), args.rerun[2]):.0f} s\n")
    workdir = args.run or (Path(args.rerun[1]) if args.rerun else args.workdir)
    results = workdir / "results"
    zoo = json.loads((results / "zoo" / DATASET / "zoo.json").read_text())
    ev = EvaluationFolder(results / "weightgen" / DATASET / "evaluation")
    summary = ev.summary()
    bench = results / "benchmarks"
    zoo_jobs = [seconds(t) for t in (bench / "zoo" / DATASET / "runs").rglob("*.tsv")]
    starts = seconds(bench / "zoo" / DATASET / "starts.tsv")
    stage = {t.stem: seconds(t) for t in sorted((bench / "weightgen" / DATASET).glob("*.tsv"))}
    print(f"{date.today()}: {platform.node()}, {platform.machine()}, python {platform.python_version()}; "
          f"workdir {workdir}\n")
    print("| parents (train / held out / fresh) | runs per role | checkpoints per task (train) | zoo starts | "
          "zoo jobs: count, sum | " + " | ".join(stage) + " | networks scored on volumes |")
    print("| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in stage) + " | --- |")
    print(f"| {summary['train_parents']} / {summary['heldout_parents']} / {summary['fresh_inits']} | "
          f"{zoo['runs_per_role']} | {zoo['checkpoints_per_task']} | {starts:.0f} s | {len(zoo_jobs)}, "
          f"{sum(zoo_jobs):.0f} s | " + " | ".join(f"{v:.0f} s" for v in stage.values())
          + f" | {summary['volume_networks_scored']} on {summary['test_cases']} test cases |")
    timing = []
    if stage_wall is not None:
        timing.append((stage_wall <= STAGE_BUDGET_S, f"weight-generation stage ≤ {STAGE_BUDGET_S // 60} min wall "
                       "(2 cores)", f"{stage_wall:.0f} s"))
    demo = demo_elapsed(workdir)
    if demo is not None:
        timing.append((demo <= DEMO_BUDGET_S, f"whole `make demo` pipeline ≤ {DEMO_BUDGET_S // 60} min (Snakemake)",
                       f"{demo:.0f} s (Snakemake's elapsed time of the last full run)"))
    for passed, name, measured in timing:
        print(f"\n{'PASS' if passed else 'FAIL'}  {name}: {measured}")
    for name, by_role in summary["headline"].items():
        if summary["generators"][name]["generator_kind"] != "learned":
            continue
        for role, h in by_role.items():
            print(f"\n{summary['generators'][name]['label']} from {role} starts: {h['passed']} of {h['of']} "
                  f"discriminative criteria pass ({h['rows']} criteria judged)")
    if summary["not_learned_by_adam"]:
        print(f"\nNot learned by Adam from the held-out parents (whole volumes; every row FAIL): "
              f"{', '.join(summary['not_learned_by_adam'])} (Adam's best: "
              + ", ".join(f"{t} {v:.3f}" for t, v in summary["adam_best_by_task"].items()) + ")")
    cost = summary.get("volume_scoring_seconds_by_generator", {})
    if cost:
        print(f"\nWhole-volume scoring: {summary['volume_networks_scored']} distinct networks in "
              f"{summary['volume_scoring_seconds']:.0f} s ({summary['volume_scoring_seconds'] / max(1, summary['volume_networks_scored']):.2f} s each); "
              "added per generator (a network another generator already made is scored once): "
              + ", ".join(f"{n} {c['volume_networks']} ({c['volume_seconds']:.0f} s)" for n, c in cost.items()))
    print("\nSmallest difference resolvable (80 % power):",
          ", ".join(f"{t} {v:.3f}" if v is not None else f"{t} —"
                    for t, v in summary["smallest_resolvable_difference"].items()))
    table = ev.table("criteria")
    for role in dict.fromkeys(table["starts"]):
        print(f"\nGenerators × criteria ({role} starts):\n")
        print(matrix(table, role).to_markdown(index=False))
    networks = ev.table("networks")
    shots = networks[networks["kind"] == "oneshot"]
    per_start = shots.groupby(["role", "label", "task", "start"], sort=False)["task_dice"].mean().reset_index()
    means = per_start.groupby(["role", "label", "task"], sort=False)["task_dice"].mean().unstack("task")
    print("\nMean Dice per generator (whole test volumes; mean over starts of each start's mean over draws):\n")
    print(means.to_markdown(floatfmt=".3f"))
    for name in ("prompting", "finetune", "unification"):
        frame = ev.table(name)
        if frame.empty:
            continue
        if name == "prompting":
            frame = frame.groupby(["generator", "task"], sort=False)[["r2", "spearman"]].mean().reset_index()
        elif name == "finetune":
            frame = frame.groupby(["generator", "task"], sort=False)[["target_dice", "dice_at_0", "steps_to_target",
                                                                      "start_steps"]].median().reset_index()
        else:
            frame = frame.groupby("generator", sort=False)[["mean_dice", "adam_mean_dice"]].mean().reset_index()
        print(f"\n{name}:\n")
        print(frame.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
