"""Predicting with an imported nnU-Net model the way nnU-Net v2 does, from the raw images.

An imported model was trained on nnU-Net's preprocessing, not segzoo's, so it gets nnU-Net's steps:

1. read each channel as nnU-Net's readers do: the stored voxels (NibabelIOWithReorient: reoriented to RAS)
   with their axes reversed, [Z, Y, X] (all three readers mimic SimpleITK), then ``transpose_forward``;
2. crop to the filled non-zero box, normalise each channel (its scheme, optionally inside the mask);
3. resample to the configuration's spacing (cubic, or cubic in-plane and nearest along the one axis
   whose spacing is over 3x the smallest);
4. sliding window with nnU-Net's tile positions (step 0.5 of the patch), a Gaussian weight (sigma 1/8 of
   the patch) and mirroring over the allowed axes, tile by tile;
5. resample the logits back (linear, nearest along the anisotropic axis), softmax or sigmoid, segment
   (argmax, or regions in ``regions_class_order``), undo the crop, the transpose and the reader's order.

Like nnU-Net, the weighted logits are summed in float16 (tile corners, where the float16 weights are tiny,
lose precision there as they do in nnU-Net).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy.ndimage import binary_fill_holes, gaussian_filter, map_coordinates, zoom

from segzoo.errors import SegzooError
from segzoo.inference.mirroring import flip_combinations
from segzoo.inference.predictions import THRESHOLD
from segzoo.inference.trained import TrainedModel

ANISOTROPY = 3.0  # nnU-Net resamples the coarse axis separately when its spacing is over 3x the finest


class ReaderGrid:
    """An image's voxels in a reader's axis order, and the way back to nibabel's."""

    def __init__(self, reader: str, first: nib.Nifti1Image):
        self.reader, self.affine, self.shape = reader, first.affine, first.shape[:3]
        self.ornt = None
        if reader == "NibabelIOWithReorient":
            self.ornt = nib.orientations.io_orientation(first.affine)
        zooms = [float(z) for z in first.header.get_zooms()[:3]]
        if self.ornt is not None:
            zooms = [zooms[int(a)] for a in self.ornt[:, 0]]
        self.spacing = zooms[::-1]

    def forward(self, data: np.ndarray) -> np.ndarray:
        if self.ornt is not None:
            data = nib.orientations.apply_orientation(data, self.ornt)
        return data.transpose(2, 1, 0)

    def backward(self, data: np.ndarray) -> np.ndarray:
        """[..., *reader spatial] → [..., *nibabel spatial] (leading axes kept)."""
        lead = data.ndim - 3
        data = data.transpose(*range(lead), lead + 2, lead + 1, lead)
        if self.ornt is not None:
            inverse = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                                      nib.orientations.io_orientation(self.affine))
            flat = data.reshape(-1, *data.shape[lead:])
            back = np.stack([nib.orientations.apply_orientation(d, inverse) for d in flat])
            data = back.reshape(*data.shape[:lead], *back.shape[1:])
        return np.ascontiguousarray(data)


def crop_to_nonzero(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[slice, ...]]:
    """nnU-Net's crop: the box of the hole-filled union of non-zero voxels; the mask as int8 (0 in, -1 out)."""
    mask = binary_fill_holes(np.any(data != 0, axis=0))
    where = np.argwhere(mask)
    if where.size == 0:
        box = tuple(slice(0, s) for s in mask.shape)
    else:
        box = tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(where.min(0), where.max(0)))
    seg = np.where(mask[box], np.int8(0), np.int8(-1))
    return data[(slice(None), *box)], seg, box


def normalise(image: np.ndarray, scheme: str, use_mask: bool, seg: np.ndarray, properties: dict) -> np.ndarray:
    """One channel, as nnU-Net's normalisation classes do it (float32 arithmetic)."""
    image = image.astype(np.float32, copy=True)
    if scheme == "ZScoreNormalization":
        if use_mask:
            mask = seg >= 0
            mean, std = image[mask].mean(), image[mask].std()
            image[mask] = (image[mask] - mean) / max(std, 1e-8)
        else:
            mean, std = image.mean(), image.std()
            image -= mean
            image /= max(std, 1e-8)
    elif scheme == "CTNormalization":
        lower, upper = properties["percentile_00_5"], properties["percentile_99_5"]
        np.clip(image, lower, upper, out=image)
        image -= properties["mean"]
        image /= max(properties["std"], 1e-8)
    elif scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= np.clip(image.max(), a_min=1e-8, a_max=None)
    return image


def new_shape(shape, spacing, target) -> list[int]:
    return [int(round(s * a / b)) for s, a, b in zip(shape, spacing, target)]


