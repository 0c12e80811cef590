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

The comparison's ``nnunet`` and ``nnunet_resenc`` models are the networks nnU-Net's planner would make for the
patch they train on (:func:`planned_architecture`): the stages, strides and kernels of its topology rule
(:func:`topology`, ``get_pool_and_conv_props``) for the patch and the target spacing, features doubling per stage
from ``base_features`` up to ``max_features``, and the blocks per stage of nnU-Net's default planner
(PlainConvUNet, two convolutions per stage) or of its residual-encoder M preset (ResidualEncoderUNet, 1, 3, 4, 6,
6, ... blocks, one convolution per decoder stage).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from segzoo.errors import SegzooError
from segzoo.models.contract import SegmentationModelDefaults


class NnUNetNetwork(SegmentationModelDefaults):
    """What segzoo adds to an nnU-Net network (as a mixin, so parameter names stay nnU-Net's): the
    ``architecture`` block it was built from, the ``divisors`` its strides impose on each patch side (``divisor``:
    the largest), and deep supervision in training mode only (in eval mode one output, as every model gives)."""

    def describe(self, architecture: dict, strides, deep_supervision: bool) -> None:
        self.architecture = copy.deepcopy(architecture)
        self.divisors = _divisors(strides)
        self.divisor = max(self.divisors)
        self.supervised = deep_supervision
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        self.decoder.deep_supervision = mode and getattr(self, "supervised", False)
        return self


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

    ``source`` names where the block came from (a plans.json, a sidecar) in error messages. With
    ``deep_supervision`` the network returns one output per decoder stage in training mode (full resolution first).
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
    network.describe(architecture, kwargs.get("strides", []), deep_supervision)
    return network


def _divisors(strides, dim: int = 3) -> tuple[int, ...]:
    """What each patch side must be a multiple of: the product of the strides along its axis."""
    total = [1] * dim
    for stride in strides:
        stride = list(stride) if isinstance(stride, (list, tuple)) else [stride] * dim
        total = [a * b for a, b in zip(total, stride)]
    return tuple(total)


# --- nnU-Net's planner: the network for a patch --------------------------------------------------------------

MIN_FEATURE_MAP = 4  # nnU-Net's UNet_featuremap_min_edge_length: the bottleneck keeps at least this many voxels


@dataclass(frozen=True)
class Topology:
    """nnU-Net's network topology for a patch: per stage its strides and kernel sizes, and per axis how many times
    it is pooled."""

    strides: list[list[int]]
    kernels: list[list[int]]
    pools: list[int]

    @property
    def divisors(self) -> list[int]:
        return [2**p for p in self.pools]

    def fits(self, patch: list[int]) -> bool:
        return all(side % d == 0 for side, d in zip(patch, self.divisors))

    def padded(self, patch: list[int]) -> list[int]:
        """``patch`` rounded up to the divisors, as nnU-Net pads a patch its topology does not divide."""
        return [math.ceil(side / d) * d for side, d in zip(patch, self.divisors)]


def topology(spacing: list[float], patch: list[int]) -> Topology:
    """nnU-Net's rule (``get_pool_and_conv_props``): stage after stage, pool (stride 2) every axis whose feature map
    still has ``2 * MIN_FEATURE_MAP`` voxels and whose current spacing is within twice the finest spacing among
    those; a lone axis only while it keeps ``3 * MIN_FEATURE_MAP``. An axis gets 3-wide kernels from the first
    stage its spacing is within twice the finest (1-wide before: in-plane convolutions on thick slices); the
    bottleneck is 3-wide everywhere."""
    dim = len(spacing)
    current_spacing, size = [float(s) for s in spacing], [float(p) for p in patch]
    strides, kernels, pools, kernel = [[1] * dim], [], [0] * dim, [1] * dim
    while True:
        valid = [a for a in range(dim) if size[a] >= 2 * MIN_FEATURE_MAP]
        if not valid:
            break
        finest = min(current_spacing[a] for a in valid)
        valid = [a for a in valid if current_spacing[a] / finest < 2]
        if len(valid) == 1 and size[valid[0]] < 3 * MIN_FEATURE_MAP:
            break
        if not valid:
            break
        overall = min(current_spacing)
        kernel = [3 if k == 3 or current_spacing[a] / overall < 2 else 1 for a, k in enumerate(kernel)]
        stride = [2 if a in valid else 1 for a in range(dim)]
        for a in valid:
            pools[a] += 1
            current_spacing[a] *= 2
            size[a] = math.ceil(size[a] / 2)
        strides.append(stride)
        kernels.append(list(kernel))
    kernels.append([3] * dim)
    return Topology(strides, kernels, pools)


