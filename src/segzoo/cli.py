"""The `segzoo` command: one verb per pipeline step, called by Snakemake rules, DVC stages and people.

torch and MONAI are imported only inside the verbs that use them, so light verbs start fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segzoo.data.phantom import PhantomSpec
from segzoo.errors import SegzooError
from segzoo.evaluate.metrics import METRICS


def _phantom(args: argparse.Namespace) -> None:
    from segzoo.data.phantom import write_phantom_dataset

    spec = PhantomSpec(shape=tuple(args.shape), spacing=tuple(args.spacing), spacing_jitter=args.spacing_jitter,
                       max_rotation_deg=args.max_rotation, lesion_free_fraction=args.lesion_free_fraction,
                       max_lesions=args.max_lesions, noise=args.noise, bias=args.bias)
    out = write_phantom_dataset(args.out, args.cases, args.seed, spec)
    print(f"wrote {args.cases} phantom cases to {out}")


def _verify(args: argparse.Namespace) -> None:
    from segzoo.data.verify import verify_dataset
    from segzoo.io import write_json

    summary = verify_dataset(args.dataset)
    if args.report:
        write_json(args.report, summary)
    print(f"{args.dataset}: OK ({summary['layout']} layout, {summary['num_training']} training and "
          f"{summary['num_test']} test cases, channels {summary['channels']}, regions {list(summary['regions'])})")


def _fingerprint(args: argparse.Namespace) -> None:
    from segzoo.data.dataset import read_dataset
    from segzoo.data.fingerprint import dataset_fingerprint
    from segzoo.io import write_json

    ds = read_dataset(args.dataset)
    fingerprint = dataset_fingerprint(ds, args.seed)
    write_json(args.out, fingerprint)
    print(f"fingerprinted {len(fingerprint['cases'])} labelled training case(s) of {ds.name} into {args.out}")


def _plan(args: argparse.Namespace) -> None:
    from segzoo.data.fingerprint import read_fingerprint
    from segzoo.data.plans import make_plans
    from segzoo.io import write_json

    settings = _json_settings(args.settings, "models", "memory_mb")
    fingerprint = read_fingerprint(args.fingerprint)
    plans = make_plans(fingerprint, models=settings["models"], memory_mb=settings["memory_mb"],
                       spacing=settings.get("spacing"), normalization_override=settings.get("normalization"),
                       patch_size=settings.get("patch_size"), batch_size=settings.get("batch_size"))
    write_json(args.out, plans)
    print(f"planned {plans['dataset']}: target spacing {plans['target_spacing']} mm ({plans['spacing_source']}), "
          f"normalisation {[n['scheme'] for n in plans['normalization']]}")
    for name, entry in plans["models"].items():
        print(f"  {name}: patch {entry['patch_size']} ({entry['patch_source']}), batch {entry['batch_size']} "
              f"({entry['batch_source']}), ~{entry['estimated_mb']} MB of {plans['memory_mb']} MB")


def _preprocess(args: argparse.Namespace) -> None:
    from segzoo.data.fingerprint import read_fingerprint
    from segzoo.data.preprocess import preprocess_dataset

    out = preprocess_dataset(args.dataset, args.out, spacing=args.spacing, normalization=args.normalization,
                             fingerprint=read_fingerprint(args.fingerprint) if args.fingerprint else None)
    print(f"preprocessed {args.dataset} into {out.folder}")


def _splits(args: argparse.Namespace) -> None:
    from segzoo.data.splits import splits_for_preprocessed
    from segzoo.io import write_json

    splits = splits_for_preprocessed(_preprocessed(args.preprocessed), args.seed, args.val_fraction,
                                     args.test_fraction, folds=args.folds, nnunet_splits=args.nnunet_splits)
    write_json(args.out, splits)
    folds = f", {len(splits['folds'])} cross-validation folds" if "folds" in splits else ""
    print(f"wrote {args.out}: {len(splits['train'])} train, {len(splits['val'])} val, "
          f"{len(splits['test'])} test ({splits['test_source']}){folds}")


def _preprocessed(folder: Path):
    from segzoo.data.preprocessed import Preprocessed

    return Preprocessed(folder)


def _claim_device(requested: str) -> str:
    """Resolve ``auto``; for CUDA take a GPU from the pool before torch initialises CUDA."""
    from segzoo.devices import acquire, resolve_device

    device = resolve_device(requested)
    if device == "cuda":
        lease = acquire()
        print(f"using GPU CUDA_VISIBLE_DEVICES={lease.devices}", file=sys.stderr)
    return device


def _json_settings(text: str, *keys: str) -> dict:
    import json

    try:
        settings = json.loads(text)
        for key in keys:
            settings[key]
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise SegzooError(f"--settings: not a JSON object with {', '.join(map(repr, keys))} ({e})") from None
    return settings


def _train(args: argparse.Namespace) -> None:
    settings = _json_settings(args.settings, "train", "model")
    if args.plans:
        settings["train"] = _planned(settings["train"], args.plans, args.model)
    from segzoo.tracking import parse_tracking

    tracking = parse_tracking(args.tracking)
    device = _claim_device(args.device)
    from segzoo.train.loop import Run, train

    metrics = train(Run(preprocessed=_preprocessed(args.data), splits=args.splits, model=args.model, seed=args.seed,
                        out=args.out, settings=settings["train"], model_options=settings["model"], fold=args.fold,
                        device=device, threads=args.threads, progress=not args.no_progress, tracking=tracking))
    if not metrics:  # a DDP process other than 0: process 0 writes and reports
        return
    print(f"trained {args.model} (seed {args.seed}): best validation Dice {metrics['best_val_dice']:.3f} at step "
          f"{metrics['best_step']}; checkpoints in {args.out}")


def _planned(train: dict, plans: Path, model: str) -> dict:
    """The train settings with the plan's patch and batch size where the config leaves them null."""
    from segzoo.data.plans import Plans

    planned = Plans(plans).model(model)
    return {**train, **{key: planned[key] for key in ("patch_size", "batch_size") if train.get(key) is None}}


