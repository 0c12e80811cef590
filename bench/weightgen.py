"""Weight generation (G.pt): run the stage and print every success criterion as PASS/FAIL with its numbers.

    .venv/bin/python bench/weightgen.py --run /tmp/wg                 # fresh copy: data stage, then the timed stage
    .venv/bin/python bench/weightgen.py --run /tmp/wg-shared --init shared   # the `shared` row (not the demo)
    .venv/bin/python bench/weightgen.py --workdir .                   # read a finished run (e.g. after `make demo`)

``--run`` copies the workflow into a new folder, runs the data stage, then times the weight-generation
stage alone (zoo + G.pt + sampling + evaluation) with ``--cores 2``. ``--workdir`` reads what a run left:
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

from segzoo.weightgen.evaluation_folder import EvaluationFolder

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = ["Snakefile", "rules", "schemas", "envs", "presets", "profiles", "config.yaml", "src"]
DATASET = "Dataset001_SpinalPhantom"
STAGE_BUDGET_S = 600   # zoo + G.pt + evaluation, 2 cores
DEMO_BUDGET_S = 900    # the whole `make demo`


def snakemake(workdir: Path, *args: str) -> float:
    began = time.perf_counter()
    cmd = [str(Path(sys.executable).parent / "snakemake"), *args, "--cores", "2", "--resources", "gpu=2"]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"snakemake {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - began


def run_data_stage(workdir: Path) -> Path:
    """A workflow copy in ``workdir`` (made once) with the demo phantom preprocessed and split; its results/."""
    if not (workdir / "results" / "splits" / DATASET / "splits.json").is_file():
        if workdir.exists():
            sys.exit(f"{workdir}: exists but holds no finished data stage; give a new folder")
        workdir.mkdir(parents=True)
        for name in WORKFLOW:
            src = REPO / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / name)
        snakemake(workdir, f"results/splits/{DATASET}/splits.json")
    return workdir / "results"


def run_stage(workdir: Path, init: str | None) -> float:
    """A fresh workflow copy; the data stage; then the weight-generation stage alone, timed."""
    if workdir.exists():
        sys.exit(f"{workdir}: already exists; give a new folder")
    run_data_stage(workdir)
    extra = []
    if init:
        (workdir / "init.yaml").write_text(f"weightgen:\n  init: {init}\n")
        extra = ["--configfile", "init.yaml"]
    return snakemake(workdir, f"results/weightgen/{DATASET}/evaluation", *extra)


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
    parser.add_argument("--workdir", type=Path, default=REPO, help="a finished run's folder (default: this checkout)")
    args = parser.parse_args()
    stage_wall = run_stage(args.run, args.init) if args.run else None
    workdir = args.run or args.workdir
    results = workdir / "results"
    zoo = json.loads((results / "zoo" / DATASET / "zoo.json").read_text())
    ev = EvaluationFolder(results / "weightgen" / DATASET / "evaluation")
    summary = ev.summary()
    bench = results / "benchmarks"
    zoo_jobs = [seconds(t) for t in (bench / "zoo" / DATASET).rglob("*.tsv") if t.name != "index.tsv"]
    stage = {n: seconds(bench / "weightgen" / DATASET / f"{n}.tsv")
             for n in ("gpt_train", "gpt_sample", "gpt_evaluate")}
    print(f"{date.today()}: {platform.node()}, {platform.machine()}, python {platform.python_version()}; "
          f"workdir {workdir}\n")
    print("| runs (train / held-out / stress) | checkpoints per task (train) | zoo jobs: count, sum | G.pt train | "
          "sample | evaluate | one network sampled |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    roles = zoo["runs_per_role"]
    print(f"| {roles.get('train', 0)} / {roles.get('heldout', 0)} / {roles.get('stress', 0)} | "
          f"{zoo['checkpoints_per_task']} | {len(zoo_jobs)}, {sum(zoo_jobs):.0f} s | {stage['gpt_train']:.0f} s | "
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
    print("\n| | criterion | task | measured |\n| --- | --- | --- | --- |")
    for passed, name, task, detail in rows:
        print(f"| {'PASS' if passed else 'FAIL'} | {name} | {task} | {detail} |")
    if summary["not_learned_regions"]:
        print(f"\nNot learned by any zoo run (left out of the headline): {', '.join(summary['not_learned_regions'])}")
    for name, columns in (("oneshot", None), ("alignment", None), ("finetune", None), ("unification", None),
                          ("stress", None)):
        try:
            table = pd.read_csv(ev.folder / f"{name}.csv")
        except pd.errors.EmptyDataError:
            continue
        if name == "alignment":
            table = table[table["run"] == "pooled"]
        if name == "unification":
            table = table.drop(columns=["note"])
        print(f"\n{name}:\n")
        print(table[columns or table.columns].to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
