"""The one place that names the models: ``MODELS[name](in_channels, out_channels, **options)``.

Options are the config's ``models.<name>`` section (widths, depths); every model returns logits
[B, regions, *spatial] in eval mode, and every model keeps :class:`segzoo.models.contract.SegmentationModel`.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from segzoo.errors import SegzooError
from segzoo.models.contract import SegmentationModel
from segzoo.models.diffnet import DiffNet, MSDiffNet
from segzoo.models.nnunet import build_network, zoo_network
from segzoo.models.unet3plus import UNet3Plus

ZOO_NETWORK = "plain_conv_unet"
IMPORTED = "nnunet"  # a network imported from an nnU-Net model folder, rebuilt from its architecture block


def imported_network(in_channels: int, out_channels: int, architecture: dict):
    return build_network(architecture, in_channels, out_channels, source="imported checkpoint")


MODELS = {
    "unet3plus": partial(UNet3Plus, pyramid=False),
    "ms_unet3plus": partial(UNet3Plus, pyramid=True),
    "diffnet": DiffNet,
    "ms_diffnet": MSDiffNet,
    ZOO_NETWORK: zoo_network,  # the checkpoint zoo's network (weight generation): nnU-Net's PlainConvUNet
    IMPORTED: imported_network,  # segzoo nnunet-import
}


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
