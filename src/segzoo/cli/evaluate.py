"""The `segzoo` verbs of predicting and scoring: the test cases, out of fold, new images; per-case scores and
the comparison."""

from __future__ import annotations

import argparse
from pathlib import Path

from segzoo.cli.common import add_device, add_verb, claim_device, files_list, fraction, positive, preprocessed
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

    cases = predict_folder(args.input, args.output, args.runs, data=args.data, device=device, tta=args.tta,
                           probabilities=args.probabilities, sw_batch_size=args.sw_batch_size,
                           any_spacing=args.any_spacing)
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


PREDICT_OUTPUT = files_list("output files (in OUTPUT, one set per case, in the input image's grid)", {
    "<case>.nii.gz": "uint8 label map, nnU-Net's format: each voxel holds the label value of the innermost region it "
                     "lies in (regions painted in order, later over earlier: for the phantom canal 1, then sc 2, then "
                     "lesion 3), 0 outside; for an import of a softmax model, its argmax class. segzoo runs apply "
                     "their postprocessing.json (a region keeps its largest component where most runs chose it); "
                     "imports give nnU-Net's segmentation, unpostprocessed, as nnUNetv2_predict does.",
    "<case>_prob.nii.gz": "with --probabilities: float32 [X, Y, Z, K], the ensembled probabilities before the 0.5 "
                          "threshold and postprocessing: K = one sigmoid probability per region (segzoo runs, "
                          "region-based imports) or one softmax probability per class, background first (imports "
                          "of softmax models with more than two classes). nnU-Net's --save_probabilities writes "
                          ".npz and a pickle instead; segzoo writes no pickle.",
}) + "\n\nNothing is written unless every case succeeds; OUTPUT must not exist yet."