def _infer(args: argparse.Namespace) -> None:
    device = _claim_device(args.device)
    from segzoo.infer import infer_run

    cases = infer_run(args.checkpoint, _preprocessed(args.data), args.splits, args.out, device=device,
                      sw_batch_size=args.sw_batch_size, overlap=args.overlap, raw=args.raw, mirror=not args.no_mirror,
                      postprocessing=args.postprocessing)
    print(f"predicted {len(cases)} test case(s) into {args.out}")


def _infer_oof(args: argparse.Namespace) -> None:
    device = _claim_device(args.device)
    from segzoo.infer import infer_out_of_fold

    cases = infer_out_of_fold(args.runs, _preprocessed(args.data), args.splits, args.out, device=device,
                              sw_batch_size=args.sw_batch_size, overlap=args.overlap)
    print(f"predicted {len(cases)} case(s) out of fold with {len(args.runs)} fold run(s) into {args.out}")


def _postprocessing(args: argparse.Namespace) -> None:
    device = _claim_device(args.device)
    from segzoo.inference.postprocess import write_postprocessing

    result = write_postprocessing(args.checkpoint, _preprocessed(args.data), args.splits, args.out, device=device,
                                  sw_batch_size=args.sw_batch_size, overlap=args.overlap, fold=args.fold)
    kept = [region for region, keep in result["largest_component"].items() if keep]
    print(f"chose postprocessing on {len(result['cases'])} validation case(s): largest component kept for "
          f"{', '.join(kept) or 'no region'}; written to {args.out}")


def _predict(args: argparse.Namespace) -> None:
    device = _claim_device(args.device)
    from segzoo.predict import predict_folder

    cases = predict_folder(args.input, args.output, args.runs, data=_preprocessed(args.data) if args.data else None,
                           device=device, tta=args.tta, probabilities=args.probabilities,
                           sw_batch_size=args.sw_batch_size, any_spacing=args.any_spacing)
    print(f"predicted {len(cases)} case(s) with {len(args.runs)} run(s) into {args.output}")


