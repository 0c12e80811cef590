"""What every segmentation model promises the training loop, inference and the figures.

``SegmentationModel`` is the contract (checked when a model is built): ``model(x)`` maps ``[B, C, *spatial]``
to logits ``[B, R, *spatial]``, one channel per region; in training mode a model with deep supervision
returns a list of logits instead, full resolution first (the loss downsamples the target to each);
``divisor`` is what every patch side must be a multiple of (a model whose axes differ, as nnU-Net's networks on
thick slices, also has ``divisors``, one per axis, and ``divisor`` is the largest: :func:`side_divisors`);
``auxiliary_loss(target)`` is an extra training loss term (or None). ``SegmentationModelDefaults`` gives a model
the plain answers: any patch side, no auxiliary loss.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SegmentationModel(Protocol):
    divisor: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]: ...

    def auxiliary_loss(self, target: torch.Tensor) -> torch.Tensor | None: ...


class SegmentationModelDefaults:
    """Mixin for models without a patch constraint or an auxiliary loss."""

    divisor = 1

    def auxiliary_loss(self, target: torch.Tensor) -> torch.Tensor | None:
        return None


def side_divisors(model, dim: int = 3) -> tuple[int, ...]:
    """What each patch side of ``model`` must be a multiple of: its ``divisors`` where it has them, else its
    ``divisor`` on every axis."""
    return tuple(getattr(model, "divisors", None) or (model.divisor,) * dim)
