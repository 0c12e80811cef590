"""Folders of new images, named as nnU-Net names them, and the checks made before predicting them.

A folder holds ``<case>_<XXXX>.nii.gz`` (one file per channel, ``_0000`` first) or, for a one-channel model, any
``<case>.nii.gz``. Channels go by file index, as in nnU-Net.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from segzoo.data.dataset import channel_order_problem, named_channels
from segzoo.data.nifti import ras_spacing
from segzoo.errors import SegzooError

SPACING_SLACK = 2.0  # how far beyond the training spacings an input may lie (a factor, either way)
CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii(\.gz)?$")


def find_cases(folder: Path, channels: int) -> dict[str, list[Path]]:
    """``{case: [channel files in order]}`` for the images in ``folder``."""
    if not Path(folder).is_dir():
        raise SegzooError(f"{folder}: no such folder (-i/--input takes a folder of images)")
    files = sorted(p for p in Path(folder).iterdir() if p.name.endswith((".nii.gz", ".nii")))
    if not files:
        raise SegzooError(f"{folder}: no NIfTI images (.nii.gz or .nii)")
    named = {f: CHANNEL_FILE.match(f.name) for f in files}
    if all(named.values()):
        cases: dict[str, dict[int, Path]] = {}
        for f, m in named.items():
            cases.setdefault(m["case"], {})[int(m["channel"])] = f
        for case, found in cases.items():
            if sorted(found) != list(range(channels)):
                raise SegzooError(f"{folder / case}_*: channels {sorted(found)} found; the runs expect "
                                  f"{list(range(channels))} ({channels} file(s) per case, _0000 to "
                                  f"_{channels - 1:04d})")
        return {case: [found[c] for c in range(channels)] for case, found in sorted(cases.items())}
    if channels != 1:
        first = next(f for f, m in named.items() if not m)
        raise SegzooError(f"{first}: not named <case>_<XXXX>.nii.gz; the runs take {channels} channels, one file each")
    return {f.name.removesuffix(".gz").removesuffix(".nii"): [f] for f in files}


def check_spacing(cases: dict[str, list[Path]], spacing_range: list[list[float]] | None) -> None:
    """Refuse images whose spacing lies outside the training cases' range by more than ``SPACING_SLACK``:
    a model trained at 0.8 mm given a 5 mm image (or the reverse) is being shown another kind of data."""
    if spacing_range is None:
        return
    low, high = (np.asarray(r) for r in spacing_range)
    for files in cases.values():
        spacing = ras_spacing(nib.load(str(files[0])).affine)  # header only
        outside = (spacing < low / SPACING_SLACK) | (spacing > high * SPACING_SLACK)
        if outside.any():
            axis = int(np.argmax(outside))
            raise SegzooError(f"{files[0]}: spacing {spacing[axis]:.3g} mm along {'RAS'[axis]} is outside the "
                              f"training cases' {low[axis]:.3g}-{high[axis]:.3g} mm (x{SPACING_SLACK:g} either way): "
                              "not the data these runs were trained on; pass --any-spacing to predict it anyway")


def check_channel_names(images: Path, channels: list[str], source: str) -> None:
    """Where a dataset.json lies beside the images (in their folder, or the folder above, as nnU-Net's imagesTs),
    the channels it names must be the model's, in the model's order. The nearest that names channels is checked;
    one that names none (an unrelated file, or a dataset.json of another kind) says nothing of them and is passed
    over, with a notice."""
    for candidate in (Path(images) / "dataset.json", Path(images).resolve().parent / "dataset.json"):
        if not candidate.is_file():
            continue
        names = named_channels(candidate)
        if names is None:
            print(f"{candidate}: names no channels; not checked against {source}'s {channels}", file=sys.stderr)
            continue
        problem = channel_order_problem(channels, source, names, str(candidate))
        if problem:
            raise SegzooError(problem)
        return