def _evaluate(args: argparse.Namespace) -> None:
    from segzoo.evaluate.cases import evaluate_run
    from segzoo.io import refuse_existing, write_text

    refuse_existing(args.out)
    table = evaluate_run(args.predictions, args.raw, _preprocessed(args.data), args.splits,
                         tolerance_mm=args.tolerance_mm, model=args.model, seed=args.seed,
                         out_of_fold=args.out_of_fold)
    write_text(args.out, table.to_csv(index=False, float_format="%.6g"))
    print(f"scored {table['case'].nunique()} case(s) x {table['region'].nunique()} region(s) into {args.out}")


def _compare(args: argparse.Namespace) -> None:
    from segzoo.evaluate.report_tables import write_tables

    written = write_tables(args.scores, args.out_dir, args.metrics, args.seed, args.summary)
    print("wrote " + ", ".join(map(str, written)))


def _figures(args: argparse.Namespace) -> None:
    import json

    from segzoo.report.figures import write_figures

    try:
        runs = json.loads(args.runs)
    except json.JSONDecodeError as e:
        raise SegzooError(f"--runs: not JSON ({e})") from None
    figures = write_figures(args.tables, _preprocessed(args.data), args.raw, runs=runs,
                            config=json.loads(args.config_json), out=args.out)
    print(f"wrote {len(figures)} figures to {args.out}")


def _page(args: argparse.Namespace) -> None:
    import json

    from segzoo.report.page import write_page

    out = write_page(args.dataset, figures_dir=args.figures, tables=args.tables, weightgen=args.weightgen,
                     config=json.loads(args.config_json), out=args.out, repo=Path.cwd(), plans=args.plans,
                     oof_tables=args.oof_tables)
    print(f"report page: {out.resolve()}")


def _site_index(args: argparse.Namespace) -> None:
    from segzoo.report.site_index import write_site_index

    pages = write_site_index(args.results, args.out)
    print(f"{args.out}: {len(pages)} dataset page(s): " + ", ".join(p.parent.name for p in pages))


def _zoo_start(args: argparse.Namespace) -> None:
    from segzoo.io import new_files
    from segzoo.checkpoint import paths

    settings = _json_settings(args.settings, "zoo", "init")
    with new_files(*paths(args.out)):
        device = _claim_device(args.device)
        from segzoo.weightgen.zoo import start_index, train_start

        sidecar = train_start(_preprocessed(args.data), args.splits, settings["init"], start_index(args.start),
                           settings=settings["zoo"], out=args.out, device=device, threads=args.threads,
                           data_seed=args.data_seed)
    print(f"zoo start {sidecar['start']} ({sidecar['init']}, {sidecar['steps']} steps): val Dice "
          + ", ".join(f"{r} {d:.3f}" for r, d in zip(sidecar["regions"], sidecar["val_dice"])))


def _zoo(args: argparse.Namespace) -> None:
    settings = _json_settings(args.settings, "zoo")
    from segzoo.tracking import parse_tracking

    tracking = parse_tracking(args.tracking)
    device = _claim_device(args.device)
    from segzoo.weightgen.zoo import train_zoo_job

    runs = train_zoo_job(_preprocessed(args.data), args.splits, args.task, args.lr, args.seeds, args.start,
                         settings=settings["zoo"], out=args.out, device=device, threads=args.threads,
                         data_seed=args.data_seed, tracking=tracking)
    for sidecar in runs:
        dice = {k.removeprefix("dice_"): round(v[-1], 3) for k, v in sidecar["checkpoints"].items()
                if k.startswith("dice_")}
        print(f"zoo run {sidecar['task']} lr {sidecar['lr']} seed {sidecar['seed']} from {sidecar['start']}: "
              f"{len(sidecar['checkpoints']['step'])} checkpoints, final val Dice {dice}")


def _zoo_index(args: argparse.Namespace) -> None:
    from segzoo.weightgen.zoo import write_index

    settings = _json_settings(args.settings, "heldout_seeds", "parents", "max_abs_weight")
    summary = write_index(args.jobs, args.index, args.summary, settings["max_abs_weight"], settings["heldout_seeds"],
                          settings["parents"])
    print(f"zoo index {args.index}: {summary['checkpoints']} checkpoints from {summary['runs_kept']} runs "
          f"{summary['runs_per_role']} ({summary['runs_dropped']} dropped)")


