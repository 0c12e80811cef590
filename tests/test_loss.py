"""The training loss: sigmoid DiceCE per (overlapping) region, normalised deep supervision."""

import torch

from segzoo.train.loss import RegionDiceCE, build_loss


def _regions():
    target = torch.zeros(2, 3, 8, 8, 8)
    target[:, 0, 1:7, 1:7, 1:7] = 1  # canal contains sc contains lesion: regions overlap
    target[:, 1, 2:6, 2:6, 2:6] = 1
    target[0, 2, 3:5, 3:5, 3:5] = 1  # lesion only in the first sample
    return target


def test_overlapping_regions_predicted_right_give_a_small_loss():
    target = _regions()
    perfect = (target * 2 - 1) * 20  # logits: +20 inside each region, -20 outside
    assert RegionDiceCE()(perfect, target) < 0.01  # softmax CE would punish the overlap
    assert RegionDiceCE()(-perfect, target) > 1.5


def test_each_region_counts_once():
    target = _regions()
    logits = (target * 2 - 1) * 20
    logits[:, 1] = -logits[:, 1]  # one of three regions completely wrong
    one_wrong = RegionDiceCE()(logits, target)
    single = RegionDiceCE()(-(target[:, 1:2] * 2 - 1) * 20, target[:, 1:2])
    assert torch.allclose(one_wrong, single / 3, atol=1e-3)


def test_deep_supervision_weights_are_normalised():
    target = _regions()
    logits = torch.randn(2, 3, 8, 8, 8)
    loss = build_loss()
    assert torch.allclose(loss([logits] * 5, target), loss(logits, target), atol=1e-5)
    coarse = torch.nn.functional.avg_pool3d(logits, 2)
    assert not torch.allclose(loss([logits, coarse], target), loss(logits, target))
