"""nnU-Net's PlainConvUNet from an nnU-Net architecture block: same network as nnU-Net builds, allowlisted names."""

import copy

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from segzoo.errors import SegzooError
from segzoo.models.nnunet import build_network, plain_conv_unet_architecture, zoo_network


def test_block_builds_the_network_dynamic_network_architectures_builds():
    block = plain_conv_unet_architecture([4, 8, 16])
    torch.manual_seed(3)
    ours = build_network(block, 1, 3)
    torch.manual_seed(3)
    theirs = PlainConvUNet(1, 3, [4, 8, 16], nn.Conv3d, [[3, 3, 3]] * 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                           [2, 2, 2], 3, [2, 2], True, nn.InstanceNorm3d, {"eps": 1e-05, "affine": True}, None, None,
                           nn.LeakyReLU, {"inplace": True}, deep_supervision=False)
    theirs.apply(theirs.initialize)  # nnU-Net's get_network_from_plans does the same
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for (_, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert torch.equal(a, b)
    x = torch.randn(2, 1, 32, 32, 16)
    assert torch.equal(ours.eval()(x), theirs.eval()(x))
    assert ours.divisor == 4


def test_zoo_network_size_and_unused_deep_supervision_heads():
    net = zoo_network(1, 3, [4, 8, 16])
    assert sum(p.numel() for p in net.parameters()) == 21554
    assert len(net.state_dict()) > len(list(net.named_parameters()))  # the state dict names tensors twice
    net(torch.randn(1, 1, 16, 16, 8)).sum().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert grads["decoder.seg_layers.0.weight"] is None  # the coarse head takes no part without deep supervision
    assert grads["decoder.seg_layers.1.weight"] is not None


@pytest.mark.parametrize("key, value, message", [
    ("network_class_name", "os.system", "network_class_name 'os.system' is not allowed"),
    ("conv_op", "builtins.eval", "arch_kwargs.conv_op 'builtins.eval' is not an allowed op"),
    ("nonlin", "torch.nn.Softmax2d", "arch_kwargs.nonlin 'torch.nn.Softmax2d' is not an allowed op"),
])
def test_names_outside_the_allowlist_are_refused(key, value, message):
    block = copy.deepcopy(plain_conv_unet_architecture([4, 8]))
    if key == "network_class_name":
        block[key] = value
    else:
        block["arch_kwargs"][key] = value
    with pytest.raises(SegzooError, match=f"plans.json: {message}"):
        build_network(block, 1, 2, source="plans.json")


def test_short_and_long_op_names_and_broken_kwargs():
    block = plain_conv_unet_architecture([4, 8])
    block["arch_kwargs"]["conv_op"] = "torch.nn.Conv3d"
    assert isinstance(build_network(block, 1, 2).encoder.stages[0][0].convs[0].conv, nn.Conv3d)
    block["arch_kwargs"]["n_conv_per_stage"] = [2]  # one entry for two stages
    with pytest.raises(SegzooError, match="arch_kwargs do not build PlainConvUNet"):
        build_network(block, 1, 2)
    with pytest.raises(SegzooError, match="not an nnU-Net architecture block"):
        build_network({"arch_kwargs": {}}, 1, 2)
