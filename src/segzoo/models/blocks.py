"""Building blocks that take their conv/norm ops as arguments: one code path for 2D and 3D."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Ops:
    """The layer types a network is built from (nnU-Net style). ``ops_for(3)`` gives the 3D set."""

    conv: type[nn.Module]
    norm: type[nn.Module]
    pool: type[nn.Module]
    avg_pool: type[nn.Module]
    dims: int


def ops_for(dims: int) -> Ops:
    if dims == 3:
        return Ops(nn.Conv3d, nn.InstanceNorm3d, nn.MaxPool3d, nn.AvgPool3d, 3)
    if dims == 2:
        return Ops(nn.Conv2d, nn.InstanceNorm2d, nn.MaxPool2d, nn.AvgPool2d, 2)
    raise ValueError(f"dims must be 2 or 3, got {dims}")


class ConvNormAct(nn.Sequential):
    """conv k×k(×k) → instance norm (affine) → LeakyReLU, spatial size kept."""

    def __init__(self, ops: Ops, c_in: int, c_out: int, kernel: int = 3):
        super().__init__(
            ops.conv(c_in, c_out, kernel, padding=kernel // 2),
            ops.norm(c_out, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )


class DoubleConv(nn.Sequential):
    """Two ConvNormAct blocks: the encoder stage of U-Net-like networks."""

    def __init__(self, ops: Ops, c_in: int, c_out: int):
        super().__init__(ConvNormAct(ops, c_in, c_out), ConvNormAct(ops, c_out, c_out))


def upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour upsampling by an integer factor (deterministic backward on CUDA)."""
    return x if factor == 1 else nn.functional.interpolate(x, scale_factor=factor, mode="nearest")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
