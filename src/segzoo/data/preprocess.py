"""nnU-Net-style preprocessing with MONAI transforms, and its inverse back to the original grid.

Per case: reorient to RAS, resample to the dataset's median spacing (cubic spline; label maps as
one-hot channels, each resampled the same way, then argmax), z-score each channel, crop to the box
where any channel is non-zero. The output folder's layout (file names, the plan file)
belongs to :mod:`segzoo.data.preprocessed`, which writes and reads it.

Mapping a prediction back (:func:`to_original_grid`) resamples from the preprocessed affine to the
original one, so it undoes reorientation, resampling and cropping in one step; where spacing and
orientation already match it is an exact integer shift.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity, Orientation, Spacing, SpatialResample
from monai.transforms.utils import generate_spatial_bounding_box

from segzoo.data.dataset import read_dataset
from segzoo.data.nifti import load_volume
from segzoo.data.verify import verify
from segzoo.data.preprocessed import Preprocessed, write_case, write_plan
from segzoo.data.plans import data_plan
from segzoo.errors import SegzooError
from segzoo.io import output_dir

IMAGE_ORDER = 3  # cubic spline for images (nnU-Net's choice) and one-hot labels (best round-trip Dice)


def median_spacing(summary: dict) -> list[float]:
    """Median RAS spacing over the training cases of a verification summary."""
    spacings = [c["ras_spacing"] for c in summary["cases"] if not c["test"]]
    return [float(s) for s in np.median(np.asarray(spacings), axis=0)]


def preprocess_dataset(raw: str | Path, out: str | Path, spacing: list[float] | None = None, *,
                       fingerprint: dict | None = None, normalization: list[str] | None = None) -> Preprocessed:
    """Verify ``raw``, then write its preprocessed cases to ``out`` (all or nothing); return the folder.

    With the dataset's ``fingerprint`` (``segzoo fingerprint``) the target spacing and each channel's
    normalisation are planned from it (:func:`segzoo.data.plans.data_plan`; ``spacing`` and
    ``normalization`` override); without one, ``spacing`` or the median spacing and a per-image z-score."""
    ds = read_dataset(raw)
    summary = verify(ds)
    schemes = spacing_range = None
    if fingerprint is not None:
        if fingerprint["channels"] != ds.channels:
            raise SegzooError(f"{raw}: channels {ds.channels} differ from its fingerprint's {fingerprint['channels']}")
        plan = data_plan(fingerprint, spacing=spacing, normalization_override=normalization)
        target, schemes = plan["target_spacing"], plan["normalization"]
        spacings = np.asarray([c["spacing"] for c in fingerprint["cases"]])
        spacing_range = [spacings.min(axis=0).tolist(), spacings.max(axis=0).tolist()]
    elif normalization:
        raise SegzooError("a normalisation other than the z-score needs the dataset's fingerprint (--fingerprint)")
    else:
        target = [float(s) for s in spacing] if spacing else median_spacing(summary)
    out = Path(out)
    with output_dir(out) as tmp:
        cases = []
        for case in ds.cases:
            props = preprocess_case(case.images, case.label, target, n_channels=len(ds.channels),
                                    label_values=sorted(ds.label_values), out_dir=tmp, case_id=case.id,
                                    normalization=schemes)
            cases.append({"id": case.id, "test": case.test, "labelled": case.label is not None,
                          "shape": props["preprocessed"]["shape"]})
        write_plan(tmp, {
            "dataset": ds.name,
            "raw": str(raw),  # as given: results stay the same wherever the checkout lives
            "layout": ds.layout,
            "channels": ds.channels,
            "regions": ds.regions,
            "label_values": sorted(ds.label_values),
            "ignore_label": ds.ignore_label,
            "target_spacing": target,
            **({"normalization": schemes, "spacing_range": spacing_range} if schemes is not None else {}),
            "image_order": IMAGE_ORDER,
            "cases": cases,
        })
    return Preprocessed(out)


def _as_metatensor(data: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.as_tensor(np.ascontiguousarray(data)), affine=torch.as_tensor(affine))


def _to_ras(img: MetaTensor) -> MetaTensor:
    return Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(img)


def _one_hot(label: np.ndarray, values: list[int]) -> np.ndarray:
    """[len(values), X, Y, Z] float32, one channel per label value."""
    return np.stack([label == v for v in values]).astype(np.float32)


def label_dtype(values: list[int]) -> np.dtype:
    """uint8 label maps unless a declared value needs more."""
    return np.dtype(np.uint8 if max(values) <= 255 else np.uint16)


def _argmax_values(onehot: np.ndarray, values: list[int]) -> np.ndarray:
    """Back from (interpolated) one-hot channels to a label map."""
    return np.asarray(values, dtype=label_dtype(values))[np.argmax(onehot, axis=0)]


def normalize(image: torch.Tensor, schemes: list[dict] | None) -> torch.Tensor:
    """Each channel of ``image`` [C, X, Y, Z] by its plan (:mod:`segzoo.data.plans`): ``zscore`` per image,
    ``ct`` clipped and scaled by the dataset's foreground statistics, ``none`` unchanged. ``None``: z-score all."""
    if schemes is None or all(s["scheme"] == "zscore" for s in schemes):
        return NormalizeIntensity(channel_wise=True)(image)
    if len(schemes) != image.shape[0]:
        raise SegzooError(f"{len(schemes)} normalisation(s) planned for an image of {image.shape[0]} channel(s)")
    channels = []
    for c, scheme in enumerate(schemes):
        channel = image[c:c + 1]
        if scheme["scheme"] == "zscore":
            channel = NormalizeIntensity()(channel)
        elif scheme["scheme"] == "ct":
            channel = NormalizeIntensity(subtrahend=scheme["mean"], divisor=scheme["std"])(
                torch.clamp(channel, *scheme["clip"]))
        channels.append(channel)
    return torch.cat(channels)


