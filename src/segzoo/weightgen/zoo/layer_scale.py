"""G.pt's normalisation of weight changes: one scale per layer of a network's flat parameter vector
(:mod:`segzoo.models.flat`)."""

from __future__ import annotations

import math

import torch

from segzoo.errors import SegzooError
from segzoo.models.flat import layer_sizes


class LayerScale:
    """One scale per layer (tensor of the layout): ``x = (θ − θ_start) / σ_layer`` and back.

    σ of a layer is the root mean square of its values over the samples it is fitted on (for G.pt: the
    training zoo's weight changes θ − θ_start), rounded to a power of two; a layer that never changes
    (a deep-supervision head nobody trains, an untouched bias) gets σ = 1. Powers of two and float64
    arithmetic make :meth:`decode` the exact inverse of :meth:`encode`.
    """

    def __init__(self, layout: list[list], sigma: list[float]):
        if len(sigma) != len(layout):
            raise SegzooError(f"{len(sigma)} layer scales for a layout of {len(layout)} layers")
        self.layout, self.sigma = layout, [float(s) for s in sigma]
        self.per_parameter = torch.cat([torch.full((n,), s, dtype=torch.float64)
                                        for n, s in zip(layer_sizes(layout), self.sigma)])  # [P]

    @classmethod
    def fit(cls, layout: list[list], samples: list[torch.Tensor]) -> LayerScale:
        """Fit on ``samples``, each [n, P] (e.g. one run's checkpoints minus its start)."""
        squares = sum(s.double().square().sum(0) for s in samples)  # [P]
        count = sum(len(s) for s in samples)
        sigma, at = [], 0
        for n in layer_sizes(layout):
            rms = math.sqrt(float(squares[at:at + n].sum()) / (n * count))
            sigma.append(2.0 ** round(math.log2(rms)) if rms > 0 else 1.0)
            at += n
        return cls(layout, sigma)

    def encode(self, theta: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """[..., P] float32 parameters and their start → [..., P] float64 normalised changes."""
        return (theta.double() - start.double()) / self.per_parameter

    def decode(self, x: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """Normalised changes [..., P] and the start → float32 parameters [..., P]."""
        return (x.double() * self.per_parameter + start.double()).float()
