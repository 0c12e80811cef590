"""`segzoo predict` on new images: the same masks as `segzoo infer`, whatever the voxel order; refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import PHANTOM, run_segzoo, snakemake
from segzoo.inference.postprocess import FILE_NAME, apply_postprocessing, read_postprocessing

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
    image = nib.load(wf / "results" / "raw" / PHANTOM / "imagesTs" / f"{case}_0000.nii.gz")
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
    decision = read_postprocessing(run / FILE_NAME, REGIONS)  # both apply the run's postprocessing
    painted = np.zeros(image.shape, dtype=np.uint8)  # nnU-Net's convention: regions painted in order
    for r, (name, value) in enumerate(zip(REGIONS, (1, 2, 3))):
        infer = np.asarray(nib.load(wf / "results" / "infer" / PHANTOM / "unet3plus" / "seed0" /
                                    f"{case}_{name}.nii.gz").dataobj) > 0
        np.testing.assert_array_equal(apply_postprocessing(prob[..., r] > 0.5, name, decision), infer)
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


def _scaled(image: nib.Nifti1Image, factor: float) -> nib.Nifti1Image:
    """The image resampled onto a grid ``factor`` times coarser in x and y (trilinear; same world extent)."""
    from monai.transforms import Spacing

    from segzoo.data.preprocess import _as_metatensor

    spacing = np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0)) * np.array([factor, factor, 1.0])
    data = _as_metatensor(np.asarray(image.dataobj, dtype=np.float32)[None], image.affine)
    out = Spacing(pixdim=spacing, mode="bilinear")(data)
    return nib.Nifti1Image(out[0].numpy(), out.affine.numpy())


def test_predict_on_a_resampled_copy_agrees_with_infer_and_far_spacings_are_refused(ci_run, tmp_path):
    """Tolerance, stated before measuring: on a copy 1.25 times coarser in x and y, predict's label map, brought
    back to the original grid (nearest), matches infer's masks with Dice >= 0.85 for every region infer marks
    with at least 500 voxels (a half-voxel shift of the boundary of a 500-voxel ball costs about 0.15 Dice).
    A copy 5 times coarser lies outside the training spacings (x2 either way) and is refused unless asked."""
    from monai.transforms import SpatialResample

    from segzoo.data.preprocess import _as_metatensor

    wf, _ = ci_run
    case = json.loads((wf / "results" / "splits" / PHANTOM / "splits.json").read_text())["test"][0]
    image = nib.load(wf / "results" / "raw" / PHANTOM / "imagesTs" / f"{case}_0000.nii.gz")
    run = wf / "results" / "train" / PHANTOM / "unet3plus" / "seed0"
    inputs = tmp_path / "resampled"
    inputs.mkdir()
    nib.save(_scaled(image, 1.25), inputs / "coarser_0000.nii.gz")
    result = run_segzoo("predict", "-i", inputs, "-o", tmp_path / "out", "--run", run, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    predicted = nib.load(tmp_path / "out" / "coarser.nii.gz")
    label = _as_metatensor(np.asarray(predicted.dataobj, dtype=np.float32)[None], predicted.affine)
    back = SpatialResample(mode="nearest")(label, dst_affine=torch.as_tensor(image.affine), spatial_size=image.shape)
    back = np.asarray(back[0].numpy())
    compared = 0
    for name, value in zip(REGIONS, (1, 2, 3)):
        infer = np.asarray(nib.load(wf / "results" / "infer" / PHANTOM / "unet3plus" / "seed0" /
                                    f"{case}_{name}.nii.gz").dataobj) > 0
        if infer.sum() < 500:
            continue
        mine = back >= value  # painted in order, each region's value above the regions it lies inside
        dice = 2 * (mine & infer).sum() / (mine.sum() + infer.sum())
        assert dice >= 0.85, (name, dice)
        compared += 1
    assert compared, "no region large enough to compare"
    far = tmp_path / "far"
    far.mkdir()
    nib.save(_scaled(image, 5.0), far / "far_0000.nii.gz")
    refused = run_segzoo("predict", "-i", far, "-o", tmp_path / "far_out", "--run", run, "--device", "cpu")
    assert refused.returncode == 1 and f"{far / 'far_0000.nii.gz'}: spacing" in refused.stderr
    assert "--any-spacing" in refused.stderr and not (tmp_path / "far_out").exists()
    forced = run_segzoo("predict", "-i", far, "-o", tmp_path / "far_out", "--run", run, "--device", "cpu",
                        "--any-spacing")
    assert forced.returncode == 0, forced.stderr


def test_the_predict_rule_predicts_the_config_folder_with_each_model(ci_run, tmp_path):
    wf = Path(shutil.copytree(ci_run[0], tmp_path / "wf", symlinks=True))  # other tests expect ci_run's folder as is
    case = json.loads((wf / "results" / "splits" / PHANTOM / "splits.json").read_text())["test"][0]
    inputs = tmp_path / "incoming"
    inputs.mkdir()
    shutil.copy(wf / "results" / "raw" / PHANTOM / "imagesTs" / f"{case}_0000.nii.gz", inputs / "new_0000.nii.gz")
    target = f"results/predict/{PHANTOM}/unet3plus"
    result = snakemake(wf, target, "--cores", "2", "--configfile", "presets/ci.yaml",
                       "--config", f"predict={{input: {inputs}}}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (wf / target / "new.nii.gz").is_file()
    log = (wf / "results" / "logs" / "predict" / PHANTOM / "unet3plus.log").read_text()
    assert "with 1 run(s)" in log
