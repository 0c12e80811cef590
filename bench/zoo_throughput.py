"""Zoo throughput: today's per-run loop against the zoo engine, on the same networks, steps and snapshots.

    .venv/bin/python bench/zoo_throughput.py                 # CPU rows (about 6 minutes on 2 cores)
    .venv/bin/python bench/zoo_throughput.py --stage /tmp/wg  # also time the demo's weight-generation stage
    .venv/bin/python bench/zoo_throughput.py --device cuda --sizes 1 64 256 1024   # on a GPU

Every row runs in its own processes (peak memory is each process's maximum resident set, or the GPU's peak
allocation). A row is a set of zoo runs of the demo's network (PlainConvUNet [4, 8, 16], patch 32 x 32 x 16,
batch 2, Adam lr 0.01) from one parent, each scored on the 24 validation patches at its snapshot steps:

- ``per-run loop``: each run through the pipeline's training loop (``zoo.adam_from``) with its snapshots
  scored one network at a time, as zoo jobs ran before the engine;
- ``engine N``: N runs trained at once by the zoo engine, snapshots scored as the zoo job scores them.

On the CPU every row uses both cores as the pipeline would: two processes of one thread each (Snakemake's two
jobs), each with its share of the runs. Runs per hour = runs / wall time of the slower process; steps per second
= runs x steps / wall time. Prints a Markdown table and the criteria as PASS/FAIL.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
DATASET = "Dataset001_SpinalPhantom"
DEMO_STEPS, DEMO_SNAPSHOTS = 100, 20
SPEEDUP = 4.0        # batched runs per hour over the per-run loop's, 2 CPU cores
STAGE_BUDGET_S = 300  # the demo's weight-generation stage, 2 cores


def worker(data: Path, kind: str, runs: int, steps: int, snapshots: int, threads: int, device: str,
           first_seed: int) -> dict:
    """Train ``runs`` zoo runs one way; return seconds, steps and peak memory (this process)."""
    import torch
    import yaml

    from segzoo.config import validate_config
    from segzoo.data.preprocessed import Preprocessed
    from segzoo.models.flat import flatten
    from segzoo.weightgen.zoo import plan
    from segzoo.weightgen.zoo.engine import Engine
    from segzoo.train.loss import build_loss
    from segzoo.weightgen.zoo.engine import pooled_dice
    from segzoo.weightgen.zoo.scoring import Batch
    from segzoo.weightgen.zoo.runs import adam_from, random_init, snapshot_steps, zoo_members

    config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()), REPO / "schemas" /
                             "config.schema.yaml")
    settings = {**plan.zoo_settings(config)["zoo"], "steps": steps, "checkpoints": snapshots}
    pre = Preprocessed(data / "preprocessed" / DATASET)
    splits = data / "splits" / DATASET / "splits.json"
    torch.set_num_threads(threads)
    start = random_init(settings, pre, 0, 0)
    batch = Batch.of(pre, splits, "val", settings, 0)
    tasks = plan.tasks(config["weightgen"], pre.region_names)
    specs = [{"task": tasks[k % len(tasks)], "lr": 0.01, "seed": first_seed + k} for k in range(runs)]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    if kind == "loop":
        criterion = build_loss()
        for spec in specs:
            task = spec["task"]
            index = len(pre.region_names) if task == plan.ALL else pre.region_names.index(task)
            keep = set(snapshot_steps(steps, snapshots, spec["seed"], index))

            def observe(step, net, loss, keep=keep):
                if step in keep:  # the pre-engine zoo job: one network's forward on the 24 patches
                    with torch.no_grad():
                        was = net.training
                        logits = net.eval()(batch.image.to(device))
                        net.train(was)
                    float(criterion(logits, batch.label.to(device)))
                    pooled_dice((logits > 0).float(), batch.label.to(device))
                    flatten(net)

            adam_from(pre, splits, task, lr=spec["lr"], seed=spec["seed"], start=start, steps=steps,
                      settings=settings, observe=observe, device=device, threads=threads)
    else:
        engine = Engine(pre, settings, device)
        members = zoo_members(specs, {s["seed"]: (start, "parent0") for s in specs}, settings, pre.region_names)
        engine.train(pre, splits, members, settings=settings, threads=threads,
                     on_snapshot=lambda step, group, weights: engine.score(weights, batch.image, batch.label))
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"seconds": seconds, "runs": runs, "steps": runs * steps, "peak_mb": peak}


def row(data: Path, kind: str, runs: int, steps: int, snapshots: int, device: str, processes: int) -> dict:
    """``runs`` split over ``processes`` parallel processes (one thread each on the CPU)."""
    threads = 1 if device == "cpu" else 4
    shares = [runs // processes + (k < runs % processes) for k in range(processes)]
    began = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(
        {"data": str(data), "kind": kind, "runs": share, "steps": steps, "snapshots": snapshots, "threads": threads,
         "device": device, "first_seed": 100 * k})], stdout=subprocess.PIPE, text=True)
        for k, share in enumerate(shares) if share]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        sys.exit(f"{kind} x {runs}: a worker failed")
    wall = time.perf_counter() - began
    slowest = max(o["seconds"] for o in outs)
    return {"engine": "per-run loop" if kind == "loop" else f"engine, {runs // processes} per process",
            "runs": runs, "steps": steps, "runs_per_hour": runs / slowest * 3600,
            "steps_per_second": runs * steps / slowest, "peak_mb": max(o["peak_mb"] for o in outs),
            "process_wall_s": wall}


def drift(data: Path, steps: int = 20) -> list[tuple[str, float]]:
    """How far apart two trainings of the same run end, max |a − b| / max |b| over the weights after ``steps``
    Adam steps (multi-task run, lr 0.01, CPU): the engine against the per-run loop, and the loop against itself on
    another thread count, in float32 and float64."""
    import torch
    import yaml

    from segzoo.config import validate_config
    from segzoo.data.preprocessed import Preprocessed
    from segzoo.weightgen.zoo import plan
    from segzoo.weightgen.zoo.engine import Engine, Member
    from segzoo.weightgen.zoo.runs import adam_from, random_init

    config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()), REPO / "schemas" /
                             "config.schema.yaml")
    settings = plan.zoo_settings(config)["zoo"]
    pre = Preprocessed(data / "preprocessed" / DATASET)
    splits = data / "splits" / DATASET / "splits.json"
    start = random_init(settings, pre, 0, 0)

    def loop(threads, dtype):
        out = {}
        adam_from(pre, splits, plan.ALL, lr=0.01, seed=2, start=start, steps=steps, settings=settings,
                  observe=lambda s, net, loss: out.update(w=torch.cat([p.detach().reshape(-1) for p in
                                                                       net.parameters()])) if s == steps else None,
                  device="cpu", threads=threads, dtype=dtype)
        return out["w"]

    def engine(dtype):
        out = {}
        Engine(pre, settings, dtype=dtype).train(
            pre, splits, [Member("m", plan.ALL, 0.01, 2, start, steps, {steps})], settings=settings, threads=1,
            on_snapshot=lambda s, g, w: out.update(w=w[0]))
        return out["w"]

    rel = lambda a, b: float((a - b).abs().max() / b.abs().max())  # noqa: E731
    rows = []
    for dtype in (torch.float32, torch.float64):
        reference = loop(1, dtype)
        name = str(dtype).removeprefix("torch.")
        rows.append((f"per-run loop, 2 threads vs 1 thread ({name})", rel(loop(2, dtype), reference)))
        rows.append((f"engine vs per-run loop, 1 thread ({name})", rel(engine(dtype), reference)))
    return rows


def prepare(folder: Path) -> Path:
    """The demo's phantom, preprocessed and split, in a workflow copy (made once)."""
    from weightgen import run_data_stage

    return run_data_stage(folder)


