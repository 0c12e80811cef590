"""Inference: MONAI sliding-window prediction of the test cases, written as NIfTI in the original grid.

For a trained run (``best`` checkpoint) and each test case, the output folder gets::

    <case>_prob.nii.gz        float32 [X, Y, Z, R]: sigmoid probability per region
    <case>_<region>.nii.gz    uint8   [X, Y, Z]: the region's mask (probability > 0.5)

Both share the input image's shape and affine: the probabilities are computed on the preprocessed
grid and mapped back with :func:`segzoo.data.preprocess.to_original_grid` (trilinear), then
thresholded, so masks and probability maps agree voxel for voxel.

With the run's ``postprocessing.json`` (``segzoo postprocessing``, chosen on the validation cases; see
:mod:`segzoo.postprocess`), a region decided ``largest_component: true`` keeps only the largest connected
component of its mask. The probability maps stay as predicted: there such a mask is a subset of
probability > 0.5.

A model imported from nnU-Net (``segzoo nnunet-import``) is run on the raw images with nnU-Net's own
preprocessing (:mod:`segzoo.interop.nnunet_inference`), mirrored over the axes its checkpoint allows unless
``mirror`` is off; its masks are nnU-Net's segmentation mapped to the dataset's regions, and its probabilities
the matching heads (summed classes for a softmax model). A model trained on other channels than the dataset
names, or in another order, is refused with both lists.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference

from segzoo.checkpoint import load_checkpoint, load_module_tensors
from segzoo.data.dataset import channel_order_problem, read_dataset
from segzoo.data.nifti import save_nifti
from segzoo.data.preprocess import to_original_grid
from segzoo.data.preprocessed import Preprocessed
from segzoo.errors import SegzooError
from segzoo.interop.nnunet_inference import predict_case, region_outputs
from segzoo.io import output_dir, read_json
from segzoo.mirroring import describe, model_axes
from segzoo.models.registry import IMPORTED, build_model
from segzoo.postprocess import apply_postprocessing, majority_postprocessing, read_postprocessing


def sliding_window_logits(model: torch.nn.Module, image: torch.Tensor, patch_size: list[int],
                          sw_batch_size: int, overlap: float = 0.25) -> torch.Tensor:
    """Logits [1, R, *spatial] for one image [1, C, *spatial] (MONAI pads what is smaller than a patch)."""
    return sliding_window_inference(image, roi_size=patch_size, sw_batch_size=sw_batch_size, predictor=model,
                                    overlap=overlap, mode="gaussian")


def load_model(checkpoint: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """A model rebuilt from its checkpoint's sidecar and loaded from safetensors, in eval mode; and the sidecar."""
    tensors, sidecar = load_checkpoint(checkpoint)
    outputs = len(sidecar["regions"] if "regions" in sidecar else sidecar["classes"])
    model = build_model(sidecar["model"], len(sidecar["channels"]), outputs, **sidecar["model_options"])
    load_module_tensors(model, tensors, str(checkpoint))
    return model.to(device).eval(), sidecar


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, image: np.ndarray, patch_size: list[int], device: torch.device,
                          sw_batch_size: int = 4, overlap: float = 0.5) -> np.ndarray:
    """Sigmoid probabilities [R, *spatial] for one preprocessed image [C, *spatial]."""
    logits = sliding_window_logits(model, torch.from_numpy(np.ascontiguousarray(image))[None].to(device),
                                   patch_size, sw_batch_size, overlap)
    return torch.sigmoid(logits.float())[0].cpu().numpy()


