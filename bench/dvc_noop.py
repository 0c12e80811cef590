"""How long the pipeline tools take when there is nothing to do, in a reproduced git + DVC repository.

    python bench/dvc_noop.py [REPO] [--configfile presets/ci.yaml] [--repeat 3]

REPO (default: the current folder) must already hold results recorded in dvc.lock (after `dvc repro`, or a
`snakemake` run, which records itself). Prints one row per command: median and min wall time in seconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str], cwd: Path) -> float:
    began = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if result.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, nargs="?", default=Path.cwd())
    parser.add_argument("--configfile", action="append", default=[])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    config = [w for c in args.configfile for w in ("--configfile", c)]
    bin_dir = Path(sys.executable).parent
    commands = {
        "dvc status": [str(bin_dir / "dvc"), "status"],
        "dvc repro (no-op)": [str(bin_dir / "dvc"), "repro"],
        "snakemake -n (no-op)": [str(bin_dir / "snakemake"), "-n", *config],
        "snakemake (no-op: no hooks, no dvc commit)": [str(bin_dir / "snakemake"), "--cores", "all", *config],
        "segzoo dvc-sync --check": [sys.executable, "-m", "segzoo", "dvc-sync", "--check", *config],
    }
    print(f"| command | median s | min s |   ({args.repo}, {args.repeat} runs each)")
    print("| --- | --- | --- |")
    for name, cmd in commands.items():
        times = [timed(cmd, args.repo) for _ in range(args.repeat)]
        print(f"| `{name}` | {statistics.median(times):.2f} | {min(times):.2f} |")


if __name__ == "__main__":
    main()
