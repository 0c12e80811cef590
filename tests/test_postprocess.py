"""Postprocessing chosen on validation: the decision rule on synthetic masks, the reader's refusals, the ensemble
vote, and the ci run's files applied by `segzoo infer`."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest

from conftest import PHANTOM, run_segzoo
from segzoo.errors import SegzooError
from segzoo.io import write_json
from segzoo.inference.postprocess import (CONNECTIVITY, FILE_NAME, Postprocessing, apply_postprocessing,
                                          choose_from_masks, keep_largest_component, majority_postprocessing,
                                          read_postprocessing)

SHAPE = (20, 20, 20)
REGIONS = ["canal", "sc", "lesion"]


def _box(*slices: slice) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[slices] = True
    return mask


TRUE_BLOB = _box(slice(2, 8), slice(2, 8), slice(2, 8))  # 216 voxels
FAR_BLOB = _box(slice(15, 18), slice(15, 18), slice(15, 18))  # 27 voxels, nowhere near the reference
EMPTY = np.zeros(SHAPE, dtype=bool)


def test_a_spurious_far_blob_makes_the_largest_component_chosen_and_a_two_part_object_does_not():
    two_parts = TRUE_BLOB | FAR_BLOB
    # region "blob": the true object plus a false positive far away; region "pair": a correct two-part object
    predictions = [np.stack([TRUE_BLOB | FAR_BLOB, two_parts]), np.stack([TRUE_BLOB, two_parts])]
    references = [np.stack([TRUE_BLOB, two_parts]), np.stack([TRUE_BLOB, two_parts])]
    result = choose_from_masks(predictions, references, ["blob", "pair"], ["a", "b"])
    assert result["largest_component"] == {"blob": True, "pair": False}
    blob, pair = result["val_dice"]["blob"], result["val_dice"]["pair"]
    assert blob["as_predicted"] == pytest.approx((2 * 216 / (243 + 216) + 1) / 2) and blob["largest_component"] == 1
    assert pair["as_predicted"] == 1 and pair["largest_component"] == pytest.approx(2 * 216 / (216 + 243))
    assert result["cases"] == ["a", "b"] and result["connectivity"] == CONNECTIVITY


def test_equal_dice_keeps_the_predictions_and_empty_masks_follow_the_metric():
    one_part = TRUE_BLOB
    predictions = [np.stack([one_part, EMPTY, FAR_BLOB]), np.stack([one_part, EMPTY, EMPTY])]
    references = [np.stack([one_part, EMPTY, EMPTY]), np.stack([one_part, EMPTY, EMPTY])]
    result = choose_from_masks(predictions, references, REGIONS, ["a", "b"])
    # nothing to remove: equal means are not a rise
    assert result["val_dice"]["canal"] == {"as_predicted": 1.0, "largest_component": 1.0}
    # both empty in every case: no Dice counts (null), nothing chosen
    assert result["val_dice"]["sc"] == {"as_predicted": None, "largest_component": None}
    # a prediction over an empty reference scores 0; the case where both are empty is left out of the mean
    assert result["val_dice"]["lesion"] == {"as_predicted": 0.0, "largest_component": 0.0}
    assert result["largest_component"] == {"canal": False, "sc": False, "lesion": False}
    json.dumps(result, allow_nan=False)  # strict JSON: no NaN written


def test_keep_largest_component_counts_corner_neighbours_and_keeps_the_dtype():
    mask = TRUE_BLOB.astype(np.uint8)
    mask[8, 8, 8] = 1  # touches the blob's corner (7, 7, 7): one 26-connected component
    mask[10, 10, 10] = 1  # alone
    kept = keep_largest_component(mask)
    assert kept.dtype == np.uint8 and kept.shape == SHAPE
    assert kept[8, 8, 8] == 1 and kept[10, 10, 10] == 0 and kept.sum() == 217
    assert not keep_largest_component(EMPTY).any()


def test_apply_changes_only_the_regions_decided_true():
    decision = Postprocessing({"canal": True, "sc": False}, "test")
    mask = (TRUE_BLOB | FAR_BLOB).astype(np.uint8)
    np.testing.assert_array_equal(apply_postprocessing(mask, "sc", decision), mask)
    np.testing.assert_array_equal(apply_postprocessing(mask, "canal", None), mask)
    np.testing.assert_array_equal(apply_postprocessing(mask, "canal", decision), TRUE_BLOB.astype(np.uint8))
    with pytest.raises(SegzooError, match="test: no decision for region 'lesion'"):
        apply_postprocessing(mask, "lesion", decision)


def test_the_written_decision_reads_back(tmp_path):
    path = tmp_path / FILE_NAME
    write_json(path, choose_from_masks([np.stack([TRUE_BLOB | FAR_BLOB])], [np.stack([TRUE_BLOB])], ["sc"], ["a"]))
    decision = read_postprocessing(path, ["sc"])
    assert decision.largest_component == {"sc": True} and decision.source == str(path)


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"connectivity": CONNECTIVITY}), "missing key(s) largest_component"),
    (json.dumps({"connectivity": 6, "largest_component": {}}), "connectivity 6"),
    (json.dumps({"connectivity": CONNECTIVITY, "largest_component": {"canal": "yes"}}), "true or false"),
    (json.dumps({"connectivity": CONNECTIVITY, "largest_component": {"canal": True, "sc": False}}),
     "decides regions ['canal', 'sc']; the model's regions are ['canal', 'lesion', 'sc']"),
])
def test_the_reader_names_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / FILE_NAME
    path.write_text(content)
    with pytest.raises(SegzooError) as raised:
        read_postprocessing(path, REGIONS)
    assert str(raised.value).startswith(str(path)) and problem in str(raised.value)


def test_the_reader_refuses_a_missing_file(tmp_path):
    with pytest.raises(SegzooError, match=f"{tmp_path / FILE_NAME}: missing"):
        read_postprocessing(tmp_path / FILE_NAME, REGIONS)


def test_an_ensemble_keeps_what_more_than_half_of_its_runs_chose():
    yes, no = Postprocessing({"sc": True}, "a"), Postprocessing({"sc": False}, "b")
    assert majority_postprocessing([yes, yes, no], ["sc"]).keeps_largest("sc")
    assert majority_postprocessing([yes, yes, None], ["sc"]).keeps_largest("sc")
    assert not majority_postprocessing([yes, None], ["sc"]).keeps_largest("sc")  # a run without a file says no
    assert not majority_postprocessing([yes, no], ["sc"]).keeps_largest("sc")  # a tie changes nothing
    assert not majority_postprocessing([None], ["sc"]).keeps_largest("sc")


@pytest.mark.slow
def test_the_ci_run_records_postprocessing_and_infer_applies_it(ci_run, tmp_path):
    wf, _ = ci_run
    splits = json.loads((wf / "results" / "splits" / PHANTOM / "splits.json").read_text())
    runs = sorted(p.parent for p in (wf / "results" / "train" / PHANTOM).glob("*/seed*/best.safetensors"))
    assert len(runs) >= 4
    for run in runs:
        decision = read_postprocessing(run / FILE_NAME, REGIONS)
        recorded = json.loads((run / FILE_NAME).read_text())
        assert recorded["cases"] == splits["val"]
        for region, keep in decision.largest_component.items():
            dice = recorded["val_dice"][region]
            if keep:
                assert dice["largest_component"] > dice["as_predicted"]
            else:
                assert dice["as_predicted"] is None or not dice["largest_component"] > dice["as_predicted"]
        predictions = wf / "results" / "infer" / PHANTOM / run.parent.name / run.name
        for case in splits["test"]:
            prob = np.asarray(nib.load(predictions / f"{case}_prob.nii.gz").dataobj)
            for r, region in enumerate(REGIONS):
                written = np.asarray(nib.load(predictions / f"{case}_{region}.nii.gz").dataobj)
                expected = apply_postprocessing((prob[..., r] > 0.5).astype(np.uint8), region, decision)
                np.testing.assert_array_equal(written, expected, err_msg=f"{predictions} {case} {region}")

    # the verb itself: the same decision again (deterministic), and never over an existing file
    run = runs[0]
    args = ["postprocessing", "--checkpoint", run / "best.safetensors", "--data", wf / "results" / "preprocessed" /
            PHANTOM, "--splits", wf / "results" / "splits" / PHANTOM / "splits.json", "--device", "cpu",
            "--out", tmp_path / FILE_NAME]
    result = run_segzoo(*args)
    assert result.returncode == 0, result.stderr
    again, recorded = json.loads((tmp_path / FILE_NAME).read_text()), json.loads((run / FILE_NAME).read_text())
    assert again["largest_component"] == recorded["largest_component"]
    for region in REGIONS:
        for key, value in recorded["val_dice"][region].items():
            assert (value is None and again["val_dice"][region][key] is None) or math.isclose(
                value, again["val_dice"][region][key], abs_tol=1e-9)
    result = run_segzoo(*args)
    assert result.returncode == 1 and "already exists" in result.stderr
