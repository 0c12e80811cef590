"""Training-step benchmark: per model and patch size, step time, peak memory, share of the step spent waiting for data.

    .venv/bin/python bench/train_step.py                     # CPU, config.yaml's model widths
    .venv/bin/python bench/train_step.py --device cuda --workers 4 --patches 64,64,32 128,128,64

Each (model, patch) runs in its own process so peak memory is its own. The data are the default
phantom, preprocessed once into a temporary folder. Prints a Markdown table for bench/RESULTS.md.
Target: data wait ≤ 5 % of the step.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(args: argparse.Namespace) -> dict:
    """One model at one patch size (runs in a child process)."""
    import torch
    from torch.utils.data import DataLoader

    from segzoo.config import load_config
    from segzoo.data.loader import PatchBatches
    from segzoo.data.preprocessed import Preprocessed
    from segzoo.models.registry import build_model
    from segzoo.devices import acquire
    from segzoo.determinism import make_deterministic
    from segzoo.train.loop import build_optimizer
    from segzoo.train.loss import build_loss

    config = load_config(REPO / "config.yaml", schema_path=REPO / "schemas" / "config.schema.yaml")
    settings = config["train"]
    if args.device == "cuda":
        acquire()
    make_deterministic(0, args.threads)  # time what training pays for determinism
    device = torch.device(args.device)
    patch = [int(p) for p in args.one[1].split(",")]
    pre = Preprocessed(args.data)
    ids = pre.case_ids()
    model = build_model(args.one[0], len(pre.channels), len(pre.regions), **config["models"][args.one[0]])
    model.to(device).train()
    optimizer = build_optimizer(model, settings)
    loss_fn = build_loss()
    batches = PatchBatches(pre, ids, patch, settings["batch_size"], foreground_fraction=settings["foreground_fraction"],
                           seed=0, augment=settings["augment"])
    loader = iter(DataLoader(batches, batch_size=None, sampler=range(args.steps + args.warmup),
                             num_workers=args.workers, pin_memory=device.type == "cuda"))
    bf16 = device.type == "cuda" and settings["bf16"]
    wait = total = 0.0
    for step in range(args.steps + args.warmup):
        t0 = time.perf_counter()
        batch = next(loader)
        t1 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(batch["image"].to(device)), batch["label"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if step >= args.warmup:
            wait += t1 - t0
            total += t2 - t0
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"model": args.one[0], "patch": args.one[1], "step_ms": 1000 * total / args.steps,
            "peak_mb": peak_mb, "data_wait": wait / total}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--patches", nargs="+", default=["48,48,16", "96,96,32"])
    parser.add_argument("--models", nargs="+", default=["unet3plus", "ms_unet3plus", "diffnet", "ms_diffnet"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args)))
        return

    from segzoo.data.phantom import write_phantom_dataset
    from segzoo.data.preprocess import preprocess_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = write_phantom_dataset(Path(tmp) / "raw" / "D", cases=8, seed=0)
        pre = preprocess_dataset(raw, Path(tmp) / "pre" / "D")
        for model in args.models:
            for patch in args.patches:
                cmd = [sys.executable, __file__, "--one", model, patch, "--data", str(pre.folder), "--device",
                       args.device,
                       "--steps", str(args.steps), "--warmup", str(args.warmup), "--workers", str(args.workers),
                       "--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(out.stderr[-2000:], file=sys.stderr)
                    raise SystemExit(f"{model} at {patch} failed")
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"train step, batch from config.yaml, device {args.device}, {args.threads} CPU threads, "
          f"{args.workers} loader workers, {platform.machine()}\n")
    print("| model | patch | step ms | peak MiB | data wait |\n| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['patch'].replace(',', '×')} | {r['step_ms']:.0f} | {r['peak_mb']:.0f} | "
              f"{100 * r['data_wait']:.1f} % |")


if __name__ == "__main__":
    main()
