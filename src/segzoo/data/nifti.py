"""NIfTI in and out: reading a volume fully (so corrupt files fail at once), and writing every segzoo output
the same way (mm units, qform and sform both set)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from segzoo.errors import SegzooError


@dataclass
class Volume:
    """What a check needs from one file: its data, affine and spacing."""

    path: Path
    data: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def ras_spacing(self) -> np.ndarray:
        """Spacing listed in RAS axis order, i.e. as it will be after reorientation."""
        return ras_spacing(self.affine)


def ras_spacing(affine: np.ndarray) -> np.ndarray:
    """The voxel spacing of ``affine`` listed in RAS axis order (as it will be after reorientation)."""
    out = np.empty(3)
    out[nib.orientations.io_orientation(affine)[:, 0].astype(int)] = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return out


def load_volume(path: Path) -> Volume:
    """Read a NIfTI file fully (so corrupt or truncated data fails here). Raises SegzooError.

    ``.gz`` files are decompressed whole, which checks the gzip CRC and length: nibabel alone reads
    only the bytes it needs and can miss corruption in a stream's tail.
    """
    try:
        if path.name.endswith(".gz"):
            img = _from_bytes(gzip.decompress(path.read_bytes()))
        else:
            img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel, gzip and zlib raise many types for broken files
        reason = " ".join(str(e).split()) or type(e).__name__  # one line, whatever the library wrote
        raise SegzooError(f"{path}: cannot be read ({type(e).__name__}: {reason})") from None
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)
            or data.dtype == np.bool_):
        raise SegzooError(f"{path}: unsupported data type {data.dtype} (expected real numbers)")
    while data.ndim > 3 and data.shape[-1] == 1:  # (X, Y, Z, 1) is a 3D volume
        data = data[..., 0]
    return Volume(path, data, np.asarray(img.affine, dtype=np.float64))


def _from_bytes(raw: bytes):
    """A NIfTI-1 or NIfTI-2 image from its uncompressed bytes (told apart by the header size field)."""
    sizes = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")}
    return (nib.Nifti2Image if 540 in sizes else nib.Nifti1Image).from_bytes(raw)


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)
