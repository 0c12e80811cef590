"""A network's parameters as one flat vector, and back; the layout says which slice is which tensor.

``layout`` is a list of ``[name, shape]`` in ``model.named_parameters()`` order (JSON-able, stored in
every zoo file's sidecar). ``named_parameters()`` lists each tensor once, where nnU-Net's networks name
every conv and norm twice in their state dict. Buffers are not part of the vector: the zoo network
has none (instance norm without running statistics).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segzoo.errors import SegzooError


def layout_of(model: nn.Module) -> list[list]:
    return [[name, list(p.shape)] for name, p in model.named_parameters()]


def size_of(layout: list[list]) -> int:
    return sum(math.prod(shape) for _, shape in layout)


def flatten(model: nn.Module) -> torch.Tensor:
    """[P] float32 copy of every parameter, in layout order."""
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in model.parameters()])


def unflatten(vector: torch.Tensor, layout: list[list]) -> dict[str, torch.Tensor]:
    """[P] → {name: tensor of its shape}; the exact inverse of :func:`flatten` (views of ``vector``)."""
    if vector.ndim != 1 or vector.numel() != size_of(layout):
        raise SegzooError(f"parameter vector of shape {tuple(vector.shape)} does not fit a layout of "
                          f"{size_of(layout)} parameters")
    out, at = {}, 0
    for name, shape in layout:
        n = math.prod(shape)
        out[name] = vector[at:at + n].reshape(shape)
        at += n
    return out


def load_vector(model: nn.Module, vector: torch.Tensor) -> nn.Module:
    """Copy ``vector`` into ``model``'s parameters (in place) and return the model."""
    tensors = unflatten(vector, layout_of(model))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(tensors[name])
    return model


def layer_sizes(layout: list[list]) -> list[int]:
    return [math.prod(shape) for _, shape in layout]


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
