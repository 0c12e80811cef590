"""Input image pyramids for the multi-scale (MS) variants."""

from __future__ import annotations

import torch
from torch import nn


def image_pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``[image, image/2, image/4, ...]`` by average pooling; ``levels`` entries.

    Shapes: level k is [B, C, *(s // 2**k)] for an input [B, C, *s].
    """
    out = [image]
    for _ in range(levels - 1):
        out.append(nn.functional.avg_pool3d(out[-1], 2) if image.dim() == 5 else nn.functional.avg_pool2d(out[-1], 2))
    return out
