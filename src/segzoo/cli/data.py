"""The `segzoo` verbs of the data stage: a phantom, verification, the fingerprint and plan, preprocessing, splits."""

from __future__ import annotations

import argparse
from pathlib import Path

from segzoo.cli.common import fraction, json_settings, positive, preprocessed
from segzoo.data.phantom import PhantomSpec


def _phantom(args: argparse.Namespace) -> None:
    from segzoo.data.phantom import write_phantom_dataset

    spec = PhantomSpec(shape=tuple(args.shape), spacing=tuple(args.spacing), spacing_jitter=args.spacing_jitter,
                       max_rotation_deg=args.max_rotation, lesion_free_fraction=args.lesion_free_fraction,
                       max_lesions=args.max_lesions, noise=args.noise, bias=args.bias)
    out = write_phantom_dataset(args.out, args.cases, args.seed, spec, test_cases=args.test_cases)
    test = f" and {args.test_cases} test cases (imagesTs)" if args.test_cases else ""
    print(f"wrote {args.cases} phantom cases{test} to {out}")


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

    settings = json_settings(args.settings, "models", "memory_mb")
    fingerprint = read_fingerprint(args.fingerprint)
    plans = make_plans(fingerprint, models=settings["models"], memory_mb=settings["memory_mb"],
                       spacing=settings.get("spacing"), normalization_override=settings.get("normalization"),
                       patch_size=settings.get("patch_size"), batch_size=settings.get("batch_size"),
                       protocol=settings.get("protocol", "equal"))
    write_json(args.out, plans)
    print(f"planned {plans['dataset']} ({plans['protocol']} protocol): target spacing {plans['target_spacing']} mm "
          f"({plans['spacing_source']}), "
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

    splits = splits_for_preprocessed(preprocessed(args.preprocessed), args.seed, args.val_fraction,
                                     args.test_fraction, folds=args.folds, nnunet_splits=args.nnunet_splits)
    write_json(args.out, splits)
    folds = f", {len(splits['folds'])} cross-validation folds" if "folds" in splits else ""
    print(f"wrote {args.out}: {len(splits['train'])} train, {len(splits['val'])} val, "
          f"{len(splits['test'])} test ({splits['test_source']}){folds}")


def register(verbs) -> None:
    d = PhantomSpec()
    p = verbs.add_parser("phantom", help="write spinal-cord MRI phantoms as an nnU-Net v2 raw dataset")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create, e.g. Dataset001_SpinalPhantom")
    p.add_argument("--cases", type=int, required=True)
    p.add_argument("--test-cases", type=int, default=0, help="more cases as the dataset's own test set (imagesTs)")
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
                   help='JSON {"models": {name: options}, "memory_mb": M, and optionally "protocol" (equal: one '
                        'patch and batch for every model; budget: each its own), "spacing", "normalization", '
                        '"patch_size", "batch_size" (config overrides; null: planned)}')
    p.set_defaults(run=_plan)

    p = verbs.add_parser("preprocess", help="verify, reorient, resample, normalise and crop a raw dataset")
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fingerprint", type=Path,
                   help="fingerprint.json: plan the target spacing and normalisation from it, as `segzoo plan` does")
    p.add_argument("--spacing", type=positive, nargs=3, metavar=("X", "Y", "Z"),
                   help="target spacing in mm (default: the plan's, or the training cases' median)")
    p.add_argument("--normalization", nargs="+", choices=["zscore", "ct", "none"],
                   help="one scheme per channel (default: the plan's, from channel_names; without a fingerprint "
                        "z-score)")
    p.set_defaults(run=_preprocess)

    p = verbs.add_parser("splits", help="draw train/val/test splits of a preprocessed dataset")
    p.add_argument("preprocessed", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--val-fraction", type=fraction, default=0.2)
    p.add_argument("--test-fraction", type=fraction, default=0.2)
    p.add_argument("--folds", type=int, default=1, help="cross-validation folds of the non-test cases (1: none)")
    p.add_argument("--nnunet-splits", type=Path, help="nnU-Net's splits_final.json: its folds, test cases removed")
    p.set_defaults(run=_splits)

