"""DiceCE per region (sigmoid outputs, one channel per region), with deep supervision where a model has it.

MONAI's ``DiceCELoss`` switches to softmax cross-entropy when the input has several channels, which
is wrong for overlapping regions; so each region channel gets its own sigmoid DiceCE (BCE inside) and
the results are averaged. Deep supervision (a list of outputs, full resolution first) goes through
MONAI's ``DeepSupervisionLoss``, which downsamples the target to each output.
"""

from __future__ import annotations

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import nn


class RegionDiceCE(nn.Module):
    def __init__(self):
        super().__init__()
        self.dice_ce = DiceCELoss(sigmoid=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits, target: [B, R, *spatial]; target holds 0/1."""
        losses = [self.dice_ce(logits[:, r:r + 1], target[:, r:r + 1]) for r in range(logits.shape[1])]
        return torch.stack(losses).mean()


def build_loss() -> nn.Module:
    """Takes a tensor or a list of tensors (deep supervision, weights halving per level)."""
    return DeepSupervisionLoss(RegionDiceCE(), weight_mode="exp")
