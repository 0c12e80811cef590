"""How much memory training a model takes, estimated without running it (the plan's patch and batch sizes).

The model is built on PyTorch's ``meta`` device and run forward on a small probe patch while a dispatch
mode adds up the elements of every tensor an operation returns: the feature maps autograd may keep for the
backward pass, including those of functional code (DiffNet's stencil updates) that module hooks would miss.
Networks here are fully convolutional, so that count grows with the patch's voxels; the estimate is

    bytes = batch x voxels x elements_per_voxel x 4 x BACKWARD_FACTOR  +  parameters x 4 x 4

(float32 activations, their gradients during the backward pass; weights, gradients and Adam's two moments).
It is an upper-side estimate (views and in-place results are counted as new tensors), as nnU-Net's own
feature-map count is; bf16 autocast on a GPU roughly halves the activation term.
"""

from __future__ import annotations

import json
from functools import lru_cache

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from segzoo.models.contract import side_divisors
from segzoo.models.registry import build_model

BYTES = 4  # float32
BACKWARD_FACTOR = 2  # the activations and, during the backward pass, their gradients
PARAMETER_COPIES = 4  # weights, gradients, Adam's first and second moments
PROBE_SIDE = 32  # voxels per side of the probe patch (raised to twice the model's divisor)


class _CountOutputs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (list, tuple)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.elements += tensor.numel()
        return out


@lru_cache(maxsize=None)
def _profile(model: str, in_channels: int, out_channels: int, options_key: str) -> tuple[tuple, float, int]:
    options = json.loads(options_key)
    with torch.device("meta"):
        net = build_model(model, in_channels, out_channels, **options)
    divisors = side_divisors(net)
    sides = [max(PROBE_SIDE, 2 * d) for d in divisors]
    counter = _CountOutputs()
    net.train()
    with counter:
        net(torch.zeros(1, in_channels, *sides, device="meta"))
    parameters = sum(p.numel() for p in net.parameters())
    return divisors, counter.elements / (sides[0] * sides[1] * sides[2]), parameters


def model_profile(model: str, in_channels: int, out_channels: int, options: dict) -> dict:
    """``divisor`` (``divisors``: per axis), activation ``elements_per_voxel`` (one sample) and ``parameters`` of a
    model built with ``options``."""
    divisors, per_voxel, parameters = _profile(model, in_channels, out_channels, json.dumps(options, sort_keys=True))
    return {"divisor": max(divisors), "divisors": list(divisors), "elements_per_voxel": per_voxel,
            "parameters": parameters}


def training_bytes(profile: dict, patch_size: list[int], batch_size: int) -> float:
    """Estimated training memory in bytes for one batch of ``batch_size`` patches."""
    voxels = 1
    for side in patch_size:
        voxels *= side
    activations = batch_size * voxels * profile["elements_per_voxel"] * BYTES * BACKWARD_FACTOR
    return activations + profile["parameters"] * BYTES * PARAMETER_COPIES
