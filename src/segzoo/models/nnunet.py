"""nnU-Net's own networks (dynamic-network-architectures), built from an nnU-Net ``architecture`` block.

nnU-Net v2 describes its network in ``plans.json`` as

    {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
     "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16],
                     "conv_op": "torch.nn.modules.conv.Conv3d", ..., "nonlin": "torch.nn.LeakyReLU"},
     "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}

and turns every string named in ``_kw_requires_import`` into a class with ``pydoc.locate``: it imports
whatever the file names. segzoo resolves the class name and every op name through the allowlists
below instead, and refuses anything else with a message naming the key and the value.

The checkpoint zoo's network is :func:`zoo_network`: PlainConvUNet with one sigmoid output per region.
"""

from __future__ import annotations

import copy

from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from segzoo.errors import SegzooError
from segzoo.models.contract import SegmentationModelDefaults


class NnUNetNetwork(SegmentationModelDefaults):
    """What segzoo adds to an nnU-Net network (as a mixin, so parameter names stay nnU-Net's): the
    ``architecture`` block it was built from and the ``divisor`` its strides impose."""

    def describe(self, architecture: dict, strides) -> None:
        self.architecture = copy.deepcopy(architecture)
        self.divisor = _divisor(strides)


class SegzooPlainConvUNet(NnUNetNetwork, PlainConvUNet):
    pass


class SegzooResidualEncoderUNet(NnUNetNetwork, ResidualEncoderUNet):
    pass


UNET = "dynamic_network_architectures.architectures.unet"
NETWORK_CLASSES = {f"{UNET}.PlainConvUNet": SegzooPlainConvUNet,
                   f"{UNET}.ResidualEncoderUNet": SegzooResidualEncoderUNet}

_OPS = [nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.BatchNorm1d,
        nn.BatchNorm2d, nn.BatchNorm3d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.LeakyReLU, nn.ReLU,
        nn.GELU, nn.PReLU, nn.ELU]
# nnU-Net writes both the full module path (torch.nn.modules.conv.Conv3d) and the short one (torch.nn.LeakyReLU).
OPS = {name: op for op in _OPS for name in (f"{op.__module__}.{op.__name__}", f"torch.nn.{op.__name__}")}


def plain_conv_unet_architecture(features: list[int], n_conv_per_stage: int = 2, kernel_size: int = 3,
                                 dim: int = 3) -> dict:
    """The ``architecture`` block nnU-Net would write for a PlainConvUNet with these widths: stride 1 then 2
    per stage, ``n_conv_per_stage`` convs in every encoder and decoder stage, instance norm (affine),
    leaky ReLU, no dropout."""
    conv, norm = {2: ("Conv2d", "InstanceNorm2d"), 3: ("Conv3d", "InstanceNorm3d")}[dim]
    stages = len(features)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": stages, "features_per_stage": list(features),
            "conv_op": f"torch.nn.modules.conv.{conv}",
            "kernel_sizes": [[kernel_size] * dim] * stages,
            "strides": [[1] * dim] + [[2] * dim] * (stages - 1),
            "n_conv_per_stage": [n_conv_per_stage] * stages,
            "n_conv_per_stage_decoder": [n_conv_per_stage] * (stages - 1),
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.{norm}", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def build_network(architecture: dict, input_channels: int, num_classes: int, deep_supervision: bool = False,
                  source: str = "architecture") -> nn.Module:
    """The network an nnU-Net ``architecture`` block describes, initialised as nnU-Net does (He init).

    ``source`` names where the block came from (a plans.json, a sidecar) in error messages.
    """
    try:
        class_name = architecture["network_class_name"]
        kwargs = copy.deepcopy(architecture["arch_kwargs"])
        needs_import = list(architecture.get("_kw_requires_import", []))
    except (KeyError, TypeError) as e:
        raise SegzooError(f"{source}: not an nnU-Net architecture block (missing {e})") from None
    if class_name not in NETWORK_CLASSES:
        raise SegzooError(f"{source}: network_class_name {class_name!r} is not allowed (segzoo builds only "
                          f"{', '.join(sorted(NETWORK_CLASSES))}; it never imports a class named in a file)")
    for key in needs_import:
        value = kwargs.get(key)
        if value is None:
            continue
        if value not in OPS:
            raise SegzooError(f"{source}: arch_kwargs.{key} {value!r} is not an allowed op "
                              f"(allowed: {', '.join(sorted(n for n in OPS if n.startswith('torch.nn.modules')))})")
        kwargs[key] = OPS[value]
    try:
        network = NETWORK_CLASSES[class_name](input_channels=input_channels, num_classes=num_classes,
                                              deep_supervision=deep_supervision, **kwargs)
    except (TypeError, AssertionError, ValueError) as e:
        raise SegzooError(f"{source}: arch_kwargs do not build {class_name.rsplit('.', 1)[-1]} ({e})") from None
    network.apply(network.initialize)
    network.describe(architecture, kwargs.get("strides", []))
    return network


def _divisor(strides) -> int:
    """Patch sides must be multiples of the product of the strides (per axis; the largest is returned)."""
    total = None
    for stride in strides:
        stride = stride if isinstance(stride, (list, tuple)) else [stride]
        total = list(stride) if total is None else [a * b for a, b in zip(total, stride)]
    return max(total) if total else 1


def zoo_network(in_channels: int, out_channels: int, features: list[int] = (4, 8, 16),
                n_conv_per_stage: int = 2) -> nn.Module:
    """The checkpoint zoo's network: nnU-Net's PlainConvUNet, one sigmoid output (logit) per region.

    ``features=[4, 8, 16]`` with one input channel and three regions has 21,554 parameters. Input
    ``[B, C, X, Y, Z]`` with sides divisible by ``2 ** (len(features) - 1)``; output logits ``[B, R, X, Y, Z]``.

    PlainConvUNet always builds a segmentation layer for every decoder stage (``decoder.seg_layers``);
    without deep supervision only the last one is used. The others take no part in the forward pass,
    get no gradient and keep their initial values through training: they are in the flat parameter
    vector (``named_parameters()`` order) but never change, so G.pt learns a zero change for them.
    """
    return build_network(plain_conv_unet_architecture(list(features), n_conv_per_stage), in_channels, out_channels,
                         source="weightgen network")
