"""`segzoo verify` on sound datasets and on a corpus of broken ones, each with its own message."""

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segzoo.cli import main
from segzoo.data.verify import verify_dataset
from segzoo.errors import SegzooError

from conftest import run_segzoo

CASE = "phantom_001"


def _img(root, case=CASE, channel=0):
    return root / "imagesTr" / f"{case}_{channel:04d}.nii.gz"


def _lab(root, case=CASE):
    return root / "labelsTr" / f"{case}.nii.gz"


def _rewrite(path: Path, edit):
    """Load a NIfTI file, change its data and/or affine with ``edit(data, affine)``, save it back."""
    img = nib.load(path)
    data, affine = edit(np.asarray(img.dataobj).copy(), img.affine.copy())
    nib.save(nib.Nifti1Image(data, affine), path)


def _meta(root, **changes):
    meta = json.loads((root / "dataset.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    (root / "dataset.json").write_text(json.dumps(meta))


def corrupt_gzip(root):
    raw = bytearray(_img(root).read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = b"\x00" * 64
    _img(root).write_bytes(bytes(raw))
    return _img(root), "cannot be read"


def truncated_file(root):
    raw = _img(root).read_bytes()
    _img(root).write_bytes(raw[: len(raw) // 3])
    return _img(root), "cannot be read"


def truncated_payload(root):
    """The gzip stream is sound but holds too few bytes of image data."""
    raw = gzip.decompress(_img(root).read_bytes())
    _img(root).write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return _img(root), "cannot be read"


def complex_image(root):
    _rewrite(_img(root), lambda d, a: (d.astype(np.complex64), a))
    return _img(root), "unsupported data type complex64"


def constant_image(root):
    _rewrite(_img(root), lambda d, a: (np.zeros_like(d), a))
    return _img(root), "image is constant"


def duplicate_case_in_test_set(root):
    for folder in ("imagesTs", "labelsTs"):
        (root / folder).mkdir()
    shutil.copy(_img(root), root / "imagesTs")
    shutil.copy(_lab(root), root / "labelsTs")
    return root / "imagesTs" / _img(root).name, "case id phantom_001 is also used in imagesTr"


def regions_without_class_order(root):
    _meta(root, regions_class_order=None)
    return root / "dataset.json", "'regions_class_order' is missing"


def labels_not_consecutive(root):
    _meta(root, labels={"background": 0, "canal": [1, 2, 3], "sc": [2, 3], "lesion": 3, "extra": 7})
    return root / "dataset.json", "missing [4, 5, 6]"


def shape_mismatch(root):
    _rewrite(_lab(root), lambda d, a: (d[:-2], a))
    return _lab(root), "label shape"


def spacing_mismatch(root):
    def edit(d, a):
        a[:3, 2] *= 1.5
        return d, a
    _rewrite(_lab(root), edit)
    return _lab(root), "label spacing"


def affine_mismatch(root):
    def edit(d, a):
        a[:3, 3] += 4.0
        return d, a
    _rewrite(_lab(root), edit)
    return _lab(root), "label affine"


def nan_in_image(root):
    def edit(d, a):
        d = d.astype(np.float32)
        d[3, 3, 3] = np.nan
        return d, a
    _rewrite(_img(root), edit)
    return _img(root), "NaN"


def undeclared_label(root):
    def edit(d, a):
        d[0, 0, 0] = 7
        return d, a
    _rewrite(_lab(root), edit)
    return _lab(root), "value(s) [7] not declared"


def missing_label(root):
    _lab(root).unlink()
    return _lab(root), "missing label"


def missing_channel(root):
    _meta(root, channel_names={"0": "T2", "1": "T1"})
    return _img(root, channel=1), "missing image channel 1"


def bad_dataset_json_type(root):
    _meta(root, numTraining="four")
    return root / "dataset.json", "'numTraining' must be int"


def missing_dataset_json_key(root):
    _meta(root, labels=None)
    return root / "dataset.json", "missing key 'labels'"


def dataset_json_not_json(root):
    (root / "dataset.json").write_text("{channel_names: T2")
    return root / "dataset.json", "not valid JSON"


def missing_dataset_json(root):
    (root / "dataset.json").unlink()
    return root / "dataset.json", "missing"


def empty_folder(root):
    shutil.rmtree(root)
    root.mkdir()
    return root / "dataset.json", "missing"


def empty_images(root):
    for folder in ("imagesTr", "labelsTr"):
        shutil.rmtree(root / folder)
        (root / folder).mkdir()
    return root / "imagesTr", "no training images"


def image_2d(root):
    _rewrite(_img(root), lambda d, a: (d[:, :, 0], a))
    return _img(root), "2D"


def wrong_num_training(root):
    _meta(root, numTraining=9)
    return root / "dataset.json", "'numTraining' is 9"


def label_without_image(root):
    shutil.copy(_lab(root), root / "labelsTr" / "orphan.nii.gz")
    return root / "labelsTr" / "orphan.nii.gz", "no image"


def background_not_zero(root):
    _meta(root, labels={"background": 1, "sc": [2, 3]})
    return root / "dataset.json", "'background' to 0"


BROKEN = [corrupt_gzip, truncated_file, truncated_payload, complex_image, constant_image, duplicate_case_in_test_set,
          regions_without_class_order, labels_not_consecutive, shape_mismatch, spacing_mismatch, affine_mismatch, nan_in_image,
          undeclared_label, missing_label, missing_channel, bad_dataset_json_type, missing_dataset_json_key,
          dataset_json_not_json, missing_dataset_json, empty_folder, empty_images, image_2d, wrong_num_training,
          label_without_image, background_not_zero]


def test_sound_dataset_passes_and_reports(tiny_dataset, tmp_path):
    summary = verify_dataset(tiny_dataset)
    assert summary["num_training"] == 4 and summary["regions"]["sc"] == [2, 3]
    assert [c["id"] for c in summary["cases"]] == [f"phantom_{i:03d}" for i in range(4)]
    report = tmp_path / "report.json"
    assert main(["verify", str(tiny_dataset), "--report", str(report)]) == 0
    assert json.loads(report.read_text())["dataset"] == tiny_dataset.name


@pytest.mark.parametrize("breaker", BROKEN, ids=lambda f: f.__name__)
def test_broken_dataset_is_named_with_its_problem(breaker, dataset_copy, tmp_path, capsys):
    path, message = breaker(dataset_copy)
    report = tmp_path / "report.json"
    assert main(["verify", str(dataset_copy), "--report", str(report)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert any(str(path) in line and message in line for line in err), err
    assert all(line.startswith("error: ") for line in err), err  # one line per problem
    assert not report.exists()  # nothing written downstream


def test_all_problems_reported_at_once(dataset_copy):
    missing_label(dataset_copy)
    _rewrite(_lab(dataset_copy, "phantom_002"), lambda d, a: (np.where(d == 0, 9, d).astype(d.dtype), a))
    with pytest.raises(SegzooError) as e:
        verify_dataset(dataset_copy)
    assert len(e.value.problems) == 2


def test_cli_exits_non_zero_naming_the_file(dataset_copy):
    path, _ = truncated_file(dataset_copy)
    result = run_segzoo("verify", dataset_copy)
    assert result.returncode == 1
    assert str(path) in result.stderr and "Traceback" not in result.stderr


def test_test_set_folders_are_checked(dataset_copy):
    for folder in ("imagesTs", "labelsTs"):
        (dataset_copy / folder).mkdir()
    shutil.move(_img(dataset_copy, "phantom_003"), dataset_copy / "imagesTs")
    shutil.move(_lab(dataset_copy, "phantom_003"), dataset_copy / "labelsTs")
    _meta(dataset_copy, numTraining=3)
    summary = verify_dataset(dataset_copy)
    assert (summary["num_training"], summary["num_test"]) == (3, 1)
    (dataset_copy / "labelsTs" / "phantom_003.nii.gz").unlink()
    with pytest.raises(SegzooError, match="labelsTs/phantom_003.nii.gz: missing label"):
        verify_dataset(dataset_copy)


def make_msd(tiny_dataset: Path, root: Path, channels: int = 2) -> Path:
    """A Decathlon-layout copy of the tiny dataset with ``channels`` channels stacked last."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(4):
        case = f"spine_{i}"
        img = nib.load(_img(tiny_dataset, f"phantom_{i:03d}"))
        data = np.asarray(img.dataobj).astype(np.float32)
        stacked = np.stack([data * (c + 1) for c in range(channels)], axis=-1) if channels > 1 else data
        nib.save(nib.Nifti1Image(stacked, img.affine), root / "imagesTr" / f"{case}.nii.gz")
        lab = nib.load(_lab(tiny_dataset, f"phantom_{i:03d}"))
        nib.save(nib.Nifti1Image(np.asarray(lab.dataobj), lab.affine), root / "labelsTr" / f"{case}.nii.gz")
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    meta = {"name": "spine", "modality": {str(c): f"MR{c}" for c in range(channels)},
            "labels": {"0": "background", "1": "csf", "2": "cord", "3": "lesion"},
            "numTraining": 4, "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_decathlon_layout_is_read_and_checked(tiny_dataset, tmp_path):
    root = make_msd(tiny_dataset, tmp_path / "Task09_Spine")
    summary = verify_dataset(root)
    assert summary["layout"] == "msd" and summary["channels"] == ["MR0", "MR1"]
    assert summary["regions"] == {"csf": [1], "cord": [2], "lesion": [3]}
    (root / "labelsTr" / "spine_2.nii.gz").unlink()
    _rewrite(root / "imagesTr" / "spine_1.nii.gz", lambda d, a: (d[..., :1].repeat(3, -1), a))
    with pytest.raises(SegzooError) as e:
        verify_dataset(root)
    text = "\n".join(e.value.problems)
    assert "labelsTr/spine_2.nii.gz: missing label listed in dataset.json training[2]" in text
    assert "spine_1.nii.gz: image shape" in text and "2 channel(s)" in text


def test_trailing_singleton_label_axis_is_3d(dataset_copy):
    _rewrite(_lab(dataset_copy), lambda d, a: (d[..., None], a))
    assert verify_dataset(dataset_copy)["num_training"] == 4


def test_decathlon_test_entry_must_be_a_list(tiny_dataset, tmp_path):
    root = make_msd(tiny_dataset, tmp_path / "Task09_Spine", channels=1)
    meta = json.loads((root / "dataset.json").read_text())
    meta["test"] = None
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(SegzooError, match="key 'test' must be list"):
        verify_dataset(root)
