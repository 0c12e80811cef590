"""Probabilities for a preprocessed image: MONAI's sliding window, test-time mirroring, and ensembles.

Every segzoo model predicts through :func:`sliding_window_logits` (validation during training, ``infer``,
``predict``, postprocessing, the G.pt evaluation). A Gaussian-weighted window of the model's patch size moves
over the image with the given overlap; what is smaller than a patch is padded by MONAI.

An ensemble (several seeds or folds of a model, as ``predict`` and cross-validated ``infer`` use) averages the
members' sigmoid probabilities; each member is first averaged over its own test-time flips
(:mod:`segzoo.inference.mirroring`; only the unflipped image when mirroring is off).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference

SW_BATCH_SIZE = 4  # windows per forward pass
OVERLAP = 0.5  # fraction of a window shared with its neighbour


def sliding_window_logits(model: torch.nn.Module, image: torch.Tensor, patch_size: list[int],
                          sw_batch_size: int, overlap: float = 0.25) -> torch.Tensor:
    """Logits [1, R, *spatial] for one image [1, C, *spatial] (MONAI pads what is smaller than a patch)."""
    return sliding_window_inference(image, roi_size=patch_size, sw_batch_size=sw_batch_size, predictor=model,
                                    overlap=overlap, mode="gaussian")


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, image: np.ndarray, patch_size: list[int], device: torch.device,
                          sw_batch_size: int = SW_BATCH_SIZE, overlap: float = OVERLAP) -> np.ndarray:
    """Sigmoid probabilities [R, *spatial] for one preprocessed image [C, *spatial]."""
    logits = sliding_window_logits(model, torch.from_numpy(np.ascontiguousarray(image))[None].to(device),
                                   patch_size, sw_batch_size, overlap)
    return torch.sigmoid(logits.float())[0].cpu().numpy()


@dataclass(frozen=True)
class Member:
    """One model of an ensemble: the network, its patch size, and the flips it is averaged over (spatial axes of
    the [X, Y, Z] grid; ``[()]``: none)."""

    model: torch.nn.Module
    patch_size: list[int]
    flips: list[tuple[int, ...]] = ((),)


def ensemble_probabilities(members: list[Member], image: np.ndarray, device: torch.device,
                           sw_batch_size: int = SW_BATCH_SIZE, overlap: float = OVERLAP) -> np.ndarray:
    """Probabilities [R, *spatial] for one preprocessed image [C, *spatial]: each member's mean over its flips,
    then the mean over the members (float32)."""
    total = None
    for member in members:
        mirrored = None
        for combo in member.flips:
            axes = tuple(a + 1 for a in combo)  # spatial axes of the [C, X, Y, Z] image
            flipped = np.flip(image, axes) if axes else image
            p = predict_probabilities(member.model, flipped, member.patch_size, device, sw_batch_size, overlap)
            p = np.flip(p, axes) if axes else p
            mirrored = p.copy() if mirrored is None else mirrored + p
        if len(member.flips) > 1:
            mirrored /= len(member.flips)
        total = mirrored if total is None else total + mirrored
    if len(members) > 1:
        total /= len(members)
    return total.astype(np.float32, copy=False)
