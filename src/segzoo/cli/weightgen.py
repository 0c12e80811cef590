"""The `segzoo` verbs of checkpoint diffusion: zoo starts and runs, the zoo index, the learned generators (G.pt, the
structure-shared generator) trained and sampled, and the instrument that judges every generator."""

from __future__ import annotations

import argparse
from pathlib import Path

from segzoo.cli.common import (SETTINGS_HELP, TRACKING_HELP, add_device, add_verb, claim_device, files_list,
                               json_settings, positive, preprocessed)
from segzoo.errors import SegzooError


def _zoo_starts(args: argparse.Namespace) -> None:
    settings = json_settings(args.settings, "zoo", "init")
    device = claim_device(args.device)
    from segzoo.weightgen.zoo.settings import ZooSettings
    from segzoo.weightgen.zoo.train import train_starts

    sidecars = train_starts(preprocessed(args.data), args.splits, settings["init"], args.starts,
                            settings=ZooSettings.from_json(settings["zoo"]), out=args.out, device=device,
                            threads=args.threads, data_seed=args.data_seed, plans=args.plans)
    for sidecar in sidecars:
        print(f"zoo start {sidecar['start']} ({sidecar['init']}, {sidecar['steps']} steps): val Dice "
              + ", ".join(f"{r} {d:.3f}" for r, d in zip(sidecar["regions"], sidecar["val_dice"])))


def _zoo(args: argparse.Namespace) -> None:
    settings = json_settings(args.settings, "zoo")
    from segzoo.tracking import parse_tracking

    tracking = parse_tracking(args.tracking)
    device = claim_device(args.device)
    from segzoo.weightgen.zoo.settings import ZooSettings
    from segzoo.weightgen.zoo.train import train_zoo_job

    runs = [{"start": start, "task": task, "lr": _number(lr, positive), "seed": _number(seed, int)}
            for start, task, lr, seed in args.runs]
    sidecars = train_zoo_job(preprocessed(args.data), args.splits, runs, args.starts,
                             settings=ZooSettings.from_json(settings["zoo"]), out=args.out, device=device,
                             threads=args.threads, data_seed=args.data_seed, tracking=tracking)
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
    from segzoo.weightgen.zoo.plan import INDEX_KEYS
    from segzoo.weightgen.zoo.runs import write_index

    settings = json_settings(args.settings, "tasks", *INDEX_KEYS)
    summary = write_index(args.jobs, args.index, args.summary, settings, settings["tasks"])
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
        from segzoo.weightgen.gpt.train import train_gpt
        from segzoo.weightgen.zoo.runs import load_zoo

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
        from segzoo.weightgen.gpt.train import load_gpt
        from segzoo.weightgen.gpt.sample import write_samples
        from segzoo.weightgen.zoo.runs import load_zoo

        sidecar = write_samples(load_gpt(args.gpt, device), load_zoo(args.index), settings["sample"], args.seed,
                                args.out)
    print(f"sampled {sidecar['networks']} networks with {sidecar['ddim_steps']} DDIM steps "
          f"({sidecar['single_network_seconds']:.2f} s for one network alone)")


def _graph_train(args: argparse.Namespace) -> None:
    from segzoo.io import new_files
    from segzoo.checkpoint import paths

    settings = json_settings(args.settings, "zoo", "graph")
    from segzoo.tracking import parse_tracking

    tracking = parse_tracking(args.tracking)
    with new_files(*paths(args.out), args.out.with_name(args.out.name + "_loss.csv")):
        device = claim_device(args.device)
        from segzoo.weightgen.graph.train import GraphSettings, train_graph
        from segzoo.weightgen.zoo.runs import load_zoo
        from segzoo.weightgen.zoo.schedule import resolve
        from segzoo.weightgen.zoo.settings import ZooSettings

        sidecar = train_graph(load_zoo(args.index, roles=("train",)), preprocessed(args.data), args.splits,
                              zoo_settings=resolve(ZooSettings.from_json(settings["zoo"]), args.index.parent / "starts"),
                              settings=GraphSettings.from_json(settings["graph"], args.arm), seed=args.seed,
                              data_seed=args.data_seed, out=args.out, device=device, threads=args.threads,
                              tracking=tracking, dataset=args.index.resolve().parent.name)
    print(f"{sidecar['generator']} ({sidecar['parameters']} parameters, neural graph of {sidecar['graph']['edges']} "
          f"edges and {sidecar['graph']['nodes']} nodes) trained on {sidecar['train_examples']} starting checkpoints "
          f"of {len(sidecar['train_runs'])} runs in {sidecar['seconds']:.1f} s; final loss {sidecar['final_loss']:.4f}")