def _separate_axis(current, target) -> int | None:
    for spacing in (current, target):
        if max(spacing) / min(spacing) > ANISOTROPY:
            axis = int(np.argmax(spacing))
            return axis if list(spacing).count(max(spacing)) == 1 else None
    return None


def resample(data: np.ndarray, shape: list[int], current, target, order: int, order_z: int = 0) -> np.ndarray:
    """[C, *spatial] to ``shape``: scipy zoom with edge alignment (scikit-image's resize, which nnU-Net calls),
    the anisotropic axis separately with ``order_z``."""
    if list(data.shape[1:]) == list(shape):
        return data
    axis = _separate_axis(current, target)
    out = []
    for channel in data.astype(np.float32):
        if axis is None:
            out.append(_zoom(channel, shape, order))
            continue
        moved = np.moveaxis(channel, axis, 0)
        plane = [s for a, s in enumerate(shape) if a != axis]
        slices = np.stack([_zoom(s, plane, order) for s in moved])
        if slices.shape[0] != shape[axis]:
            scale = slices.shape[0] / shape[axis]
            grid = np.mgrid[tuple(slice(0, n) for n in (shape[axis], *plane))].astype(np.float32)
            grid[0] = scale * (grid[0] + 0.5) - 0.5
            slices = map_coordinates(slices, grid, order=order_z, mode="nearest")
        out.append(np.moveaxis(slices, 0, axis))
    return np.stack(out)


def _zoom(array: np.ndarray, shape, order: int) -> np.ndarray:
    """scikit-image's ``resize(order, mode="edge", anti_aliasing=False)``: an edge-aligned zoom whose output is
    clipped to the input's range (no spline overshoot)."""
    factors = [n / o for n, o in zip(shape, array.shape)]
    array = array.astype(np.float64)
    out = zoom(array, factors, order=order, mode="nearest", grid_mode=True)
    return np.clip(out, array.min(), array.max()).astype(np.float32)


def tile_starts(size: int, tile: int, step: float = 0.5) -> list[int]:
    """nnU-Net's tile positions along one axis: evenly spread, at most ``step * tile`` apart."""
    if size <= tile:
        return [0]
    n = int(np.ceil((size - tile) / (tile * step))) + 1
    spacing = (size - tile) / (n - 1)
    return [int(round(spacing * i)) for i in range(n)]