def _gpt_train(args: argparse.Namespace) -> None:
    from segzoo.io import new_files
    from segzoo.checkpoint import paths

    settings = _json_settings(args.settings, "gpt")
    from segzoo.tracking import parse_tracking

    tracking = parse_tracking(args.tracking)
    with new_files(*paths(args.out), args.out.with_name(args.out.name + "_loss.csv")):
        device = _claim_device(args.device)
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

    settings = _json_settings(args.settings, "sample")
    with new_files(*paths(args.out), args.out.with_name(args.out.name + ".csv")):
        device = _claim_device(args.device)
        from segzoo.weightgen.gpt_train import load_gpt
        from segzoo.weightgen.sample import write_samples
        from segzoo.weightgen.zoo import load_zoo

        sidecar = write_samples(load_gpt(args.gpt, device), load_zoo(args.index), settings["sample"], args.seed,
                                args.out)
    print(f"sampled {sidecar['networks']} networks with {sidecar['ddim_steps']} DDIM steps "
          f"({sidecar['single_network_seconds']:.2f} s for one network alone)")


def _gpt_evaluate(args: argparse.Namespace) -> None:
    from segzoo.io import new_files

    settings = _json_settings(args.settings, "zoo", "test_patches", "audit")
    with new_files(args.out, *([args.summary] if args.summary else [])):
        device = _claim_device(args.device)
        from segzoo.weightgen.evaluate import evaluate_samples

        summary = evaluate_samples(args.gpt, args.samples, args.index, _preprocessed(args.data), args.splits,
                                   settings=settings, data_seed=args.data_seed, seed=args.seed, device=device,
                                   threads=args.threads, out=args.out, summary_path=args.summary)
    for c in summary["criteria"]:
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {c['criterion']} [{c['task']}]: {c['detail']}")
    print(f"written to {args.out}")


def _dvc_sync(args: argparse.Namespace) -> None:
    from segzoo.dvc_sync import write_dvc_yaml

    root = Path.cwd()
    changed = write_dvc_yaml(root, args.configfile, args.gpus, check=args.check)
    if args.check and changed:
        raise SegzooError(f"{root / 'dvc.yaml'}: stale; it differs from what the Snakemake DAG gives "
                          f"(run `segzoo dvc-sync` and commit the result)")
    print(f"dvc.yaml {'is up to date' if not changed else 'written'}")