def _graph_sample(args: argparse.Namespace) -> None:
    from segzoo.io import new_files
    from segzoo.checkpoint import paths

    settings = json_settings(args.settings, "zoo", "sample")
    with new_files(*paths(args.out), args.out.with_name(args.out.name + ".csv")):
        device = claim_device(args.device)
        from segzoo.weightgen.graph.sample import write_samples
        from segzoo.weightgen.graph.train import load_graph
        from segzoo.weightgen.zoo.runs import load_zoo
        from segzoo.weightgen.zoo.schedule import resolve
        from segzoo.weightgen.zoo.settings import ZooSettings

        sidecar = write_samples(load_graph(args.model, device), load_zoo(args.index), preprocessed(args.data),
                                args.splits,
                                zoo_settings=resolve(ZooSettings.from_json(settings["zoo"]), args.index.parent / "starts"),
                                sample_config=settings["sample"], seed=args.seed, data_seed=args.data_seed,
                                device=device, out=args.out)
    print(f"{sidecar['generator']}: sampled {sidecar['networks']} networks with {sidecar['ddim_steps']} DDIM steps "
          f"({sidecar['budget']} gradient evaluations each)")


def _weightgen_evaluate(args: argparse.Namespace) -> None:
    from segzoo.io import new_files

    settings = json_settings(args.settings, "zoo", "test_patches", "sample", "evaluation")
    losses = {}
    for pair in args.loss or []:
        name, _, path = pair.partition("=")
        if not name or not path:
            raise SegzooError(f"--loss {pair!r}: expected NAME=CSV")
        losses[name] = Path(path)
    with new_files(args.out, *([args.summary] if args.summary else [])):
        device = claim_device(args.device)
        from segzoo.weightgen.evaluation.evaluate import evaluate_generators
        from segzoo.weightgen.evaluation.settings import EvaluationSettings

        summary = evaluate_generators(args.samples, args.index, preprocessed(args.data), args.splits,
                                      settings=EvaluationSettings.from_json(settings), losses=losses,
                                      data_seed=args.data_seed, seed=args.seed, device=device, threads=args.threads,
                                      out=args.out, summary_path=args.summary)
    for name, by_role in summary["headline"].items():
        for role, h in by_role.items():
            print(f"{name} ({role}): {h['passed']} of {h['of']} discriminative criteria pass ({h['rows']} judged)")
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

    zoo, out = "results/zoo/D", "results/weightgen/D"
    data = "--data results/preprocessed/D --splits results/splits/D/splits.json --data-seed 0"
    p = add_verb(verbs, "zoo-starts", "write the zoo's starts: parents grown on every region (all at once) and inits",
                 "Start k's random initialisation is drawn from (config seed, k). parent<k> is the zoo network "
                 "trained on every region from init k (every parent in one grouped training), and its runs start "
                 "from it; init<k> is the initialisation itself (a fresh init, or weightgen.init shared). The "
                 "workflow's zoo_starts rule passes every start of the configuration and --settings.",
                 f"segzoo zoo-starts {data} --start parent0 --start parent1 --start init2 --out {zoo}/starts "
                 "--settings '{...}'")
    common(p)
    p.add_argument("--start", required=True, action="append", dest="starts", metavar="START",
                   help="parent<k> (grown from init k) or init<k> (init k itself); repeat for every start")
    p.add_argument("--plans", type=Path, help="plans.json (segzoo plan): the zoo's patch when weightgen.patch_size is "
                   "null")
    p.add_argument("--out", type=Path, required=True, help="folder to create: <start>.safetensors and .json each, "
                   "and schedule.json (the zoo's patch and run length)")
    p.set_defaults(run=_zoo_starts)

    p = add_verb(verbs, "zoo", "train zoo runs at once (the zoo engine), keeping each one's start and checkpoints",
                 "Several runs (start, task, learning rate, seed) of the zoo network are trained together as one "
                 "grouped network, each from its own start, and every run's snapshots are stored (row 0 the start, "
                 "the budget steps, random steps, the last row final) with their validation Dice per region. The "
                 "generators learn from these trajectories; the held-out starts' runs are what Adam reaches.",
                 f"segzoo zoo {data} --run parent0 sc 0.01 0 --run parent1 all 0.01 0 --starts {zoo}/starts "
                 f"--out {zoo}/runs/job0 --settings '{{...}}'")
    common(p)
    p.add_argument("--run", nargs=4, action="append", required=True, dest="runs",
                   metavar=("START", "TASK", "LR", "SEED"),
                   help="one zoo run (repeat): its start's name, a region name or 'all', its Adam learning rate, its "
                   "seed (data order, augmentation, snapshot steps)")
    p.add_argument("--starts", type=Path, required=True, help="the starts folder (zoo-starts)")
    p.add_argument("--out", type=Path, required=True, help="folder to create: <start>_<task>_lr<lr>_seed<s>"
                   ".safetensors|json per run")
    p.add_argument("--tracking", metavar="JSON", help=TRACKING_HELP)
    p.set_defaults(run=_zoo)

    p = add_verb(verbs, "zoo-index", "one table row per checkpoint; roles; drop runs with NaN or huge weights",
                 "Every zoo job's runs are read into one index: a row per stored checkpoint with its run, start, "
                 "task, seed, learning rate and validation Dice, and each run's role (train: the generators learn "
                 "from it; heldout: a held-out parent's run; fresh: a fresh init's run; insample: a training "
                 "parent's run with a held-out seed). Runs that stopped early, hold non-finite weights or exceed "
                 "max_abs_weight are dropped and listed in the summary, beside the configured tasks.",
                 f"segzoo zoo-index {zoo}/runs/job0 {zoo}/runs/job1 --index {zoo}/index.csv "
                 f"--summary {zoo}/zoo.json --settings '{{...}}'")
    p.add_argument("jobs", type=Path, nargs="+", help="zoo job folders")
    p.add_argument("--settings", required=True, help="JSON: the zoo's tasks and the weightgen keys that give each run "
                   "its role (segzoo.weightgen.zoo.plan.INDEX_KEYS)")
    p.add_argument("--index", type=Path, required=True, help="CSV to write")
    p.add_argument("--summary", type=Path, required=True, help="JSON to write (tasks, roles, kept and dropped runs)")
    p.set_defaults(run=_zoo_index)

    p = add_verb(verbs, "gpt-train", "train G.pt, a diffusion transformer over the zoo's checkpoints",
                 "G.pt learns to produce a later checkpoint of a run from an earlier one (its weights as changes "
                 "from the run's start), prompted with both checkpoints' validation Dice and the run's task. Only "
                 "the training parents' runs are loaded; held-out starts are never seen. The moving average of "
                 "its weights is saved.",
                 f"segzoo gpt-train --index {zoo}/index.csv --seed 0 --out {out}/gpt --settings '{{...}}'")
    common(p, data=False)
    p.add_argument("--index", type=Path, required=True, help="the zoo's index.csv (run files beside it)")
    p.add_argument("--seed", type=int, required=True, help="initialisation and the training pairs drawn")
    p.add_argument("--out", type=Path, required=True, help="output stem")
    p.add_argument("--tracking", metavar="JSON", help=TRACKING_HELP)
    p.set_defaults(run=_gpt_train)

    p = add_verb(verbs, "gpt-sample", "G.pt's networks for the instrument's requests (DDIM)",
                 "Every network is sampled in one shot from a start (DDIM), for the requests every generator answers: "
                 "the best training Dice per test start and task, quantile prompts for prompt following, and the "
                 "same prompts from training parents (in-sample).",
                 f"segzoo gpt-sample --gpt {out}/gpt --index {zoo}/index.csv --seed 0 --out {out}/samples "
                 "--settings '{...}'")
    common(p, data=False)
    p.add_argument("--index", type=Path, required=True, help="the zoo's index.csv (run files and starts beside it)")
    p.add_argument("--seed", type=int, required=True, help="the sampling noise")
    p.add_argument("--gpt", type=Path, required=True, help="G.pt stem from gpt-train")
    p.add_argument("--out", type=Path, required=True, help="output stem: .safetensors, .json and .csv")
    p.set_defaults(run=_gpt_sample)

    p = add_verb(verbs, "graph-train", "train one arm of the structure-shared generator",
                 "A diffusion model over a network's change from its start whose denoiser passes messages on the "
                 "zoo network's neural graph (channels as nodes, kernels as edges; equivariant to channel "
                 "permutations), told about the start by its own loss: its gradient on a fixed batch of the task's "
                 "training patches (arm grad, 1 gradient evaluation) or its first k Adam steps (arm adam<k>). "
                 "Trained on the training parents' runs only.",
                 f"segzoo graph-train {data} --index {zoo}/index.csv --arm grad --seed 0 --out {out}/graph_grad "
                 "--settings '{...}'")
    common(p)
    p.add_argument("--index", type=Path, required=True, help="the zoo's index.csv (run files beside it)")
    p.add_argument("--arm", required=True, help="grad (the start's gradient) or adam<k> (its first k Adam steps)")
    p.add_argument("--seed", type=int, required=True, help="initialisation, the training pairs and the noise")
    p.add_argument("--out", type=Path, required=True, help="output stem: .safetensors, .json and _loss.csv")
    p.add_argument("--tracking", metavar="JSON", help=TRACKING_HELP)
    p.set_defaults(run=_graph_train)

    p = add_verb(verbs, "graph-sample", "the structure-shared generator's networks for the instrument's requests",
                 "For every request the start's signal is read (its gradient, or its own run's first Adam steps), "
                 "then DDIM gives the change; the network is the start plus that change, in the start's own channel "
                 "order.",
                 f"segzoo graph-sample {data} --model {out}/graph_grad --index {zoo}/index.csv --seed 0 "
                 f"--out {out}/graph_grad_samples --settings '{{...}}'")
    common(p)
    p.add_argument("--index", type=Path, required=True, help="the zoo's index.csv (run files and starts beside it)")
    p.add_argument("--model", type=Path, required=True, help="stem from graph-train")
    p.add_argument("--seed", type=int, required=True, help="the sampling noise")
    p.add_argument("--out", type=Path, required=True, help="output stem: .safetensors, .json and .csv")
    p.set_defaults(run=_graph_sample)

    p = add_verb(verbs, "weightgen-evaluate",
                 "every generator through the same requests, scoring and criteria (the instrument)",
                 "The learned generators' samples and the baselines (copy, task-vector transfer, lookup, nearest and "
                 "mean-of-k, noise, Adam at every budget) answer the same requests from starts no generator saw; "
                 "each network is scored on the whole test volumes and the validation patches, placed among the "
                 "training checkpoints (aligned coordinates), and every generator is judged by every criterion. A "
                 "criterion a trivial generator passes is marked not discriminative.",
                 f"segzoo weightgen-evaluate {data} --index {zoo}/index.csv --seed 0 --samples {out}/samples "
                 f"--samples {out}/graph_grad_samples --loss gpt={out}/gpt_loss.csv --out {out}/evaluation "
                 "--settings '{...}'",
                 epilog=files_list("files written", {
                     "<out>/criteria.csv": "generators x criteria: value, threshold, PASS/FAIL, discriminative",
                     "<out>/networks.csv": "every generator's network per request, scored, with its distances",
                     "<out>/summary.json": "the headline per generator, the tasks Adam does not learn, the smallest "
                                           "difference the starts resolve"}))
    common(p)
    p.add_argument("--index", type=Path, required=True, help="the zoo's index.csv (run files and starts beside it)")
    p.add_argument("--seed", type=int, required=True, help="the evaluation's own draws (bootstrap, noise baseline)")
    p.add_argument("--samples", type=Path, action="append", default=[], metavar="STEM",
                   help="a learned generator's samples (repeat): STEM.safetensors, .json and .csv")
    p.add_argument("--loss", action="append", metavar="NAME=CSV", help="a learned generator's training loss curve")
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    p.add_argument("--summary", type=Path, help="also write the headline numbers (no timings) to this JSON file")
    p.set_defaults(run=_weightgen_evaluate)
