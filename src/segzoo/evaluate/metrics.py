"""Per-case, per-region scores of a prediction against its reference, in the original image grid.

For binary masks ``pred`` and ``ref`` (``[X, Y, Z]``, voxel ``spacing`` in mm) and the predicted
foreground probability ``prob``:

========================  ======================================================================
``dice``, ``iou``          MONAI ``compute_dice`` / ``compute_iou``
``hd95_mm``                MONAI ``compute_hausdorff_distance`` (95th percentile, spacing-aware)
``surface_dice``           MONAI ``compute_surface_dice`` at ``tolerance_mm``
``volume_diff_ml``         ``|V_pred − V_ref|`` in millilitres
``nll``                    mean per-voxel negative log-likelihood of the reference under ``prob``
``ece``                    expected calibration error of ``prob`` (equal-width bins)
``lesion_*``               regions scored as instances only (:mod:`segzoo.evaluate.lesions`): lesion-wise
                           sensitivity, precision, F1 and |count difference|; NaN for other regions
========================  ======================================================================

Empty masks, as nnU-Net does and stated here once:

* reference and prediction both empty: Dice, IoU, HD95 and surface Dice are NaN (left out of
  means), the volume difference is 0;
* exactly one empty: Dice, IoU and surface Dice are 0; HD95 is the diagonal of the image in mm
  (the worst distance the grid allows) instead of MONAI's inf, so means stay finite;
* NLL and ECE are defined in every case (they score every voxel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-7


@dataclass(frozen=True)
class Metric:
    """One score of the comparison: its column ``key``, its ``name`` for people, which way is better, its unit."""

    key: str
    name: str
    better: str  # "higher" or "lower"
    unit: str = ""

    @property
    def label(self) -> str:
        """Axis and heading label: the name with its unit."""
        return f"{self.name} ({self.unit})" if self.unit else self.name


# The one list of metrics: evaluation columns, the compare verb's default, plot labels, the page, and the
# names `evaluate.metrics` in the config may hold (null there means all of these). Config.yaml need not list them.
METRICS = {m.key: m for m in (
    Metric("dice", "Dice", "higher"),
    Metric("iou", "IoU", "higher"),
    Metric("hd95_mm", "HD95", "lower", "mm"),
    Metric("surface_dice", "surface Dice", "higher"),
    Metric("volume_diff_ml", "|volume difference|", "lower", "ml"),
    Metric("nll", "NLL per voxel", "lower"),
    Metric("ece", "ECE", "lower"),
    Metric("lesion_sensitivity", "lesion-wise sensitivity", "higher"),
    Metric("lesion_precision", "lesion-wise precision", "higher"),
    Metric("lesion_f1", "lesion-wise F1", "higher"),
    Metric("lesion_count_error", "|lesion count difference|", "lower"),
)}
LESION_METRICS = ("lesion_sensitivity", "lesion_precision", "lesion_f1", "lesion_count_error")


# How each metric is computed: the library (its distribution name; the name and version shown are read by
# segzoo.report.names.implementation) and the definition, since distance and calibration metrics differ between
# tools; {tolerance_mm}, {connectivity} and {min_overlap_voxels} are the config's evaluate values. Empty-mask rules
# are in the module docstring.
DEFINITIONS = {
    "dice": ("monai", "compute_dice: 2|P∩R| / (|P| + |R|) on the binary masks"),
    "iou": ("monai", "compute_iou: |P∩R| / |P∪R|"),
    "hd95_mm": ("monai", "compute_hausdorff_distance(percentile=95, spacing): the 95th percentile of the surface "
                "distances pooled over both directions (prediction to reference and back), in mm"),
    "surface_dice": ("monai", "compute_surface_dice (normalised surface distance) at a tolerance of "
                     "{tolerance_mm:g} mm, spacing-aware"),
    "volume_diff_ml": ("segzoo", "|voxels(P) − voxels(R)| × voxel volume, in ml"),
    "nll": ("segzoo", "mean over all voxels of −log p(reference label), p clipped to [1e-7, 1 − 1e-7]"),
    "ece": ("segzoo", "expected calibration error over all voxels, 10 equal-width bins"),
    "lesion_sensitivity": ("segzoo + scipy", "detected reference lesions / reference lesions; lesions are "
                           "{connectivity}-connected components (scipy.ndimage.label), a lesion detected when at least "
                           "{min_overlap_voxels} of its voxels overlap the prediction"),
    "lesion_precision": ("segzoo + scipy", "predicted lesions overlapping the reference / predicted lesions"),
    "lesion_f1": ("segzoo + scipy", "harmonic mean of lesion-wise sensitivity and precision"),
    "lesion_count_error": ("segzoo + scipy", "|number of predicted lesions − number of reference lesions|"),
}
EMPTY_RULE = ("reference and prediction both empty: Dice, IoU, HD95, surface Dice and lesion F1 are left out (NaN); "
              "exactly one empty: Dice, IoU, surface Dice and lesion F1 are 0 and HD95 is the image diagonal in mm")


def _t(mask: np.ndarray):
    import torch

    return torch.as_tensor(np.asarray(mask, dtype=bool)[None, None].astype(np.float32))


def score_region(pred: np.ndarray, ref: np.ndarray, prob: np.ndarray | None, spacing, tolerance_mm: float = 1.0,
                 bins: int = 10, detection: dict | None = None) -> dict[str, float]:
    """Every metric (a value per :data:`METRICS` key) for one region of one case; without probabilities
    (hard masks made elsewhere) the NLL and calibration error are NaN. With ``detection`` (the rule:
    ``min_overlap_voxels``, ``connectivity``) the region is also scored lesion by lesion, else those are NaN."""
    from monai.metrics import compute_hausdorff_distance, compute_iou, compute_surface_dice

    from segzoo.inference.dice import region_dice

    from segzoo.evaluate.lesions import lesion_scores

    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    spacing = [float(s) for s in spacing]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out = {"volume_diff_ml": abs(int(pred.sum()) - int(ref.sum())) * voxel_ml,
           "nll": np.nan if prob is None else nll(prob, ref), "ece": np.nan if prob is None else ece(prob, ref, bins),
           **(lesion_scores(pred, ref, **detection) if detection is not None
              else dict.fromkeys(LESION_METRICS, np.nan))}
    if not pred.any() and not ref.any():
        return {**out, "dice": np.nan, "iou": np.nan, "hd95_mm": np.nan, "surface_dice": np.nan}
    if not pred.any() or not ref.any():
        diagonal = float(np.linalg.norm(np.asarray(pred.shape) * np.asarray(spacing)))
        return {**out, "dice": 0.0, "iou": 0.0, "hd95_mm": diagonal, "surface_dice": 0.0}
    p, r = _t(pred), _t(ref)
    return {
        **out,
        "dice": float(region_dice(p, r)[0, 0]),
        "iou": float(compute_iou(p, r, include_background=True)[0, 0]),
        "hd95_mm": float(compute_hausdorff_distance(p, r, include_background=True, percentile=95,
                                                    spacing=spacing)[0, 0]),
        "surface_dice": float(compute_surface_dice(p, r, class_thresholds=[tolerance_mm], include_background=True,
                                                   spacing=spacing)[0, 0]),
    }


def nll(prob: np.ndarray, ref: np.ndarray) -> float:
    """Mean over voxels of −log p(reference label), with p clipped to [1e-7, 1 − 1e-7]."""
    p = np.clip(np.asarray(prob, np.float64), EPS, 1 - EPS)
    ref = np.asarray(ref, bool)
    return float(-np.mean(np.where(ref, np.log(p), np.log1p(-p))))


def calibration_bins(prob: np.ndarray, ref: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width probability bin: voxel count, mean predicted probability, observed frequency."""
    p = np.asarray(prob, np.float64).ravel()
    y = np.asarray(ref, bool).ravel()
    index = np.minimum((p * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    conf = np.bincount(index, weights=p, minlength=bins)
    freq = np.bincount(index, weights=y.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts, conf / counts, freq / counts


def ece(prob: np.ndarray, ref: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: Σ_b (n_b / N) · |observed frequency_b − mean probability_b|."""
    counts, conf, freq = calibration_bins(prob, ref, bins)
    filled = counts > 0
    return float(np.sum(counts[filled] / counts.sum() * np.abs(freq[filled] - conf[filled])))
