"""The one place that names the models: ``MODELS[name](in_channels, out_channels, **options)``.

Options are the config's ``models.<name>`` section (widths, depths); every model returns logits
[B, regions, *spatial] in eval mode, and every model keeps :class:`segzoo.models.contract.SegmentationModel`.

nnU-Net's networks (``nnunet``: PlainConvUNet, ``nnunet_resenc``: ResidualEncoderUNet) are built from an nnU-Net
``architecture`` block, which depends on the patch: :func:`planned_options` turns their config options into the
options they are built with for a patch and spacing (the plan calls it; plans.json keeps the result). An
imported nnU-Net model is an ``nnunet`` whose block came from the model folder's plans.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from segzoo.errors import SegzooError
from segzoo.models.contract import SegmentationModel
from segzoo.models.diffnet import DiffNet, MSDiffNet
from segzoo.models.nnunet import PRESETS, planned_architecture, planned_network, zoo_network
from segzoo.models.unet3plus import UNet3Plus

ZOO_NETWORK = "plain_conv_unet"
IMPORTED = "nnunet"  # a network imported from an nnU-Net model folder, rebuilt from its architecture block

MODELS = {
    "unet3plus": partial(UNet3Plus, pyramid=False),
    "ms_unet3plus": partial(UNet3Plus, pyramid=True),
    "diffnet": DiffNet,
    "ms_diffnet": MSDiffNet,
    **{name: partial(planned_network, name) for name in PRESETS},  # nnU-Net's; `nnunet` is also IMPORTED's
    ZOO_NETWORK: zoo_network,  # the checkpoint zoo's network (weight generation): nnU-Net's PlainConvUNet
}
PLANNED = tuple(PRESETS)  # the models whose network the plan derives from the patch


def planned_options(name: str, options: dict, patch_size: list[int], spacing: list[float]) -> dict:
    """The options model ``name`` is built with when it trains on ``patch_size`` voxels at ``spacing`` mm: its
    config options as they are, or for nnU-Net's networks ``{"architecture": <the block nnU-Net's planner writes
    for this patch>, "deep_supervision": ...}`` (config keys ``base_features``, ``max_features``,
    ``deep_supervision``)."""
    if name not in PLANNED or "architecture" in options:
        return dict(options)
    rest = dict(options)
    supervised = rest.pop("deep_supervision", True)
    try:
        architecture = planned_architecture(name, list(patch_size), list(spacing), **rest)
    except TypeError as e:  # a misspelled or unknown option
        raise SegzooError(f"models.{name}: {e}") from None
    return {"architecture": architecture, "deep_supervision": bool(supervised)}


def build_model(name: str, in_channels: int, out_channels: int, **options) -> nn.Module:
    """The model ``name`` with its options; it keeps the :class:`SegmentationModel` contract."""
    if name not in MODELS:
        raise SegzooError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    try:
        model = MODELS[name](in_channels, out_channels, **options)
    except TypeError as e:  # a misspelled or unknown option
        raise SegzooError(f"models.{name}: {e}") from None
    if not isinstance(model, SegmentationModel):
        raise SegzooError(f"model {name}: {type(model).__name__} lacks the SegmentationModel contract "
                          "(divisor, auxiliary_loss)")
    return model

