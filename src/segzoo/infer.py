"""``segzoo infer`` and ``segzoo infer-oof``: a trained model predicts its dataset's test cases (or, with
cross-validation, each fold's run its own validation cases) into a predictions folder in the original grid
(:mod:`segzoo.inference.predictions`: probabilities and one mask per region).

The probabilities are computed on the preprocessed grid (:mod:`segzoo.inference.window`) and mapped back with
:func:`segzoo.data.preprocess.to_original_grid` (trilinear), then thresholded, so masks and probability maps agree
voxel for voxel. With the run's ``postprocessing.json`` (chosen on the validation cases;
:mod:`segzoo.inference.postprocess`), a region decided ``largest_component: true`` keeps only the largest
connected component of its mask; the probability maps stay as predicted.

A model imported from nnU-Net (``segzoo nnunet-import``) is run on the raw images with nnU-Net's own
preprocessing (:mod:`segzoo.inference.nnunet`), mirrored over the axes its checkpoint allows unless ``mirror``
is off; its masks are nnU-Net's segmentation mapped to the dataset's regions, and its probabilities the
matching heads (summed classes for a softmax model). A model trained on other channels than the dataset names,
or in another order, is refused with both lists.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from segzoo.data.dataset import channel_order_problem, read_dataset
from segzoo.data.preprocess import to_original_grid
from segzoo.data.preprocessed import Preprocessed
from segzoo.errors import SegzooError
from segzoo.inference.mirroring import describe, model_axes
from segzoo.inference.nnunet import predict_case, region_outputs
from segzoo.inference.postprocess import apply_postprocessing, majority_postprocessing, read_postprocessing
from segzoo.inference.predictions import THRESHOLD, write_masks, write_probabilities
from segzoo.inference.trained import load_model
from segzoo.inference.window import OVERLAP, SW_BATCH_SIZE, Member, ensemble_probabilities
from segzoo.io import output_dir, read_json


def infer_run(checkpoint: str | Path | list, pre: Preprocessed, splits: str | Path, out: str | Path, *,
              device: str = "cpu", sw_batch_size: int = SW_BATCH_SIZE, overlap: float = OVERLAP,
              raw: str | Path | None = None, mirror: bool = True,
              postprocessing: str | Path | list | None = None) -> list[str]:
    """Predict every test case of ``splits`` with the model in ``checkpoint``; write NIfTI files to ``out``.

    Several checkpoints (a model's cross-validation folds) are ensembled by averaging their probabilities.
    ``postprocessing`` (a trained run's ``postprocessing.json``, or one per checkpoint: a region keeps its
    largest component where most chose it) is applied to the masks. ``raw`` (the raw dataset) and ``mirror``
    (nnU-Net's test-time mirroring) serve imported nnU-Net models."""
    dev = torch.device(device)
    checkpoints = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    loaded = [load_model(c, dev) for c in checkpoints]
    model, trained = loaded[0]
    problem = channel_order_problem(trained.channels, str(checkpoints[0]), pre.channels,
                                    f"{raw or pre.folder} (dataset {pre.dataset})")
    if problem:
        raise SegzooError(problem)
    cases = read_json(splits)["test"]
    if trained.imported:
        if raw is None:
            raise SegzooError(f"{checkpoint}: an imported nnU-Net model predicts from the raw images; pass --raw")
        if postprocessing:
            raise SegzooError(f"{postprocessing}: segzoo's postprocessing is chosen for models trained here; "
                              f"{checkpoint} is an imported nnU-Net model")
        if len(loaded) > 1:
            raise SegzooError(f"{checkpoints}: an imported nnU-Net model predicts alone, not in an ensemble")
        print(describe(str(checkpoint), model_axes(trained)[0], nnunet=True, used=mirror,
                       why="nnU-Net's default; --no-mirror turns it off" if mirror else "--no-mirror"))
        _infer_imported(model, trained, pre, read_dataset(raw), cases, Path(out), dev, mirror, str(checkpoint))
        return cases
    regions = list(trained.regions)
    members = [Member(m, t.patch_size) for m, t in loaded]
    with output_dir(out) as tmp:
        decision = _decision(postprocessing, regions)
        for case in cases:
            prob = ensemble_probabilities(members, pre.image(case), dev, sw_batch_size, overlap)
            _write_case(tmp, case, prob, pre.properties(case), regions, decision)
    return cases


def infer_out_of_fold(runs: list[str | Path], pre: Preprocessed, splits: str | Path, out: str | Path, *,
                      device: str = "cpu", sw_batch_size: int = SW_BATCH_SIZE, overlap: float = OVERLAP) -> list[str]:
    """Cross-validation: fold ``f``'s run (``runs[f]``) predicts fold ``f``'s validation cases, so every non-test
    case gets one out-of-fold prediction. Each fold's ``final`` checkpoint predicts, without postprocessing:
    nothing chosen on these cases (best checkpoint, largest component) touches their scores."""
    dev = torch.device(device)
    folds = read_json(splits).get("folds") or []
    if len(folds) != len(runs):
        raise SegzooError(f"{splits}: {len(folds)} fold(s) for {len(runs)} run(s); give one run per fold, in order")
    cases = []
    with output_dir(out) as tmp:
        for run, fold in zip(runs, folds):
            model, trained = load_model(Path(run) / "final", dev)
            for case in fold["val"]:
                prob = ensemble_probabilities([Member(model, trained.patch_size)], pre.image(case), dev,
                                              sw_batch_size, overlap)
                _write_case(tmp, case, prob, pre.properties(case), list(trained.regions), None)
                cases.append(case)
    return cases


def _decision(postprocessing: str | Path | list | None, regions: list[str]):
    if not postprocessing:
        return None
    if isinstance(postprocessing, (str, Path)):
        return read_postprocessing(postprocessing, regions)
    decisions = [read_postprocessing(p, regions) for p in postprocessing]
    return decisions[0] if len(decisions) == 1 else majority_postprocessing(decisions, regions)


def _write_case(folder: Path, case: str, prob: np.ndarray, props: dict, regions: list[str], decision) -> None:
    """Probabilities [R, *preprocessed grid] mapped back to the case's own grid, and one mask per region."""
    prob = np.clip(to_original_grid(prob, props, mode="bilinear"), 0.0, 1.0).astype(np.float32)
    affine = np.asarray(props["original"]["affine"])
    write_probabilities(folder, case, prob, affine)
    write_masks(folder, case, {name: apply_postprocessing((prob[r] > THRESHOLD).astype(np.uint8), name, decision)
                               for r, name in enumerate(regions)}, affine)


def _infer_imported(model, trained, pre: Preprocessed, dataset, cases: list[str], out: Path,
                    device: torch.device, mirror: bool, source: str) -> None:
    images = {c.id: c.images for c in dataset.cases}
    with output_dir(out) as tmp:
        for case in cases:
            if case not in images:
                raise SegzooError(f"{dataset.root}: no images for test case {case}")
            prob, labels = predict_case(model, trained, list(images[case]), device, mirror=mirror)
            region_prob, masks = region_outputs(trained, pre.regions, prob, labels, source)
            affine = nib.load(str(images[case][0])).affine  # the header only: predict_case read the voxels
            write_probabilities(tmp, case, region_prob, affine)
            write_masks(tmp, case, dict(zip(pre.regions, masks)), affine)