def _positive(text: str) -> float:
    value = float(text)
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segzoo", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    d = PhantomSpec()
    p = verbs.add_parser("phantom", help="write spinal-cord MRI phantoms as an nnU-Net v2 raw dataset")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create, e.g. Dataset001_SpinalPhantom")
    p.add_argument("--cases", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--shape", type=int, nargs=3, default=list(d.shape), metavar=("X", "Y", "Z"))
    p.add_argument("--spacing", type=float, nargs=3, default=list(d.spacing), metavar=("X", "Y", "Z"))
    p.add_argument("--spacing-jitter", type=float, default=d.spacing_jitter)
    p.add_argument("--max-rotation", type=float, default=d.max_rotation_deg, help="degrees about each axis")
    p.add_argument("--lesion-free-fraction", type=float, default=d.lesion_free_fraction)
    p.add_argument("--max-lesions", type=int, default=d.max_lesions)
    p.add_argument("--noise", type=float, default=d.noise, help="Rician sigma relative to CSF")
    p.add_argument("--bias", type=float, default=d.bias, help="bias field amplitude (log scale)")
    p.set_defaults(run=_phantom)

    p = verbs.add_parser("verify", help="check an nnU-Net v2 or Decathlon raw dataset; exit 1 listing problems")
    p.add_argument("dataset", type=Path)
    p.add_argument("--report", type=Path, help="write a JSON summary here when the dataset is sound")
    p.set_defaults(run=_verify)

    p = verbs.add_parser("fingerprint",
                         help="spacings, shapes and foreground intensities of a dataset's training cases")
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", type=Path, required=True, help="fingerprint.json to write")
    p.add_argument("--seed", type=int, required=True, help="draws the foreground intensity samples")
    p.set_defaults(run=_fingerprint)

    p = verbs.add_parser("plan", help="plan spacing, normalisation and each model's patch and batch from a fingerprint")
    p.add_argument("--fingerprint", type=Path, required=True, help="fingerprint.json from `segzoo fingerprint`")
    p.add_argument("--out", type=Path, required=True, help="plans.json to write")
    p.add_argument("--settings", required=True,
                   help='JSON {"models": {name: options}, "memory_mb": M, and optionally "spacing", '
                        '"normalization", "patch_size", "batch_size" (config overrides; null: planned)}')
    p.set_defaults(run=_plan)

    p = verbs.add_parser("preprocess", help="verify, reorient, resample, normalise and crop a raw dataset")
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fingerprint", type=Path,
                   help="fingerprint.json: plan the target spacing and normalisation from it, as `segzoo plan` does")
    p.add_argument("--spacing", type=_positive, nargs=3, metavar=("X", "Y", "Z"),
                   help="target spacing in mm (default: the plan's, or the training cases' median)")
    p.add_argument("--normalization", nargs="+", choices=["zscore", "ct", "none"],
                   help="one scheme per channel (default: the plan's, from channel_names; without a fingerprint "
                        "z-score)")
    p.set_defaults(run=_preprocess)

    p = verbs.add_parser("splits", help="draw train/val/test splits of a preprocessed dataset")
    p.add_argument("preprocessed", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--val-fraction", type=_fraction, default=0.2)
    p.add_argument("--test-fraction", type=_fraction, default=0.2)
    p.add_argument("--folds", type=int, default=1, help="cross-validation folds of the non-test cases (1: none)")
    p.add_argument("--nnunet-splits", type=Path, help="nnU-Net's splits_final.json: its folds, test cases removed")
    p.set_defaults(run=_splits)

    p = verbs.add_parser("train", help="train (or resume) one model with one seed")
    p.add_argument("--data", type=Path, required=True, help="preprocessed dataset folder")
    p.add_argument("--splits", type=Path, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="run folder (resumed if it holds a matching state)")
    p.add_argument("--settings", required=True,
                   help='JSON {"train": <config train section>, "model": <config models.<name> section>}')
    p.add_argument("--plans", type=Path, help="plans.json: patch_size and batch_size where the settings hold null")
    p.add_argument("--fold", type=int, help="cross-validation fold of the splits to train on")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--tracking", metavar="JSON", help="experiment tracking beside dvclive (segzoo[tracking] extra): "
                   '{"wandb": "off|offline|online", "mlflow": "off|local|<URI>", "dir": "results/tracking"}')
    p.set_defaults(run=_train)

    p = verbs.add_parser("infer", help="predict the test cases with a trained model (NIfTI in the original grid)")
    p.add_argument("--checkpoint", type=Path, nargs="+", required=True,
                   help="a run's best.safetensors; several (cross-validation folds) are ensembled")
    p.add_argument("--data", type=Path, required=True, help="preprocessed dataset folder")
    p.add_argument("--splits", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--sw-batch-size", type=int, default=4)
    p.add_argument("--overlap", type=_fraction, default=0.5)
    p.add_argument("--raw", type=Path, help="raw dataset: imported nnU-Net models predict from its images")
    p.add_argument("--no-mirror", action="store_true", help="imported nnU-Net models: no test-time mirroring (by default, as nnU-Net, over the axes its "
                        "checkpoint allows)")
    p.add_argument("--postprocessing", type=Path, nargs="+",
                   help="a trained run's postprocessing.json (segzoo postprocessing), one per checkpoint: applied "
                        "to the masks (an ensemble keeps a region's largest component where most runs chose it)")
    p.set_defaults(run=_infer)

    p = verbs.add_parser("infer-oof", help="cross-validation: each fold's run predicts its own validation cases")
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders, one per fold, in fold order")
    p.add_argument("--data", type=Path, required=True, help="preprocessed dataset folder")
    p.add_argument("--splits", type=Path, required=True, help="splits.json with folds")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--sw-batch-size", type=int, default=4)
    p.add_argument("--overlap", type=_fraction, default=0.5)
    p.set_defaults(run=_infer_oof)

    p = verbs.add_parser("postprocessing", help="choose per region whether keeping the largest connected component "
                         "raises validation Dice (nnU-Net's determine_postprocessing)")
    p.add_argument("--checkpoint", type=Path, required=True, help="a trained run's best.safetensors")
    p.add_argument("--data", type=Path, required=True, help="preprocessed dataset folder")
    p.add_argument("--splits", type=Path, required=True, help="its 'val' cases decide")
    p.add_argument("--fold", type=int, help="cross-validation: the 'val' cases of this fold decide")
    p.add_argument("--out", type=Path, required=True, help="JSON to write, e.g. <run>/postprocessing.json")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--sw-batch-size", type=int, default=4)
    p.add_argument("--overlap", type=_fraction, default=0.5)
    p.set_defaults(run=_postprocessing)

    p = verbs.add_parser("predict", help="predict new images (any orientation/spacing) with one or more trained runs")
    p.add_argument("-i", "--input", type=Path, required=True,
                   help="folder of <case>_<XXXX>.nii.gz (one file per channel) or, for one channel, <case>.nii.gz")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder to create: <case>.nii.gz label maps")
    p.add_argument("--run", dest="runs", nargs="+", required=True,
                   help="segzoo run folder(s) (their best checkpoint), checkpoint stems, or folders made by segzoo "
                        "nnunet-import (predicted the nnU-Net way; its folds ensembled as nnU-Net does); several "
                        "are ensembled")
    p.add_argument("--data", type=Path, help="the preprocessed training folder, for segzoo runs that do not record "
                   "their preprocessing")
    p.add_argument("--tta", action="store_true", help="test-time mirroring: average over every combination of the "
                   "flips each model was trained with (segzoo: train.augment.flip_axes; nnU-Net: its allowed "
                   "mirroring axes); a model trained without flips gets none")
    p.add_argument("--probabilities", action="store_true", help="also write <case>_prob.nii.gz")
    p.add_argument("--any-spacing", action="store_true",
                   help="predict images whose spacing is far outside the training cases' (refused by default)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--sw-batch-size", type=int, default=4)
    p.set_defaults(run=_predict)

    p = verbs.add_parser("evaluate", help="score one run's predictions: a CSV row per test case and region")
    p.add_argument("--predictions", type=Path, required=True,
                   help="segzoo infer output, or a folder of label maps <case>.nii.gz (nnU-Net, SCT, ...)")
    p.add_argument("--raw", type=Path, required=True, help="raw dataset (the reference labels)")
    p.add_argument("--data", type=Path, required=True, help="preprocessed dataset folder (regions)")
    p.add_argument("--splits", type=Path, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--tolerance-mm", type=_positive, default=1.0, help="surface Dice tolerance")
    p.add_argument("--out-of-fold", action="store_true",
                   help="score the cross-validation folds' validation cases (segzoo infer-oof) instead of the test set")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=_evaluate)

    p = verbs.add_parser("compare", help="tables of models x regions: mean, bootstrap CI, Wilcoxon vs U-Net 3+")
    p.add_argument("scores", type=Path, nargs="+", help="per-case CSVs from `segzoo evaluate`")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--metrics", nargs="+", default=list(METRICS), choices=list(METRICS), metavar="METRIC",
                   help=f"default: all of {', '.join(METRICS)}")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--summary", type=Path, help="also write the means as JSON (model -> region -> metric)")
    p.set_defaults(run=_compare)

    p = verbs.add_parser("figures", help="every figure of the report for one dataset")
    p.add_argument("--tables", type=Path, required=True, help="the comparison tables folder (segzoo compare)")
    p.add_argument("--data", type=Path, required=True, help="preprocessed dataset folder")
    p.add_argument("--raw", type=Path, required=True, help="raw dataset (images and reference labels)")
    p.add_argument("--runs", required=True,
                   help='JSON list of {"model", "seed", "run": training folder, "predictions": infer folder}')
    p.add_argument("--config-json", required=True, help="the resolved pipeline configuration as JSON")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=_figures)

    p = verbs.add_parser("page", help="write a dataset's static results page (index.html)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--figures", type=Path, required=True, help="the figures folder (segzoo figures)")
    p.add_argument("--tables", type=Path, required=True, help="the comparison tables folder (segzoo compare)")
    p.add_argument("--weightgen", type=Path, help="the G.pt evaluation folder, when that stage ran")
    p.add_argument("--config-json", required=True)
    p.add_argument("--out", type=Path, required=True, help="the dataset's page, e.g. results/<dataset>/index.html")
    p.add_argument("--plans", type=Path, help="plans.json (segzoo plan): shown as the page's Plan section")
    p.add_argument("--oof-tables", type=Path, help="the cross-validation (out-of-fold) comparison tables")
    p.set_defaults(run=_page)

    p = verbs.add_parser("site-index", help="write results/index.html: a link to every dataset's page")
    p.add_argument("--results", type=Path, default=Path("results"), help="folder holding <dataset>/index.html pages")
    p.add_argument("--out", type=Path, default=Path("results/index.html"))
    p.set_defaults(run=_site_index)
    _weightgen_verbs(verbs)
    _nnunet_verbs(verbs)
    _dvc_verbs(verbs)
    _export_verbs(verbs)
    return parser