def gpt_sizes() -> list[dict]:
    """G.pt's parameters for each preset: the per-token encoders and decoder against the transformer."""
    from segzoo.config import load_config
    from segzoo.models.registry import ZOO_NETWORK, build_model
    from segzoo.models.flat import layout_of
    from segzoo.weightgen.gpt.model import GPT

    rows = []
    for name in ("config.yaml", "presets/gpu_lent.yaml", "presets/gpu.yaml"):
        files = [REPO / "config.yaml"] + ([REPO / name] if name != "config.yaml" else [])
        config = load_config(*files, schema_path=REPO / "schemas" / "config.schema.yaml")
        wg = config["weightgen"]
        layout = layout_of(build_model(ZOO_NETWORK, 1, 3, features=wg["features"],
                                       n_conv_per_stage=wg["n_conv_per_stage"]))
        gpt = GPT.from_config(layout, 3, 4, wg["gpt"])
        per_token = sum(p.numel() for n, p in gpt.named_parameters() if n.startswith(("encode_", "decode")))
        total = sum(p.numel() for p in gpt.parameters())
        network = sum(p.numel() for p in build_model(ZOO_NETWORK, 1, 3, features=wg["features"]).parameters())
        rows.append({"config": name, "network": network, "tokens": gpt.tokenizer.tokens, "gpt": total,
                     "per_token": per_token, "share": per_token / total})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=Path("/tmp/segzoo-zoo-throughput"),
                        help="workflow copy holding the preprocessed phantom (made if missing)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64], help="engine members per process")
    parser.add_argument("--stage", type=Path, help="new folder: also time the demo's weight-generation stage there")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(**{**json.loads(args.worker), "data": Path(json.loads(args.worker)["data"])})))
        return
    import torch

    data = prepare(args.data)
    processes = 2 if args.device == "cpu" else 1
    short_steps, short_snaps = 25, 5
    rows = [row(data, "loop", processes, short_steps, short_snaps, args.device, processes)]
    rows += [row(data, "engine", n * processes, short_steps, short_snaps, args.device, processes) for n in args.sizes]
    # The criterion: the demo's runs (100 steps, 20 snapshots + start and final), 12 per job as config.yaml has it.
    demo_loop = row(data, "loop", 2 * processes, DEMO_STEPS, DEMO_SNAPSHOTS, args.device, processes)
    demo_engine = row(data, "engine", 12 * processes, DEMO_STEPS, DEMO_SNAPSHOTS, args.device, processes)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or platform.machine()}"
    print(f"{date.today()}: {platform.node()}, {device}, torch {torch.__version__}, "
          f"{processes} process(es) x {1 if args.device == 'cpu' else 4} thread(s)\n")
    print("| engine | runs | steps per run | runs per hour | optimiser steps per second | peak memory (MiB, one "
          "process) |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows + [demo_loop, demo_engine]:
        print(f"| {r['engine']} | {r['runs']} | {r['steps']} | {r['runs_per_hour']:.0f} | {r['steps_per_second']:.1f} "
              f"| {r['peak_mb']:.0f} |")
    ratio = demo_engine["runs_per_hour"] / demo_loop["runs_per_hour"]
    checks = [(ratio >= SPEEDUP, f"engine ≥ {SPEEDUP:g}x the per-run loop's runs per hour ({args.device}, demo runs: "
               f"{DEMO_STEPS} steps, {DEMO_SNAPSHOTS} + 2 snapshots)",
               f"{ratio:.2f}x ({demo_engine['runs_per_hour']:.0f} vs {demo_loop['runs_per_hour']:.0f} runs/h)")]
    if args.stage:
        from weightgen import run_stage

        wall = run_stage(args.stage, None)
        checks.append((wall <= STAGE_BUDGET_S, "the demo's weight-generation stage (zoo + G.pt + sampling + "
                       f"evaluation) ≤ {STAGE_BUDGET_S // 60} min, 2 cores", f"{wall:.0f} s"))
    print("\n| | criterion | measured |\n| --- | --- | --- |")
    for passed, name, detail in checks:
        print(f"| {'PASS' if passed else 'FAIL'} | {name} | {detail} |")
    print("\nSame run, two trainings: weights after 20 Adam steps, max |a - b| / max |b|:\n\n| pair | difference |"
          "\n| --- | --- |")
    for name, value in drift(data):
        print(f"| {name} | {value:.1e} |")
    print("\nG.pt's size against the network it generates:\n\n| config | network parameters | tokens | G.pt "
          "parameters | per-token encoders and decoder | share |\n| --- | --- | --- | --- | --- | --- |")
    for g in gpt_sizes():
        print(f"| {g['config']} | {g['network']:,} | {g['tokens']} | {g['gpt']:,} | {g['per_token']:,} | "
              f"{g['share']:.0%} |")


if __name__ == "__main__":
    main()
