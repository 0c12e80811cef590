"""Checking a raw dataset before anything is computed from it (nnU-Net's integrity check, and more).

Every problem becomes one line naming the file and what is wrong; all cases are checked before
reporting, so a user fixes everything in one pass. Checks per case:

* every file decompresses and reads (corrupt gzip, truncated data);
* images are 3D (Decathlon: channels last when there are several), with the declared channel count;
* all channels and the label share shape, spacing and affine (within a tolerance);
* no NaN or Inf in images; labels hold integers and only the values ``dataset.json`` declares.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from segzoo.data.dataset import Case, RawDataset, read_dataset
from segzoo.data.nifti import Volume, load_volume
from segzoo.errors import SegzooError

SPACING_RTOL = 1e-4
AFFINE_ATOL = 1e-3  # mm for the origin, unitless for direction cosines times spacing


def verify_dataset(root: str | Path) -> dict:
    """Check every case of the dataset at ``root``; return a summary or raise SegzooError listing problems."""
    return verify(read_dataset(root))


def verify(ds: RawDataset) -> dict:
    """Check every case of ``ds``; return a summary (cases in ``ds.cases`` order) or raise SegzooError."""
    problems = list(ds.problems)
    summaries = []
    for case in ds.cases:
        case_problems, summary = _check_case(ds, case)
        problems += case_problems
        if summary:
            summaries.append(summary)
    if problems:
        raise SegzooError(problems)
    return {
        "dataset": ds.name,
        "root": str(ds.root),
        "layout": ds.layout,
        "channels": ds.channels,
        "regions": ds.regions,
        "label_values": sorted(ds.label_values),
        "num_training": len(ds.training),
        "num_test": len(ds.test),
        "cases": summaries,
    }


def _check_case(ds: RawDataset, case: Case) -> tuple[list[str], dict | None]:
    problems: list[str] = []
    channels: list[Volume] = []
    for path in case.images:
        try:
            vol = load_volume(path)
        except SegzooError as e:
            problems += e.problems
            continue
        channels += _split_channels(ds, vol, problems)
    label = None
    if case.label is not None:
        try:
            label = load_volume(case.label)
        except SegzooError as e:
            problems += e.problems
    if problems:
        return problems, None

    reference = channels[0]
    shape = reference.data.shape
    for vol in channels:
        if not np.isfinite(vol.data).all():
            problems.append(f"{vol.path}: image holds NaN or Inf values")
        elif vol.data.min() == vol.data.max():
            problems.append(f"{vol.path}: image is constant (every voxel {vol.data.flat[0]}): nothing to segment")
    others = channels[1:] + ([label] if label is not None else [])
    for vol in others:
        what = "label" if vol is label else "channel"
        if vol.data.shape[:3] != shape:
            problems.append(f"{vol.path}: {what} shape {vol.data.shape} differs from image shape {shape} "
                            f"({reference.path.name})")
        elif not np.allclose(vol.spacing, reference.spacing, rtol=SPACING_RTOL, atol=0):
            problems.append(f"{vol.path}: {what} spacing {_fmt(vol.spacing)} differs from image spacing "
                            f"{_fmt(reference.spacing)} ({reference.path.name})")
        elif not np.allclose(vol.affine, reference.affine, atol=AFFINE_ATOL, rtol=0):
            problems.append(f"{vol.path}: {what} affine (origin {_fmt(vol.affine[:3, 3])}) differs from image "
                            f"affine (origin {_fmt(reference.affine[:3, 3])}, {reference.path.name})")
    counts = {}
    if label is not None:
        label_problems, counts = _check_label_values(ds, label)
        problems += label_problems
    summary = {
        "id": case.id,
        "test": case.test,
        "shape": list(shape),
        "spacing": [round(float(s), 6) for s in reference.spacing],
        "ras_spacing": [round(float(s), 6) for s in reference.ras_spacing],
        "orientation": "".join(nib.aff2axcodes(reference.affine)),
        "label_voxels": counts,
    }
    return problems, summary


def _split_channels(ds: RawDataset, vol: Volume, problems: list[str]) -> list[Volume]:
    """3D volumes, one per channel. A Decathlon file holds all channels (last axis when several)."""
    data = vol.data
    expected = len(ds.channels) if ds.layout == "msd" else 1
    if data.ndim < 3:
        problems.append(f"{vol.path}: image is {data.ndim}D with shape {vol.data.shape}, expected 3D")
        return []
    if data.ndim == 3 and expected == 1:
        return [Volume(vol.path, data, vol.affine)]
    if data.ndim == 4 and data.shape[-1] == expected:
        return [Volume(vol.path, data[..., c], vol.affine) for c in range(expected)]
    problems.append(f"{vol.path}: image shape {vol.data.shape} does not hold {expected} channel(s) of a 3D volume")
    return []


def _check_label_values(ds: RawDataset, label: Volume) -> tuple[list[str], dict]:
    data = label.data
    if data.ndim != 3:
        return [f"{label.path}: label is {data.ndim}D with shape {data.shape}, expected 3D"], {}
    if not np.issubdtype(data.dtype, np.integer):
        if not np.isfinite(data).all():
            return [f"{label.path}: label holds NaN or Inf values"], {}
        if not np.array_equal(data, np.round(data)):
            return [f"{label.path}: label holds non-integer values"], {}
        if np.abs(data).max() > max(ds.label_values):
            return [f"{label.path}: label holds value(s) up to {np.abs(data).max():g}, not declared in "
                    f"dataset.json (declared: {sorted(ds.label_values)})"], {}
    values, counts = np.unique(data.astype(np.int64), return_counts=True)
    undeclared = [int(v) for v in values if int(v) not in ds.label_values]
    if undeclared:
        return [f"{label.path}: label holds value(s) {undeclared} not declared in dataset.json "
                f"(declared: {sorted(ds.label_values)})"], {}
    return [], {str(int(v)): int(c) for v, c in zip(values, counts)}


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"
