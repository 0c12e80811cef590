"""The predictions folder: the one place that knows its file names, writes it and reads it back.

``segzoo infer`` writes, per case, in the case's original grid (shape and affine of its image)::

    <case>_prob.nii.gz        float32 [X, Y, Z, R]: sigmoid probability per region
    <case>_<region>.nii.gz    uint8   [X, Y, Z]: the region's mask (probability > THRESHOLD, postprocessed)

``segzoo predict`` writes a label map per case, as ``nnUNetv2_predict`` does, and with ``--probabilities``
the same ``<case>_prob.nii.gz``::

    <case>.nii.gz             uint8   [X, Y, Z]: regions painted in order (each region's own label value,
                                      later regions over earlier ones: nnU-Net's regions_class_order)

:class:`PredictionsFolder` reads either form back (a label map is also what other tools, nnU-Net or SCT, write),
for scoring and figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segzoo.data.nifti import load_volume, save_nifti
from segzoo.errors import SegzooError

THRESHOLD = 0.5  # sigmoid probability above which a voxel belongs to a region


def probabilities_file(folder: str | Path, case: str) -> Path:
    return Path(folder) / f"{case}_prob.nii.gz"


def mask_file(folder: str | Path, case: str, region: str) -> Path:
    return Path(folder) / f"{case}_{region}.nii.gz"


def label_map_file(folder: str | Path, case: str) -> Path:
    return Path(folder) / f"{case}.nii.gz"


def region_labels(regions: dict[str, list[int]]) -> tuple[dict, list[int]]:
    """Region-based dataset.json labels and a regions_class_order: each region's class is a label value of it
    that no later region holds (so painting regions in order gives every voxel its innermost region)."""
    order = []
    names = list(regions)
    for i, name in enumerate(names):
        later = {v for n in names[i + 1:] for v in regions[n]}
        own = [v for v in regions[name] if v not in later]
        if not own:
            raise SegzooError(f"region {name} {regions[name]} has no label value of its own; no regions_class_order "
                              "paints it")
        order.append(min(own))
    return {"background": 0, **{n: sorted(v) for n, v in regions.items()}}, order


def paint(masks: list[np.ndarray], regions: dict[str, list[int]]) -> np.ndarray:
    """One label map [X, Y, Z] from one binary mask per region (in the order of ``regions``), painted in order
    with each region's own value (:func:`region_labels`; a single region is 1)."""
    _, values = region_labels(regions) if len(regions) > 1 else (None, [1])
    label = np.zeros(masks[0].shape, dtype=np.uint8)
    for mask, value in zip(masks, values):
        label[mask] = value
    return label


def write_probabilities(folder: Path, case: str, prob: np.ndarray, affine: np.ndarray) -> None:
    """``<case>_prob.nii.gz`` from probabilities [R, X, Y, Z]."""
    save_nifti(np.moveaxis(prob, 0, -1), affine, probabilities_file(folder, case))


def write_masks(folder: Path, case: str, masks: dict[str, np.ndarray], affine: np.ndarray) -> None:
    """``<case>_<region>.nii.gz``, one per region."""
    for name, mask in masks.items():
        save_nifti(mask, affine, mask_file(folder, case, name))


def write_label_map(folder: Path, case: str, label: np.ndarray, affine: np.ndarray) -> None:
    save_nifti(label, affine, label_map_file(folder, case))


class PredictionsFolder:
    """A folder of predictions, segzoo's masks and probabilities or a label map per case, read in a reference
    image's grid (shape and affine checked against it)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def has_masks(self, case: str, regions: dict[str, list[int]]) -> bool:
        """Whether ``case`` has segzoo's mask files; otherwise it is read as a label map."""
        return mask_file(self.folder, case, next(iter(regions))).is_file() or \
            not label_map_file(self.folder, case).is_file()

    def masks(self, case: str, regions: dict[str, list[int]], ref) -> dict[str, np.ndarray]:
        """Binary mask per region: segzoo's mask files, or a label map's voxels holding one of a region's values."""
        if not self.has_masks(case, regions):
            label = np.asarray(self._volume(label_map_file(self.folder, case), ref).data).reshape(ref.data.shape)
            return {name: np.isin(label, values) for name, values in regions.items()}
        return {name: self._volume(mask_file(self.folder, case, name), ref).data > 0 for name in regions}

    def mask(self, case: str, region: str) -> np.ndarray:
        """One region's mask file as stored (no grid check)."""
        return np.asarray(load_volume(mask_file(self.folder, case, region)).data)

    def probabilities(self, case: str, ref=None) -> np.ndarray:
        """float32 [X, Y, Z, R] (None where there are only label maps)."""
        path = probabilities_file(self.folder, case)
        volume = self._volume(path, ref) if ref is not None else load_volume(path)
        prob = np.asarray(volume.data, dtype=np.float32)
        return prob[..., None] if prob.ndim == 3 else prob

    @staticmethod
    def _volume(path: Path, ref):
        """A prediction file, checked to lie in the reference's grid (shape and affine)."""
        if not path.is_file():
            raise SegzooError(f"{path}: missing (run `segzoo infer` first, or give a label map {path.parent.name}/"
                              f"<case>.nii.gz per test case)")
        volume = load_volume(path)
        if volume.data.shape[:3] != ref.data.shape:
            raise SegzooError(f"{path}: shape {volume.data.shape[:3]} differs from the reference {ref.data.shape} "
                              f"({ref.path.name})")
        if not np.allclose(volume.affine, ref.affine, atol=1e-3):
            raise SegzooError(f"{path}: affine differs from the reference's ({ref.path.name}): not in the original "
                              "grid")
        return volume
