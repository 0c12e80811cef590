"""Datasets that are not the phantom, built in the tests the way a user's would look (issue 15):

- :func:`two_channel_dataset`: nnU-Net v2 layout, two MR channels (T1, T2) at 0.6 mm isotropic, two classes
  (no regions), its own ``imagesTs``/``labelsTs``, like the hippocampus dataset.
- :func:`heterogeneous_dataset`: Decathlon layout, one channel, five cases that differ in shape, spacing
  (brain MR at 6.5 mm slices, thinner breast and chest slices) and orientation (RAS and LPS), like the
  mixed tumour dataset.
- :func:`asymmetric_dataset`: nnU-Net v2 layout, a structure that lies on one side of a landmark only (front of a
  bright plate, never behind it), so mirroring front to back turns a right answer into a wrong one; mirroring
  left to right does not.

The first two take their anatomy from the phantom generator (a tube inside a ring), relabelled and recontrasted,
so a model can learn something in a few steps; everything else about them is foreign to the phantom.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from segzoo.data.phantom import PhantomSpec, write_phantom_dataset


def _phantom_case(spec: PhantomSpec, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, label map (0 background, 1 ring, 2 tube, 3 spot) and affine of one phantom case."""
    with tempfile.TemporaryDirectory() as tmp:
        root = write_phantom_dataset(Path(tmp) / "p", cases=1, seed=seed, spec=spec)
        image = nib.load(next((root / "imagesTr").iterdir()))
        label = nib.load(next((root / "labelsTr").iterdir()))
        return np.asarray(image.dataobj, dtype=np.float32), np.asarray(label.dataobj, dtype=np.uint8), image.affine


def _lps(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same volume stored with its first two voxel axes reversed (world positions unchanged)."""
    flipped = affine.copy()
    for axis in (0, 1):
        flipped[:3, 3] += affine[:3, axis] * (data.shape[axis] - 1)
        flipped[:3, axis] *= -1
    return np.ascontiguousarray(data[::-1, ::-1]), flipped


def two_channel_dataset(root: Path, cases: int = 6, test_cases: int = 2) -> Path:
    """``root`` (e.g. .../Dataset902_TwoChannel) in nnU-Net v2 layout with imagesTs/labelsTs."""
    spec = PhantomSpec(shape=(24, 28, 20), spacing=(0.6, 0.6, 0.6), spacing_jitter=0.0, max_rotation_deg=3.0)
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(cases + test_cases):
        image, label, affine = _phantom_case(spec, seed=100 + i)
        t1 = 800.0 - 300.0 * image / max(float(image.max()), 1e-6) + rng.normal(0, 10, image.shape)  # inverted
        classes = np.zeros_like(label)
        classes[label == 1] = 1  # "anterior": the ring
        classes[label >= 2] = 2  # "posterior": the tube and its spots
        images, labels = ("imagesTs", "labelsTs") if i >= cases else ("imagesTr", "labelsTr")
        case = f"hippo_{i:03d}"
        for c, channel in enumerate((t1.astype(np.float32), image)):
            nib.save(nib.Nifti1Image(channel, affine), root / images / f"{case}_{c:04d}.nii.gz")
        nib.save(nib.Nifti1Image(classes, affine), root / labels / f"{case}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "name": root.name, "channel_names": {"0": "T1", "1": "T2"},
        "labels": {"background": 0, "anterior": 1, "posterior": 2},
        "numTraining": cases, "file_ending": ".nii.gz"}))
    return root


HETEROGENEOUS = [  # (shape, spacing in mm, stored LPS): brain MR at 6.5 mm slices, breast MR, chest
    ((28, 28, 6), (0.9, 0.9, 6.5), False),
    ((26, 26, 6), (1.0, 1.0, 6.5), True),
    ((36, 36, 16), (0.7, 0.7, 2.0), False),
    ((32, 32, 12), (0.8, 0.8, 2.5), True),
    ((28, 28, 8), (0.9, 0.9, 5.0), False),
]


def heterogeneous_dataset(root: Path) -> Path:
    """``root`` (e.g. .../Task01_Tumour) in Decathlon layout: five unlike cases, one channel, two classes."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i, (shape, spacing, lps) in enumerate(HETEROGENEOUS):
        spec = PhantomSpec(shape=shape, spacing=spacing, spacing_jitter=0.0, max_rotation_deg=0.0)
        image, label, affine = _phantom_case(spec, seed=200 + i)
        classes = np.where(label >= 2, 2, np.where(label == 1, 1, 0)).astype(np.uint8)  # edema ring, tumour core
        image = image * (1000.0 if i == 3 else 1.0)  # one case on another intensity scale
        if lps:
            (image, _), (classes, affine) = _lps(image, affine), _lps(classes, affine)
        case = f"tumour_{i}"
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), root / "imagesTr" / f"{case}.nii.gz")
        nib.save(nib.Nifti1Image(classes, affine), root / "labelsTr" / f"{case}.nii.gz")
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "tumour", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "edema", "2": "tumour"},
        "numTraining": len(training), "training": training, "test": []}))
    return root


def asymmetric_dataset(root: Path, cases: int = 8, test_cases: int = 4, seed: int = 11) -> Path:
    """``root`` (e.g. .../Dataset905_Asymmetric) in nnU-Net v2 layout with imagesTs/labelsTs: in noise, a bright plate
    across Y at a random depth and extent, and the one region ("front") in the 4 voxels in front of it (+Y, anterior).
    Nothing in the image marks the front but its side of the plate: a model must tell +Y from -Y."""
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    shape, affine = (32, 32, 16), np.diag([1.0, 1.0, 2.0, 1.0])
    for i in range(cases + test_cases):
        image = rng.normal(100.0, 10.0, shape).astype(np.float32)
        label = np.zeros(shape, dtype=np.uint8)
        y = int(rng.integers(8, 20))
        x0 = int(rng.integers(2, 22))
        x1 = int(rng.integers(x0 + 8, 31))
        z0, z1 = int(rng.integers(1, 5)), int(rng.integers(11, 15))
        image[x0:x1, y:y + 2, z0:z1] += 120.0  # the plate
        label[x0:x1, y + 2:y + 6, z0:z1] = 1  # in front of it only
        images, labels = ("imagesTs", "labelsTs") if i >= cases else ("imagesTr", "labelsTr")
        nib.save(nib.Nifti1Image(image, affine), root / images / f"asym_{i:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / labels / f"asym_{i:03d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "name": root.name, "channel_names": {"0": "MR"}, "labels": {"background": 0, "front": 1},
        "numTraining": cases, "file_ending": ".nii.gz"}))
    return root
