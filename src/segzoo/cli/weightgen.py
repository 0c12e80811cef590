"""The `segzoo` verbs of checkpoint diffusion: zoo starts and runs, the zoo index, G.pt training, sampling and
evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path

from segzoo.cli.common import (SETTINGS_HELP, TRACKING_HELP, add_device, add_verb, claim_device, json_settings,
                               positive, preprocessed)
from segzoo.errors import SegzooError


def _zoo_start(args: argparse.Namespace) -> None:
    from segzoo.io import new_files
    from segzoo.checkpoint import paths

    settings = json_settings(args.settings, "zoo", "init")
    with new_files(*paths(args.out)):
        device = claim_device(args.device)
        from segzoo.weightgen.zoo import start_index, train_start

        sidecar = train_start(preprocessed(args.data), args.splits, settings["init"], start_index(args.start),
                           settings=settings["zoo"], out=args.out, device=device, threads=args.threads,
                           data_seed=args.data_seed)
    print(f"zoo start {sidecar['start']} ({sidecar['init']}, {sidecar['steps']} steps): val Dice "
          + ", ".join(f"{r} {d:.3f}" for r, d in zip(sidecar["regions"], sidecar["val_dice"])))


def _zoo(args: argparse.Namespace) -> None:
    settings = json_settings(args.settings, "zoo")
    from segzoo.tracking import parse_tracking

    tracking = parse_tracking(args.tracking)
    device = claim_device(args.device)
    from segzoo.weightgen.zoo import train_zoo_job

    runs = [{"task": task, "lr": _number(lr, positive), "seed": _number(seed, int)} for task, lr, seed in args.runs]
    sidecars = train_zoo_job(preprocessed(args.data), args.splits, runs, args.start, settings=settings["zoo"],
                             out=args.out, device=device, threads=args.threads, data_seed=args.data_seed,
                             tracking=tracking)
    for sidecar in sidecars:
        dice = {k.removeprefix("dice_"): round(v[-1], 3) for k, v in sidecar["checkpoints"].items()
                if k.startswith("dice_")}
        stopped = f"; stopped early: {sidecar['stopped']}" if sidecar["stopped"] else ""
        print(f"zoo run {sidecar['task']} lr {sidecar['lr']} seed {sidecar['seed']} from {sidecar['start']}: "
              f"{len(sidecar['checkpoints']['step'])} checkpoints, last val Dice {dice}{stopped}")
    print(f"{len(sidecars)} runs trained at once, {sidecars[0]['seconds_per_step'] * 1000:.1f} ms per run-step")


def _number(text: str, kind):
    try:
        return kind(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise SegzooError(f"--run: {text!r} is not a valid {'seed' if kind is int else 'learning rate'}") from None


def _zoo_index(args: argparse.Namespace) -> None:
    from segzoo.weightgen.zoo import write_index

    settings = json_settings(args.settings, "heldout_seeds", "parents", "max_abs_weight")
    summary = write_index(args.jobs, args.index, args.summary, settings["max_abs_weight"], settings["heldout_seeds"],
                          settings["parents"])
    print(f"zoo index {args.index}: {summary['checkpoints']} checkpoints from {summary['runs_kept']} runs "
          f"{summary['runs_per_role']} ({summary['runs_dropped']} dropped)")


def _gpt_train(args: argparse.Namespace) -> None:
    from segzoo.io import new_files
    from segzoo.checkpoint import paths

    settings = json_settings(args.settings, "gpt")
    from segzoo.tracking import parse_tracking

    tracking = parse_tracking(args.tracking)
    with new_files(*paths(args.out), args.out.with_name(args.out.name + "_loss.csv")):
        device = claim_device(args.device)
        from segzoo.weightgen.gpt_train import train_gpt
        from segzoo.weightgen.zoo import load_zoo

        # a tracking failure raises inside: new_files removes what was written
        sidecar = train_gpt(load_zoo(args.index, roles=("train",)), settings["gpt"], args.seed, args.out, device,
                            args.threads, tracking=tracking, dataset=args.index.resolve().parent.name)
    print(f"G.pt ({sidecar['parameters']} parameters) trained on {sidecar['train_checkpoints']} checkpoints of "
          f"{len(sidecar['train_runs'])} runs in {sidecar['seconds']:.1f} s; final loss {sidecar['final_loss']:.4f}")


def _gpt_sample(args: argparse.Namespace) -> None:
    from segzoo.io import new_files
    from segzoo.checkpoint import paths

    settings = json_settings(args.settings, "sample")
    with new_files(*paths(args.out), args.out.with_name(args.out.name + ".csv")):
        device = claim_device(args.device)
        from segzoo.weightgen.gpt_train import load_gpt
        from segzoo.weightgen.sample import write_samples
        from segzoo.weightgen.zoo import load_zoo

        sidecar = write_samples(load_gpt(args.gpt, device), load_zoo(args.index), settings["sample"], args.seed,
                                args.out)
    print(f"sampled {sidecar['networks']} networks with {sidecar['ddim_steps']} DDIM steps "
          f"({sidecar['single_network_seconds']:.2f} s for one network alone)")


def _gpt_evaluate(args: argparse.Namespace) -> None:
    from segzoo.io import new_files

    settings = json_settings(args.settings, "zoo", "test_patches", "audit")
    with new_files(args.out, *([args.summary] if args.summary else [])):
        device = claim_device(args.device)
        from segzoo.weightgen.evaluate import evaluate_samples

        summary = evaluate_samples(args.gpt, args.samples, args.index, preprocessed(args.data), args.splits,
                                   settings=settings, data_seed=args.data_seed, seed=args.seed, device=device,
                                   threads=args.threads, out=args.out, summary_path=args.summary)
    for c in summary["criteria"]:
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {c['criterion']} [{c['task']}]: {c['detail']}")
    print(f"written to {args.out}")


def register(verbs) -> None:
    def common(p, data=True):
        if data:
            p.add_argument("--data", type=Path, required=True, help="preprocessed dataset folder")
            p.add_argument("--splits", type=Path, required=True, help="splits.json (segzoo splits)")
            p.add_argument("--data-seed", type=int, required=True, help="the config seed (inits, scoring batches)")
        p.add_argument("--settings", required=True, help=SETTINGS_HELP)
        add_device(p)
        p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default: %(default)s)")

    zoo = "results/zoo/D"
    data = "--data results/preprocessed/D --splits results/splits/D/splits.json --data-seed 0"
    p = add_verb(verbs, "zoo-start", "write a zoo start: a parent trained on every region (spawn) or an init",
                 "Start k's random initialisation is drawn from (config seed, k). Under weightgen.init spawn, "
                 "parent<k> is the zoo network trained on every region from init k, and its child runs start "
                 "from it; init<k> is the initialisation itself. The workflow's zoo_start rule passes --settings.",
                 f"segzoo zoo-start {data} --start parent0 --out {zoo}/starts/parent0 --settings '{{...}}'")
    common(p)
    p.add_argument("--start", required=True, help="parent<k> (spawn) or init<k> (shared)")
    p.add_argument("--out", type=Path, required=True, help="output stem: <out>.safetensors and <out>.json")
    p.set_defaults(run=_zoo_start)

    p = add_verb(verbs, "zoo", "train zoo runs at once (the zoo engine), keeping each one's start and checkpoints",
                 "Several runs (task, learning rate, seed) of the zoo network are trained together as one grouped "
                 "network, each from the same start, and every run's snapshots are stored (row 0 the start, the "
                 "last row final) with their validation Dice per region. G.pt learns from these trajectories.",
                 f"segzoo zoo {data} --run sc 0.01 0 --run all 0.01 1 --start {zoo}/starts/parent0 "
                 f"--out {zoo}/runs/parent0/job0 --settings '{{...}}'")
    common(p)
    p.add_argument("--run", nargs=3, action="append", required=True, dest="runs", metavar=("TASK", "LR", "SEED"),
                   help="one zoo run (repeat): a region name or 'all', its Adam learning rate, its seed (data order, "
                   "augmentation, snapshot steps)")
    p.add_argument("--start", type=Path, help="start file (zoo-start); without it each seed starts at its own init")
    p.add_argument("--out", type=Path, required=True, help="folder to create: <task>_lr<lr>_seed<s>.safetensors|json "
                   "per run")
    p.add_argument("--tracking", metavar="JSON", help=TRACKING_HELP)
    p.set_defaults(run=_zoo)

    p = add_verb(verbs, "zoo-index", "one table row per checkpoint; roles; drop runs with NaN or huge weights",
                 "Every zoo job's runs are read into one index: a row per stored checkpoint with its run, start, "
                 "task, seed, learning rate and validation Dice, and each run's role (train: G.pt learns from it; "
                 "heldout: a held-out parent's child; insample: a training parent's child with a held-out seed). "
                 "Runs that stopped early, hold non-finite weights or exceed max_abs_weight are dropped and listed "
                 "in the summary.",
                 f"segzoo zoo-index {zoo}/runs/parent0/job0 {zoo}/runs/parent1/job0 --index {zoo}/index.csv "
                 f"--summary {zoo}/summary.json --settings '{{\"heldout_seeds\": [9], \"parents\": 2, "
                 f"\"max_abs_weight\": 100}}'")
    p.add_argument("jobs", type=Path, nargs="+", help="zoo job folders")
    p.add_argument("--settings", required=True, help='JSON {"heldout_seeds": [..], "parents": N, "max_abs_weight": x}')
    p.add_argument("--index", type=Path, required=True, help="CSV to write")
    p.add_argument("--summary", type=Path, required=True, help="JSON to write (kept and dropped runs)")
    p.set_defaults(run=_zoo_index)

    p = add_verb(verbs, "gpt-train", "train G.pt, a diffusion transformer over the zoo's checkpoints",
                 "G.pt learns to produce a later checkpoint of a run from an earlier one (its weights as changes "
                 "from the run's start), prompted with both checkpoints' validation Dice and the run's task. Only "
                 "the training parents' runs are loaded; held-out parents are never seen. The moving average of "
                 "its weights is saved.",
                 f"segzoo gpt-train --index {zoo}/index.csv --seed 0 --out results/weightgen/D/gpt "
                 "--settings '{...}'")
    common(p, data=False)
    p.add_argument("--index", type=Path, required=True, help="the zoo's index.csv (run files beside it)")
    p.add_argument("--seed", type=int, required=True, help="initialisation and the training pairs drawn")
    p.add_argument("--out", type=Path, required=True, help="output stem")
    p.add_argument("--tracking", metavar="JSON", help=TRACKING_HELP)
    p.set_defaults(run=_gpt_train)

    p = add_verb(verbs, "gpt-sample", "one-shot networks from G.pt for the evaluation prompts (DDIM)",
                 "Every network is sampled in one shot from a start (DDIM), prompted with validation metrics only: "
                 "the best of the training zoo per held-out parent and task, quantiles for the alignment check, "
                 "and in-sample prompts reported apart.",
                 f"segzoo gpt-sample --gpt results/weightgen/D/gpt --index {zoo}/index.csv --seed 0 "
                 "--out results/weightgen/D/samples --settings '{...}'")
    common(p, data=False)
    p.add_argument("--index", type=Path, required=True, help="the zoo's index.csv (run files beside it)")
    p.add_argument("--seed", type=int, required=True, help="the sampling noise")
    p.add_argument("--gpt", type=Path, required=True, help="G.pt stem from gpt-train")
    p.add_argument("--out", type=Path, required=True, help="output stem: .safetensors, .json and .csv")
    p.set_defaults(run=_gpt_sample)

    p = add_verb(verbs, "gpt-evaluate",
                 "one-shot vs checkpoints and memorisers, alignment, unification, criteria",
                 "G.pt's one-shot networks from held-out parents are scored on the whole test volumes beside what "
                 "Adam reaches from the same parents and four memorisers given the same prompt; the alignment of "
                 "achieved with prompted Dice, and the pass/fail criteria, are written to the evaluation folder.",
                 f"segzoo gpt-evaluate {data} --index {zoo}/index.csv --seed 0 --gpt results/weightgen/D/gpt "
                 "--samples results/weightgen/D/samples --out results/weightgen/D/evaluation --settings '{...}'")
    common(p)
    p.add_argument("--index", type=Path, required=True, help="the zoo's index.csv (run files beside it)")
    p.add_argument("--seed", type=int, required=True, help="the evaluation's own draws (bootstrap, noise memoriser)")
    p.add_argument("--gpt", type=Path, required=True, help="G.pt stem from gpt-train")
    p.add_argument("--samples", type=Path, required=True, help="stem from gpt-sample")
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    p.add_argument("--summary", type=Path, help="also write the headline numbers (no timings) to this JSON file")
    p.set_defaults(run=_gpt_evaluate)