@dataclass(frozen=True)
class Preset:
    """One of nnU-Net's planners: the network class and its encoder and decoder blocks per stage."""

    network_class: str
    encoder_key: str  # the arch_kwargs key of the encoder's blocks per stage
    encoder_blocks: tuple[int, ...]  # per stage, from the first; the last entry repeats for deeper networks
    decoder_convs: tuple[int, ...]


PRESETS = {
    # nnU-Net's default ExperimentPlanner (nnUNetPlans, 3d_fullres): two convolutions per stage, both ways
    "nnunet": Preset(f"{UNET}.PlainConvUNet", "n_conv_per_stage", (2,), (2,)),
    # nnUNetPlannerResEncM (nnU-Net Revisited, MICCAI 2024): residual blocks 1, 3, 4, 6, 6, ... per encoder stage
    "nnunet_resenc": Preset(f"{UNET}.ResidualEncoderUNet", "n_blocks_per_stage", (1, 3, 4, 6), (1,)),
}


def _per_stage(blocks: tuple[int, ...], stages: int) -> list[int]:
    return [blocks[min(i, len(blocks) - 1)] for i in range(stages)]


def planned_architecture(preset: str, patch_size: list[int], spacing: list[float], base_features: int = 32,
                         max_features: int = 320) -> dict:
    """The ``architecture`` block nnU-Net's planner writes for ``patch_size`` (voxels at the target ``spacing``):
    the :func:`topology`, features ``min(base_features * 2**stage, max_features)``, the preset's blocks, instance
    norm (affine), leaky ReLU, no dropout. Raises :class:`SegzooError` when the topology does not divide the
    patch (nnU-Net would pad it to :meth:`Topology.padded`)."""
    if preset not in PRESETS:
        raise SegzooError(f"no nnU-Net preset {preset!r} (known: {', '.join(PRESETS)})")
    p = PRESETS[preset]
    dim = len(spacing)
    if len(patch_size) != dim:
        raise SegzooError(f"{preset}: patch {list(patch_size)} has {len(patch_size)} sides for {dim} spacings")
    top = topology(spacing, patch_size)
    if not top.fits(patch_size):
        raise SegzooError(f"{preset}: patch {list(patch_size)} does not fit nnU-Net's topology for it at spacing "
                          f"{[round(s, 4) for s in spacing]} mm: it pools the axes {top.pools} times, so the sides "
                          f"must be multiples of {top.divisors} (nnU-Net would pad it to {top.padded(patch_size)})")
    stages = len(top.strides)
    conv, norm = {2: ("Conv2d", "InstanceNorm2d"), 3: ("Conv3d", "InstanceNorm3d")}[dim]
    return {
        "network_class_name": p.network_class,
        "arch_kwargs": {
            "n_stages": stages,
            "features_per_stage": [min(max_features, base_features * 2**i) for i in range(stages)],
            "conv_op": f"torch.nn.modules.conv.{conv}",
            "kernel_sizes": top.kernels,
            "strides": top.strides,
            p.encoder_key: _per_stage(p.encoder_blocks, stages),
            "n_conv_per_stage_decoder": _per_stage(p.decoder_convs, stages - 1),
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.{norm}", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def planned_network(preset: str, in_channels: int, out_channels: int, architecture: dict | None = None,
                    deep_supervision: bool = False, **planning) -> nn.Module:
    """A registry model of nnU-Net's: the network its ``architecture`` block describes (planned by
    :func:`planned_architecture` for the patch it trains on, or imported from an nnU-Net model folder).

    The block comes from the plan (``plans.json``'s ``model_options``); a config's ``base_features`` and
    ``max_features`` (``planning``) only reach it through the plan."""
    if architecture is None or planning:
        given = f" (given: {', '.join(sorted(planning))}, which the plan turns into one)" if planning else ""
        raise SegzooError(f"model {preset}: no architecture block{given}; nnU-Net's networks are planned for the "
                          "patch they train on (`segzoo plan`, then `segzoo train --plans`), or imported "
                          "(`segzoo nnunet-import`)")
    return build_network(architecture, in_channels, out_channels, deep_supervision=deep_supervision,
                         source=f"model {preset}")


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
