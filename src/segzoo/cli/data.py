"""The `segzoo` verbs of the data stage: a phantom, verification, the fingerprint and plan, preprocessing, splits."""

from __future__ import annotations

import argparse
from pathlib import Path

from segzoo.cli.common import add_verb, fraction, json_settings, positive, preprocessed
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
    p = add_verb(verbs, "phantom", "write spinal-cord MRI phantoms as an nnU-Net v2 raw dataset",
                 "Each case is a T2-like axial stack through a neck (cord, CSF canal, dura, 0 to a few lesions, "
                 "vertebrae, bias field, Rician noise) with anisotropic voxels and a small random rotation in the "
                 "affine. Labels: 1 CSF, 2 cord, 3 lesion; dataset.json declares the regions canal {1, 2, 3}, "
                 "sc {2, 3} and lesion {3}. The same seed gives byte-identical files.",
                 "segzoo phantom --out results/raw/Dataset001_SpinalPhantom --cases 20 --test-cases 5 --seed 0")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create, e.g. Dataset001_SpinalPhantom")
    p.add_argument("--cases", type=int, required=True, help="labelled training cases (imagesTr, labelsTr)")
    p.add_argument("--test-cases", type=int, default=0, help="more cases as the dataset's own test set (imagesTs)")
    p.add_argument("--seed", type=int, required=True, help="every random draw of every case comes from it")
    p.add_argument("--shape", type=int, nargs=3, default=list(d.shape), metavar=("X", "Y", "Z"),
                   help="voxels: left-right, posterior-anterior, inferior-superior (default: %(default)s)")
    p.add_argument("--spacing", type=float, nargs=3, default=list(d.spacing), metavar=("X", "Y", "Z"),
                   help="voxel spacing in mm (default: %(default)s)")
    p.add_argument("--spacing-jitter", type=float, default=d.spacing_jitter,
                   help="per-case relative change of each spacing, either way (default: %(default)s)")
    p.add_argument("--max-rotation", type=float, default=d.max_rotation_deg,
                   help="degrees about each axis (default: %(default)s)")
    p.add_argument("--lesion-free-fraction", type=float, default=d.lesion_free_fraction,
                   help="share of cases without lesions (default: %(default)s)")
    p.add_argument("--max-lesions", type=int, default=d.max_lesions,
                   help="most lesions in one case (default: %(default)s)")
    p.add_argument("--noise", type=float, default=d.noise, help="Rician sigma relative to CSF (default: %(default)s)")
    p.add_argument("--bias", type=float, default=d.bias,
                   help="bias field amplitude, log scale (default: %(default)s)")
    p.set_defaults(run=_phantom)

    p = add_verb(verbs, "verify", "check an nnU-Net v2 or Decathlon raw dataset; exit 1 listing problems",
                 "Reads dataset.json and every file, as nnU-Net's integrity check does, and more: each file "
                 "decompresses and reads, images are 3D with the declared channel count, channels and label share "
                 "shape, spacing and affine, images hold no NaN or Inf, labels hold only the values dataset.json "
                 "declares. Every problem is listed with its file, all in one pass; the report is written only when "
                 "the dataset is sound.",
                 "segzoo verify results/raw/Dataset001_SpinalPhantom "
                 "--report results/verify/Dataset001_SpinalPhantom.json")
    p.add_argument("dataset", type=Path, help="the raw dataset folder (dataset.json, imagesTr, labelsTr, imagesTs)")
    p.add_argument("--report", type=Path, help="write a JSON summary here when the dataset is sound")
    p.set_defaults(run=_verify)

    p = add_verb(verbs, "fingerprint", "spacings, shapes and foreground intensities of a dataset's training cases",
                 "What segzoo plan needs to choose the target spacing, normalisation, patch and batch size, "
                 "measured once per dataset as nnU-Net's fingerprint extraction does: each labelled training "
                 "case's spacing and shape, and a seeded sample of foreground intensities per channel.",
                 "segzoo fingerprint results/raw/D --out results/plans/D/fingerprint.json --seed 0")
    p.add_argument("dataset", type=Path, help="the raw dataset folder")
    p.add_argument("--out", type=Path, required=True, help="fingerprint.json to write")
    p.add_argument("--seed", type=int, required=True, help="draws the foreground intensity samples")
    p.set_defaults(run=_fingerprint)

    p = add_verb(verbs, "plan", "plan spacing, normalisation and each model's patch and batch from a fingerprint",
                 "The target spacing and per-channel normalisation follow nnU-Net's rules; each model's patch and "
                 "batch size are fitted to the memory budget (one for every model under the equal protocol, each "
                 "its own under budget). Config values that are not null override the plan. The workflow's plan "
                 "rule passes --settings from the configuration.",
                 "segzoo plan --fingerprint results/plans/D/fingerprint.json --out results/plans/D/plans.json "
                 "--settings '{\"models\": {\"unet3plus\": {}}, \"memory_mb\": 8000}'")
    p.add_argument("--fingerprint", type=Path, required=True, help="fingerprint.json from `segzoo fingerprint`")
    p.add_argument("--out", type=Path, required=True, help="plans.json to write")
    p.add_argument("--settings", required=True,
                   help='JSON {"models": {name: options}, "memory_mb": M, and optionally "protocol" (equal: one '
                        'patch and batch for every model; budget: each its own), "spacing", "normalization", '
                        '"patch_size", "batch_size" (config overrides; null: planned)}')
    p.set_defaults(run=_plan)

    p = add_verb(verbs, "preprocess", "verify, reorient, resample, normalise and crop a raw dataset",
                 "Every case (test cases included) is verified, reoriented to RAS, resampled to the target spacing, "
                 "normalised per channel and cropped to its non-zero box, as nnU-Net preprocesses; the folder "
                 "records the plan (spacing, normalisation, regions, label values) that training and segzoo "
                 "predict reuse.",
                 "segzoo preprocess results/raw/D --out results/preprocessed/D "
                 "--fingerprint results/plans/D/fingerprint.json")
    p.add_argument("dataset", type=Path, help="the raw dataset folder")
    p.add_argument("--out", type=Path, required=True, help="the preprocessed folder to create")
    p.add_argument("--fingerprint", type=Path,
                   help="fingerprint.json: plan the target spacing and normalisation from it, as `segzoo plan` does")
    p.add_argument("--spacing", type=positive, nargs=3, metavar=("X", "Y", "Z"),
                   help="target spacing in mm (default: the plan's, or the training cases' median)")
    p.add_argument("--normalization", nargs="+", choices=["zscore", "ct", "none"],
                   help="one scheme per channel (default: the plan's, from channel_names; without a fingerprint "
                        "z-score)")
    p.set_defaults(run=_preprocess)

    p = add_verb(verbs, "splits", "draw train/val/test splits of a preprocessed dataset",
                 "The dataset's own labelled test cases (imagesTs with labelsTs) are the test set; without them it "
                 "is drawn from the training cases. Validation is drawn from the rest. With --folds K the non-test "
                 "cases are dealt into K cross-validation folds (or taken from nnU-Net's splits_final.json). The "
                 "same cases and seed always give the same splits.",
                 "segzoo splits results/preprocessed/D --out results/splits/D/splits.json --seed 0")
    p.add_argument("preprocessed", type=Path, help="the preprocessed folder (segzoo preprocess)")
    p.add_argument("--out", type=Path, required=True, help="splits.json to write")
    p.add_argument("--seed", type=int, required=True, help="draws the splits")
    p.add_argument("--val-fraction", type=fraction, default=0.2,
                   help="share of the labelled training cases to validate on (default: %(default)s)")
    p.add_argument("--test-fraction", type=fraction, default=0.2,
                   help="share drawn as the test set when the dataset has no labelled test cases "
                        "(default: %(default)s)")
    p.add_argument("--folds", type=int, default=1, help="cross-validation folds of the non-test cases (1: none)")
    p.add_argument("--nnunet-splits", type=Path, help="nnU-Net's splits_final.json: its folds, test cases removed")
    p.set_defaults(run=_splits)
