"""What nnU-Net's two networks add to the demo: the demo's comparison run without them and with them (train.models
with nnunet and nnunet_resenc), each from a fresh workflow copy, the checkpoint-diffusion stage off in both.

    .venv/bin/python bench/nnunet_rows.py --work /tmp/nnunet_rows [--cores 2] [--report]

Prints Markdown for bench/RESULTS.md: the wall time of each run, every model's jobs from Snakemake's benchmark
files (train, postprocessing, infer, evaluate: wall and CPU seconds; on a shared machine the CPU seconds are the
steadier measure), the planned patch and each model's test Dice (mean [95 % CI], and the paired difference from
the baseline with its Holm p) from the run with them. ``--report`` prints from the folders of an earlier call.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = ["Snakefile", "rules", "schemas", "envs", "presets", "profiles", "config.yaml", "src"]
BIN = Path(sys.executable).parent
DATASET = "Dataset001_SpinalPhantom"
FOUR = ["unet3plus", "ms_unet3plus", "diffnet", "ms_diffnet"]
NEW = ["nnunet", "nnunet_resenc"]


def run_demo(folder: Path, models: list[str], cores: int) -> float:
    """A fresh workflow copy running the demo config with ``models``; its wall time in seconds."""
    folder.mkdir(parents=True)
    for name in WORKFLOW:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, folder / name)
    (folder / "bench.json").write_text(json.dumps({"train": {"models": models}, "weightgen": {"enabled": False}}))
    began = time.perf_counter()
    result = subprocess.run([str(BIN / "snakemake"), "--cores", str(cores), "--resources", "gpu=2", "--configfile",
                             "bench.json"], cwd=folder, capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{BIN}:/usr/bin:/bin"})
    if result.returncode:
        sys.exit(f"snakemake in {folder} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - began


RULES = ("train", "postprocessing", "infer", "evaluate")


def job_seconds(folder: Path, model: str) -> dict[str, tuple[float, float]]:
    """Per rule, a model's job's wall and CPU seconds."""
    out = {}
    for rule in RULES:
        tsv = folder / "results" / "benchmarks" / rule / DATASET / model / "seed0.tsv"
        with tsv.open() as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        out[rule] = (float(row["s"]), float(row["cpu_time"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="new folder for both runs")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="only print, from the folders of an earlier call")
    args = parser.parse_args()
    six = args.work / "six"
    if not args.report:
        if args.work.exists():
            sys.exit(f"{args.work} exists; give a new folder")
        without = run_demo(args.work / "four", FOUR, args.cores)
        with_new = run_demo(six, FOUR + NEW, args.cores)
        (args.work / "wall.json").write_text(json.dumps({"four": without, "six": with_new}))
    wall = json.loads((args.work / "wall.json").read_text())
    print(f"| run (demo config, zoo off, --cores {args.cores}) | wall time |\n| --- | --- |")
    print(f"| the four models | {wall['four']:.0f} s |\n| the four and {', '.join(NEW)} | {wall['six']:.0f} s |")
    print(f"| added | {wall['six'] - wall['four']:.0f} s |\n")
    print("| model (run with six) | " + " | ".join(RULES) + " | sum |\n| --- |" + " --- |" * (len(RULES) + 1))
    for model in FOUR + NEW:
        jobs = job_seconds(six, model)
        print(f"| {model} | " + " | ".join(f"{w:.0f} s (CPU {c:.0f} s)" for w, c in jobs.values())
              + f" | {sum(w for w, _ in jobs.values()):.0f} s (CPU {sum(c for _, c in jobs.values()):.0f} s) |")
    plans = json.loads((six / "results" / "plans" / DATASET / "plans.json").read_text())
    for model in NEW:
        entry = plans["models"][model]
        arch = entry["model_options"]["architecture"]["arch_kwargs"]
        print(f"\n{model}: patch {entry['patch_size']} batch {entry['batch_size']} ({entry['patch_source']}), "
              f"divisors {entry['divisors']}, strides {arch['strides']}, kernels {arch['kernel_sizes']}, "
              f"features {arch['features_per_stage']}, ~{entry['estimated_mb']} MiB")
    comparison = pd.read_csv(six / "results" / "tables" / DATASET / "comparison.csv").query("metric == 'dice'")
    print(f"\nTest Dice (baseline {comparison['baseline'].iloc[0]}; Δ: median paired difference, p: Holm):\n")
    regions = list(dict.fromkeys(comparison["region"]))
    print("| model | " + " | ".join(regions) + " |\n| --- |" + " --- |" * len(regions))
    for model, rows in comparison.groupby("model", sort=False):
        cells = []
        for region in regions:
            r = rows[rows["region"] == region].iloc[0]
            cell = f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
            if not pd.isna(r["median_diff"]):
                cell += f"; Δ {r['median_diff']:+.3f}" + ("" if pd.isna(r["p_holm"]) else f", p {r['p_holm']:.2g}")
            cells.append(cell)
        print(f"| {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
