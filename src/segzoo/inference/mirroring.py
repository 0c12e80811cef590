"""Test-time mirroring: the axes along which a model may be mirrored, and every combination of them.

A model is mirror-invariant only along the axes it saw mirrored in training. Averaging over flips along other
axes averages in predictions of an anatomy the model never saw (left and right swapped, a hippocampus turned
front to back) and lowers Dice on data that is not mirror-symmetric. nnU-Net records the allowed axes in each
checkpoint (``inference_allowed_mirroring_axes``); segzoo does the same:

- a segzoo run's sidecar holds ``mirror_axes``, the spatial axes of the preprocessed grid (RAS order: 0 = X,
  1 = Y, 2 = Z) that ``train.augment.flip_axes`` flipped, sorted; ``[]`` for a run trained without flips;
- an imported nnU-Net model keeps nnU-Net's axes under ``nnunet.mirror_axes`` (in nnU-Net's own, transposed,
  axis order, where its sliding window applies them);
- a run written before segzoo recorded the axes records no training settings at all; it is taken to have had
  the default ``train.augment.flip_axes`` (:data:`UNRECORDED_DEFAULT`, the default since augmentation existed),
  and a notice says so.

Test-time mirroring then averages the prediction over every combination of exactly those axes, the unflipped
one included (in nnU-Net's order: ``()``, then each single axis, each pair, ... in the order the axes are
recorded).

Whether a prediction mirrors at all (:func:`mirroring`): asked for (``--tta``) or declined (``--no-tta``), or by
default as the model's maker does: an imported nnU-Net model is mirrored, as ``nnUNetv2_predict`` mirrors unless
given ``--disable_tta``; a segzoo run is not (segzoo's default since ``predict`` existed: on the phantom the
default flips, X only, change its Dice by about 0.001 and double the sliding-window passes; README, bench/tta.py).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from segzoo.inference.trained import TrainedModel

UNRECORDED_DEFAULT = [0]  # train.augment.flip_axes's schema default, for runs that record no axes
AXIS_NAMES = "XYZ"


def trained_axes(augment: dict) -> list[int]:
    """The axes ``train.augment`` flips, sorted, each once: what a run records as ``mirror_axes``."""
    return sorted({int(a) for a in augment.get("flip_axes", [])})


def model_axes(trained: TrainedModel) -> tuple[list[int], str | None]:
    """The axes a checkpoint's model may be mirrored along, and a notice when they are assumed, not recorded."""
    if trained.nnunet is not None:
        return [int(a) for a in trained.nnunet["mirror_axes"]], None
    if trained.mirror_axes is not None:
        return [int(a) for a in trained.mirror_axes], None
    return list(UNRECORDED_DEFAULT), ("records no mirror axes (trained before segzoo recorded them); assuming the "
                                      f"default train.augment.flip_axes {UNRECORDED_DEFAULT}")


def mirroring(trained: TrainedModel, requested: bool | None) -> tuple[list[int], str]:
    """The axes a prediction mirrors ``trained`` along (``[]``: none) and one console line saying which flips and
    why. ``requested``: True (``--tta``), False (``--no-tta``), None (the default for the model's kind)."""
    axes, _ = model_axes(trained)
    nnunet = trained.imported
    if requested is None:
        used = nnunet
        why = ("nnU-Net's default for its models, as nnUNetv2_predict; --no-tta / --disable_tta turns it off"
               if nnunet else
               f"segzoo runs' default; --tta averages the {len(flip_combinations(axes))} flips it was trained with")
    else:
        used, why = requested, "--tta" if requested else "--no-tta / --disable_tta"
    return (axes if used else []), describe(str(trained.stem), axes, nnunet, used=used, why=why)


def flip_combinations(axes: list[int]) -> list[tuple[int, ...]]:
    """``()`` and every non-empty combination of ``axes``: the flips test-time mirroring averages over."""
    return [()] + [combo for n in range(1, len(axes) + 1) for combo in itertools.combinations(axes, n)]


def describe(source: str, axes: list[int], nnunet: bool = False, *, used: bool = True, why: str = "") -> str:
    """One line for the console: which flips a model is averaged over (or that it gets none), and ``why``
    (the default, or the option that chose it)."""
    because = f" ({why})" if why else ""
    if not axes:
        return f"{source}: trained without flips: no test-time mirroring"
    if not used:
        return f"{source}: no test-time mirroring{because}"
    names = ", ".join(f"{a}" if nnunet else f"{a} ({AXIS_NAMES[a]})" for a in axes)
    flips = " ".join(str(list(c)) for c in flip_combinations(axes))
    where = "nnU-Net's axes" if nnunet else "axes"
    return f"{source}: test-time mirroring along {where} {names}: {len(flip_combinations(axes))} flips {flips}{because}"
