"""3D DiffNet (after Arridge & Hauptmann, JMIV 2019) and its coarse-to-fine multi-scale variant.

A state ``u`` [B, C, X, Y, Z], lifted from the image by a small CNN, is updated by K layers of
explicit nonlinear diffusion on the 7-point stencil. Each layer's CNN looks at ``u`` and the image
and gives a conductivity in (0, 1) for every voxel, channel and "+" face (one per axis); the face
between voxels i and i+1 has one conductivity seen from both sides, so the update is the
divergence form ``u += dt · Σ_axes [c_i (u_{i+1} − u_i) − c_{i−1} (u_i − u_{i−1})]`` with no flux
through the volume's border. ``dt = sigmoid(θ) / (2·dims)`` is learnable and bounded by 1/6, so the
new value is a convex combination of the old value and its six neighbours: the update obeys a
maximum principle and cannot blow up, however many layers. A 1×1 head gives one logit per region.

Shapes: input [B, C_in, X, Y, Z] → logits [B, R, X, Y, Z] (any size; MS: sides divisible by
2**(scales-1)). Parameter counts (1 input channel, 3 regions, from :func:`count_parameters`), at
the defaults (state C = 8 channels, conductivity CNN hidden width 8): DiffNet with K = 6 layers:
45,065; MS DiffNet with 3 scales × 3 layers: 74,004.
"""

from __future__ import annotations

import torch
from torch import nn

from segzoo.models.blocks import ConvNormAct, Ops, ops_for, upsample
from segzoo.models.contract import SegmentationModelDefaults
from segzoo.models.pyramid import image_pyramid


class DiffusionLayer(nn.Module):
    """One explicit, stable diffusion step with learned conductivities (7-point stencil in 3D)."""

    def __init__(self, ops: Ops, channels: int, image_channels: int, hidden: int):
        super().__init__()
        self.dims = ops.dims
        self.conductivity = nn.Sequential(
            ConvNormAct(ops, channels + image_channels, hidden),
            ops.conv(hidden, channels * ops.dims, 3, padding=1),
        )
        self.theta = nn.Parameter(torch.zeros(1))

    @property
    def dt(self) -> torch.Tensor:
        return torch.sigmoid(self.theta) / (2 * self.dims)

    def forward(self, u: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        b, c = u.shape[:2]
        cond = torch.sigmoid(self.conductivity(torch.cat([u, image], dim=1)))
        cond = cond.view(b, self.dims, c, *u.shape[2:])
        change = torch.zeros_like(u)
        for axis in range(self.dims):
            dim = 2 + axis
            n = u.shape[dim]
            # Flux through the "+" face of each voxel; none through the last voxel's face (no-flux border).
            flux = cond[:, axis].narrow(dim, 0, n - 1) * (u.narrow(dim, 1, n - 1) - u.narrow(dim, 0, n - 1))
            zero = torch.zeros_like(u.narrow(dim, 0, 1))
            change = change + torch.cat([flux, zero], dim) - torch.cat([zero, flux], dim)
        return u + self.dt * change


class DiffNet(SegmentationModelDefaults, nn.Module):
    """Lift → K diffusion layers → 1×1 head. See the module docstring for shapes."""

    def __init__(self, in_channels: int, out_channels: int, *, channels: int = 8, layers: int = 6,
                 hidden: int = 8, dims: int = 3):
        super().__init__()
        ops = ops_for(dims)
        self.lift = Lift(ops, in_channels, channels, hidden)
        self.layers = nn.ModuleList(DiffusionLayer(ops, channels, in_channels, hidden) for _ in range(layers))
        self.head = ops.conv(channels, out_channels, 1)

    def diffuse(self, u: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            u = layer(u, image)
        return u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.diffuse(self.lift(x), x))


class Lift(nn.Sequential):
    """Image (and, in MS DiffNet, the upsampled coarser state) → diffusion state [B, C, ...]."""

    def __init__(self, ops: Ops, c_in: int, channels: int, hidden: int):
        super().__init__(ConvNormAct(ops, c_in, hidden), ops.conv(hidden, channels, 3, padding=1))


class MSDiffNet(SegmentationModelDefaults, nn.Module):
    """Coarse to fine: run at 1/2^(S-1), upsample, join with the finer image, run, ... full resolution.

    Each scale has its own lift and ``layers`` diffusion layers; the lift at a finer scale sees the
    image there concatenated with the upsampled state from the coarser one.
    """

    def __init__(self, in_channels: int, out_channels: int, *, channels: int = 8, layers: int = 3,
                 hidden: int = 8, scales: int = 3, dims: int = 3):
        super().__init__()
        ops = ops_for(dims)
        self.scales = scales
        self.divisor = 2 ** (scales - 1)
        self.lifts = nn.ModuleList(
            Lift(ops, in_channels + (0 if s == scales - 1 else channels), channels, hidden) for s in range(scales))
        self.stages = nn.ModuleList(
            nn.ModuleList(DiffusionLayer(ops, channels, in_channels, hidden) for _ in range(layers))
            for _ in range(scales))
        self.head = ops.conv(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, images: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``images``: the input pyramid, computed from ``x`` when not given (tests pass an edited one)."""
        images = image_pyramid(x, self.scales) if images is None else images
        u = None
        for s in reversed(range(self.scales)):  # coarsest first
            inp = images[s] if u is None else torch.cat([images[s], upsample(u, 2)], dim=1)
            u = self.lifts[s](inp)
            for layer in self.stages[s]:
                u = layer(u, images[s])
        return self.head(u)
