"""DiceCE per region (sigmoid outputs, one channel per region), with deep supervision where a model has it.

MONAI's ``DiceCELoss`` switches to softmax cross-entropy when the input has several channels, which
is wrong for overlapping regions; so each region channel gets its own sigmoid DiceCE (BCE inside) and
the results are averaged. Deep supervision (a list of outputs, full resolution first) goes through
MONAI's ``DeepSupervisionLoss``, which downsamples the target to each output; its halving weights
are normalised to sum to 1 so that losses of models with and without deep supervision compare.
Dice is computed over the whole batch (nnU-Net's batch Dice): a region absent from one patch, as
lesions often are, still gets a useful gradient.
"""

from __future__ import annotations

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import nn


class RegionDiceCE(nn.Module):
    def __init__(self, regions: list[int] | None = None):
        super().__init__()
        self.dice_ce = DiceCELoss(sigmoid=True, batch=True)
        self.regions = regions  # None: every channel; else only these (the others get no gradient)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits, target: [B, R, *spatial]; target holds 0/1."""
        regions = range(logits.shape[1]) if self.regions is None else self.regions
        losses = [self.dice_ce(logits[:, r:r + 1], target[:, r:r + 1]) for r in regions]
        return torch.stack(losses).mean()


class PooledRegionDiceCE(RegionDiceCE):
    """The same loss with its sums pooled by ``global_sum`` (several processes, each with part of the batch):
    the Dice of the whole global batch and the BCE mean over all its voxels, as MONAI computes them on one
    process (smooth 1e-5 in numerator and denominator)."""

    def __init__(self, global_sum, regions: list[int] | None = None):
        super().__init__(regions)
        self.global_sum = global_sum

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        regions = range(logits.shape[1]) if self.regions is None else self.regions
        voxels = self.global_sum(torch.tensor(float(logits[:, 0].numel()), device=logits.device))
        losses = []
        for r in regions:
            x, t = logits[:, r].float(), target[:, r].float()
            p = torch.sigmoid(x)
            sums = self.global_sum(torch.stack([(p * t).sum(), p.sum(), t.sum(),
                                                nn.functional.binary_cross_entropy_with_logits(x, t, reduction="sum")]))
            dice = 1 - (2 * sums[0] + 1e-5) / (sums[1] + sums[2] + 1e-5)
            losses.append(dice + sums[3] / voxels)
        return torch.stack(losses).mean()


class NormalisedDeepSupervision(DeepSupervisionLoss):
    def forward(self, input, target):
        if isinstance(input, torch.Tensor) and input.dtype == torch.float64:
            return self.loss(input, target)  # MONAI would compute it in float32
        return super().forward(input, target)

    def get_weights(self, levels: int = 1) -> list[float]:
        weights = super().get_weights(levels)
        return [w / sum(weights) for w in weights]


def build_loss(regions: list[int] | None = None, global_sum=None) -> nn.Module:
    """Takes a tensor or a list of tensors (deep supervision: weights 1, 1/2, 1/4, ... normalised);
    ``regions`` limits the loss to those channels (single-task training); ``global_sum`` pools the batch
    statistics over processes (DDP, see segzoo.train.distributed)."""
    inner = RegionDiceCE(regions) if global_sum is None else PooledRegionDiceCE(global_sum, regions)
    return NormalisedDeepSupervision(inner, weight_mode="exp")


def member_region_losses(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DiceCE per member and region [M, R] for logits [M, B, R, *S] of M networks (target [M, B, R, *S], or
    [B, R, *S] shared): for every member what :class:`RegionDiceCE` computes per region (MONAI's sigmoid batch Dice
    with smooth 1e-5, plus the mean BCE), without the mean over regions."""
    if logits.dtype != torch.float64:
        logits = logits.float()  # as MONAI computes it (bfloat16 logits under autocast included)
    target = target.to(logits.dtype).expand_as(logits)
    dims = (1, *range(3, logits.ndim))
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum(dims) + 1e-5) / (p.sum(dims) + target.sum(dims) + 1e-5)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dims)
    return dice + bce