def gaussian_weight(patch: list[int], sigma_scale: float = 0.125, scale: float = 10.0) -> torch.Tensor:
    """nnU-Net's tile weight in float16: a unit impulse at the centre, Gaussian-filtered, scaled to a maximum
    of ``scale``, zeros raised to the smallest positive value."""
    impulse = np.zeros(patch)
    impulse[tuple(p // 2 for p in patch)] = 1
    weight = gaussian_filter(impulse, [p * sigma_scale for p in patch], 0, mode="constant", cval=0)
    weight = torch.from_numpy(weight / (weight.max() / scale)).half()
    weight[weight == 0] = weight[weight > 0].min()
    return weight


@torch.no_grad()
def sliding_window(model: torch.nn.Module, image: np.ndarray, patch: list[int], mirror_axes: list[int],
                   device: torch.device, accumulate: torch.dtype = torch.half) -> torch.Tensor:
    """Logits [K, *spatial] (on the CPU, in ``accumulate``) for one preprocessed image [C, *spatial] as nnU-Net
    computes them: its tile positions, its Gaussian, mirroring per tile over every combination of
    ``mirror_axes``, weighted logits and weights summed in float16 (``accumulate=torch.float32`` gives the
    reference that float16's rounding is measured against)."""
    pad = [max(p - s, 0) for p, s in zip(patch, image.shape[1:])]
    padding = [(0, 0)] + [(d // 2, d - d // 2) for d in pad]
    padded = np.pad(image, padding, mode="constant")
    x = torch.from_numpy(np.ascontiguousarray(padded))[None].to(device)
    weight = gaussian_weight(patch).to(device=device, dtype=accumulate)
    flips = [tuple(a + 2 for a in combo) for combo in flip_combinations(mirror_axes)[1:]]
    total, norm = None, torch.zeros(padded.shape[1:], dtype=accumulate, device=device)
    for start in itertools.product(*(tile_starts(s, p) for s, p in zip(padded.shape[1:], patch))):
        box = tuple(slice(s, s + p) for s, p in zip(start, patch))
        tile = x[(slice(None), slice(None), *box)]
        logits = model(tile).float()
        for dims in flips:
            logits += torch.flip(model(torch.flip(tile, dims)).float(), dims)
        logits /= len(flips) + 1
        if total is None:
            total = torch.zeros((logits.shape[1], *padded.shape[1:]), dtype=accumulate, device=device)
        total[(slice(None), *box)] += logits[0] * weight
        norm[box] += weight
    torch.div(total, norm, out=total)
    inner = tuple(slice(lo, lo + s) for (lo, _), s in zip(padding[1:], image.shape[1:]))
    return total[(slice(None), *inner)].cpu()


def predict_case(models: torch.nn.Module | list[torch.nn.Module], trained: TrainedModel, images: list[Path],
                 device: torch.device, mirror: bool = True,
                 accumulate: torch.dtype = torch.half) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [K, *nibabel grid] (one per head) and nnU-Net's label map [*nibabel grid] for one case.

    Several models (an imported model's folds, sharing its plans) are ensembled as nnU-Net ensembles folds: their
    sliding-window logits are summed and divided by their number (in float16, on the CPU) before resampling."""
    models = [models] if isinstance(models, torch.nn.Module) else list(models)
    nn = trained.nnunet
    volumes = [nib.load(str(p)) for p in images]
    if len(volumes) != len(trained.channels):
        raise SegzooError(f"{images[0]}: {len(volumes)} channel file(s); the model expects {len(trained.channels)}")
    grid = ReaderGrid(nn["reader"], volumes[0])
    data = np.stack([grid.forward(np.asarray(v.dataobj, dtype=np.float32).reshape(v.shape[:3])) for v in volumes])
    forward = nn["transpose_forward"]
    data = data.transpose(0, *[a + 1 for a in forward])
    spacing = [grid.spacing[a] for a in forward]
    transposed_shape = data.shape[1:]
    data, seg, box = crop_to_nonzero(data)
    properties = nn["intensity_properties"]
    data = np.stack([normalise(data[c], scheme, bool(nn["use_mask_for_norm"][c]), seg, properties.get(str(c), {}))
                     for c, scheme in enumerate(nn["normalization_schemes"])])
    cropped_shape = list(data.shape[1:])
    target = nn["spacing"]
    data = resample(data, new_shape(cropped_shape, spacing, target), spacing, target, order=3)
    axes = nn["mirror_axes"] if mirror else []
    logits = None
    for model in models:
        fold = sliding_window(model, data, trained.patch_size, axes, device, accumulate)
        logits = fold if logits is None else logits.add_(fold)
    if len(models) > 1:
        logits /= len(models)
    logits = logits.float().numpy()
    logits = resample(logits, cropped_shape, target, spacing, order=1)
    if trained.output == "softmax":
        prob = torch.softmax(torch.from_numpy(logits), 0).numpy()
        labels = np.argmax(prob, axis=0).astype(np.uint8)
    else:
        prob = torch.sigmoid(torch.from_numpy(logits)).numpy()
        labels = np.zeros(prob.shape[1:], dtype=np.uint8)
        for head, value in enumerate(nn["regions_class_order"]):
            labels[prob[head] > THRESHOLD] = value
    full_prob = np.zeros((prob.shape[0], *transposed_shape), dtype=np.float32)
    full_prob[(slice(None), *box)] = prob
    if trained.output == "softmax":
        outside = np.ones(transposed_shape, dtype=bool)
        outside[box] = False
        full_prob[0][outside] = 1.0
    full_labels = np.zeros(transposed_shape, dtype=np.uint8)
    full_labels[box] = labels
    backward = nn["transpose_backward"]
    full_prob = full_prob.transpose(0, *[a + 1 for a in backward])
    full_labels = full_labels.transpose(*backward)
    return grid.backward(full_prob), grid.backward(full_labels)


def region_outputs(trained: TrainedModel, regions: dict[str, list[int]], prob: np.ndarray, labels: np.ndarray,
                   source: str) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation dataset's regions from a model's heads: probabilities [R, ...] and masks [R, ...].

    A softmax model's region probability sums its classes whose value lies in the region; a region model's
    head is the one with the same label values (or, failing that, the same name). Masks come from nnU-Net's
    label map, so they are nnU-Net's segmentation."""
    probs, masks = [], []
    for name, values in regions.items():
        if trained.output == "softmax":
            classes = [i for i, v in enumerate(trained.heads.values()) if v in values]
            probs.append(prob[classes].sum(0) if classes else np.zeros(prob.shape[1:], np.float32))
        else:
            heads = list(trained.heads.items())
            match = [i for i, (_, v) in enumerate(heads) if sorted(v) == sorted(values)] or \
                    [i for i, (n, _) in enumerate(heads) if n == name]
            if not match:
                raise SegzooError(f"{source}: the model has no head for region {name} {values} "
                                  f"(its regions: {dict(heads)})")
            probs.append(prob[match[0]])
        masks.append(np.isin(labels, values))
    return np.clip(np.stack(probs), 0.0, 1.0).astype(np.float32), np.stack(masks).astype(np.uint8)
