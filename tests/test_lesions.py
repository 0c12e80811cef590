"""Lesion-wise detection (segzoo.evaluate.lesions) on hand-built cases whose counts are known, and against an
independent implementation (scikit-image's labelling, overlaps counted voxel by voxel in Python)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label as skimage_label

from segzoo.evaluate.lesions import instance_regions, lesion_counts, lesion_scores
from segzoo.evaluate.metrics import score_region


def _cube(mask: np.ndarray, corner: tuple[int, int, int], side: int) -> None:
    x, y, z = corner
    mask[x:x + side, y:y + side, z:z + side] = True


def test_a_hand_built_case_gives_the_counts_it_was_built_with():
    ref = np.zeros((40, 40, 20), bool)
    pred = np.zeros_like(ref)
    for corner in [(2, 2, 2), (12, 2, 2), (22, 2, 2), (32, 2, 2)]:  # four reference lesions
        _cube(ref, corner, 4)
    _cube(pred, (3, 3, 3), 4)  # overlaps lesion 1
    _cube(pred, (12, 2, 2), 4)  # lesion 2, exactly
    _cube(pred, (2, 30, 10), 3)  # a false positive far from every lesion
    _cube(pred, (20, 20, 15), 2)  # another false positive
    counts = lesion_counts(pred, ref)
    assert counts == {"reference": 4, "predicted": 4, "detected": 2, "true_predicted": 2}
    scores = lesion_scores(pred, ref)
    assert scores["lesion_sensitivity"] == pytest.approx(0.5) and scores["lesion_precision"] == pytest.approx(0.5)
    assert scores["lesion_f1"] == pytest.approx(0.5) and scores["lesion_count_error"] == 0
    # two lesions touching at a corner are one lesion at 26-connectivity, two at 6
    corner = np.zeros((10, 10, 10), bool)
    corner[2, 2, 2] = corner[3, 3, 3] = True
    assert lesion_counts(corner, corner)["reference"] == 1
    assert lesion_counts(corner, corner, connectivity=6)["reference"] == 2
    # the overlap rule: a one-voxel touch counts at 1 voxel, not at 2
    touch = np.zeros_like(ref)
    touch[5, 5, 5] = True  # one voxel of lesion 1
    assert lesion_counts(touch, ref)["detected"] == 1
    assert lesion_counts(touch, ref, min_overlap_voxels=2)["detected"] == 0


def test_empty_cases_follow_the_voxel_metrics_rule():
    empty = np.zeros((8, 8, 8), bool)
    lesion = empty.copy()
    lesion[2:4, 2:4, 2:4] = True
    both = lesion_scores(empty, empty)
    assert np.isnan(both["lesion_f1"]) and np.isnan(both["lesion_sensitivity"]) and both["lesion_count_error"] == 0
    missed = lesion_scores(empty, lesion)
    assert missed["lesion_sensitivity"] == 0 and np.isnan(missed["lesion_precision"]) and missed["lesion_f1"] == 0
    invented = lesion_scores(lesion, empty)
    assert np.isnan(invented["lesion_sensitivity"]) and invented["lesion_precision"] == 0 and invented["lesion_f1"] == 0


def _independent(pred: np.ndarray, ref: np.ndarray, k: int) -> dict[str, int]:
    """scikit-image's labelling (connectivity 3 = 26 neighbours) and overlaps counted lesion by lesion."""
    ref_l, n_ref = skimage_label(ref, connectivity=3, return_num=True)
    pred_l, n_pred = skimage_label(pred, connectivity=3, return_num=True)
    detected = sum(int(np.count_nonzero(pred[ref_l == i])) >= k for i in range(1, n_ref + 1))
    true_pred = sum(int(np.count_nonzero(ref[pred_l == j])) >= k for j in range(1, n_pred + 1))
    return {"reference": n_ref, "predicted": n_pred, "detected": detected, "true_predicted": true_pred}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 3])
def test_counts_agree_with_an_independent_implementation(seed, k):
    rng = np.random.default_rng(seed)
    ref = rng.random((24, 24, 12)) > 0.93
    pred = ref ^ (rng.random(ref.shape) > 0.9)  # the reference with a tenth of the voxels flipped
    assert lesion_counts(pred, ref, min_overlap_voxels=k) == _independent(pred, ref, k)


def test_regions_named_as_instances_and_the_metric_columns():
    assert instance_regions(None, ["canal", "sc", "lesion"]) == ["lesion"]
    assert instance_regions(None, ["anterior", "posterior"]) == []
    assert instance_regions(["sc"], ["canal", "sc"]) == ["sc"]
    mask = np.zeros((8, 8, 8), bool)
    mask[2:5, 2:5, 2:5] = True
    plain = score_region(mask, mask, None, (1, 1, 1))
    assert np.isnan(plain["lesion_f1"])  # not an instance region
    scored = score_region(mask, mask, None, (1, 1, 1), detection={"min_overlap_voxels": 1, "connectivity": 26})
    assert scored["lesion_f1"] == 1.0 and scored["dice"] == 1.0
