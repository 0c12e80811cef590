"""A dataset's fingerprint, as nnU-Net extracts one before planning: per training case its spacing and its
shape after the non-zero crop (both in RAS axis order, as preprocessing will see them), and per channel
intensity statistics of the foreground (voxels with a non-zero label).

Foreground intensities are sampled, at most ``FOREGROUND_SAMPLES_PER_CASE`` voxels per case drawn with the
config's seed, so a dataset of large CT volumes is summarised from a bounded sample; the statistics are the
ones nnU-Net's CT normalisation uses (mean, std, 0.5th and 99.5th percentiles).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from segzoo.data.dataset import Case, RawDataset
from segzoo.data.nifti import Volume, load_volume
from segzoo.errors import SegzooError
from segzoo.io import read_json

FOREGROUND_SAMPLES_PER_CASE = 10_000
PERCENTILES = (0.5, 99.5)  # the clipping range nnU-Net's CT normalisation takes from the foreground


def ras_shape(shape: tuple[int, ...], affine: np.ndarray) -> list[int]:
    """A voxel shape listed in RAS axis order (the order after reorientation)."""
    out = [0, 0, 0]
    for axis, ras_axis in enumerate(nib.orientations.io_orientation(affine)[:, 0].astype(int)):
        out[ras_axis] = int(shape[axis])
    return out


def _channels(case: Case, n_channels: int) -> list[Volume]:
    vols = [load_volume(p) for p in case.images]
    if len(vols) == 1 and n_channels > 1:  # Decathlon: one file, channels last
        return [Volume(vols[0].path, vols[0].data[..., c], vols[0].affine) for c in range(n_channels)]
    return vols


def case_fingerprint(case: Case, n_channels: int, rng: np.random.Generator) -> tuple[dict, list[np.ndarray]]:
    """Spacing and cropped shape (RAS order) of one labelled case, and foreground samples per channel."""
    channels = _channels(case, n_channels)
    label = load_volume(case.label).data
    nonzero = np.zeros(channels[0].data.shape[:3], dtype=bool)
    for vol in channels:
        nonzero |= vol.data != 0
    if nonzero.any():
        idx = np.nonzero(nonzero)
        cropped = [int(i.max() - i.min() + 1) for i in idx]
    else:
        cropped = list(nonzero.shape)
    foreground = np.flatnonzero(label != 0)
    take = rng.choice(foreground, size=min(len(foreground), FOREGROUND_SAMPLES_PER_CASE), replace=False)
    where = np.unravel_index(take, label.shape)  # indexes the voxels without a float copy of the volume
    samples = [np.asarray(vol.data[where], dtype=np.float64) for vol in channels]
    affine = channels[0].affine
    return {"id": case.id, "spacing": [float(s) for s in channels[0].ras_spacing],
            "shape": ras_shape(tuple(cropped), affine)}, samples


def intensity_statistics(samples: np.ndarray) -> dict:
    """Mean, std and the clipping percentiles of pooled foreground samples (all None without foreground)."""
    if samples.size == 0:
        return {"mean": None, "std": None, "percentile_00_5": None, "percentile_99_5": None, "samples": 0}
    low, high = np.percentile(samples, PERCENTILES)
    return {"mean": float(samples.mean()), "std": float(samples.std()), "percentile_00_5": float(low),
            "percentile_99_5": float(high), "samples": int(samples.size)}


def dataset_fingerprint(ds: RawDataset, seed: int) -> dict:
    """The fingerprint of ``ds``'s labelled training cases (the test cases are never looked at); ``intensities``
    lists one entry per channel, in channel order."""
    rng = np.random.default_rng(seed)
    cases, pooled = [], [[] for _ in ds.channels]
    for case in ds.training:
        if case.label is None:
            continue
        summary, samples = case_fingerprint(case, len(ds.channels), rng)
        cases.append(summary)
        for c, s in enumerate(samples):
            pooled[c].append(s)
    intensities = [intensity_statistics(np.concatenate(p) if p else np.empty(0)) for p in pooled]
    return {"dataset": ds.name, "channels": ds.channels, "regions": ds.regions, "cases": cases,
            "intensities": intensities}


def read_fingerprint(path: str | Path) -> dict:
    """A fingerprint file written by ``segzoo fingerprint``, checked for the keys planning reads."""
    fingerprint = read_json(path)
    missing = [k for k in ("dataset", "channels", "regions", "cases", "intensities") if k not in fingerprint]
    if missing:
        raise SegzooError(f"{path}: not a dataset fingerprint (no {', '.join(missing)}); write one with "
                          "`segzoo fingerprint`")
    return fingerprint
