"""Time the data stage (phantom, verify, preprocess, splits) at the default config's size.

    .venv/bin/python bench/data_stage.py [--cases 24] [--shape 64 64 32]

Prints a Markdown table; copy it into bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from segzoo.data.phantom import PhantomSpec, write_phantom_dataset
from segzoo.data.preprocess import preprocess_dataset
from segzoo.data.preprocessed import Preprocessed
from segzoo.data.splits import splits_for_preprocessed
from segzoo.data.verify import verify_dataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 64, 32])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raw, pre = Path(tmp) / "raw" / "D", Path(tmp) / "pre" / "D"
        steps = [
            ("phantom", lambda: write_phantom_dataset(raw, args.cases, 42, PhantomSpec(shape=tuple(args.shape)))),
            ("verify", lambda: verify_dataset(raw)),
            ("preprocess (verify included)", lambda: preprocess_dataset(raw, pre)),
            ("splits", lambda: splits_for_preprocessed(Preprocessed(pre), 42, 0.2, 0.2)),
        ]
        for name, step in steps:
            start = time.perf_counter()
            step()
            seconds = time.perf_counter() - start
            rows.append((name, seconds, seconds / args.cases * 1000))
    print(f"data stage, {args.cases} cases of {'x'.join(map(str, args.shape))} voxels, "
          f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}\n")
    print("| step | total s | ms per case |\n| --- | ---: | ---: |")
    for name, seconds, per_case in rows:
        print(f"| {name} | {seconds:.2f} | {per_case:.0f} |")


if __name__ == "__main__":
    main()
