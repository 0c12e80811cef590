"""Lesion-wise detection: a region scored as instances (connected components), as Metrics Reloaded asks for
lesions (Maier-Hein et al., Nature Methods 2024) and the MS lesion literature reports beside voxel Dice.

For a prediction and a reference mask of one case and region:

- lesions are the connected components of each mask (``connectivity`` 26: voxels sharing a face, an edge or a
  corner are one lesion, as the WMH challenge and nnU-Net's component postprocessing count them; 6 and 18 are
  the alternatives), labelled with ``scipy.ndimage.label``;
- a reference lesion is **detected** when at least ``min_overlap_voxels`` of its voxels are predicted (by any
  predicted lesion); a predicted lesion is **true** when at least that many of its voxels lie in the reference;
- lesion-wise sensitivity = detected reference lesions / reference lesions; precision = true predicted lesions /
  predicted lesions; F1 = their harmonic mean (0 when both are 0); the count error = |predicted − reference
  lesions|.

Empty cases, in line with segzoo's voxel metrics: no reference lesion makes sensitivity NaN, no predicted lesion
makes precision NaN; F1 is NaN when both are empty (left out of means, like Dice), 0 when exactly one is; the
count error is defined in every case.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CONNECTIVITY_RANK = {6: 1, 18: 2, 26: 3}  # neighbourhood → scipy's generate_binary_structure connectivity


def components(mask: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """The mask's lesions: a label image (0 outside, 1..n) and n."""
    structure = ndimage.generate_binary_structure(3, CONNECTIVITY_RANK[connectivity])
    labels, count = ndimage.label(np.asarray(mask, bool), structure=structure)
    return labels, int(count)


def lesion_counts(pred: np.ndarray, ref: np.ndarray, *, min_overlap_voxels: int = 1,
                  connectivity: int = 26) -> dict[str, int]:
    """Reference and predicted lesions, the detected reference lesions and the true predicted lesions."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    ref_labels, n_ref = components(ref, connectivity)
    pred_labels, n_pred = components(pred, connectivity)
    hit_ref = np.bincount(ref_labels[pred], minlength=n_ref + 1)[1:]  # each reference lesion's predicted voxels
    hit_pred = np.bincount(pred_labels[ref], minlength=n_pred + 1)[1:]  # each predicted lesion's reference voxels
    return {"reference": n_ref, "predicted": n_pred, "detected": int((hit_ref >= min_overlap_voxels).sum()),
            "true_predicted": int((hit_pred >= min_overlap_voxels).sum())}


def lesion_scores(pred: np.ndarray, ref: np.ndarray, *, min_overlap_voxels: int = 1,
                  connectivity: int = 26) -> dict[str, float]:
    """``lesion_sensitivity``, ``lesion_precision``, ``lesion_f1`` and ``lesion_count_error`` of one case."""
    n = lesion_counts(pred, ref, min_overlap_voxels=min_overlap_voxels, connectivity=connectivity)
    sensitivity = n["detected"] / n["reference"] if n["reference"] else np.nan
    precision = n["true_predicted"] / n["predicted"] if n["predicted"] else np.nan
    if not n["reference"] and not n["predicted"]:
        f1 = np.nan
    elif not n["reference"] or not n["predicted"]:
        f1 = 0.0
    else:
        f1 = 2 * sensitivity * precision / (sensitivity + precision) if sensitivity + precision else 0.0
    return {"lesion_sensitivity": sensitivity, "lesion_precision": precision, "lesion_f1": f1,
            "lesion_count_error": float(abs(n["predicted"] - n["reference"]))}


def instance_regions(configured: list[str] | None, regions: list[str] | None) -> list[str]:
    """The regions scored as instances: ``evaluate.instance_regions`` as configured, or (null) every region whose
    name contains 'lesion' (the phantom's lesion region, an MS dataset's lesions)."""
    if configured is not None:
        return list(configured)
    return [r for r in regions or [] if "lesion" in r.lower()]
