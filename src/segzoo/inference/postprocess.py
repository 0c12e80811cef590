"""Postprocessing chosen on validation: keep a region's largest connected component where that helps.

nnU-Net's ``determine_postprocessing`` asks, for each label or region, whether removing every connected
component but the largest raises the validation Dice; segzoo asks the same for each region of a trained run:

1. Each validation case of the run's splits is predicted on the preprocessed grid (the sliding window of
   :func:`segzoo.inference.window.predict_probabilities`) and thresholded at 0.5 per region.
2. Per region, the Dice of every case is computed twice against the case's region mask: as predicted, and with
   only the largest component kept. Empty masks follow :mod:`segzoo.evaluate.metrics` (and nnU-Net): when the
   reference and the prediction are both empty the Dice is NaN and left out of the mean; when exactly one is
   empty it is 0. Keeping the largest component never empties a mask, so the same cases count on both sides.
3. A region keeps its largest component only when its mean validation Dice **strictly** rises. Equal means
   (for instance, no case has more than one component) keep the predictions as they are; so does a region
   whose every case is NaN.

Connectivity: the full 26-neighbourhood (voxels that share a face, an edge or a corner are connected), as
nnU-Net's ``remove_all_but_largest_component`` has it (scikit-image's default, full connectivity). Thin
oblique structures such as a spinal cord on an anisotropic grid touch along edges; the 6-neighbourhood would
cut them into pieces and keep only one. The operation is MONAI's :class:`KeepLargestConnectedComponent`; of
several equally large components it keeps one (nnU-Net keeps all of them).

The choice is written to ``<run>/postprocessing.json``::

    {"rule": ..., "connectivity": 26, "cases": [validation cases],
     "largest_component": {region: true | false},
     "val_dice": {region: {"as_predicted": mean Dice | null, "largest_component": mean Dice | null}}}

``segzoo infer`` applies it to the masks it writes and ``segzoo predict`` to each region before painting the
label map; probability maps are never changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.transforms import KeepLargestConnectedComponent

from segzoo.data.loader import regions_to_channels
from segzoo.data.preprocessed import Preprocessed
from segzoo.data.splits import fold_split
from segzoo.errors import SegzooError
from segzoo.inference.predictions import THRESHOLD
from segzoo.inference.trained import load_model
from segzoo.inference.window import predict_probabilities
from segzoo.io import read_json, refuse_existing, write_json

FILE_NAME = "postprocessing.json"  # beside a run's checkpoints
CONNECTIVITY = 26  # neighbours of a voxel: 6 (faces), 18 (+ edges) or 26 (+ corners)
ORTHOGONAL_HOPS = {6: 1, 18: 2, 26: 3}  # the same, as MONAI/scikit-image count connectivity
RULE = "keep the largest component of a region where it strictly raises the region's mean validation Dice"


@dataclass(frozen=True)
class Postprocessing:
    """What a run (or an ensemble of runs) keeps: ``largest_component[region]``; ``source`` names where it came
    from, for messages."""

    largest_component: dict[str, bool]
    source: str

    def keeps_largest(self, region: str) -> bool:
        if region not in self.largest_component:
            raise SegzooError(f"{self.source}: no decision for region {region!r} "
                              f"(it decides {sorted(self.largest_component)})")
        return self.largest_component[region]


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a binary mask [X, Y, Z], in the mask's dtype (empty stays empty)."""
    keep = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False,
                                         connectivity=ORTHOGONAL_HOPS[CONNECTIVITY])
    kept = keep(torch.from_numpy(np.ascontiguousarray(mask != 0, dtype=np.uint8))[None])
    return kept[0].cpu().numpy().astype(mask.dtype)


def apply_postprocessing(mask: np.ndarray, region: str, decision: Postprocessing | None) -> np.ndarray:
    """``mask`` (binary, [X, Y, Z]) with the recorded rule for ``region`` applied; unchanged when the decision is
    not to keep the largest component, or when there is no decision."""
    if decision is None or not decision.keeps_largest(region):
        return mask
    return keep_largest_component(mask)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two binary masks; NaN when both are empty, 0 when exactly one is (segzoo's metric's rule)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def _mean(values: list[float]) -> float | None:
    """Mean over the cases that count (not NaN); None when none does (JSON null)."""
    counted = [v for v in values if not np.isnan(v)]
    return float(np.mean(counted)) if counted else None


