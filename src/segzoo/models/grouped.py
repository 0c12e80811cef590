"""Many PlainConvUNets of one architecture run as one network: member m's channels are group m of grouped
convolutions.

Shapes: M members, B patches, C input channels, R regions, S = X, Y, Z.

Member m's weights are row m of every stacked tensor (``params[name]``: [M, *shape], names and shapes of the
template's ``named_parameters()``, as :func:`torch.func.stack_module_state` stacks them). Inside, the
activations are [B, M·channels, *S]: a convolution with ``groups=M`` lets member m's output channels see only its
own input channels, instance normalisation is per (patch, channel) anyway, and at a skip connection the two
tensors are joined per member. So member m's output is what its own network gives, up to float rounding, and a
non-finite value in one member never reaches another. For training, activations are kept channels-last (on 2 CPU
cores oneDNN's backward pass of these small grouped 3D convolutions runs about twice as fast in it); a forward pass
alone is faster in the default layout (bench/RESULTS.md, "Zoo engine").

The template fixes strides, kernel sizes, eps and the negative slope; :func:`check_template` refuses anything
but the zoo's network (no deep supervision, no dropout, instance norm, leaky ReLU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segzoo.errors import SegzooError
from segzoo.models.flat import layer_sizes


def check_template(model: nn.Module) -> None:
    """Refuse a network the grouped forward does not reproduce."""
    decoder = getattr(model, "decoder", None)
    if decoder is None or not hasattr(model, "encoder") or getattr(decoder, "deep_supervision", True):
        raise SegzooError(f"{type(model).__name__}: the grouped forward runs nnU-Net's PlainConvUNet without deep "
                          "supervision only")
    for block in _blocks(model):
        if (not isinstance(block.norm, nn.InstanceNorm3d) or not isinstance(block.nonlin, nn.LeakyReLU)
                or getattr(block, "dropout", None) is not None or block.norm.track_running_stats):
            raise SegzooError(f"{type(model).__name__}: the grouped forward needs conv, instance norm (no running "
                              "statistics) and leaky ReLU blocks without dropout")


def _blocks(model: nn.Module):
    for stage in model.encoder.stages:
        yield from stage[0].convs
    for stage in model.decoder.stages:
        yield from stage.convs


def _grouped(weight: torch.Tensor) -> torch.Tensor:
    """[M, out, in, *k] → [M·out, in, *k] (convolution); [M, in, out, *k] → [M·in, out, *k] (transposed)."""
    return weight.reshape(-1, *weight.shape[2:])


def _block(h: torch.Tensor, params: dict, name: str, block: nn.Module, members: int) -> torch.Tensor:
    conv = block.conv
    h = F.conv3d(h, _grouped(params[f"{name}.conv.weight"]), params[f"{name}.conv.bias"].reshape(-1), conv.stride,
                 conv.padding, conv.dilation, members)
    h = F.instance_norm(h, weight=params[f"{name}.norm.weight"].reshape(-1),
                        bias=params[f"{name}.norm.bias"].reshape(-1), eps=block.norm.eps)
    return F.leaky_relu(h, block.nonlin.negative_slope)


def _join(a: torch.Tensor, b: torch.Tensor, members: int, layout: torch.memory_format) -> torch.Tensor:
    """[B, M·a, *S] and [B, M·b, *S] → [B, M·(a+b), *S], member m's a channels then its b channels."""
    size, shape = a.shape[0], a.shape[2:]
    joined = torch.cat([a.reshape(size, members, -1, *shape), b.reshape(size, members, -1, *shape)], 2)
    return joined.reshape(size, -1, *shape).contiguous(memory_format=layout)


def grouped_forward(template: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
                    channels_last: bool = True) -> torch.Tensor:
    """Logits [M, B, R, *S] of the M members in ``params`` on ``x``: [M, B, C, *S] (each member its own patches) or
    [B, C, *S] (every member the same patches); ``channels_last``: the activations' layout."""
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    members = next(iter(params.values())).shape[0]
    if x.ndim == 6:
        if x.shape[0] != members:
            raise SegzooError(f"grouped forward: input for {x.shape[0]} members, weights for {members}")
        h = x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])
    else:
        h = x[:, None].expand(x.shape[0], members, *x.shape[1:]).reshape(x.shape[0], -1, *x.shape[2:])
    h = h.contiguous(memory_format=layout)
    skips = []
    for i, stage in enumerate(template.encoder.stages):
        for j, block in enumerate(stage[0].convs):
            h = _block(h, params, f"encoder.stages.{i}.0.convs.{j}", block, members)
        skips.append(h)
    decoder = template.decoder
    for s, stage in enumerate(decoder.stages):
        up = decoder.transpconvs[s]
        h = F.conv_transpose3d(h, _grouped(params[f"decoder.transpconvs.{s}.weight"]),
                               params[f"decoder.transpconvs.{s}.bias"].reshape(-1), up.stride, up.padding,
                               up.output_padding, members, up.dilation)
        h = _join(h, skips[-(s + 2)], members, layout)
        for j, block in enumerate(stage.convs):
            h = _block(h, params, f"decoder.stages.{s}.convs.{j}", block, members)
    last = len(decoder.seg_layers) - 1
    logits = F.conv3d(h, _grouped(params[f"decoder.seg_layers.{last}.weight"]),
                      params[f"decoder.seg_layers.{last}.bias"].reshape(-1), groups=members)
    return logits.reshape(logits.shape[0], members, -1, *logits.shape[2:]).transpose(0, 1)


def stacked(vectors: torch.Tensor, layout: list[list]) -> dict[str, torch.Tensor]:
    """Flat parameter vectors [M, P] → ``{name: [M, *shape]}`` in ``layout`` order (views)."""
    sizes = layer_sizes(layout)
    if vectors.ndim != 2 or vectors.shape[1] != sum(sizes):
        raise SegzooError(f"parameter vectors of shape {tuple(vectors.shape)} do not fit a layout of "
                          f"{sum(sizes)} parameters")
    return {name: part.reshape(len(vectors), *shape)
            for (name, shape), part in zip(layout, vectors.split(sizes, dim=1))}
