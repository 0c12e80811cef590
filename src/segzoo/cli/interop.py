"""The `segzoo` verbs that meet other tools: nnU-Net model folders in and out, ONNX."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segzoo.cli.common import add_verb, preprocessed


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

    folder = export_model(args.checkpoint, preprocessed(args.data), args.out, network=args.network,
                          patch_size=args.patch_size)
    print(f"wrote an nnU-Net model folder to {folder} (run it with nnUNetv2_predict_from_modelfolder -m {folder} "
          f"-f 0)")


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


def register(verbs) -> None:
    p = add_verb(verbs, "nnunet-import", "import a trained nnU-Net v2 model folder safely (no unpickling)",
                 "One fold of an nnU-Net model folder (nnUNet_results/<Dataset>/<Trainer>__<Plans>__<configuration>) "
                 "becomes a segzoo checkpoint: plans.json and dataset.json read as JSON, the checkpoint with "
                 "torch.load(weights_only=True) and a numpy allowlist, the network rebuilt from the plans through an "
                 "allowlist and loaded strictly; no code in the folder ever runs. Import each fold into its own "
                 "folder; segzoo predict --run f0 f1 ... ensembles them as nnUNetv2_predict -f 0 1 ... does, and "
                 "segzoo infer --raw predicts a dataset's test cases with one.",
                 "segzoo nnunet-import nnUNet_results/Dataset123_Cord/nnUNetTrainer__nnUNetPlans__3d_fullres --fold 0 "
                 "--out imported/fold0")
    p.add_argument("model_folder", type=Path, help="<Trainer>__<Plans>__<configuration> with plans.json, "
                   "dataset.json, fold_<F>/")
    p.add_argument("--out", type=Path, required=True, help="folder to create: model.safetensors + model.json")
    p.add_argument("--fold", default="0", help="fold folder to read: 0..4, or all (fold_all) (default: %(default)s)")
    p.add_argument("--checkpoint", choices=["final", "best"], default="final",
                   help="checkpoint_final.pth or checkpoint_best.pth (default: %(default)s)")
    p.add_argument("--configuration", help="default: the one the checkpoint names")
    p.set_defaults(run=_nnunet_import)

    p = add_verb(verbs, "nnunet-export", "write an nnU-Net v2 model folder for a PlainConvUNet checkpoint",
                 "A segzoo PlainConvUNet network (a zoo run, G.pt samples, a plain_conv_unet checkpoint or an "
                 "imported region model) becomes plans.json, dataset.json and fold_0/checkpoint_final.pth, which "
                 "holds only tensors and plain types, so that nnU-Net's own tools run it.",
                 "segzoo nnunet-export results/zoo/D/runs/job0/parent0_sc_lr0.01_seed0 --data results/preprocessed/D "
                 "--patch-size 32 32 16 --out exported/sc_model")
    p.add_argument("checkpoint", type=Path, help="a zoo run, zoo start, G.pt samples or imported checkpoint")
    p.add_argument("--data", type=Path, required=True, help="the preprocessed dataset it was trained on "
                   "(spacing, channels, regions)")
    p.add_argument("--network", type=int, default=-1,
                   help="which network of a file holding several (zoo snapshots, G.pt samples); default: the last")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="sliding-window patch for nnU-Net; needed when the file records none (zoo runs, samples)")
    p.add_argument("--out", type=Path, required=True, help="model folder to create")
    p.set_defaults(run=_nnunet_export)

    p = add_verb(verbs, "export", "write a trained checkpoint as an ONNX model (deployment, Netron)",
                 "The network is exported with its dynamic spatial axes and, where ONNX Runtime is installed "
                 "(segzoo[onnx]), run on one patch beside PyTorch; the largest difference in logits is printed "
                 "against its tolerance.",
                 "segzoo export results/train/D/unet3plus/seed0/best --onnx unet3plus.onnx")
    p.add_argument("checkpoint", type=Path, help="a run's best/final checkpoint (stem or .safetensors) or an "
                   "imported model folder")
    p.add_argument("--onnx", type=Path, required=True, help="ONNX file to write, e.g. model.onnx")
    p.add_argument("--force", action="store_true", help="overwrite an existing ONNX file")
    p.add_argument("--verify-patch", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="patch ONNX Runtime is compared with PyTorch on (default: the phantom's shape, rounded up "
                        "to the model's divisor)")
    p.set_defaults(run=_export)
