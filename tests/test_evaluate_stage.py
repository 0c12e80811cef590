"""The inference and evaluation stage on the ci preset's real Snakemake run."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import PHANTOM
from segzoo.inference.postprocess import FILE_NAME, apply_postprocessing, read_postprocessing

pytestmark = pytest.mark.slow
MODELS = ["unet3plus", "ms_unet3plus", "diffnet", "ms_diffnet"]


def test_predictions_are_in_the_original_image_grid(ci_run):
    wf, _ = ci_run
    splits = json.loads((wf / "results" / "splits" / PHANTOM / "splits.json").read_text())
    for model in MODELS:
        out = wf / "results" / "infer" / PHANTOM / model / "seed0"
        decision = read_postprocessing(wf / "results" / "train" / PHANTOM / model / "seed0" / FILE_NAME)
        for case in splits["test"]:
            image = nib.load(wf / "results" / "raw" / PHANTOM / "imagesTs" / f"{case}_0000.nii.gz")
            prob = nib.load(out / f"{case}_prob.nii.gz")
            assert prob.shape == (*image.shape, 3)
            np.testing.assert_allclose(prob.affine, image.affine, atol=1e-6)
            data = np.asarray(prob.dataobj)
            assert data.min() >= 0 and data.max() <= 1
            for r, region in enumerate(["canal", "sc", "lesion"]):
                mask = nib.load(out / f"{case}_{region}.nii.gz")
                assert mask.shape == image.shape
                np.testing.assert_allclose(mask.affine, image.affine, atol=1e-6)
                # probability > 0.5, then the run's postprocessing (probability maps stay as predicted)
                np.testing.assert_array_equal(np.asarray(mask.dataobj) > 0,
                                              apply_postprocessing(data[..., r] > 0.5, region, decision))


def test_scores_and_comparison_tables(ci_run):
    wf, _ = ci_run
    tables = wf / "results" / "tables" / PHANTOM
    per_case = pd.read_csv(tables / "per_case.csv")
    splits = json.loads((wf / "results" / "splits" / PHANTOM / "splits.json").read_text())
    assert len(per_case) == len(MODELS) * len(splits["test"]) * 3
    assert set(per_case.columns) >= {"dice", "iou", "hd95_mm", "surface_dice", "volume_diff_ml", "nll", "ece"}
    comparison = pd.read_csv(tables / "comparison.csv")
    dice = comparison[comparison["metric"] == "dice"]
    assert set(dice["model"]) == set(MODELS)
    assert (dice["ci_low"].dropna() <= dice["mean"].dropna() + 1e-9).all()
    markdown = (tables / "dice.md").read_text()
    assert all(model in markdown for model in MODELS) and "[" in markdown
    assert "<table" in (tables / "dice.html").read_text()


def _evaluate_args(wf, predictions, out):
    return ["evaluate", "--predictions", predictions, "--raw", wf / "results" / "raw" / PHANTOM,
            "--data", wf / "results" / "preprocessed" / PHANTOM,
            "--splits", wf / "results" / "splits" / PHANTOM / "splits.json",
            "--model", "unet3plus", "--seed", "0", "--out", out]


def test_evaluate_refuses_predictions_outside_the_original_grid(ci_run, tmp_path):
    import shutil

    from conftest import run_segzoo
    wf, _ = ci_run
    predictions = Path(shutil.copytree(wf / "results" / "infer" / PHANTOM / "unet3plus" / "seed0", tmp_path / "p"))
    mask = sorted(predictions.glob("*_sc.nii.gz"))[0]
    img = nib.load(mask)
    shifted = img.affine.copy()
    shifted[:3, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted), mask)
    result = run_segzoo(*_evaluate_args(wf, predictions, tmp_path / "scores.csv"))
    assert result.returncode == 1 and f"{mask}: affine differs" in result.stderr and "Traceback" not in result.stderr
    mask.unlink()
    result = run_segzoo(*_evaluate_args(wf, predictions, tmp_path / "scores.csv"))
    assert result.returncode == 1 and f"{mask}: missing" in result.stderr
    assert not (tmp_path / "scores.csv").exists()


def test_compare_names_a_bad_table(tmp_path):
    from conftest import run_segzoo
    bad = tmp_path / "scores.csv"
    bad.write_text("a,b\n1,2\n")
    result = run_segzoo("compare", bad, "--out-dir", tmp_path / "tables")
    assert result.returncode == 1 and f"{bad}: missing column(s)" in result.stderr
    assert not (tmp_path / "tables").exists()
