"""The `segzoo` verbs of training a model, and choosing its postprocessing on validation."""

from __future__ import annotations

import argparse
from pathlib import Path

from segzoo.cli.common import TRACKING_HELP, add_device, add_verb, claim_device, fraction, json_settings, preprocessed


def _train(args: argparse.Namespace) -> None:
    settings = json_settings(args.settings, "train", "model")
    if args.plans:
        settings["train"], settings["model"] = _planned(settings["train"], settings["model"], args.plans, args.model)
    from segzoo.tracking import parse_tracking

    tracking = parse_tracking(args.tracking)
    device = claim_device(args.device)
    from segzoo.train.loop import Run, train

    metrics = train(Run(preprocessed=preprocessed(args.data), splits=args.splits, model=args.model, seed=args.seed,
                        out=args.out, settings=settings["train"], model_options=settings["model"], fold=args.fold,
                        device=device, threads=args.threads, progress=not args.no_progress, tracking=tracking))
    if not metrics:  # a DDP process other than 0: process 0 writes and reports
        return
    print(f"trained {args.model} (seed {args.seed}): best validation Dice {metrics['best_val_dice']:.3f} at step "
          f"{metrics['best_step']}; checkpoints in {args.out}")


def _planned(train: dict, options: dict, plans: Path, model: str) -> tuple[dict, dict]:
    """The train settings with the plan's patch and batch size where the config leaves them null, and the options
    the model is built with (nnU-Net's networks: the architecture planned for the patch)."""
    from segzoo.data.plans import Plans

    plan = Plans(plans)
    planned = plan.model(model)
    return ({**train, **{key: planned[key] for key in ("patch_size", "batch_size") if train.get(key) is None}},
            plan.model_options(model, options))


def _postprocessing(args: argparse.Namespace) -> None:
    device = claim_device(args.device)
    from segzoo.inference.postprocess import write_postprocessing

    result = write_postprocessing(args.checkpoint, preprocessed(args.data), args.splits, args.out, device=device,
                                  sw_batch_size=args.sw_batch_size, overlap=args.overlap, fold=args.fold)
    kept = [region for region, keep in result["largest_component"].items() if keep]
    print(f"chose postprocessing on {len(result['cases'])} validation case(s): largest component kept for "
          f"{', '.join(kept) or 'no region'}; written to {args.out}")


def register(verbs) -> None:
    p = add_verb(verbs, "train", "train (or resume) one model with one seed",
                 "One run: the model trained on the splits' train cases (one fold's, with --fold), validated on "
                 "their val cases; best.safetensors (the best validation Dice) and final.safetensors, each with a "
                 "JSON sidecar recording the preprocessing, the flips it was trained with and how it was made. A "
                 "run folder holding a matching state resumes where it stopped. The workflow's train rule passes "
                 "--settings from the configuration.",
                 "segzoo train --data results/preprocessed/D --splits results/splits/D/splits.json --model unet3plus "
                 "--seed 0 --out results/train/D/unet3plus/seed0 --plans results/plans/D/plans.json "
                 "--settings '{\"train\": {...}, \"model\": {...}}'")
    p.add_argument("--data", type=Path, required=True, help="preprocessed dataset folder")
    p.add_argument("--splits", type=Path, required=True, help="splits.json (segzoo splits)")
    p.add_argument("--model", required=True, help="a model name of the configuration's models section")
    p.add_argument("--seed", type=int, required=True, help="initialisation, data order and augmentation")
    p.add_argument("--out", type=Path, required=True, help="run folder (resumed if it holds a matching state)")
    p.add_argument("--settings", required=True,
                   help='JSON {"train": <config train section>, "model": <config models.<name> section>}')
    p.add_argument("--plans", type=Path, help="plans.json: patch_size and batch_size where the settings hold null, "
                   "and the options the model is built with (nnU-Net's networks: the planned architecture)")
    p.add_argument("--fold", type=int, help="cross-validation fold of the splits to train on")
    add_device(p)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs and batch jobs)")
    p.add_argument("--tracking", metavar="JSON", help=TRACKING_HELP)
    p.set_defaults(run=_train)

    p = add_verb(verbs, "postprocessing", "choose per region whether keeping the largest connected component "
                 "raises validation Dice (nnU-Net's determine_postprocessing)",
                 "The run's validation cases are predicted; per region, keeping only the largest connected "
                 "component (26-neighbourhood) is chosen where it strictly raises the mean validation Dice. The "
                 "JSON records the choice, both Dice values and the cases; segzoo infer and predict apply it.",
                 "segzoo postprocessing --checkpoint results/train/D/unet3plus/seed0/best.safetensors "
                 "--data results/preprocessed/D --splits results/splits/D/splits.json "
                 "--out results/train/D/unet3plus/seed0/postprocessing.json")
    p.add_argument("--checkpoint", type=Path, required=True, help="a trained run's best.safetensors")
    p.add_argument("--data", type=Path, required=True, help="preprocessed dataset folder")
    p.add_argument("--splits", type=Path, required=True, help="its 'val' cases decide")
    p.add_argument("--fold", type=int, help="cross-validation: the 'val' cases of this fold decide")
    p.add_argument("--out", type=Path, required=True, help="JSON to write, e.g. <run>/postprocessing.json")
    add_device(p)
    p.add_argument("--sw-batch-size", type=int, default=4, help="sliding-window patches per forward pass "
                   "(default: %(default)s)")
    p.add_argument("--overlap", type=fraction, default=0.5, help="fraction of a patch shared with its neighbour "
                   "(default: %(default)s)")
    p.set_defaults(run=_postprocessing)
