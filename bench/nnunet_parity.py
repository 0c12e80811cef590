"""nnU-Net interop: segzoo's predictions against nnU-Net's own, for an imported and an exported model.

    .venv/bin/python bench/nnunet_parity.py --work /tmp/parity        # needs the segzoo[nnunet] extra

Builds what the tests build, larger: a phantom (rotated, spacing jittered, so nnU-Net resamples with its
anisotropic-axis rule), a region-based nnU-Net model trained on it for a few steps and saved as nnU-Net
saves it, imported with ``segzoo nnunet-import``; and a zoo network (PlainConvUNet) on an aligned phantom,
exported with ``segzoo nnunet-export``. Each is run by ``nnUNetv2_predict_from_modelfolder`` and by
``segzoo infer``; the table gives the largest probability difference, the mask voxels that differ and
both wall times. For the imported model it also gives each side's largest distance from an fp32 reference (the
same computation with every sum in float32 instead of float16, as both segzoo and nnU-Net accumulate tiles), and
how many differing mask voxels are ties (a head's reference probability within the float16 tolerance of 0.5,
tests/nnunet_model.parity_tolerance), and segzoo's largest distance from it away from the image's outermost
two voxel layers (where float16 keeps fewest bits of the tile weights). Two
more rows: two imported folds ensembled (``segzoo predict`` against ``nnUNetv2_predict -f 0 1``), and
``segzoo predict`` on the images alone against ``segzoo infer --raw`` (voxels that differ). Prints Markdown for
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from nnunet_model import parity_tolerance, train_zoo_network, write_model_folder  # noqa: E402
from segzoo.checkpoint import module_tensors, save_checkpoint  # noqa: E402
from segzoo.data.phantom import PhantomSpec, write_phantom_dataset  # noqa: E402
from segzoo.data.preprocess import preprocess_dataset  # noqa: E402

BIN = Path(sys.executable).parent


def timed(cmd: list, env=None) -> float:
    began = time.perf_counter()
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"{cmd[0]} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return time.perf_counter() - began


def nnunet(model: Path, images: list[Path], out: Path, work: Path, tta: bool, folds: tuple = ("0",)) -> float:
    inputs = out.with_name(out.name + "_in")
    inputs.mkdir(parents=True)
    for image in images:
        shutil.copy(image, inputs / image.name)
    env = {**os.environ, **{k: str(work) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
    return timed([BIN / "nnUNetv2_predict_from_modelfolder", "-i", inputs, "-o", out, "-m", model, "-f", *folds,
                  "-device", "cpu", "-npp", "1", "-nps", "1", "--save_probabilities",
                  *([] if tta else ["--disable_tta"])], env)


def reference(stems: list[Path], images: list[Path], mirror: bool) -> np.ndarray:
    """The imported model's (or folds') probabilities [K, X, Y, Z] with the tile sums in float32."""
    import torch

    from segzoo.inference.trained import load_model
    from segzoo.inference.nnunet import predict_case

    loaded = [load_model(stem, torch.device("cpu")) for stem in stems]
    return predict_case([m for m, _ in loaded], loaded[0][1], images, torch.device("cpu"), mirror=mirror,
                        accumulate=torch.float32)[0]


def compare(ours: Path, theirs: Path, cases: list[str], regions: dict, probabilities: bool,
            references: dict | None = None, label_map: bool = False) -> tuple:
    """Largest |Δ probability|, mask voxels differing, voxels; with ``references`` ({case: fp32 probabilities}) also
    segzoo's and nnU-Net's largest distance from them and how many differing voxels are ties. ``label_map``: ours
    is a `segzoo predict` folder (one label map per case) rather than `segzoo infer`'s masks."""
    worst, differ, voxels, ours_ref, theirs_ref, ties, inner = 0.0, 0, 0, 0.0, 0.0, 0, 0.0
    for case in cases:
        label = np.asarray(nib.load(theirs / f"{case}.nii.gz").dataobj)
        prob = None
        if probabilities:
            nn_prob = np.load(theirs / f"{case}.npz", allow_pickle=False)["probabilities"].transpose(0, 3, 2, 1)
            prob = np.moveaxis(np.asarray(nib.load(ours / f"{case}_prob.nii.gz").dataobj), -1, 0)
            worst = max(worst, float(np.abs(prob - nn_prob).max()))
        if references is not None:
            ref = references[case]
            ours_ref = max(ours_ref, float(np.abs(prob - ref).max()))
            inner = max(inner, float(np.abs(prob - ref)[:, 2:-2, 2:-2, 2:-2].max()))
            theirs_ref = max(theirs_ref, float(np.abs(nn_prob - ref).max()))
        case_differ = np.zeros(label.shape, dtype=bool)
        own = np.asarray(nib.load(ours / f"{case}.nii.gz").dataobj) if label_map else None
        for name, values in regions.items():
            mask = (np.isin(own, values) if label_map else
                    np.asarray(nib.load(ours / f"{case}_{name}.nii.gz").dataobj) > 0)
            wrong = mask != np.isin(label, values)
            differ += int(wrong.sum())
            voxels += mask.size
            case_differ |= wrong
        if references is not None:
            tie = np.any(np.abs(references[case] - 0.5) <= parity_tolerance(prob, references[case]), axis=0)
            ties += int((case_differ & tie).sum())
    return worst, differ, voxels, f"{ours_ref:.1e} / {theirs_ref:.1e} (segzoo 2+ voxels inside: {inner:.0e})", ties


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="new folder for everything")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60, help="training steps of the imported model(s)")
    args = parser.parse_args()
    if not (BIN / "nnUNetv2_predict_from_modelfolder").is_file():
        sys.exit("nnunetv2 is not installed: .venv/bin/python -m pip install -c constraints.txt -e '.[nnunet]'")
    work = args.work
    work.mkdir(parents=True)
    segzoo = [sys.executable, "-m", "segzoo"]
    rows = []

    raw = write_phantom_dataset(work / "Dataset905_Lab", cases=args.cases, seed=11,
                                spec=PhantomSpec(shape=(48, 48, 20), spacing=(0.8, 0.8, 2.5)))
    model = write_model_folder(raw, work / "lab_model", steps=args.steps)
    shutil.copytree(write_model_folder(raw, work / "lab_model_seed1", steps=args.steps, seed=1) / "fold_0",
                    model / "fold_1")
    pre = preprocess_dataset(raw, work / "pre_lab")
    test = pre.case_ids(labelled=True)[-3:]
    (work / "splits_lab.json").write_text(json.dumps({"train": [], "val": [], "test": test}))
    for fold in ("0", "1"):
        timed([*segzoo, "nnunet-import", model, "--fold", fold, "--out", work / f"imported{fold}"])
    images = [raw / "imagesTr" / f"{c}_0000.nii.gz" for c in test]
    for tta in (True, False):
        ours = work / f"ours_import_{tta}"
        seconds = timed([*segzoo, "infer", "--checkpoint", work / "imported0", "--data", work / "pre_lab", "--splits",
                         work / "splits_lab.json", "--raw", raw, "--out", ours, "--device", "cpu",
                         *([] if tta else ["--no-mirror"])])
        nn_seconds = nnunet(model, images, work / f"nn_import_{tta}", work, tta)
        refs = {c: reference([work / "imported0" / "model"], [i], tta) for c, i in zip(test, images)}
        worst, differ, voxels, from_fp32, ties = compare(ours, work / f"nn_import_{tta}", test, pre.regions, True, refs)
        rows.append(("imported region model", "on" if tta else "off", len(test), f"{worst:.1e}", from_fp32,
                     f"{differ} / {voxels:,} ({ties} ties)", f"{seconds:.1f}",
                     f"{nn_seconds:.1f}"))
        if tta:
            predicted = work / "predict_import"
            new_images = work / "new_images"
            new_images.mkdir()
            for image in images:
                shutil.copy(image, new_images / image.name)
            seconds = timed([*segzoo, "predict", "-i", new_images, "-o", predicted, "--run", work / "imported0",
                             "--tta", "--probabilities", "--device", "cpu"])
            differ = sum(int((np.isin(np.asarray(nib.load(predicted / f"{c}.nii.gz").dataobj), v) !=
                            (np.asarray(nib.load(ours / f"{c}_{n}.nii.gz").dataobj) > 0)).sum())
                       for c in test for n, v in pre.regions.items())
            rows.append(("segzoo predict vs segzoo infer --raw", "on", len(test), "-", "-",
                         f"{differ} / {sum(len(pre.regions) * int(np.prod(nib.load(i).shape)) for i in images):,}",
                         f"{seconds:.1f}", "-"))
    ensemble = work / "ours_ensemble"
    seconds = timed([*segzoo, "predict", "-i", work / "new_images", "-o", ensemble, "--run", work / "imported0",
                     work / "imported1", "--tta", "--probabilities", "--device", "cpu"])
    nn_seconds = nnunet(model, images, work / "nn_ensemble", work, True, folds=("0", "1"))
    refs = {c: reference([work / "imported0" / "model", work / "imported1" / "model"], [i], True)
            for c, i in zip(test, images)}
    worst, differ, voxels, from_fp32, ties = compare(ensemble, work / "nn_ensemble", test, pre.regions, True, refs,
                                                     label_map=True)
    rows.append(("2 imported folds, ensembled", "on", len(test), f"{worst:.1e}", from_fp32,
                 f"{differ} / {voxels:,} ({ties} ties)", f"{seconds:.1f}", f"{nn_seconds:.1f}"))

    aligned = write_phantom_dataset(work / "Dataset906_Aligned", cases=args.cases, seed=12,
                                    spec=PhantomSpec(shape=(48, 48, 16), spacing=(1.0, 1.0, 2.0), spacing_jitter=0.0,
                                                     max_rotation_deg=0.0))
    pre = preprocess_dataset(aligned, work / "pre_aligned")
    net = train_zoo_network(pre, steps=60)
    ids = pre.case_ids(labelled=True)
    save_checkpoint(work / "net", module_tensors(net), {"model": "plain_conv_unet", "model_options":
                    {"features": [4, 8, 16]}, "channels": pre.channels, "regions": pre.regions,
                    "patch_size": [32, 32, 16]})
    (work / "splits_aligned.json").write_text(json.dumps({"train": [], "val": [], "test": ids}))
    seconds = timed([*segzoo, "infer", "--checkpoint", work / "net", "--data", work / "pre_aligned", "--splits",
                     work / "splits_aligned.json", "--out", work / "ours_export", "--device", "cpu"])
    timed([*segzoo, "nnunet-export", work / "net", "--data", work / "pre_aligned", "--out", work / "exported"])
    nn_seconds = nnunet(work / "exported", [aligned / "imagesTr" / f"{c}_0000.nii.gz" for c in ids],
                        work / "nn_export", work, tta=False)
    _, differ, voxels, *_ = compare(work / "ours_export", work / "nn_export", ids, pre.regions, False)
    rows.append(("exported zoo network", "off", len(ids), "n/a (MONAI window)", "-", f"{differ} / {voxels:,}",
                 f"{seconds:.1f}", f"{nn_seconds:.1f}"))

    print(f"## nnU-Net parity — {date.today()}, {platform.node()} ({os.cpu_count()} cores, CPU)\n")
    print("| model | mirroring | cases | max abs Δ probability | from fp32: segzoo / nnU-Net | mask voxels differing "
          "| segzoo s | nnU-Net s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