def _weightgen_verbs(verbs) -> None:
    settings_help = "JSON: the weightgen settings the verb reads (the rules pass them)"

    def common(p, data=True):
        if data:
            p.add_argument("--data", type=Path, required=True, help="preprocessed dataset folder")
            p.add_argument("--splits", type=Path, required=True)
            p.add_argument("--data-seed", type=int, required=True, help="the config seed (inits, scoring batches)")
        p.add_argument("--settings", required=True, help=settings_help)
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")

    p = verbs.add_parser("zoo-start", help="write a zoo start: a parent trained on every region (spawn) or an init")
    common(p)
    p.add_argument("--start", required=True, help="parent<k> (spawn) or init<k> (shared)")
    p.add_argument("--out", type=Path, required=True, help="output stem: <out>.safetensors and <out>.json")
    p.set_defaults(run=_zoo_start)

    p = verbs.add_parser("zoo", help="train zoo runs (one per seed), keeping each one's start and checkpoints")
    common(p)
    p.add_argument("--task", required=True, help="a region name (single-task) or 'all'")
    p.add_argument("--lr", type=_positive, required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="one run per seed (data order, snapshots)")
    p.add_argument("--start", type=Path, help="start file (zoo-start); without it each seed starts at its own init")
    p.add_argument("--out", type=Path, required=True, help="folder to create: seed<s>.safetensors|json per run")
    p.add_argument("--tracking", metavar="JSON", help="experiment tracking beside dvclive (segzoo[tracking] extra): "
                   '{"wandb": "off|offline|online", "mlflow": "off|local|<URI>", "dir": "results/tracking"}')
    p.set_defaults(run=_zoo)

    p = verbs.add_parser("zoo-index", help="one table row per checkpoint; roles; drop runs with NaN or huge weights")
    p.add_argument("jobs", type=Path, nargs="+", help="zoo job folders")
    p.add_argument("--settings", required=True, help='JSON {"heldout_seeds": [..], "parents": N, "max_abs_weight": x}')
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

    p = verbs.add_parser("gpt-evaluate",
                         help="one-shot vs checkpoints and memorisers, alignment, unification, criteria")
    common(p)
    p.add_argument("--index", type=Path, required=True, help="the zoo's index.csv (run files beside it)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--gpt", type=Path, required=True)
    p.add_argument("--samples", type=Path, required=True, help="stem from gpt-sample")
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    p.add_argument("--summary", type=Path, help="also write the headline numbers (no timings) to this JSON file")
    p.set_defaults(run=_gpt_evaluate)


