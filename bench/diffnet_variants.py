"""DiffNet on equal terms: is the gap to U-Net 3+ the architecture, or this implementation's choices?

    .venv/bin/python bench/diffnet_variants.py --data results/preprocessed/Dataset001_SpinalPhantom \
        --splits results/splits/Dataset001_SpinalPhantom/splits.json --work /tmp/diffnet [--patch 48 48 16]

Trains, with the demo's training settings (config.yaml `train`) and one patch for all, the demo's DiffNet and
variants towards Arridge & Hauptmann's DiffNet (their public code: a 3-layer, 32-channel coefficient CNN, 5
diffusion layers): a wider conductivity CNN, more layers, both; and U-Net 3+ as the reference. Prints the best
validation Dice per region and the training time of each. Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path

from segzoo.config import load_config
from segzoo.data.preprocessed import Preprocessed
from segzoo.models.blocks import count_parameters
from segzoo.models.registry import build_model
from segzoo.train.loop import Run, train

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--patch", type=int, nargs=3, default=[48, 48, 16])
    args = parser.parse_args()
    config = load_config(REPO / "config.yaml", schema_path=REPO / "schemas" / "config.schema.yaml")
    settings = {k: v for k, v in config["train"].items() if k not in ("models", "seeds", "threads", "gpus_per_job")}
    settings.update(patch_size=list(args.patch), batch_size=2)
    pre = Preprocessed(args.data)
    demo = config["models"]["diffnet"]
    variants = [
        ("unet3plus (reference)", "unet3plus", config["models"]["unet3plus"]),
        ("diffnet, the demo's", "diffnet", demo),
        ("diffnet, conductivity CNN 32 wide", "diffnet", {**demo, "hidden": 32}),
        ("diffnet, 8 layers", "diffnet", {**demo, "layers": 8}),
        ("diffnet, 32 wide and 8 layers", "diffnet", {**demo, "hidden": 32, "layers": 8}),
    ]
    rows = []
    for label, model, options in variants:
        out = args.work / label.split(",")[0].replace(" ", "_") / "_".join(f"{k}{v}" for k, v in options.items())
        began = time.perf_counter()
        metrics = train(Run(preprocessed=pre, splits=args.splits, model=model, model_options=options, seed=0,
                            out=out, settings=settings, progress=False))
        parameters = count_parameters(build_model(model, len(pre.channels), len(pre.regions), **options))
        rows.append((label, parameters, metrics["best_val_dice_per_region"], time.perf_counter() - began))
    print(f"## DiffNet variants on equal terms — {date.today()}, {platform.node()} ({os.cpu_count()} cores, CPU), "
          f"patch {'×'.join(map(str, args.patch))}, batch 2, {settings['steps']} steps\n")
    regions = list(pre.regions)
    print("| model | parameters | " + " | ".join(f"val Dice {r}" for r in regions) + " | training s |")
    print("|---|---|" + "---|" * len(regions) + "---|")
    for label, parameters, dice, seconds in rows:
        print(f"| {label} | {parameters:,} | " + " | ".join(f"{dice[r]:.3f}" for r in regions) + f" | {seconds:.0f} |")


if __name__ == "__main__":
    main()
