"""U-Net 3+ (Huang et al., ICASSP 2020) in 3D, and its multi-scale variant with an input pyramid.

Shapes (3D, ``levels`` L = 5, ``base`` b):

* input ``[B, C_in, X, Y, Z]``, every side divisible by ``2**(L-1)`` (16);
* encoder level k holds ``[B, b·2^k, X/2^k, Y/2^k, Z/2^k]``, k = 0..L-1 (level L-1 is the bottleneck);
* decoder stage i (i = L-2..0) fuses L branches, each convolved to b channels: the finer encoder
  maps max-pooled down, the same-level encoder map, and the coarser decoder maps and bottleneck
  convolved first and then upsampled (nearest), then a conv over the concatenation
  ``[B, L·b, X/2^i, ...]``;
* output (eval mode) ``[B, R, X, Y, Z]``: one logit per region. In training mode with deep
  supervision: a list of L logit maps, full resolution first, stage i at ``X/2^i`` and the bottleneck
  last, for MONAI's ``DeepSupervisionLoss`` (which downsamples the target to each).

``pyramid=True`` gives MS U-Net 3+: the image average-pooled to 1/2, 1/4, ... is concatenated to
the input of encoder levels 1..L-2 (same code path, one flag).

``cgm=True`` adds the classification-guided module: a presence classifier per region on the
bottleneck; at inference a region the classifier calls absent gets its logits pushed to -20.
Its loss is :meth:`auxiliary_loss`. Off by default.

Parameter counts (1 input channel, 3 regions, L = 5, from :func:`count_parameters`):
b = 8: 1,289,175; b = 16 (the class default): 5,104,671; b = 32: 20,314,671; b = 64: 81,050,703.
MS U-Net 3+ adds the pyramid inputs' weights: 81,074,895 at b = 64.
"""

from __future__ import annotations

import torch
from torch import nn

from segzoo.models.blocks import ConvNormAct, DoubleConv, ops_for, upsample
from segzoo.models.contract import SegmentationModelDefaults
from segzoo.models.pyramid import image_pyramid


class UNet3Plus(SegmentationModelDefaults, nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, base: int = 16, levels: int = 5,
                 pyramid: bool = False, deep_supervision: bool = True, cgm: bool = False, dims: int = 3):
        super().__init__()
        if levels < 2:
            raise ValueError("levels must be at least 2")
        ops = ops_for(dims)
        self.levels, self.pyramid, self.deep_supervision = levels, pyramid, deep_supervision
        self.divisor = 2 ** (levels - 1)
        widths = [base * 2**k for k in range(levels)]
        fused = base * levels
        self.pyramid_levels = set(range(1, levels - 1)) if pyramid else set()

        self.encoders = nn.ModuleList(
            DoubleConv(ops, (in_channels if k == 0 else widths[k - 1]) + (in_channels if k in self.pyramid_levels else 0),
                       widths[k])
            for k in range(levels))
        self.pool = ops.pool(2)
        # branches[i][j]: from level j into decoder stage i (encoder maps for j <= i and the bottleneck).
        self.branches = nn.ModuleList(
            nn.ModuleList(ConvNormAct(ops, widths[j] if (j <= i or j == levels - 1) else fused, base)
                          for j in range(levels))
            for i in range(levels - 1))
        self.downs = nn.ModuleList(
            nn.ModuleList(ops.pool(2 ** (i - j)) for j in range(i)) for i in range(levels - 1))
        self.fuse = nn.ModuleList(ConvNormAct(ops, fused, fused) for _ in range(levels - 1))
        self.heads = nn.ModuleList([ops.conv(fused, out_channels, 3, padding=1) for _ in range(levels - 1)]
                                   + [ops.conv(widths[-1], out_channels, 3, padding=1)])
        self.classifier = None
        if cgm:
            self.classifier = nn.Sequential(nn.Dropout(0.5), ops.conv(widths[-1], out_channels, 1),
                                            nn.AdaptiveMaxPool3d(1) if dims == 3 else nn.AdaptiveMaxPool2d(1),
                                            nn.Flatten())
        self._presence: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, images: list[torch.Tensor] | None = None) -> torch.Tensor | list[torch.Tensor]:
        """``images``: the input pyramid, computed from ``x`` when not given (tests pass an edited one)."""
        if self.pyramid and images is None:
            images = image_pyramid(x, self.levels - 1)
        enc, h = [], x
        for k, block in enumerate(self.encoders):
            if k > 0:
                h = self.pool(h)
                if k in self.pyramid_levels:
                    h = torch.cat([h, images[k]], dim=1)
            h = block(h)
            enc.append(h)

        dec = {self.levels - 1: enc[-1]}
        for i in reversed(range(self.levels - 1)):
            parts = []
            for j, branch in enumerate(self.branches[i]):
                if j < i:
                    parts.append(branch(self.downs[i][j](enc[j])))
                elif j == i:
                    parts.append(branch(enc[i]))
                else:  # convolve at the coarse level, then upsample: cheaper in memory and time
                    parts.append(upsample(branch(dec[j]), 2 ** (j - i)))
            dec[i] = self.fuse[i](torch.cat(parts, dim=1))

        self._presence = self.classifier(enc[-1]) if self.classifier is not None else None
        if self.training and self.deep_supervision:
            return [self.heads[i](dec[i]) for i in range(self.levels)]
        logits = self.heads[0](dec[0])
        if self._presence is not None and not self.training:
            absent = (self._presence < 0).float()[(...,) + (None,) * (logits.dim() - 2)]
            logits = logits * (1 - absent) - 20.0 * absent
        return logits

    def auxiliary_loss(self, target: torch.Tensor) -> torch.Tensor | None:
        """BCE of the presence classifier against whether each region occurs in ``target`` [B, R, ...]."""
        if self._presence is None:
            return None
        present = target.flatten(2).amax(dim=2).float()
        return nn.functional.binary_cross_entropy_with_logits(self._presence, present)
