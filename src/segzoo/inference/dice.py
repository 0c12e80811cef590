"""The one Dice of a predicted mask against its reference, per case and region (MONAI's ``compute_dice``), with the
pipeline's empty rule: NaN where reference and prediction are both empty (left out of every mean), 0 where exactly
one is. The comparison's scores (:mod:`segzoo.evaluate.metrics`), validation during training and the weight
generation's whole-volume scores all take Dice from here."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_dice


def region_dice(prediction: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """Dice [B, R] of binary masks ``prediction`` and ``reference`` [B, R, *spatial] (bool or 0/1)."""
    prediction, reference = prediction.float(), reference.float()
    dice = compute_dice(prediction, reference, include_background=True, ignore_empty=False).cpu().numpy()
    both_empty = ((prediction.flatten(2).sum(2) == 0) & (reference.flatten(2).sum(2) == 0)).cpu().numpy()
    return np.where(both_empty, np.nan, dice).astype(np.float64)