def register(verbs) -> None:
    p = add_verb(verbs, "infer", "predict the test cases with a trained model (NIfTI in the original grid)",
                 "Each test case of the splits is predicted from its preprocessed image (MONAI's sliding window; "
                 "several checkpoints, a model's folds, ensembled) and mapped back to the raw image's grid. An "
                 "imported nnU-Net model (segzoo nnunet-import) predicts from the raw images with nnU-Net's own "
                 "preprocessing and sliding window instead, mirrored as nnU-Net mirrors. The workflow's infer rule "
                 "runs this for every model and seed; for images outside the dataset use segzoo predict.",
                 "segzoo infer --checkpoint results/train/Dataset001_SpinalPhantom/unet3plus/seed0/best "
                 "--data results/preprocessed/Dataset001_SpinalPhantom "
                 "--splits results/splits/Dataset001_SpinalPhantom/splits.json "
                 "--out results/infer/Dataset001_SpinalPhantom/unet3plus/seed0",
                 epilog="output files (in --out, per test case, in the raw image's grid): <case>_prob.nii.gz "
                        "(float32 [X, Y, Z, R], sigmoid probability per region) and <case>_<region>.nii.gz (uint8 "
                        "mask: probability > 0.5, postprocessed with --postprocessing).")
    p.add_argument("--checkpoint", type=Path, nargs="+", required=True,
                   help="a run's best checkpoint (stem or .safetensors), or an import folder; several (a model's "
                        "cross-validation folds) are ensembled")
    p.add_argument("--data", type=Path, required=True, help="the preprocessed dataset folder (segzoo preprocess)")
    p.add_argument("--splits", type=Path, required=True, help="splits.json (segzoo splits): its 'test' cases are "
                   "predicted")
    p.add_argument("--out", type=Path, required=True, help="folder to create (see below)")
    add_device(p)
    p.add_argument("--sw-batch-size", type=int, default=4, help="sliding-window patches per forward pass "
                   "(default: %(default)s; more is faster where memory allows)")
    p.add_argument("--overlap", type=fraction, default=0.5, help="fraction of a patch shared with its neighbour "
                   "(default: %(default)s)")
    p.add_argument("--raw", type=Path, help="raw dataset: imported nnU-Net models predict from its images")
    p.add_argument("--no-mirror", action="store_true",
                   help="imported nnU-Net models: no test-time mirroring (by default, as nnU-Net, over the axes its "
                        "checkpoint allows)")
    p.add_argument("--postprocessing", type=Path, nargs="+",
                   help="a trained run's postprocessing.json (segzoo postprocessing), one per checkpoint: applied "
                        "to the masks (an ensemble keeps a region's largest component where most runs chose it)")
    p.set_defaults(run=_infer)

    p = add_verb(verbs, "infer-oof", "cross-validation: each fold's run predicts its own validation cases",
                 "Every non-test case is predicted once, by the run of the fold that held it out (each run's final "
                 "checkpoint, no postprocessing: nothing chosen on these cases touches their scores). The workflow "
                 "runs it when splits.folds > 1; segzoo evaluate --out-of-fold scores the result.",
                 "segzoo infer-oof --runs results/train/D/unet3plus/seed0/fold0 results/train/D/unet3plus/seed0/fold1 "
                 "--data results/preprocessed/D --splits results/splits/D/splits.json "
                 "--out results/infer_oof/D/unet3plus/seed0",
                 epilog="output files: as segzoo infer's, one set per non-test case.")
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders, one per fold, in fold order")
    p.add_argument("--data", type=Path, required=True, help="the preprocessed dataset folder (segzoo preprocess)")
    p.add_argument("--splits", type=Path, required=True, help="splits.json with folds (segzoo splits --folds K)")
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    add_device(p)
    p.add_argument("--sw-batch-size", type=int, default=4, help="sliding-window patches per forward pass "
                   "(default: %(default)s)")
    p.add_argument("--overlap", type=fraction, default=0.5, help="fraction of a patch shared with its neighbour "
                   "(default: %(default)s)")
    p.set_defaults(run=_infer_oof)

    p = add_verb(verbs, "predict", "predict new images (any orientation and spacing) with trained models",
                 "Use this as you would nnUNetv2_predict: a folder of NIfTI images in, a folder of label maps "
                 "out. The models are segzoo runs (segzoo train) or nnU-Net models imported with segzoo "
                 "nnunet-import, one folder per fold. A segzoo run preprocesses each image exactly as its training "
                 "cases were (it records how); an import takes nnU-Net's own road (reader, crop, normalisation, "
                 "resampling, sliding window, fold ensemble), so it needs nothing but the images. Several models "
                 "are ensembled by averaging their probabilities.\n\n"
                 "Test-time mirroring averages each model over every combination of the flips it was trained "
                 "with. It is on by default for imports, as in nnUNetv2_predict (--no-tta or --disable_tta turns "
                 "it off), and off by default for segzoo runs (--tta turns it on). Every model, each fold of an "
                 "ensemble, prints one line saying which flips it used and why.\n\n"
                 "Channels go by file index, _0000 first, as in nnU-Net. Where a dataset.json that names channels "
                 "lies beside the images (in their folder or the one above), a model trained on other channels, or "
                 "in another order, is refused. Options that do not apply to the models given are refused, not "
                 "ignored.",
                 "segzoo predict -i new_scans/ -o predictions/ --run imported/fold0 imported/fold1",
                 epilog=PREDICT_OUTPUT)
    p.add_argument("-i", "--input", type=Path, required=True, metavar="INPUT",
                   help="folder of images: <case>_<XXXX>.nii.gz, one file per channel (_0000, _0001, ... in the "
                        "model's channel order), or any <case>.nii.gz for a one-channel model")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTPUT",
                   help="folder to create, holding the files listed below")
    p.add_argument("--run", dest="runs", nargs="+", required=True, metavar="RUN",
                   help="the model(s), one or more, ensembled when several: a segzoo run folder (its best "
                        "checkpoint; several seeds or folds ensemble), a checkpoint stem, or a folder made by "
                        "segzoo nnunet-import, which holds one fold of an nnU-Net model (import each fold, "
                        "--fold F, into its own folder and pass them all: nnUNetv2_predict's -f 0 1 2 3 4). One "
                        "kind per call; an nnU-Net model folder or its fold_F is refused with the import command")
    tta = p.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_const", const=True, default=None,
                     help="test-time mirroring: average each model over every combination of the flips it was "
                          "trained with (a segzoo run: its train.augment.flip_axes, X only by default, 2 "
                          "predictions; an import: its inference_allowed_mirroring_axes, usually 0, 1, 2, 8 "
                          "predictions). Default: on for imports, off for segzoo runs. A model trained without "
                          "flips gets none")
    tta.add_argument("--no-tta", "--disable_tta", dest="tta", action="store_const", const=False,
                     help="no test-time mirroring, for imports too (nnU-Net's --disable_tta): as many times faster "
                          "as there are flips, slightly less accurate")
    p.add_argument("--probabilities", action="store_true",
                   help="also write <case>_prob.nii.gz, the probabilities (see below)")
    p.add_argument("--data", type=Path, metavar="PREPROCESSED",
                   help="segzoo runs trained before runs recorded their preprocessing only: the preprocessed "
                        "folder they were trained on (results/preprocessed/<dataset>); refused otherwise")
    p.add_argument("--any-spacing", action="store_true",
                   help="segzoo runs: predict images whose voxel spacing lies more than 2x outside the training "
                        "cases' range (refused by default, naming the file); refused for imports, which resample "
                        "any spacing as nnU-Net does")
    add_device(p)
    p.add_argument("--sw-batch-size", type=int, metavar="N",
                   help="segzoo runs: sliding-window patches per forward pass (default: 4; more is faster where "
                        "memory allows); refused for imports, which predict tile by tile "
                        "as nnU-Net does")
    p.set_defaults(run=_predict)

    p = add_verb(verbs, "evaluate", "score one run's predictions: a CSV row per test case and region",
                 "Each test case's prediction is read in the raw label's grid (shape and affine checked) and scored "
                 "per region: Dice, surface Dice at the tolerance, HD95, and, where probabilities exist, NLL and "
                 "calibration; lesion-wise detection for the regions named. Predictions may be segzoo infer's "
                 "folder or label maps <case>.nii.gz made by any tool (nnU-Net, SCT).",
                 "segzoo evaluate --predictions results/infer/D/unet3plus/seed0 --raw results/raw/D "
                 "--data results/preprocessed/D --splits results/splits/D/splits.json --model unet3plus --seed 0 "
                 "--out results/evaluate/D/unet3plus/seed0.csv")
    p.add_argument("--predictions", type=Path, required=True,
                   help="segzoo infer output, or a folder of label maps <case>.nii.gz (nnU-Net, SCT, ...)")
    p.add_argument("--raw", type=Path, required=True, help="raw dataset (the reference labels)")
    p.add_argument("--data", type=Path, required=True, help="preprocessed dataset folder (regions)")
    p.add_argument("--splits", type=Path, required=True, help="splits.json: its 'test' cases are scored")
    p.add_argument("--model", required=True, help="the model's name, written in every row (the comparison's row)")
    p.add_argument("--seed", type=int, required=True, help="the run's seed, written in every row")
    p.add_argument("--tolerance-mm", type=positive, default=1.0, help="surface Dice tolerance (default: %(default)s)")
    p.add_argument("--out-of-fold", action="store_true",
                   help="score the cross-validation folds' validation cases (segzoo infer-oof) instead of the test set")
    p.add_argument("--instance-regions", nargs="+", default=[], metavar="REGION",
                   help="regions also scored lesion-wise (connected components: detection sensitivity, precision, F1)")
    p.add_argument("--min-overlap-voxels", type=int, default=1,
                   help="a lesion counts as detected (or true) when at least this many of its voxels overlap")
    p.add_argument("--connectivity", type=int, choices=[6, 18, 26], default=26, help="lesion connectivity in 3D")
    p.add_argument("--out", type=Path, required=True, help="CSV to write (refused if it exists)")
    p.set_defaults(run=_evaluate)

    p = add_verb(verbs, "compare", "tables of models x regions: mean, bootstrap CI, Wilcoxon vs a baseline",
                 "The per-case scores of every model and seed become the comparison: per metric, a models x "
                 "regions table of means with 95% bootstrap confidence intervals, the median paired difference from "
                 "the baseline (--baseline, config compare.baseline; default U-Net 3+) and a Holm-corrected paired "
                 "Wilcoxon test. Written as per_case.csv, comparison.csv (long form) and <metric>.md / .html per "
                 "metric.",
                 "segzoo compare results/evaluate/D/unet3plus/seed0.csv results/evaluate/D/ms_unet3plus/seed0.csv "
                 "--out-dir results/tables/D")
    p.add_argument("scores", type=Path, nargs="+", help="per-case CSVs from `segzoo evaluate`")
    p.add_argument("--out-dir", type=Path, required=True, help="folder to write the tables into")
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
