"""Config values that depend on the dataset, checked when the workflow starts (before any job runs).

The dataset is described from what is cheap to read at that moment: ``dataset.json`` (channels, regions) and
the NIfTI headers of the training images (shapes and spacings, no voxel data), or the phantom's settings.
Each problem is one line naming the config key and the dataset's actual values. The zoo's own keys are checked
by :func:`segzoo.weightgen.zoo.plan.problems`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from segzoo.data.fingerprint import ras_shape
from segzoo.data.nifti import ras_spacing
from segzoo.errors import SegzooError
from segzoo.models.memory import model_profile
from segzoo.models.registry import planned_options

PADDING = 2  # a set patch side may be up to this many times the largest training image's (the rest is padding)


@dataclass(frozen=True)
class DatasetOutline:
    """What the start-time checks know of a dataset: channel names, region names, and per training case its
    RAS spacing and shape (from headers)."""

    name: str
    channels: list[str]
    regions: list[str]
    spacings: np.ndarray  # [cases, 3] mm, RAS order
    shapes: np.ndarray  # [cases, 3] voxels, RAS order

    def target_spacing(self, spacing: list[float] | None) -> list[float]:
        """``spacing`` (the config's), or the one the plan will choose by its rule."""
        from segzoo.data.plans import target_spacing as planned_spacing

        return list(spacing) if spacing else planned_spacing(self.spacings, self.shapes)[0]

    def largest_resampled(self, target_spacing: list[float] | None) -> np.ndarray:
        """The largest training image per axis, in voxels at ``target_spacing`` (default: the plan's rule)."""
        return (self.shapes * self.spacings / np.asarray(self.target_spacing(target_spacing))).max(axis=0)


def outline_raw(raw: str | Path) -> DatasetOutline:
    """A raw dataset's outline from dataset.json and the training images' headers (SegzooError if unreadable)."""
    from segzoo.data.dataset import read_dataset

    ds = read_dataset(raw)
    spacings, shapes = [], []
    for case in ds.training:
        try:
            header = nib.load(str(case.images[0]))
        except Exception as e:  # nibabel raises many types; verify reports the file in detail
            raise SegzooError(f"{case.images[0]}: cannot be read ({type(e).__name__})") from None
        spacings.append(ras_spacing(header.affine))
        shapes.append(ras_shape(header.shape[:3], header.affine))
    if not spacings:
        raise SegzooError(f"{raw}: no training cases")
    return DatasetOutline(ds.name, list(ds.channels), list(ds.regions), np.asarray(spacings), np.asarray(shapes))


def outline_phantom(name: str, phantom: dict, regions: list[str]) -> DatasetOutline:
    return DatasetOutline(name, ["T2"], regions, np.asarray([phantom["spacing"]], dtype=float),
                          np.asarray([phantom["shape"]], dtype=float))


def patch_problems(key: str, patch: list[int] | None, models: dict[str, dict], outline: DatasetOutline,
                   target_spacing: list[float] | None) -> list[str]:
    """A patch set in the config that a model cannot take, or that is more than twice every training image."""
    if not patch:
        return []
    found = []
    spacing = outline.target_spacing(target_spacing)
    for name, options in models.items():
        try:  # nnU-Net's networks: the architecture nnU-Net plans for this patch
            options = planned_options(name, options, patch, spacing)
        except SegzooError as e:
            found.append(f"{key}: {e}; null lets the plan choose")
            continue
        divisors = model_profile(name, len(outline.channels), len(outline.regions), options)["divisors"]
        coarsest = [p // d for p, d in zip(patch, divisors)]
        if any(p % d for p, d in zip(patch, divisors)) or (max(divisors) > 1 and np.prod(coarsest) < 2):
            sides = divisors[0] if len(set(divisors)) == 1 else "×".join(map(str, divisors))
            found.append(f"{key}: {patch} does not fit model {name}: every side must be a multiple of {sides} "
                         "(and the coarsest level more than one voxel); null lets the plan choose")
    largest = outline.largest_resampled(target_spacing)
    too_big = [f"{'xyz'[a]} {patch[a]} > 2 x {largest[a]:.0f}" for a in range(3) if patch[a] > PADDING * largest[a]]
    if too_big:  # a patch a little larger than the images is padded by the loader; this much is a mistake
        found.append(f"{key}: {patch} is more than twice every training image of {outline.name} "
                     f"({', '.join(too_big)} voxels at the target spacing): most of each patch would be padding; "
                     "null lets the plan choose")
    return found


def config_problems(config: dict, outline: DatasetOutline, trained: list[str], imported: dict[str, Path]) -> list[str]:
    """Every dataset-dependent config value that does not fit ``outline``, one line each."""
    from segzoo.checkpoint import paths
    from segzoo.data.dataset import channel_order_problem
    from segzoo.io import read_json
    from segzoo.models.registry import ZOO_NETWORK

    spacing = config["preprocess"]["spacing"]
    found = patch_problems("train.patch_size", config["train"]["patch_size"],
                           {m: config["models"][m] for m in trained}, outline, spacing)
    wg = config["weightgen"]
    if wg["enabled"]:
        found += patch_problems("weightgen.patch_size", wg["patch_size"],
                                {ZOO_NETWORK: {"features": wg["features"]}}, outline, spacing)
    schemes = config["preprocess"]["normalization"]
    if schemes and len(schemes) != len(outline.channels):
        found.append(f"preprocess.normalization: {len(schemes)} scheme(s) {schemes} for {len(outline.channels)} "
                     f"channel(s) of {outline.name} ({', '.join(outline.channels)})")
    for row, stem in imported.items():
        try:
            channels = read_json(paths(stem)[1])["channels"]
        except SegzooError as e:
            found.append(f"train.models: {row}: {e}")
            continue
        problem = channel_order_problem(channels, f"train.models: {row} ({stem})", outline.channels,
                                        f"{outline.name}'s dataset.json")
        if problem:
            found.append(problem)
    unknown = [r for r in config["evaluate"]["instance_regions"] or [] if r not in outline.regions]
    if unknown:
        found.append(f"evaluate.instance_regions: {unknown} not regions of {outline.name} "
                     f"(its regions: {', '.join(outline.regions)}); null takes every region named *lesion*")
    folder = config["predict"]["input"]
    if folder:
        from segzoo.inference.images import find_cases

        try:
            find_cases(Path(folder), len(outline.channels))
        except (SegzooError, OSError) as e:
            found.append(f"predict.input: {e}")
    return found