def _nnunet_import(args: argparse.Namespace) -> None:
    from segzoo.interop.nnunet_import import import_model

    sidecar = import_model(args.model_folder, args.out, fold=args.fold, which=args.checkpoint,
                           configuration=args.configuration)
    source = sidecar["source"]
    for path in source["ignored_code"]:
        print(f"ignored {args.model_folder / path}: segzoo never runs code from a model folder", file=sys.stderr)
    heads = sidecar.get("regions") or sidecar.get("classes")
    print(f"imported {source['checkpoint']} ({source['trainer']}, {sidecar['nnunet']['configuration']}, "
          f"{sidecar['output']} heads {list(heads)}"
          f"{'; ' + source['converted'] if source['converted'] else ''}) into {args.out}")


def _nnunet_export(args: argparse.Namespace) -> None:
    from segzoo.interop.nnunet_export import export_model

    folder = export_model(args.checkpoint, _preprocessed(args.data), args.out, network=args.network,
                          patch_size=args.patch_size)
    print(f"wrote an nnU-Net model folder to {folder} (run it with nnUNetv2_predict_from_modelfolder -m {folder} "
          f"-f 0)")


def _nnunet_verbs(verbs) -> None:
    p = verbs.add_parser("nnunet-import", help="import a trained nnU-Net v2 model folder safely (no unpickling)")
    p.add_argument("model_folder", type=Path, help="<Trainer>__<Plans>__<configuration> with plans.json, "
                   "dataset.json, fold_<F>/")
    p.add_argument("--out", type=Path, required=True, help="folder to create: model.safetensors + model.json")
    p.add_argument("--fold", default="0", help="fold folder to read (0..4 or all)")
    p.add_argument("--checkpoint", choices=["final", "best"], default="final")
    p.add_argument("--configuration", help="default: the one the checkpoint names")
    p.set_defaults(run=_nnunet_import)

    p = verbs.add_parser("nnunet-export", help="write an nnU-Net v2 model folder for a PlainConvUNet checkpoint")
    p.add_argument("checkpoint", type=Path, help="a zoo run, zoo start, G.pt samples or imported checkpoint")
    p.add_argument("--data", type=Path, required=True, help="the preprocessed dataset it was trained on "
                   "(spacing, channels, regions)")
    p.add_argument("--network", type=int, default=-1,
                   help="which network of a file holding several (zoo snapshots, G.pt samples); default: the last")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="sliding-window patch for nnU-Net; needed when the file records none (zoo runs, samples)")
    p.add_argument("--out", type=Path, required=True, help="model folder to create")
    p.set_defaults(run=_nnunet_export)


