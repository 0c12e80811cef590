import json
from pathlib import Path

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest

from segzoo.data import phantom
from segzoo.data.phantom import PhantomSpec, write_phantom_dataset
from segzoo.errors import SegzooError
from segzoo.report.slices import render_orthogonal

from conftest import TINY


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = write_phantom_dataset(tmp_path / "a" / "D", cases=3, seed=7, spec=TINY)
    b = write_phantom_dataset(tmp_path / "b" / "D", cases=3, seed=7, spec=TINY)
    c = write_phantom_dataset(tmp_path / "c" / "D", cases=3, seed=8, spec=TINY)
    assert _files(a) == _files(b)
    assert _files(a)["imagesTr/phantom_000_0000.nii.gz"] != _files(c)["imagesTr/phantom_000_0000.nii.gz"]


def test_case_does_not_depend_on_number_of_cases(tmp_path):
    a = write_phantom_dataset(tmp_path / "a" / "D", cases=2, seed=7, spec=TINY)
    b = write_phantom_dataset(tmp_path / "b" / "D", cases=4, seed=7, spec=TINY)
    name = "imagesTr/phantom_001_0000.nii.gz"
    assert (a / name).read_bytes() == (b / name).read_bytes()


def test_dataset_declares_regions_and_labels_hold_only_declared_values(tiny_dataset):
    meta = json.loads((tiny_dataset / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "canal": [1, 2, 3], "sc": [2, 3], "lesion": 3}
    assert meta["numTraining"] == 4 and meta["file_ending"] == ".nii.gz"
    for label in sorted((tiny_dataset / "labelsTr").iterdir()):
        values = set(np.unique(np.asarray(nib.load(label).dataobj)))
        assert values <= {0, 1, 2, 3} and {0, 1, 2} <= values


def test_some_cases_have_lesions_and_some_do_not(tmp_path):
    spec = PhantomSpec(shape=(24, 24, 10), spacing=(1.0, 1.0, 3.0), lesion_free_fraction=0.5)
    root = write_phantom_dataset(tmp_path / "D", cases=10, seed=1, spec=spec)
    has_lesion = [bool((np.asarray(nib.load(p).dataobj) == 3).any()) for p in sorted((root / "labelsTr").iterdir())]
    assert any(has_lesion) and not all(has_lesion)


def test_geometry_is_anisotropic_and_rotated_and_contrast_is_t2_like(tiny_dataset):
    orientations = set()
    for i in range(4):
        img = nib.load(tiny_dataset / "imagesTr" / f"phantom_{i:03d}_0000.nii.gz")
        lab = np.asarray(nib.load(tiny_dataset / "labelsTr" / f"phantom_{i:03d}.nii.gz").dataobj)
        zooms = img.header.get_zooms()
        assert zooms[2] > 2 * zooms[0]  # thick slices
        rot = img.affine[:3, :3] / np.asarray(zooms)
        assert np.abs(rot - np.diag(np.diag(rot))).max() > 1e-3  # not axis-aligned: a rotated affine
        orientations.add(nib.aff2axcodes(img.affine))
        data = np.asarray(img.dataobj, dtype=float)
        assert data.min() >= 0  # Rician magnitude
        assert data[lab == 1].mean() > 1.5 * data[lab == 2].mean()  # CSF bright, cord darker
        assert data[lab == 2].mean() > data[lab == 0].mean() * 0.8
    assert len(orientations) > 1  # some cases stored in another axis order


def test_mid_slice_png_renders(tiny_dataset, tmp_path):
    png = render_orthogonal(tiny_dataset / "imagesTr" / "phantom_000_0000.nii.gz", tmp_path / "mid.png",
                            tiny_dataset / "labelsTr" / "phantom_000.nii.gz", title="phantom_000")
    pixels = mpimg.imread(png)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 600
    assert pixels[..., :3].std() > 0.05  # an image, not a blank canvas


def test_refuses_to_overwrite_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    out = tmp_path / "D"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    with pytest.raises(SegzooError, match="refusing to overwrite"):
        write_phantom_dataset(out, cases=1, seed=0, spec=TINY)
    assert (out / "mine.txt").read_text() == "user data"

    calls = []

    def failing(rng, spec):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return original(rng, spec)

    original = phantom.make_case
    monkeypatch.setattr(phantom, "make_case", failing)
    with pytest.raises(RuntimeError):
        write_phantom_dataset(tmp_path / "E", cases=3, seed=0, spec=TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D"]  # no E, no hidden partial folder
