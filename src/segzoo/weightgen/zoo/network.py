"""The zoo network: nnU-Net's PlainConvUNet as the weightgen settings size it (``features``, convolutions per stage),
with the dataset's channels in and one sigmoid head per region."""

from __future__ import annotations

import torch

from segzoo.data.preprocessed import Preprocessed
from segzoo.models.registry import ZOO_NETWORK, build_model


def zoo_model(pre: Preprocessed, settings) -> torch.nn.Module:
    """The zoo network for a preprocessed dataset (``settings``: :class:`segzoo.weightgen.zoo.settings.ZooSettings`):
    its channels in, one head per region."""
    return build_model(ZOO_NETWORK, len(pre.channels), len(pre.regions), **settings.network_options)