def preprocess_case(images: tuple[Path, ...], label: Path | None, target_spacing: list[float], *,
                    n_channels: int, label_values: list[int], out_dir: Path, case_id: str,
                    normalization: list[dict] | None = None) -> dict:
    """Preprocess one case into ``out_dir``; return its properties (written beside its arrays).

    ``normalization``: one entry per channel from the plans (``None``: z-score every channel)."""
    vols = [load_volume(p) for p in images]
    first = vols[0]
    if len(vols) == 1 and n_channels > 1:  # Decathlon: one file, channels last
        channels = [first.data[..., c] for c in range(n_channels)]
    else:
        channels = [np.squeeze(v.data, axis=tuple(range(3, v.data.ndim))) for v in vols]
    affine = first.affine
    image = _as_metatensor(np.stack(channels).astype(np.float32), affine)
    image = Spacing(pixdim=target_spacing, mode=IMAGE_ORDER, padding_mode="nearest")(_to_ras(image))
    seg = None
    if label is not None:
        lab = load_volume(label)
        onehot = _as_metatensor(_one_hot(lab.data, label_values), lab.affine)
        onehot = Spacing(pixdim=target_spacing, mode=IMAGE_ORDER, padding_mode="nearest")(_to_ras(onehot))
        seg = MetaTensor(_argmax_values(onehot.numpy(), label_values)[None], affine=onehot.affine)

    # Crop to where any channel is non-zero (nnU-Net's foreground crop; a no-op for noisy MRI).
    start, end = generate_spatial_bounding_box(image, select_fn=lambda x: x != 0)
    box = tuple(slice(s, e) for s, e in zip(start, end))
    resampled_shape = list(image.shape[1:])
    crop_affine = image.affine.numpy().copy()
    crop_affine[:3, 3] = crop_affine[:3, :3] @ np.asarray(start, dtype=np.float64) + crop_affine[:3, 3]
    array = normalize(image[(slice(None), *box)], normalization)

    props = {
        "id": case_id,
        "original": {
            "shape": list(first.data.shape[:3]),
            "affine": first.affine.tolist(),
            "spacing": [float(s) for s in first.spacing],
            "orientation": "".join(nib.aff2axcodes(first.affine)),
        },
        "resampled_shape": resampled_shape,
        "crop": {"start": [int(s) for s in start], "end": [int(e) for e in end]},
        "preprocessed": {
            "shape": list(array.shape[1:]),
            "affine": crop_affine.tolist(),
            "spacing": [float(s) for s in target_spacing],
        },
    }
    label_array = None if seg is None else seg[(slice(None), *box)].numpy().astype(label_dtype(label_values))
    write_case(out_dir, case_id, np.asarray(array.numpy(), dtype=np.float32), label_array, props)
    return props


def to_original_grid(array: np.ndarray, props: dict, mode: str = "nearest") -> np.ndarray:
    """Map ``array`` [C, X, Y, Z] on the preprocessed grid back to the original image grid.

    ``mode`` is ``"nearest"`` for label maps and masks, ``"bilinear"`` for probabilities.
    Voxels outside the preprocessed crop become 0.
    """
    src = _as_metatensor(np.asarray(array, dtype=np.float32), np.asarray(props["preprocessed"]["affine"]))
    resample = SpatialResample(mode=mode, padding_mode="zeros", dtype=torch.float64)
    out = resample(src, dst_affine=torch.as_tensor(props["original"]["affine"], dtype=torch.float64),
                   spatial_size=props["original"]["shape"])
    return np.asarray(out.numpy())


def label_to_original_grid(seg: np.ndarray, props: dict, label_values: list[int]) -> np.ndarray:
    """Map a label map [X, Y, Z] (or [1, X, Y, Z]) back to the original grid: one-hot linear, then argmax."""
    seg = np.asarray(seg).reshape(np.asarray(seg).shape[-3:])
    onehot = to_original_grid(_one_hot(seg, label_values), props, mode="bilinear")
    # Outside the crop every channel is 0 and argmax gives the first value, background.
    return _argmax_values(onehot, label_values)
