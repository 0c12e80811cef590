"""``segzoo predict``: trained runs on new images, as ``nnUNetv2_predict -i IN -o OUT`` does.

Input: a folder of NIfTI images in any orientation and spacing (:mod:`segzoo.inference.images`). Each case is
preprocessed exactly as the training cases were (:func:`segzoo.data.preprocess.preprocess_case` with the run's
target spacing), predicted with the sliding window, with or without test-time mirroring (every combination of the
flips the run was trained with, :mod:`segzoo.inference.mirroring`; a run trained without flips gets none),
averaged over the runs given (seeds, folds: an ensemble of probabilities) and mapped back to the input grid.

A ``--run`` is a segzoo run folder (its ``best`` checkpoint), a checkpoint stem, or a folder made by
``segzoo nnunet-import`` (one fold). Imported nnU-Net models take nnU-Net's own road from the images alone (its
reader, crop, normalisation, resampling and sliding window, mirroring over its recorded axes; several imported
folds ensembled as nnU-Net does), the same computation as ``segzoo infer --raw``; their label map is nnU-Net's
segmentation. Mirroring follows each kind's default unless asked (``tta``): an import is mirrored, as
``nnUNetv2_predict`` mirrors; a segzoo run is not. Every model (each fold of an ensemble) says on the console which
flips it used and why. Options an import has no use for (``data``, ``sw_batch_size``, ``any_spacing``) are
refused, not ignored. Where a ``dataset.json`` lies beside the images (their folder, or the one above) and names
the channels, they must be the model's, in its order.

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
from segzoo.data.preprocessed import PLAN, Preprocessed, write_plan
from segzoo.errors import SegzooError
from segzoo.inference.images import check_channel_names, check_spacing, find_cases
from segzoo.inference.mirroring import flip_combinations, mirroring, model_axes
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


def _preprocessing(trained: TrainedModel, data: str | Path | None) -> dict:
    """The target spacing, label values and normalisation a segzoo run was trained with: recorded in the run, or
    (a run trained before runs recorded them) read from ``data``, the preprocessed folder it was trained on."""
    if trained.preprocessing is not None:
        if data is not None:
            raise SegzooError(f"--data {data}: {trained.stem} records its own preprocessing (target spacing, label "
                              "values, normalisation); --data is for runs trained before runs recorded it: drop it")
        return trained.preprocessing
    if data is None:
        raise SegzooError(f"{trained.stem}: records no preprocessing (trained before segzoo predict); pass --data "
                          "with the preprocessed folder it was trained on")
    if not (Path(data) / PLAN).is_file() and (Path(data) / "dataset.json").is_file():
        raise SegzooError(f"--data {data}: a raw dataset (dataset.json, no {PLAN}); {trained.stem} needs the folder "
                          "`segzoo preprocess` made of the dataset it was trained on (results/preprocessed/<dataset> "
                          "in the pipeline)")
    pre = Preprocessed(data)
    return {"target_spacing": pre.spacing, "label_values": pre.label_values,
            "normalization": pre.normalization, "spacing_range": pre.spacing_range}


def _refuse_for_imports(trained: TrainedModel, data: str | Path | None, sw_batch_size: int | None,
                        any_spacing: bool) -> None:
    """One line per option given that an imported nnU-Net model has no use for (rather than ignoring it)."""
    stem = f"{trained.stem} is an imported nnU-Net model"
    problems = []
    if data is not None:
        problems.append(f"--data {data}: {stem}; it preprocesses new images as nnU-Net does, from its own plans, "
                        "and takes no segzoo preprocessed folder: drop --data")
    if sw_batch_size is not None:
        problems.append(f"--sw-batch-size {sw_batch_size}: {stem}, predicted tile by tile as nnU-Net does; the "
                        "option is for segzoo runs: drop it")
    if any_spacing:
        problems.append(f"--any-spacing: {stem}; nnU-Net resamples images of any spacing and refuses none, so "
                        "there is nothing to override: drop it")
    if problems:
        raise SegzooError(problems)


def _mirror_axes(models: list[TrainedModel], tta: bool | None) -> list[list[int]]:
    """Per model (every run, every imported fold), the axes test-time mirroring uses (``[]``: none), each said on
    the console with the reason (:func:`segzoo.inference.mirroring.mirroring`)."""
    axes = []
    for trained in models:
        _, notice = model_axes(trained)
        if notice:
            print(f"{trained.stem}: {notice}", file=sys.stderr)
        used, line = mirroring(trained, tta)
        print(line)
        axes.append(used)
    return axes


@torch.no_grad()
def predict_folder(images: Path, out: Path, runs: list[str | Path], *, data: str | Path | None = None,
                   device: str = "cpu", tta: bool | None = None, probabilities: bool = False,
                   sw_batch_size: int | None = None, overlap: float = OVERLAP,
                   any_spacing: bool = False) -> list[str]:
    """Predict every case in ``images`` into ``out`` (created; nothing written unless every case succeeds).

    ``tta``: True mirrors, False does not, None takes the model's default (imported nnU-Net models mirrored, segzoo
    runs not). ``data``, ``sw_batch_size`` (None: :data:`SW_BATCH_SIZE`) and ``any_spacing`` serve segzoo runs;
    an imported model refuses them."""
    trained = _trained(runs)
    first = trained[0]
    if first.imported:
        _refuse_for_imports(first, data, sw_batch_size, any_spacing)
    dev = torch.device(device)
    cases = find_cases(images, len(first.channels))
    check_channel_names(images, first.channels, str(first.stem))
    if first.imported:
        (axes, *_) = _mirror_axes(trained, tta)  # one line per fold; the folds share their plans' mirror axes
        return _predict_imported(cases, out, trained, dev, bool(axes), probabilities)
    preprocessing = _preprocessing(first, data)
    regions = first.regions
    members = [Member(load_model(t.stem, dev)[0], t.patch_size, flip_combinations(axes))
               for t, axes in zip(trained, _mirror_axes(trained, tta))]
    decision = majority_postprocessing([run_postprocessing(t.stem, list(regions)) for t in trained], list(regions))
    if not any_spacing:
        check_spacing(cases, preprocessing.get("spacing_range"))
    sw_batch_size = SW_BATCH_SIZE if sw_batch_size is None else sw_batch_size
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
