"""The `segzoo` verbs of checkpoint diffusion: zoo starts and runs, the zoo index, G.pt training, sampling and
evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path

from segzoo.cli.common import claim_device, json_settings, positive, preprocessed
from segzoo.errors import SegzooError


def _zoo_starts(args: argparse.Namespace) -> None:
    settings = json_settings(args.settings, "zoo", "init")
    device = claim_device(args.device)
    from segzoo.weightgen.zoo.settings import ZooSettings
    from segzoo.weightgen.zoo.train import train_starts

    sidecars = train_starts(preprocessed(args.data), args.splits, settings["init"], args.starts,
                            settings=ZooSettings.from_json(settings["zoo"]), out=args.out, device=device,
                            threads=args.threads, data_seed=args.data_seed)
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
        from segzoo.weightgen.zoo.settings import ZooSettings

        sidecar = train_graph(load_zoo(args.index, roles=("train",)), preprocessed(args.data), args.splits,
                              zoo_settings=ZooSettings.from_json(settings["zoo"]),
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
        from segzoo.weightgen.zoo.settings import ZooSettings

        sidecar = write_samples(load_graph(args.model, device), load_zoo(args.index), preprocessed(args.data),
                                args.splits, zoo_settings=ZooSettings.from_json(settings["zoo"]),
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
    settings_help = "JSON: the weightgen settings the verb reads (the rules pass them)"

    def common(p, data=True):
        if data:
            p.add_argument("--data", type=Path, required=True, help="preprocessed dataset folder")
            p.add_argument("--splits", type=Path, required=True)
            p.add_argument("--data-seed", type=int, required=True, help="the config seed (inits, scoring batches)")
        p.add_argument("--settings", required=True, help=settings_help)
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")

    p = verbs.add_parser("zoo-starts", help="write the zoo's starts: parents grown on every region (all at once) "
                         "and random inits")
    common(p)
    p.add_argument("--start", required=True, action="append", dest="starts", metavar="START",
                   help="parent<k> (grown from init k) or init<k> (init k itself); repeat for every start")
    p.add_argument("--out", type=Path, required=True, help="folder to create: <start>.safetensors and .json each")
    p.set_defaults(run=_zoo_starts)

    p = verbs.add_parser("zoo", help="train zoo runs at once (the zoo engine), keeping each one's start and "
                         "checkpoints")
    common(p)
    p.add_argument("--run", nargs=4, action="append", required=True, dest="runs",
                   metavar=("START", "TASK", "LR", "SEED"),
                   help="one zoo run (repeat): its start's name, a region name or 'all', its Adam learning rate, its "
                   "seed (data order, augmentation, snapshot steps)")
    p.add_argument("--starts", type=Path, required=True, help="the starts folder (zoo-starts)")
    p.add_argument("--out", type=Path, required=True, help="folder to create: <start>_<task>_lr<lr>_seed<s>"
                   ".safetensors|json per run")
    p.add_argument("--tracking", metavar="JSON", help="experiment tracking beside dvclive (segzoo[tracking] extra): "
                   '{"wandb": "off|offline|online", "mlflow": "off|local|<URI>", "dir": "results/tracking"}')
    p.set_defaults(run=_zoo)

    p = verbs.add_parser("zoo-index", help="one table row per checkpoint; roles; drop runs with NaN or huge weights")
    p.add_argument("jobs", type=Path, nargs="+", help="zoo job folders")
    p.add_argument("--settings", required=True, help="JSON: the zoo's tasks and the weightgen keys that give each run its "
                   "role (segzoo.weightgen.zoo.plan.INDEX_KEYS)")
    p.add_argument("--index", type=Path, required=True, help="CSV to write")
    p.add_argument("--summary", type=Path, required=True, help="JSON to write (kept and dropped runs)")
    p.set_defaults(run=_zoo_index)

    p = verbs.add_parser("gpt-train", help="train G.pt, a diffusion transformer over the zoo's checkpoints")
    common(p, data=False)
    p.add_argument("--index", type=Path, required=True, help="the zoo's index.csv (run files beside it)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="output stem")
    p.add_argument("--tracking", metavar="JSON", help="experiment tracking beside dvclive (segzoo[tracking] extra): "
                   '{"wandb": "off|offline|online", "mlflow": "off|local|<URI>", "dir": "results/tracking"}')
    p.set_defaults(run=_gpt_train)

    p = verbs.add_parser("gpt-sample", help="one-shot networks from G.pt for the evaluation prompts (DDIM)")
    common(p, data=False)
    p.add_argument("--index", type=Path, required=True, help="the zoo's index.csv (run files beside it)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--gpt", type=Path, required=True, help="G.pt stem from gpt-train")
    p.add_argument("--out", type=Path, required=True, help="output stem: .safetensors, .json and .csv")
    p.set_defaults(run=_gpt_sample)

    p = verbs.add_parser("graph-train", help="train one arm of the structure-shared generator (message passing on "
                         "the zoo network's neural graph, told about the start by its gradient or first Adam steps)")
    common(p)
    p.add_argument("--index", type=Path, required=True, help="the zoo's index.csv (run files beside it)")
    p.add_argument("--arm", required=True, help="grad (the start's gradient) or adam<k> (its first k Adam steps)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="output stem: .safetensors, .json and _loss.csv")
    p.add_argument("--tracking", metavar="JSON", help="experiment tracking beside dvclive (segzoo[tracking] extra): "
                   '{"wandb": "off|offline|online", "mlflow": "off|local|<URI>", "dir": "results/tracking"}')
    p.set_defaults(run=_graph_train)

    p = verbs.add_parser("graph-sample", help="the structure-shared generator's networks for the evaluation's "
                         "requests (DDIM)")
    common(p)
    p.add_argument("--index", type=Path, required=True, help="the zoo's index.csv (run files and starts beside it)")
    p.add_argument("--model", type=Path, required=True, help="stem from graph-train")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="output stem: .safetensors, .json and .csv")
    p.set_defaults(run=_graph_sample)

    p = verbs.add_parser("weightgen-evaluate",
                         help="every generator (the learned ones' samples and the baselines) through the same requests, "
                         "scoring and criteria")
    common(p)
    p.add_argument("--index", type=Path, required=True, help="the zoo's index.csv (run files and starts beside it)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--samples", type=Path, action="append", default=[], metavar="STEM",
                   help="a learned generator's samples (repeat): STEM.safetensors, .json and .csv")
    p.add_argument("--loss", action="append", metavar="NAME=CSV", help="a learned generator's training loss curve")
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    p.add_argument("--summary", type=Path, help="also write the headline numbers (no timings) to this JSON file")
    p.set_defaults(run=_weightgen_evaluate)
