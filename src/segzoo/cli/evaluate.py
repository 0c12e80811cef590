"""The `segzoo` verbs of predicting and scoring: the test cases, out of fold, new images; per-case scores and
the comparison."""

from __future__ import annotations

import argparse
from pathlib import Path

from segzoo.cli.common import claim_device, fraction, positive, preprocessed
from segzoo.evaluate.metrics import METRICS


def _infer(args: argparse.Namespace) -> None:
    device = claim_device(args.device)
    from segzoo.infer import infer_run

    cases = infer_run(args.checkpoint, preprocessed(args.data), args.splits, args.out, device=device,
                      sw_batch_size=args.sw_batch_size, overlap=args.overlap, raw=args.raw, mirror=not args.no_mirror,
                      postprocessing=args.postprocessing)
    print(f"predicted {len(cases)} test case(s) into {args.out}")


def _infer_oof(args: argparse.Namespace) -> None:
    device = claim_device(args.device)
    from segzoo.infer import infer_out_of_fold

    cases = infer_out_of_fold(args.runs, preprocessed(args.data), args.splits, args.out, device=device,
                              sw_batch_size=args.sw_batch_size, overlap=args.overlap)
    print(f"predicted {len(cases)} case(s) out of fold with {len(args.runs)} fold run(s) into {args.out}")


def _predict(args: argparse.Namespace) -> None:
    device = claim_device(args.device)
    from segzoo.predict import predict_folder

    cases = predict_folder(args.input, args.output, args.runs, data=preprocessed(args.data) if args.data else None,
                           device=device, tta=args.tta, probabilities=args.probabilities,
                           sw_batch_size=args.sw_batch_size, any_spacing=args.any_spacing)
    print(f"predicted {len(cases)} case(s) with {len(args.runs)} run(s) into {args.output}")


def _evaluate(args: argparse.Namespace) -> None:
    from segzoo.evaluate.cases import evaluate_run
    from segzoo.io import refuse_existing, write_text

    refuse_existing(args.out)
    table = evaluate_run(args.predictions, args.raw, preprocessed(args.data), args.splits,
                         tolerance_mm=args.tolerance_mm, model=args.model, seed=args.seed,
                         out_of_fold=args.out_of_fold, instance_regions=args.instance_regions,
                         detection={"min_overlap_voxels": args.min_overlap_voxels, "connectivity": args.connectivity})
    write_text(args.out, table.to_csv(index=False, float_format="%.6g"))
    print(f"scored {table['case'].nunique()} case(s) x {table['region'].nunique()} region(s) into {args.out}")


def _compare(args: argparse.Namespace) -> None:
    from segzoo.evaluate.report_tables import write_tables
    from segzoo.evaluate.stats import BASELINE

    written = write_tables(args.scores, args.out_dir, args.metrics, args.seed, args.summary, args.plans,
                           baseline=args.baseline or BASELINE, external=dict(args.external or []))
    print("wrote " + ", ".join(map(str, written)))


def register(verbs) -> None:
    p = verbs.add_parser("infer", help="predict the test cases with a trained model (NIfTI in the original grid)")
    p.add_argument("--checkpoint", type=Path, nargs="+", required=True,
                   help="a run's best.safetensors; several (cross-validation folds) are ensembled")
    p.add_argument("--data", type=Path, required=True, help="preprocessed dataset folder")
    p.add_argument("--splits", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--sw-batch-size", type=int, default=4)
    p.add_argument("--overlap", type=fraction, default=0.5)
    p.add_argument("--raw", type=Path, help="raw dataset: imported nnU-Net models predict from its images")
    p.add_argument("--no-mirror", action="store_true",
                   help="imported nnU-Net models: no test-time mirroring (by default, as nnU-Net, over the axes its "
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
    p.add_argument("--overlap", type=fraction, default=0.5)
    p.set_defaults(run=_infer_oof)

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
    p.add_argument("--tolerance-mm", type=positive, default=1.0, help="surface Dice tolerance")
    p.add_argument("--out-of-fold", action="store_true",
                   help="score the cross-validation folds' validation cases (segzoo infer-oof) instead of the test set")
    p.add_argument("--instance-regions", nargs="+", default=[], metavar="REGION",
                   help="regions also scored lesion-wise (connected components: detection sensitivity, precision, F1)")
    p.add_argument("--min-overlap-voxels", type=int, default=1,
                   help="a lesion counts as detected (or true) when at least this many of its voxels overlap")
    p.add_argument("--connectivity", type=int, choices=[6, 18, 26], default=26, help="lesion connectivity in 3D")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=_evaluate)

    p = verbs.add_parser("compare", help="tables of models x regions: mean, bootstrap CI, Wilcoxon vs a baseline")
    p.add_argument("scores", type=Path, nargs="+", help="per-case CSVs from `segzoo evaluate`")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--metrics", nargs="+", default=list(METRICS), choices=list(METRICS), metavar="METRIC",
                   help=f"default: all of {', '.join(METRICS)}")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--summary", type=Path, help="also write the means as JSON (model -> region -> metric)")
    p.add_argument("--plans", type=Path, help="plans.json (segzoo plan): the tables' captions name the protocol")
    p.add_argument("--baseline", help="the row every paired difference and Holm-corrected test is taken against "
                   "(default: unet3plus, as config compare.baseline)")
    p.add_argument("--external", nargs=2, action="append", metavar=("ROW", "PROTOCOL"),
                   help="a row whose label maps were made outside segzoo (scored with `segzoo evaluate --predictions "
                        "<folder> --model ROW`), and how they were made: the captions say its protocol differs")
    p.set_defaults(run=_compare)