def _dvc_verbs(verbs) -> None:
    p = verbs.add_parser("dvc-sync", help="write dvc.yaml from the Snakemake DAG (run in the repository root)")
    p.add_argument("--configfile", type=Path, action="append", default=[],
                   help="as for snakemake: a config file laid over config.yaml (repeatable), e.g. presets/ci.yaml")
    p.add_argument("--gpus", type=int, default=2, help="the stages run snakemake with --resources gpu=N")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if dvc.yaml is stale")
    p.set_defaults(run=_dvc_sync)


def _export(args: argparse.Namespace) -> None:
    from segzoo.interop.onnx_export import ABS_TOLERANCE, OPSET, REL_TOLERANCE, export_onnx

    done = export_onnx(args.checkpoint, args.onnx, force=args.force, verify_patch=args.verify_patch)
    print(f"exported {done.model} to {done.path} (ONNX opset {OPSET}): image [N, {done.channels}, X, Y, Z] -> logits "
          f"[N, {done.outputs}, X, Y, Z], X, Y, Z multiples of {done.divisor}")
    if done.max_abs_diff is None:
        print("not verified: onnxruntime is not installed (pip install -e '.[onnx]')", file=sys.stderr)
    else:
        print(f"ONNX Runtime vs PyTorch on a [1, {done.channels}, {', '.join(map(str, done.verify_patch))}] patch: "
              f"max abs difference {done.max_abs_diff:.3g} of logits up to {done.max_abs_logit:.3g} (tolerance "
              f"{done.tolerance:.3g} = {ABS_TOLERANCE:g} + {REL_TOLERANCE:g} x max |logit|)")


def _export_verbs(verbs) -> None:
    p = verbs.add_parser("export", help="write a trained checkpoint as an ONNX model (deployment, Netron)")
    p.add_argument("checkpoint", type=Path, help="a run's best/final checkpoint (stem or .safetensors) or an "
                   "imported model folder")
    p.add_argument("--onnx", type=Path, required=True, help="ONNX file to write, e.g. model.onnx")
    p.add_argument("--force", action="store_true", help="overwrite an existing ONNX file")
    p.add_argument("--verify-patch", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="patch ONNX Runtime is compared with PyTorch on (default: the phantom's shape, rounded up "
                        "to the model's divisor)")
    p.set_defaults(run=_export)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except SegzooError as e:
        for line in e.problems:
            print(f"error: {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
