"""Training batches: patches cut from memory-mapped preprocessed cases, foreground oversampling, MONAI augmentation.

Batch ``k`` is a pure function of ``(seed, k)``: its case choice, patch position and augmentation all
come from ``numpy.random.default_rng([seed, k])``. So a run resumed at step k sees exactly the batches
an uninterrupted run would, and DataLoader workers need no seeding of their own.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import (Compose, RandAdjustContrastd, RandAffined, RandFlipd, RandGaussianNoised,
                              RandScaleIntensityd)
from torch.utils.data import Dataset

from segzoo.data.preprocessed import Preprocessed

MAX_FOREGROUND_POINTS = 20_000  # per case and label value, like nnU-Net's class locations


def regions_to_channels(seg: np.ndarray, regions: list[list[int]]) -> np.ndarray:
    """Label map [..., X, Y, Z] → float32 [R, X, Y, Z], one binary channel per region."""
    seg = seg.reshape(seg.shape[-3:])
    return np.stack([np.isin(seg, values) for values in regions]).astype(np.float32)


def build_augmentation(augment: dict) -> Compose | None:
    """MONAI transforms from the config's ``train.augment`` section (None when all are off)."""
    keys = ["image", "label"]
    transforms = []
    for axis in augment.get("flip_axes", []):
        transforms.append(RandFlipd(keys, prob=0.5, spatial_axis=axis))
    if augment.get("rotate_deg", 0) or augment.get("scale", 0):
        angle = np.deg2rad(augment.get("rotate_deg", 0))
        transforms.append(RandAffined(keys, prob=augment.get("prob", 0.2), rotate_range=(angle, angle, angle),
                                      scale_range=augment.get("scale", 0), mode=("bilinear", "nearest"),
                                      padding_mode="zeros"))
    if augment.get("intensity", 0):
        transforms.append(RandScaleIntensityd("image", factors=augment["intensity"], prob=augment.get("prob", 0.2)))
        transforms.append(RandAdjustContrastd("image", gamma=(0.8, 1.25), prob=augment.get("prob", 0.2)))
    if augment.get("noise", 0):
        transforms.append(RandGaussianNoised("image", std=augment["noise"], prob=augment.get("prob", 0.2)))
    return Compose(transforms) if transforms else None


class PatchBatches(Dataset):
    """``dataset[k]`` is training batch k: ``{"image": [B, C, *patch], "label": [B, R, *patch]}`` float32.

    ``foreground_fraction`` of each batch's samples (the last ones, as nnU-Net does) are centred on a
    random voxel of a random label value present in the case; the rest are placed uniformly. With
    ``centre_values`` (e.g. a lesion region's label values) those samples are centred on voxels of these
    values only, in a case that has some (cases without them are not drawn for those samples).
    """

    def __init__(self, pre: Preprocessed, case_ids: list[str], patch_size: list[int], batch_size: int, *,
                 foreground_fraction: float, seed: int, augment: dict | None = None,
                 centre_values: list[int] | None = None):
        self.regions = list(pre.regions.values())
        self.images = [pre.image(c, mmap=True) for c in case_ids]
        self.segs = [pre.label(c, mmap=True) for c in case_ids]
        self.patch = np.asarray(patch_size)
        self.batch_size, self.seed = batch_size, seed
        self.n_forced = int(round(batch_size * foreground_fraction))
        self.augment = build_augmentation(augment or {})
        self.centre_values = None if centre_values is None else {int(v) for v in centre_values}
        self.foreground = [self._foreground_points(i, seg) for i, seg in enumerate(self.segs)]
        self.centre_cases = [i for i, points in enumerate(self.foreground) if points]

    def _foreground_points(self, index: int, seg: np.ndarray) -> list[np.ndarray]:
        """Coordinates of each non-zero label value (or of each of ``centre_values``) in one case, subsampled
        to a bounded number."""
        rng = np.random.default_rng([self.seed, index, 7])
        seg = np.asarray(seg[0])
        points = []
        for value in np.unique(seg):
            if value == 0 or (self.centre_values is not None and int(value) not in self.centre_values):
                continue
            coords = np.argwhere(seg == value)
            if len(coords) > MAX_FOREGROUND_POINTS:
                coords = coords[np.sort(rng.choice(len(coords), MAX_FOREGROUND_POINTS, replace=False))]
            points.append(coords)
        return points

    def __len__(self) -> int:
        return 2**62  # indexed by step; the sampler decides which steps are drawn

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        images, labels = [], []
        for i in range(self.batch_size):
            forced = i >= self.batch_size - self.n_forced and bool(self.centre_cases)
            if forced and self.centre_values is not None:
                case = self.centre_cases[int(rng.integers(len(self.centre_cases)))]
            else:
                case = int(rng.integers(len(self.images)))
                forced = forced and bool(self.foreground[case])
            image, label = self._cut(case, rng, forced)
            if self.augment is not None:
                self.augment.set_random_state(seed=int(rng.integers(2**31)))
                out = self.augment({"image": image, "label": label})
                image, label = np.asarray(out["image"]), np.asarray(out["label"])
            images.append(image)
            labels.append(label)
        return {"image": torch.as_tensor(np.stack(images), dtype=torch.float32),
                "label": torch.as_tensor(np.stack(labels), dtype=torch.float32)}

    def _cut(self, case: int, rng: np.random.Generator, forced: bool) -> tuple[np.ndarray, np.ndarray]:
        image, seg = self.images[case], self.segs[case]
        shape = np.asarray(image.shape[1:])
        if forced:
            points = self.foreground[case][int(rng.integers(len(self.foreground[case])))]
            centre = points[int(rng.integers(len(points)))]
            start = centre - self.patch // 2
        else:
            start = np.array([rng.integers(min(0, s - p), max(0, s - p) + 1) for s, p in zip(shape, self.patch)])
        # Inside the volume where it is large enough; where it is smaller, the volume lies inside the patch.
        start = np.clip(start, np.minimum(0, shape - self.patch), np.maximum(0, shape - self.patch))
        lo, hi = np.maximum(start, 0), np.minimum(start + self.patch, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        pad = [(0, 0)] + [(int(a - s), int(s + p - b)) for a, b, s, p in zip(lo, hi, start, self.patch)]
        image_patch = np.pad(np.asarray(image[(slice(None), *box)], dtype=np.float32), pad)
        label_patch = regions_to_channels(np.pad(np.asarray(seg[(slice(None), *box)]), pad), self.regions)
        return image_patch, label_patch
