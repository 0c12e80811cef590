"""Weight-generation numbers of a finished run, as Markdown tables for bench/RESULTS.md.

    .venv/bin/python bench/weightgen.py                          # results/ of the demo
    .venv/bin/python bench/weightgen.py --results results --dataset Dataset001_SpinalPhantom

Reads the zoo summary, the Snakemake benchmarks of the weight-generation jobs (wall time per job)
and the evaluation tables; prints zoo size and cost, G.pt training vs sampling time, prompt
alignment (R²), one-shot vs best checkpoint vs Adam, the memorisation audit and unification.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import pandas as pd


def seconds(tsv: Path) -> float:
    return float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--dataset", default="Dataset001_SpinalPhantom")
    args = parser.parse_args()
    r, ds = args.results, args.dataset
    zoo = json.loads((r / "zoo" / ds / "zoo.json").read_text())
    ev = r / "weightgen" / ds / "evaluation"
    summary = json.loads((ev / "summary.json").read_text())
    bench = r / "benchmarks"
    zoo_jobs = [seconds(t) for t in (bench / "zoo" / ds).glob("*_seed*.tsv")]
    stage = {name: seconds(bench / "weightgen" / ds / f"{name}.tsv") for name in ("gpt_train", "gpt_sample",
                                                                                 "gpt_evaluate")}
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; python {platform.python_version()}\n")
    print("| zoo runs kept / dropped | checkpoints per task | zoo job wall time (mean, sum) | G.pt train | "
          "sample job | evaluate job | one network sampled alone |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {zoo['runs_kept']} / {zoo['runs_dropped']} | {zoo['checkpoints_per_task']} | "
          f"{sum(zoo_jobs) / len(zoo_jobs):.1f} s, {sum(zoo_jobs):.0f} s | {stage['gpt_train']:.0f} s | "
          f"{stage['gpt_sample']:.0f} s | {stage['gpt_evaluate']:.0f} s | {summary['sample_seconds_one_network']:.3f} s |")
    print("\nPrompt alignment (R² of achieved vs prompted Dice, held-out inits):\n")
    print(pd.read_csv(ev / "alignment.csv").to_markdown(index=False, floatfmt=".3f"))
    print("\nOne-shot vs best training checkpoint vs Adam from the same init (round 1 = first sample):\n")
    shots = pd.read_csv(ev / "oneshot.csv")
    cols = ["run", "round", "prompt", "oneshot_dice", "best_zoo_dice", "adam_final_dice", "adam_steps_to_match",
            "adam_over_sample_time", "d_nearest", "heldout_final_d_nearest", "nearest_task_dice"]
    print(shots[cols].to_markdown(index=False, floatfmt=".3f"))
    print("\nUnification:\n")
    print(pd.read_csv(ev / "unification.csv").drop(columns=["note"]).to_markdown(index=False, floatfmt=".3f"))
    print("\nSummary:\n\n```json\n" + json.dumps(summary, indent=1) + "\n```")


if __name__ == "__main__":
    main()
