"""Metrics on hand-built cases whose answers are known."""

import math

import numpy as np
import pytest

from segzoo.evaluate.metrics import ece, nll, score_region


def cube(shape, start, size):
    m = np.zeros(shape, bool)
    m[tuple(slice(s, s + size) for s in start)] = True
    return m


def plate(shape, z):
    m = np.zeros(shape, bool)
    m[4:16, 4:16, z] = True
    return m


@pytest.mark.parametrize("k", [1, 2, 4])
def test_cubes_shifted_by_k_voxels(k):
    a = 10
    ref = cube((24, 24, 24), (5, 5, 5), a)
    pred = cube((24, 24, 24), (5 + k, 5, 5), a)
    s = score_region(pred, ref, pred.astype(float), spacing=(1, 1, 1))
    assert s["dice"] == pytest.approx((a - k) / a)
    assert s["iou"] == pytest.approx((a - k) / (a + k))
    assert s["volume_diff_ml"] == 0.0


@pytest.mark.parametrize("spacing,k,expected_mm", [((1, 1, 1), 2, 2.0), ((0.8, 0.8, 3.0), 2, 6.0),
                                                   ((0.5, 0.5, 2.5), 1, 2.5)])
def test_hd95_and_surface_dice_are_in_mm(spacing, k, expected_mm):
    ref, pred = plate((20, 20, 12), 3), plate((20, 20, 12), 3 + k)  # every surface point k slices away
    s = score_region(pred, ref, pred.astype(float), spacing=spacing, tolerance_mm=expected_mm + 0.01)
    assert s["hd95_mm"] == pytest.approx(expected_mm)
    assert s["surface_dice"] == pytest.approx(1.0)
    assert score_region(pred, ref, pred.astype(float), spacing=spacing, tolerance_mm=expected_mm - 0.01)["surface_dice"] == 0


def test_volume_difference_in_ml_uses_spacing():
    ref = cube((20, 20, 20), (2, 2, 2), 10)  # 1000 voxels
    pred = cube((20, 20, 20), (2, 2, 2), 5)  # 125 voxels
    s = score_region(pred, ref, pred.astype(float), spacing=(1.0, 1.0, 2.0))
    assert s["volume_diff_ml"] == pytest.approx(875 * 2.0 / 1000)


def test_empty_reference_and_prediction():
    empty = np.zeros((10, 10, 10), bool)
    both = score_region(empty, empty, np.zeros((10, 10, 10)), spacing=(1, 1, 2))
    assert math.isnan(both["dice"]) and math.isnan(both["iou"]) and math.isnan(both["hd95_mm"])
    assert math.isnan(both["surface_dice"]) and both["volume_diff_ml"] == 0.0
    pred = cube((10, 10, 10), (2, 2, 2), 3)
    one = score_region(pred, empty, pred.astype(float), spacing=(1, 1, 2))
    assert one["dice"] == 0.0 and one["surface_dice"] == 0.0
    assert one["hd95_mm"] == pytest.approx(math.sqrt(10**2 + 10**2 + 20**2))  # the image diagonal
    missed = score_region(empty, pred, np.zeros((10, 10, 10)), spacing=(1, 1, 2))
    assert missed["dice"] == 0.0 and missed["volume_diff_ml"] == pytest.approx(27 * 2 / 1000)


def test_nll_and_calibration():
    ref = np.zeros((10, 10, 4), bool)
    ref[:5] = True  # half foreground
    assert nll(np.full(ref.shape, 0.5), ref) == pytest.approx(math.log(2))
    assert nll(ref.astype(float), ref) < 1e-6
    assert ece(ref.astype(float), ref) == pytest.approx(0.0)
    assert ece(np.full(ref.shape, 0.5), ref) == pytest.approx(0.0)  # 50 % said, 50 % true
    assert ece(np.full(ref.shape, 0.9), np.zeros_like(ref)) == pytest.approx(0.9)
