"""``segzoo predict``: trained runs on new images, as ``nnUNetv2_predict -i IN -o OUT`` does.

Input: a folder of NIfTI images in any orientation and spacing, one file per channel named
``<case>_<XXXX>.nii.gz`` (nnU-Net's naming), or, for a one-channel model, any ``<case>.nii.gz``. Each case
is preprocessed exactly as the training cases were (:func:`segzoo.data.preprocess.preprocess_case` with the
run's target spacing), predicted with the sliding window, optionally with test-time mirroring (``tta``: every
combination of the flips the run was trained with, :mod:`segzoo.mirroring`; a run trained without flips gets
none), averaged over the runs given (seeds, folds: an ensemble of probabilities) and mapped back to the input
grid.

A ``--run`` is a segzoo run folder (its ``best`` checkpoint), a checkpoint stem, or a folder made by
``segzoo nnunet-import``. Imported nnU-Net models take nnU-Net's own road from the images alone (its reader,
crop, normalisation, resampling and sliding window, mirroring over its recorded axes with ``tta``; several
imported folds ensembled as nnU-Net does), the same computation as ``segzoo infer --raw``; their label map is
nnU-Net's segmentation. Where a ``dataset.json`` lies beside the images (their folder, or the one above) and
names the channels, they must be the model's, in its order.

Output per case: ``<case>.nii.gz``, a label map painted region by region in nnU-Net's order (each region
gets a label value only it holds, later regions over earlier ones), and with ``probabilities``
``<case>_prob.nii.gz`` [X, Y, Z, R]. Inputs whose channel count does not fit the runs are refused, naming
the file, and so are images whose spacing lies far outside the training cases' (the dataset fingerprint the
runs record; ``any_spacing`` overrides); nothing is written unless every case succeeds.

Postprocessing: a run folder may hold ``postprocessing.json`` beside its checkpoint (``segzoo postprocessing``,
chosen on the run's validation cases; see :mod:`segzoo.postprocess`). A region keeps only its largest connected
component when more than half of the runs given chose it; a run without the file counts as not choosing it.
The rule is applied to each region's mask (ensembled probability > 0.5, in the input's grid) before painting;
the probability maps stay as predicted.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from segzoo.checkpoint import FOLDER_STEM, load_checkpoint, paths
from segzoo.data.dataset import channel_names, channel_order_problem
from segzoo.data.nifti import ras_spacing, save_nifti
from segzoo.data.preprocess import preprocess_case, to_original_grid
from segzoo.data.preprocessed import Preprocessed, write_plan
from segzoo.errors import SegzooError
from segzoo.infer import load_model, predict_probabilities
from segzoo.interop.nnunet_export import region_labels
from segzoo.interop.nnunet_inference import predict_case
from segzoo.io import output_dir
from segzoo.mirroring import describe, flip_combinations, model_axes
from segzoo.models.registry import IMPORTED
from segzoo.postprocess import apply_postprocessing, majority_postprocessing, run_postprocessing

SPACING_SLACK = 2.0  # how far beyond the training spacings an input may lie (a factor, either way)
CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii(\.gz)?$")


def find_cases(folder: Path, channels: int) -> dict[str, list[Path]]:
    """``{case: [channel files in order]}`` for the images in ``folder``."""
    files = sorted(p for p in Path(folder).iterdir() if p.name.endswith((".nii.gz", ".nii")))
    if not files:
        raise SegzooError(f"{folder}: no NIfTI images (.nii.gz or .nii)")
    named = {f: CHANNEL_FILE.match(f.name) for f in files}
    if all(named.values()):
        cases: dict[str, dict[int, Path]] = {}
        for f, m in named.items():
            cases.setdefault(m["case"], {})[int(m["channel"])] = f
        for case, found in cases.items():
            if sorted(found) != list(range(channels)):
                raise SegzooError(f"{folder / case}_*: channels {sorted(found)} found; the runs expect "
                                  f"{list(range(channels))} ({channels} file(s) per case, _0000 to "
                                  f"_{channels - 1:04d})")
        return {case: [found[c] for c in range(channels)] for case, found in sorted(cases.items())}
    if channels != 1:
        first = next(f for f, m in named.items() if not m)
        raise SegzooError(f"{first}: not named <case>_<XXXX>.nii.gz; the runs take {channels} channels, one file each")
    return {f.name.removesuffix(".gz").removesuffix(".nii"): [f] for f in files}


def check_spacing(cases: dict[str, list[Path]], spacing_range: list[list[float]] | None) -> None:
    """Refuse images whose spacing lies outside the training cases' range by more than ``SPACING_SLACK``:
    a model trained at 0.8 mm given a 5 mm image (or the reverse) is being shown another kind of data."""
    if spacing_range is None:
        return
    low, high = (np.asarray(r) for r in spacing_range)
    for files in cases.values():
        spacing = ras_spacing(nib.load(str(files[0])).affine)  # header only
        outside = (spacing < low / SPACING_SLACK) | (spacing > high * SPACING_SLACK)
        if outside.any():
            axis = int(np.argmax(outside))
            raise SegzooError(f"{files[0]}: spacing {spacing[axis]:.3g} mm along {'RAS'[axis]} is outside the "
                              f"training cases' {low[axis]:.3g}-{high[axis]:.3g} mm (x{SPACING_SLACK:g} either way): "
                              "not the data these runs were trained on; pass --any-spacing to predict it anyway")


def resolve_run(path: str | Path) -> Path:
    """The checkpoint stem a ``--run`` names: a segzoo run folder's ``best``, an import folder's ``model``
    (``segzoo nnunet-import``), or a checkpoint stem or file given directly."""
    path = Path(path)
    if path.is_dir():
        for stem in (path / "best", path / FOLDER_STEM):
            if paths(stem)[0].is_file():
                return stem
        if (path / "plans.json").is_file() and any(path.glob("fold_*")):
            raise SegzooError(f"{path}: an nnU-Net model folder; import it first (segzoo nnunet-import {path} --fold F "
                              "--out DIR, once per fold) and pass the import folder(s) to --run")
        raise SegzooError(f"{path}: neither a segzoo run folder (best.safetensors, from segzoo train) nor an imported "
                          f"nnU-Net model (model.safetensors, from segzoo nnunet-import)")
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    if not paths(stem)[0].is_file():
        raise SegzooError(f"{path}: no such run folder or checkpoint")
    return stem


def _sidecars(runs: list[str | Path]) -> tuple[list[Path], list[dict]]:
    """The runs' checkpoint stems and sidecars; every run must be of one kind (trained here, or imported) and
    take the same channels and give the same outputs, as an ensemble averages like with like."""
    stems = [resolve_run(r) for r in runs]
    sidecars = [load_checkpoint(stem)[1] for stem in stems]
    first = sidecars[0]
    for stem, sidecar in zip(stems[1:], sidecars[1:]):
        if (sidecar["model"] == IMPORTED) != (first["model"] == IMPORTED):
            raise SegzooError(f"{stem}: an ensemble of an imported nnU-Net model and a segzoo run ({stems[0]}); they "
                              "preprocess images differently: predict each on its own")
        if sidecar["channels"] != first["channels"] or sidecar.get("regions") != first.get("regions") or \
                sidecar.get("classes") != first.get("classes"):
            raise SegzooError(f"{stem}: channels/regions differ from {stems[0]}'s; an ensemble needs one dataset")
        if first["model"] == IMPORTED and (sidecar["nnunet"] != first["nnunet"] or
                                           sidecar["patch_size"] != first["patch_size"]):
            raise SegzooError(f"{stem}: its nnU-Net plans (spacing, normalisation, patch, mirror axes) differ from "
                              f"{stems[0]}'s; nnU-Net ensembles the folds of one trained model")
    return stems, sidecars


def _preprocessing(stem: Path, sidecar: dict, data: Preprocessed | None) -> dict:
    """The target spacing, label values and normalisation a segzoo run was trained with."""
    preprocessing = sidecar.get("preprocessing")
    if preprocessing is None:
        if data is None:
            raise SegzooError(f"{stem}: records no preprocessing (trained before segzoo predict); pass --data "
                              "with the preprocessed folder it was trained on")
        preprocessing = {"target_spacing": data.spacing, "label_values": data.label_values,
                         "normalization": data.normalization, "spacing_range": data.spacing_range}
    return preprocessing


def check_channel_names(images: Path, channels: list[str], source: str) -> None:
    """Where a dataset.json lies beside the images (in their folder, or the folder above, as nnU-Net's imagesTs),
    the channels it names must be the model's, in the model's order."""
    for candidate in (Path(images) / "dataset.json", Path(images).resolve().parent / "dataset.json"):
        if candidate.is_file():
            problem = channel_order_problem(channels, source, channel_names(candidate), str(candidate))
            if problem:
                raise SegzooError(problem)
            return


def _mirror_flips(stems: list[Path], sidecars: list[dict], tta: bool, nnunet: bool = False) -> list[list[int]]:
    """Per run, the axes test-time mirroring uses (none without ``tta``); says which on the console."""
    axes = []
    for stem, sidecar in zip(stems, sidecars):
        found, notice = model_axes(sidecar)
        if notice:
            print(f"{stem}: {notice}", file=sys.stderr)
        axes.append(found if tta else [])
        if tta:
            print(describe(str(stem), found, nnunet=nnunet))
    return axes


@torch.no_grad()
def predict_folder(images: Path, out: Path, runs: list[str | Path], *, data: Preprocessed | None = None,
                   device: str = "cpu", tta: bool = False, probabilities: bool = False,
                   sw_batch_size: int = 4, overlap: float = 0.5, any_spacing: bool = False) -> list[str]:
    stems, sidecars = _sidecars(runs)
    sidecar = sidecars[0]
    dev = torch.device(device)
    cases = find_cases(images, len(sidecar["channels"]))
    check_channel_names(images, sidecar["channels"], str(stems[0]))
    if sidecar["model"] == IMPORTED:
        if data is not None:
            raise SegzooError(f"--data {data.folder}: {stems[0]} is an imported nnU-Net model; it preprocesses new images "
                              "as nnU-Net does, from its own plans, and takes no segzoo preprocessed folder")
        (axes, *_) = _mirror_flips(stems[:1], sidecars[:1], tta, nnunet=True)  # nnU-Net mirrors folds alike
        return _predict_imported(cases, out, stems, sidecar, dev, bool(axes), probabilities)
    preprocessing = _preprocessing(stems[0], sidecar, data)
    models = [load_model(stem, dev)[0] for stem in stems]
    regions = sidecar["regions"]
    _, paint = region_labels(regions) if len(regions) > 1 else (None, [1])
    decision = majority_postprocessing([run_postprocessing(stem, list(regions)) for stem in stems], list(regions))
    if not any_spacing:
        check_spacing(cases, preprocessing.get("spacing_range"))
    flips = [flip_combinations(axes) for axes in _mirror_flips(stems, sidecars, tta)]
    with output_dir(out) as tmp, tempfile.TemporaryDirectory() as work:
        work = Path(work)
        write_plan(work, {"dataset": "predict", "channels": sidecar["channels"], "regions": regions,
                          "label_values": preprocessing["label_values"],
                          "target_spacing": preprocessing["target_spacing"], "cases": []})
        pre = Preprocessed(work)
        for case, files in cases.items():
            props = preprocess_case(tuple(files), None, preprocessing["target_spacing"],
                                    n_channels=len(sidecar["channels"]), label_values=preprocessing["label_values"],
                                    out_dir=work, case_id=case, normalization=preprocessing.get("normalization"))
            image = pre.image(case)
            prob = np.zeros((len(regions), *image.shape[1:]), dtype=np.float32)
            for model, model_flips in zip(models, flips):
                mirrored = np.zeros_like(prob)
                for combo in model_flips:
                    axes = tuple(a + 1 for a in combo)  # spatial axes of the [C, X, Y, Z] image
                    flipped = np.flip(image, axes) if axes else image
                    p = predict_probabilities(model, flipped, sidecar["patch_size"], dev, sw_batch_size, overlap)
                    mirrored += np.flip(p, axes) if axes else p
                prob += mirrored / len(model_flips)
            prob = (prob / len(models)).astype(np.float32)
            prob = np.clip(to_original_grid(prob, props, mode="bilinear"), 0.0, 1.0).astype(np.float32)
            label = np.zeros(prob.shape[1:], dtype=np.uint8)
            for r, (region, value) in enumerate(zip(regions, paint)):
                label[apply_postprocessing(prob[r] > 0.5, region, decision)] = value
            affine = np.asarray(props["original"]["affine"])  # the input's, as preprocess_case read it
            save_nifti(label, affine, tmp / f"{case}.nii.gz")
            if probabilities:
                save_nifti(np.moveaxis(prob, 0, -1), affine, tmp / f"{case}_prob.nii.gz")
    return list(cases)


def _predict_imported(cases: dict[str, list[Path]], out: Path, stems: list[Path], sidecar: dict, device: torch.device,
                      mirror: bool, probabilities: bool) -> list[str]:
    """An imported nnU-Net model (its folds ensembled) on new images, through nnU-Net's own preprocessing and
    sliding window (:func:`segzoo.interop.nnunet_inference.predict_case`, as ``segzoo infer --raw``): the label
    map is nnU-Net's segmentation; the probabilities are the model's heads."""
    models = [load_model(stem, device)[0] for stem in stems]
    with output_dir(out) as tmp:
        for case, files in cases.items():
            prob, labels = predict_case(models, sidecar, files, device, mirror=mirror)
            affine = nib.load(str(files[0])).affine  # the header only: predict_case read the voxels
            save_nifti(labels, affine, tmp / f"{case}.nii.gz")
            if probabilities:
                save_nifti(np.moveaxis(np.clip(prob, 0.0, 1.0).astype(np.float32), 0, -1), affine,
                           tmp / f"{case}_prob.nii.gz")
    return list(cases)
