"""Validation: MONAI sliding-window inference over whole preprocessed cases, Dice per region."""

from __future__ import annotations

import numpy as np
import torch

from segzoo.data.loader import regions_to_channels
from segzoo.data.preprocessed import Preprocessed
from segzoo.inference.dice import region_dice
from segzoo.inference.window import sliding_window_logits


@torch.no_grad()
def validation_dice(model: torch.nn.Module, pre: Preprocessed, case_ids: list[str], *, patch_size: list[int],
                    sw_batch_size: int, device: torch.device, autocast: bool = False) -> np.ndarray:
    """Dice per case and region, ``[cases, R]``; NaN where reference and prediction are both empty."""
    regions = list(pre.regions.values())
    was_training = model.training
    model.eval()
    rows = []
    dtype = next(model.parameters()).dtype
    try:
        for case in case_ids:
            image = torch.from_numpy(pre.image(case))[None].to(device, dtype)
            target = torch.from_numpy(regions_to_channels(pre.label(case), regions))[None]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = sliding_window_logits(model, image, patch_size, sw_batch_size)
            rows.append(region_dice((logits.float() > 0).cpu(), target)[0])
    finally:
        model.train(was_training)
    return np.asarray(rows, dtype=np.float64)
