"""``segzoo predict``: trained runs on new images, as ``nnUNetv2_predict -i IN -o OUT`` does.

Input: a folder of NIfTI images in any orientation and spacing (:mod:`segzoo.inference.images`). Each case is
preprocessed exactly as the training cases were (:func:`segzoo.data.preprocess.preprocess_case` with the run's
target spacing), predicted with the sliding window, optionally with test-time mirroring (``tta``: every
combination of the flips the run was trained with, :mod:`segzoo.inference.mirroring`; a run trained without
flips gets none), averaged over the runs given (seeds, folds: an ensemble of probabilities) and mapped back to
the input grid.

A ``--run`` is a segzoo run folder (its ``best`` checkpoint), a checkpoint stem, or a folder made by
``segzoo nnunet-import``. Imported nnU-Net models take nnU-Net's own road from the images alone (its reader,
crop, normalisation, resampling and sliding window, mirroring over its recorded axes with ``tta``; several
imported folds ensembled as nnU-Net does), the same computation as ``segzoo infer --raw``; their label map is
nnU-Net's segmentation. Where a ``dataset.json`` lies beside the images (their folder, or the one above) and
names the channels, they must be the model's, in its order.

Output per case (:mod:`segzoo.inference.predictions`): ``<case>.nii.gz``, a label map painted region by region
in nnU-Net's order, and with ``probabilities`` ``<case>_prob.nii.gz`` [X, Y, Z, R]. Inputs whose channel count
does not fit the runs are refused, naming the file, and so are images whose spacing lies far outside the
training cases' (the runs record it; ``any_spacing`` overrides); nothing is written unless every case succeeds.

Postprocessing: a run folder may hold ``postprocessing.json`` beside its checkpoint (chosen on the run's
validation cases; :mod:`segzoo.inference.postprocess`). A region keeps only its largest connected component
when more than half of the runs given chose it; a run without the file counts as not choosing it. The rule is
applied to each region's mask (ensembled probability > 0.5, in the input's grid) before painting; the
probability maps stay as predicted.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from segzoo.data.preprocess import preprocess_case, to_original_grid
from segzoo.data.preprocessed import Preprocessed, write_plan
from segzoo.errors import SegzooError
from segzoo.inference.images import check_channel_names, check_spacing, find_cases
from segzoo.inference.mirroring import describe, flip_combinations, model_axes
from segzoo.inference.nnunet import predict_case
from segzoo.inference.postprocess import apply_postprocessing, majority_postprocessing, run_postprocessing
from segzoo.inference.predictions import THRESHOLD, paint, write_label_map, write_probabilities
from segzoo.inference.trained import TrainedModel, load_model, resolve_run
from segzoo.inference.window import OVERLAP, SW_BATCH_SIZE, Member, ensemble_probabilities
from segzoo.io import output_dir


def _trained(runs: list[str | Path]) -> list[TrainedModel]:
    """The runs' checkpoints, typed; every run must be of one kind (trained here, or imported) and take the same
    channels and give the same outputs, as an ensemble averages like with like."""
    models = [TrainedModel.read(resolve_run(r)) for r in runs]
    first = models[0]
    for other in models[1:]:
        if other.imported != first.imported:
            raise SegzooError(f"{other.stem}: an ensemble of an imported nnU-Net model and a segzoo run "
                              f"({first.stem}); they preprocess images differently: predict each on its own")
        if other.channels != first.channels or other.heads != first.heads or other.output != first.output:
            raise SegzooError(f"{other.stem}: channels/regions differ from {first.stem}'s; an ensemble needs one "
                              "dataset")
        if first.imported and (other.nnunet != first.nnunet or other.patch_size != first.patch_size):
            raise SegzooError(f"{other.stem}: its nnU-Net plans (spacing, normalisation, patch, mirror axes) differ "
                              f"from {first.stem}'s; nnU-Net ensembles the folds of one trained model")
    return models


def _preprocessing(trained: TrainedModel, data: Preprocessed | None) -> dict:
    """The target spacing, label values and normalisation a segzoo run was trained with."""
    if trained.preprocessing is not None:
        return trained.preprocessing
    if data is None:
        raise SegzooError(f"{trained.stem}: records no preprocessing (trained before segzoo predict); pass --data "
                          "with the preprocessed folder it was trained on")
    return {"target_spacing": data.spacing, "label_values": data.label_values,
            "normalization": data.normalization, "spacing_range": data.spacing_range}


def _mirror_axes(models: list[TrainedModel], tta: bool) -> list[list[int]]:
    """Per run, the axes test-time mirroring uses (none without ``tta``); says which on the console."""
    axes = []
    for trained in models:
        found, notice = model_axes(trained)
        if notice:
            print(f"{trained.stem}: {notice}", file=sys.stderr)
        axes.append(found if tta else [])
        if tta:
            print(describe(str(trained.stem), found, nnunet=trained.imported))
    return axes


@torch.no_grad()
def predict_folder(images: Path, out: Path, runs: list[str | Path], *, data: Preprocessed | None = None,
                   device: str = "cpu", tta: bool = False, probabilities: bool = False,
                   sw_batch_size: int = SW_BATCH_SIZE, overlap: float = OVERLAP,
                   any_spacing: bool = False) -> list[str]:
    trained = _trained(runs)
    first = trained[0]
    dev = torch.device(device)
    cases = find_cases(images, len(first.channels))
    check_channel_names(images, first.channels, str(first.stem))
    if first.imported:
        if data is not None:
            raise SegzooError(f"--data {data.folder}: {first.stem} is an imported nnU-Net model; it preprocesses new "
                              "images as nnU-Net does, from its own plans, and takes no segzoo preprocessed folder")
        (axes, *_) = _mirror_axes(trained[:1], tta)  # nnU-Net mirrors every fold as the first one allows
        return _predict_imported(cases, out, trained, dev, bool(axes), probabilities)
    preprocessing = _preprocessing(first, data)
    regions = first.regions
    members = [Member(load_model(t.stem, dev)[0], t.patch_size, flip_combinations(axes))
               for t, axes in zip(trained, _mirror_axes(trained, tta))]
    decision = majority_postprocessing([run_postprocessing(t.stem, list(regions)) for t in trained], list(regions))
    if not any_spacing:
        check_spacing(cases, preprocessing.get("spacing_range"))
    with output_dir(out) as tmp, tempfile.TemporaryDirectory() as work:
        work = Path(work)
        write_plan(work, {"dataset": "predict", "channels": first.channels, "regions": regions,
                          "label_values": preprocessing["label_values"],
                          "target_spacing": preprocessing["target_spacing"], "cases": []})
        pre = Preprocessed(work)
        for case, files in cases.items():
            props = preprocess_case(tuple(files), None, preprocessing["target_spacing"],
                                    n_channels=len(first.channels), label_values=preprocessing["label_values"],
                                    out_dir=work, case_id=case, normalization=preprocessing.get("normalization"))
            prob = ensemble_probabilities(members, pre.image(case), dev, sw_batch_size, overlap)
            prob = np.clip(to_original_grid(prob, props, mode="bilinear"), 0.0, 1.0).astype(np.float32)
            masks = [apply_postprocessing(prob[r] > THRESHOLD, region, decision) for r, region in enumerate(regions)]
            affine = np.asarray(props["original"]["affine"])  # the input's, as preprocess_case read it
            write_label_map(tmp, case, paint(masks, regions), affine)
            if probabilities:
                write_probabilities(tmp, case, prob, affine)
    return list(cases)


def _predict_imported(cases: dict[str, list[Path]], out: Path, trained: list[TrainedModel], device: torch.device,
                      mirror: bool, probabilities: bool) -> list[str]:
    """An imported nnU-Net model (its folds ensembled) on new images, through nnU-Net's own preprocessing and
    sliding window (:func:`segzoo.inference.nnunet.predict_case`, as ``segzoo infer --raw``): the label map is
    nnU-Net's segmentation; the probabilities are the model's heads."""
    models = [load_model(t.stem, device)[0] for t in trained]
    with output_dir(out) as tmp:
        for case, files in cases.items():
            prob, labels = predict_case(models, trained[0], files, device, mirror=mirror)
            affine = nib.load(str(files[0])).affine  # the header only: predict_case read the voxels
            write_label_map(tmp, case, labels, affine)
            if probabilities:
                write_probabilities(tmp, case, np.clip(prob, 0.0, 1.0).astype(np.float32), affine)
    return list(cases)
