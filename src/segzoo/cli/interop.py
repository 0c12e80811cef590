"""The `segzoo` verbs that meet other tools: nnU-Net model folders in and out, ONNX."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segzoo.cli.common import preprocessed


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
    p = verbs.add_parser("export", help="write a trained checkpoint as an ONNX model (deployment, Netron)")
    p.add_argument("checkpoint", type=Path, help="a run's best/final checkpoint (stem or .safetensors) or an "
                   "imported model folder")
    p.add_argument("--onnx", type=Path, required=True, help="ONNX file to write, e.g. model.onnx")
    p.add_argument("--force", action="store_true", help="overwrite an existing ONNX file")
    p.add_argument("--verify-patch", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="patch ONNX Runtime is compared with PyTorch on (default: the phantom's shape, rounded up "
                        "to the model's divisor)")
    p.set_defaults(run=_export)