def infer_run(checkpoint: str | Path | list, pre: Preprocessed, splits: str | Path, out: str | Path, *,
              device: str = "cpu", sw_batch_size: int = 4, overlap: float = 0.5, raw: str | Path | None = None,
              mirror: bool = True, postprocessing: str | Path | list | None = None) -> list[str]:
    """Predict every test case of ``splits`` with the model in ``checkpoint``; write NIfTI files to ``out``.

    Several checkpoints (a model's cross-validation folds) are ensembled by averaging their probabilities.
    ``postprocessing`` (a trained run's ``postprocessing.json``, or one per checkpoint: a region keeps its
    largest component where most chose it) is applied to the masks. ``raw`` (the raw dataset) and ``mirror``
    (nnU-Net's test-time mirroring) serve imported nnU-Net models."""
    dev = torch.device(device)
    checkpoints = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    loaded = [load_model(c, dev) for c in checkpoints]
    model, sidecar = loaded[0]
    problem = channel_order_problem(sidecar["channels"], str(checkpoints[0]), pre.channels,
                                    f"{raw or pre.folder} (dataset {pre.dataset})")
    if problem:
        raise SegzooError(problem)
    cases = read_json(splits)["test"]
    if sidecar["model"] == IMPORTED:
        if raw is None:
            raise SegzooError(f"{checkpoint}: an imported nnU-Net model predicts from the raw images; pass --raw")
        if postprocessing:
            raise SegzooError(f"{postprocessing}: segzoo's postprocessing is chosen for models trained here; "
                              f"{checkpoint} is an imported nnU-Net model")
        if len(loaded) > 1:
            raise SegzooError(f"{checkpoints}: an imported nnU-Net model predicts alone, not in an ensemble")
        if mirror:
            print(describe(str(checkpoint), model_axes(sidecar)[0], nnunet=True))
        _infer_imported(model, sidecar, pre, read_dataset(raw), cases, Path(out), dev, mirror, str(checkpoint))
        return cases
    regions = list(sidecar["regions"])
    with output_dir(out) as tmp:
        decision = _decision(postprocessing, regions)
        for case in cases:
            probs = [predict_probabilities(m, pre.image(case), s["patch_size"], dev, sw_batch_size, overlap)
                     for m, s in loaded]
            prob = probs[0] if len(probs) == 1 else np.mean(probs, axis=0)
            _write_case(tmp, case, prob, pre.properties(case), regions, decision)
    return cases


def infer_out_of_fold(runs: list[str | Path], pre: Preprocessed, splits: str | Path, out: str | Path, *,
                      device: str = "cpu", sw_batch_size: int = 4, overlap: float = 0.5) -> list[str]:
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
            model, sidecar = load_model(Path(run) / "final", dev)
            for case in fold["val"]:
                prob = predict_probabilities(model, pre.image(case), sidecar["patch_size"], dev, sw_batch_size, overlap)
                _write_case(tmp, case, prob, pre.properties(case), list(sidecar["regions"]), None)
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
    save_nifti(np.moveaxis(prob, 0, -1), affine, folder / f"{case}_prob.nii.gz")
    for r, name in enumerate(regions):
        mask = apply_postprocessing((prob[r] > 0.5).astype(np.uint8), name, decision)
        save_nifti(mask, affine, folder / f"{case}_{name}.nii.gz")


def _infer_imported(model, sidecar: dict, pre: Preprocessed, dataset, cases: list[str], out: Path,
                    device: torch.device, mirror: bool, source: str) -> None:
    images = {c.id: c.images for c in dataset.cases}
    with output_dir(out) as tmp:
        for case in cases:
            if case not in images:
                raise SegzooError(f"{dataset.root}: no images for test case {case}")
            prob, labels = predict_case(model, sidecar, list(images[case]), device, mirror=mirror)
            region_prob, masks = region_outputs(sidecar, pre.regions, prob, labels, source)
            affine = nib.load(str(images[case][0])).affine  # the header only: predict_case read the voxels
            save_nifti(np.moveaxis(region_prob, 0, -1), affine, tmp / f"{case}_prob.nii.gz")
            for mask, name in zip(masks, pre.regions):
                save_nifti(mask, affine, tmp / f"{case}_{name}.nii.gz")
