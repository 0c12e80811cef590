"""A network's parameters as one flat vector, and back; the layout says which slice is which tensor.

``layout`` is a list of ``[name, shape]`` in ``model.named_parameters()`` order (JSON-able, stored in
every zoo file's sidecar). ``named_parameters()`` lists each tensor once, where nnU-Net's networks name
every conv and norm twice in their state dict. Buffers are not part of the vector: the zoo network
has none (instance norm without running statistics). The checkpoint zoo stores networks this way, and the
nnU-Net export reads them back.
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
