"""`segzoo predict` on new images: the same masks as `segzoo infer`, whatever the voxel order; refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import PHANTOM, run_segzoo, snakemake

pytestmark = pytest.mark.slow
REGIONS = ["canal", "sc", "lesion"]


def _flipped(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """The same image stored with the first voxel axis reversed (the affine follows, so the world is unchanged)."""
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ np.array([image.shape[0] - 1, 0, 0]) + image.affine[:3, 3]
    affine[:3, 0] *= -1
    return nib.Nifti1Image(np.ascontiguousarray(np.asarray(image.dataobj)[::-1]), affine)


def test_predict_matches_infer_on_a_test_case_and_its_flipped_copy(ci_run, tmp_path):
    wf, _ = ci_run
    case = json.loads((wf / "results" / "splits" / PHANTOM / "splits.json").read_text())["test"][0]
    image = nib.load(wf / "results" / "raw" / PHANTOM / "imagesTr" / f"{case}_0000.nii.gz")
    inputs = tmp_path / "new_images"
    inputs.mkdir()
    nib.save(image, inputs / f"{case}_0000.nii.gz")
    nib.save(_flipped(image), inputs / "flipped_0000.nii.gz")
    run = wf / "results" / "train" / PHANTOM / "unet3plus" / "seed0"
    result = run_segzoo("predict", "-i", inputs, "-o", tmp_path / "out", "--run", run, "--probabilities",
                        "--device", "cpu")
    assert result.returncode == 0, result.stderr
    label = np.asarray(nib.load(tmp_path / "out" / f"{case}.nii.gz").dataobj)
    flipped = np.asarray(nib.load(tmp_path / "out" / "flipped.nii.gz").dataobj)[::-1]
    prob = np.asarray(nib.load(tmp_path / "out" / f"{case}_prob.nii.gz").dataobj)
    assert prob.shape == (*image.shape, 3)
    painted = np.zeros(image.shape, dtype=np.uint8)  # nnU-Net's convention: regions painted in order
    for r, (name, value) in enumerate(zip(REGIONS, (1, 2, 3))):
        infer = np.asarray(nib.load(wf / "results" / "infer" / PHANTOM / "unet3plus" / "seed0" /
                                    f"{case}_{name}.nii.gz").dataobj) > 0
        np.testing.assert_array_equal(prob[..., r] > 0.5, infer)
        painted[infer] = value
    np.testing.assert_array_equal(label, painted)
    np.testing.assert_array_equal(flipped, painted)  # exact: reorientation is a permutation of voxels


def test_predict_refuses_a_wrong_channel_count_and_writes_nothing(ci_run, tmp_path):
    wf, _ = ci_run
    raw = wf / "results" / "raw" / PHANTOM / "imagesTr"
    inputs = tmp_path / "two_channels"
    inputs.mkdir()
    first = sorted(raw.glob("*_0000.nii.gz"))[0]
    shutil.copy(first, inputs / "x_0000.nii.gz")
    shutil.copy(first, inputs / "x_0001.nii.gz")
    result = run_segzoo("predict", "-i", inputs, "-o", tmp_path / "out", "--run",
                        wf / "results" / "train" / PHANTOM / "unet3plus" / "seed0", "--device", "cpu")
    assert result.returncode == 1 and "x_*: channels [0, 1] found; the runs expect [0]" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_predict_rule_predicts_the_config_folder_with_each_model(ci_run, tmp_path):
    wf = Path(shutil.copytree(ci_run[0], tmp_path / "wf", symlinks=True))  # other tests expect ci_run's folder as is
    case = json.loads((wf / "results" / "splits" / PHANTOM / "splits.json").read_text())["test"][0]
    inputs = tmp_path / "incoming"
    inputs.mkdir()
    shutil.copy(wf / "results" / "raw" / PHANTOM / "imagesTr" / f"{case}_0000.nii.gz", inputs / "new_0000.nii.gz")
    target = f"results/predict/{PHANTOM}/unet3plus"
    result = snakemake(wf, target, "--cores", "2", "--configfile", "presets/ci.yaml",
                       "--config", f"predict={{input: {inputs}}}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (wf / target / "new.nii.gz").is_file()
    log = (wf / "results" / "logs" / "predict" / PHANTOM / "unet3plus.log").read_text()
    assert "with 1 run(s)" in log
