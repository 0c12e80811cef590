"""The demo's comparison under both protocols: which differences are architecture and which were patch size.

    .venv/bin/python bench/protocols.py --work /tmp/protocols [--reuse]

Copies the workflow twice and runs the comparison stage of the default configuration (config.yaml: the phantom
with its 16 test cases, one seed) with `compare.protocol` equal and budget, the checkpoint zoo off. Prints, per
model and region, the plan's patch, the mean test Dice with its CI and the paired median difference from U-Net 3+
with its CI and Holm p, under each protocol; and for each model how much its Dice moved between the protocols.
Markdown for bench/RESULTS.md. `--reuse` keeps finished runs in --work (Snakemake finds nothing to do).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = ["Snakefile", "rules", "schemas", "envs", "presets", "profiles", "config.yaml", "src"]
DATASET = "Dataset001_SpinalPhantom"
BIN = Path(sys.executable).parent


def run(workdir: Path, protocol: str) -> float:
    for name in WORKFLOW:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, workdir / name, dirs_exist_ok=True)
        else:
            shutil.copy(REPO / name, workdir / name)
    (workdir / "protocol.json").write_text(json.dumps({"compare": {"protocol": protocol},
                                                       "weightgen": {"enabled": False}}))
    began = time.perf_counter()
    result = subprocess.run([str(BIN / "snakemake"), f"results/tables/{DATASET}", "--cores", "2",
                             "--configfile", "protocol.json"], cwd=workdir, capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{BIN}:/usr/bin:/bin"})
    if result.returncode:
        sys.exit(f"snakemake ({protocol}) failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    if args.work.exists() and not args.reuse:
        sys.exit(f"{args.work}: exists (pass --reuse to keep its runs)")
    tables, seconds, patches = {}, {}, {}
    for protocol in ("equal", "budget"):
        workdir = args.work / protocol
        workdir.mkdir(parents=True, exist_ok=True)
        seconds[protocol] = run(workdir, protocol)
        timing = workdir / "seconds.txt"  # the first (timed) run's wall time, kept for --reuse
        if timing.is_file():
            seconds[protocol] = float(timing.read_text())
        else:
            timing.write_text(f"{seconds[protocol]:.1f}")
        tables[protocol] = pd.read_csv(workdir / "results" / "tables" / DATASET / "comparison.csv")
        plans = json.loads((workdir / "results" / "plans" / DATASET / "plans.json").read_text())
        patches[protocol] = {m: "×".join(map(str, e["patch_size"])) + f" b{e['batch_size']}"
                             for m, e in plans["models"].items()}
    print(f"## The demo under both protocols — {date.today()}, {platform.node()} ({os.cpu_count()} cores, CPU)\n")
    print(f"`compare` stage wall time: equal {seconds['equal'] / 60:.1f} min, budget {seconds['budget'] / 60:.1f} min "
          "(data, training, inference, scores; the zoo off).\n")
    print("| model | region | equal: patch | equal: Dice [CI] | equal: Δ vs U-Net 3+ [CI], p | budget: patch | "
          "budget: Dice [CI] | budget: Δ vs U-Net 3+ [CI], p | Dice equal − budget |")
    print("|---|---|---|---|---|---|---|---|---|")
    def cell(r) -> str:
        return f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"

    def effect(r) -> str:
        if pd.isna(r["median_diff"]):
            return "—"
        p = "" if pd.isna(r["p_holm"]) else f", p {r['p_holm']:.2g}"
        return f"{r['median_diff']:+.3f} [{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}]{p}"

    other = tables["budget"]
    for _, row in tables["equal"][tables["equal"]["metric"] == "dice"].iterrows():
        b = other[(other["metric"] == "dice") & (other["model"] == row["model"]) &
                  (other["region"] == row["region"])].iloc[0]
        print(f"| {row['model']} | {row['region']} | {patches['equal'][row['model']]} | {cell(row)} | {effect(row)} | "
              f"{patches['budget'][row['model']]} | {cell(b)} | {effect(b)} | {row['mean'] - b['mean']:+.3f} |")


if __name__ == "__main__":
    main()