def choose_from_masks(predictions: list[np.ndarray], references: list[np.ndarray], regions: list[str],
                      cases: list[str]) -> dict:
    """The decision, as written to ``postprocessing.json``, for binary predictions and references [R, X, Y, Z]
    (one pair per case, channels in the order of ``regions``)."""
    if not cases:
        raise SegzooError("no validation cases: postprocessing is chosen on the validation set")
    largest, val_dice = {}, {}
    for r, region in enumerate(regions):
        as_predicted = _mean([dice(p[r], ref[r]) for p, ref in zip(predictions, references)])
        kept = _mean([dice(keep_largest_component(p[r]), ref[r]) for p, ref in zip(predictions, references)])
        largest[region] = as_predicted is not None and kept is not None and kept > as_predicted
        val_dice[region] = {"as_predicted": as_predicted, "largest_component": kept}
    return {"rule": RULE, "connectivity": CONNECTIVITY, "cases": list(cases), "largest_component": largest,
            "val_dice": val_dice}


def choose_postprocessing(model: torch.nn.Module, pre: Preprocessed, case_ids: list[str], *, patch_size: list[int],
                          device: torch.device, sw_batch_size: int, regions: dict[str, list[int]],
                          overlap: float = 0.5) -> dict:
    """Predict the validation cases ``case_ids`` with ``model`` on the preprocessed grid and decide per region."""
    predictions, references = [], []
    for case in case_ids:
        prob = predict_probabilities(model, pre.image(case), patch_size, device, sw_batch_size, overlap)
        predictions.append(prob > THRESHOLD)
        references.append(regions_to_channels(pre.label(case), list(regions.values())) > 0)
    return choose_from_masks(predictions, references, list(regions), case_ids)


def write_postprocessing(checkpoint: str | Path, pre: Preprocessed, splits: str | Path, out: str | Path, *,
                         device: str = "cpu", sw_batch_size: int = 4, overlap: float = 0.5,
                         fold: int | None = None) -> dict:
    """Choose the postprocessing of a trained run on its splits' ``val`` cases and write it to ``out`` (JSON)."""
    refuse_existing(Path(out))  # before predicting anything
    dev = torch.device(device)
    model, trained = load_model(checkpoint, dev)
    if trained.imported:
        raise SegzooError(f"{checkpoint}: an imported nnU-Net model; segzoo chooses postprocessing only for "
                          "models trained here")
    regions = dict(trained.regions)
    if regions != pre.regions:
        raise SegzooError(f"{checkpoint}: regions {regions} differ from {pre.folder}'s {pre.regions}; pass the "
                          "preprocessed folder it was trained on")
    cases = fold_split(read_json(splits), fold, splits).get("val") or []
    if not cases:
        raise SegzooError(f"{splits}: no validation cases ('val'); postprocessing is chosen on them")
    result = choose_postprocessing(model, pre, cases, patch_size=trained.patch_size, device=dev,
                                   sw_batch_size=sw_batch_size, regions=regions, overlap=overlap)
    write_json(out, result)
    return result


def read_postprocessing(path: str | Path, regions: list[str] | None = None) -> Postprocessing:
    """Read and check a ``postprocessing.json``; with ``regions``, it must decide exactly those regions."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise SegzooError(f"{path}: not a JSON object")
    missing = [key for key in ("connectivity", "largest_component") if key not in data]
    if missing:
        raise SegzooError(f"{path}: missing key(s) {', '.join(missing)}")
    if data["connectivity"] != CONNECTIVITY:
        raise SegzooError(f"{path}: connectivity {data['connectivity']!r}; segzoo keeps components with "
                          f"connectivity {CONNECTIVITY}")
    largest = data["largest_component"]
    if not isinstance(largest, dict) or not all(isinstance(v, bool) for v in largest.values()):
        raise SegzooError(f"{path}: 'largest_component' must map each region to true or false, got {largest!r}")
    if regions is not None and sorted(largest) != sorted(regions):
        raise SegzooError(f"{path}: decides regions {sorted(largest)}; the model's regions are {sorted(regions)}")
    return Postprocessing(dict(largest), str(path))


def run_postprocessing(stem: Path, regions: list[str]) -> Postprocessing | None:
    """The decision recorded beside a checkpoint stem (``<run>/best`` → ``<run>/postprocessing.json``), if any."""
    path = Path(stem).parent / FILE_NAME
    return read_postprocessing(path, regions) if path.is_file() else None


def majority_postprocessing(decisions: list[Postprocessing | None], regions: list[str]) -> Postprocessing:
    """An ensemble's rule: a region keeps its largest component when more than half of the runs chose it; a run
    without a recorded decision counts as not choosing it (a tie keeps the predictions as they are)."""
    votes = {region: sum(d is not None and d.keeps_largest(region) for d in decisions) for region in regions}
    sources = ", ".join(d.source for d in decisions if d is not None) or "no recorded decision"
    return Postprocessing({region: 2 * n > len(decisions) for region, n in votes.items()},
                          f"majority of {len(decisions)} run(s) ({sources})")
