"""Channel permutations of the zoo network, and weight matching between two of them (Git Re-Basin).

Permuting the hidden channels of a PlainConvUNet (a convolution's outputs with its instance norm, and the
inputs of every layer that reads them) changes its weights but not its function. Two networks grown from
different random inits differ largely by such a permutation, so a start G.pt has never seen looks foreign
to it. *Weight matching* (Ainsworth et al. 2023) finds, per group of channels, the permutation of network B
that brings its weights nearest network A's: a linear assignment per group
(``scipy.optimize.linear_sum_assignment``), repeated over the groups until none changes.

Shapes: P parameters of the flat vector (:mod:`segzoo.models.flat`); a permutation is ``{unit: [n]}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from segzoo.models.flat import layer_sizes
from segzoo.models.nnunet import build_network


@dataclass(frozen=True)
class Unit:
    """A group of ``size`` hidden channels permuted together: every (layer, axis, offset) that indexes them."""

    name: str
    size: int
    uses: tuple[tuple[str, int, int], ...]


def _conv_blocks(stage: torch.nn.Module, prefix: str) -> list[tuple[str, torch.nn.Module]]:
    """The (name, conv) of each convolution-norm block of a stage, in order."""
    return [(f"{prefix}.{name}", m) for name, m in stage.named_modules()
            if hasattr(m, "conv") and hasattr(m, "norm") and name.count("convs.") == 1 and name.split(".")[-2] == "convs"]


def units(model: torch.nn.Module) -> list[Unit]:
    """The permutable channel groups of nnU-Net's PlainConvUNet (``model.encoder``, ``model.decoder``), read
    from the model: each convolution's outputs (with its norm) and each transposed convolution's outputs. A
    stage's last outputs are a skip: the decoder stage that concatenates them reads them after the
    transposed convolution's channels. Region heads are not permuted."""
    encoder = [_conv_blocks(stage, f"encoder.stages.{s}") for s, stage in enumerate(model.encoder.stages)]
    decoder = [_conv_blocks(stage, f"decoder.stages.{j}") for j, stage in enumerate(model.decoder.stages)]
    transp = model.decoder.transpconvs
    last = len(encoder) - 1
    found = []
    for s, blocks in enumerate(encoder):
        if s < last:  # a skip: the next stage reads it, and the decoder stage j after its upsampled channels
            j = last - 1 - s
            readers = [(f"{encoder[s + 1][0][0]}.conv.weight", 1, 0),
                       (f"{decoder[j][0][0]}.conv.weight", 1, transp[j].out_channels)]
        else:  # the bottleneck: the first transposed convolution reads it
            readers = [("decoder.transpconvs.0.weight", 0, 0)]
        found += _stage_units(blocks, readers)
    for j, t in enumerate(transp):
        found.append(Unit(f"decoder.transpconvs.{j}", t.out_channels,
                          ((f"decoder.transpconvs.{j}.weight", 1, 0), (f"decoder.transpconvs.{j}.bias", 0, 0),
                           (f"{decoder[j][0][0]}.conv.weight", 1, 0))))
    for j, blocks in enumerate(decoder):
        readers = [(f"decoder.seg_layers.{j}.weight", 1, 0)]
        if j + 1 < len(transp):
            readers.append((f"decoder.transpconvs.{j + 1}.weight", 0, 0))
        found += _stage_units(blocks, readers)
    return found


def _stage_units(blocks: list[tuple[str, torch.nn.Module]], readers: list[tuple[str, int, int]]) -> list[Unit]:
    """A stage's units: each block's convolution and norm outputs, read by the next block's convolution, or (the
    last block) by ``readers``."""
    out = []
    for c, (name, m) in enumerate(blocks):
        own = [(f"{name}.{layer}", 0, 0) for layer in ("conv.weight", "conv.bias", "norm.weight", "norm.bias")]
        read = [(f"{blocks[c + 1][0]}.conv.weight", 1, 0)] if c + 1 < len(blocks) else readers
        out.append(Unit(name, m.conv.out_channels, tuple(own + read)))
    return out


class Symmetry:
    """The permutations of one zoo network layout, applied to flat vectors [..., P]."""

    def __init__(self, model: torch.nn.Module, layout: list[list]):
        self.units = units(model)
        sizes = layer_sizes(layout)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.layers = {name: (int(offsets[i]), tuple(shape)) for i, (name, shape) in enumerate(layout)}
        for unit in self.units:
            for name, _, _ in unit.uses:
                if name not in self.layers:
                    raise KeyError(f"symmetry: {name} is not a layer of the zoo network's layout")

    def _view(self, flat: torch.Tensor, name: str) -> torch.Tensor:
        at, shape = self.layers[name]
        return flat[..., at:at + int(np.prod(shape))].reshape(*flat.shape[:-1], *shape)

    def identity(self) -> dict[str, torch.Tensor]:
        return {u.name: torch.arange(u.size) for u in self.units}

    def apply(self, flat: torch.Tensor, perm: dict[str, torch.Tensor]) -> torch.Tensor:
        """``flat`` [..., P] with channel i of each unit taken from channel ``perm[unit][i]``."""
        out = flat.clone()
        lead = flat.dim() - 1
        for unit in self.units:
            p = perm[unit.name]
            for name, axis, offset in unit.uses:  # a layer's other axes may already be permuted: read `out`
                moved = self._view(out, name).movedim(lead + axis, 0)
                moved[offset:offset + unit.size] = moved[offset + p].clone()
        return out

    def gather_index(self, perm: dict[str, torch.Tensor]) -> torch.Tensor:
        """[P]: where each position of a permuted vector reads from, so ``flat[..., index]`` equals
        :meth:`apply` (one gather instead of a walk over the channel groups)."""
        positions = torch.arange(sum(int(np.prod(s)) for _, s in self.layers.values()), dtype=torch.float64)
        return self.apply(positions, perm).long()

    @staticmethod
    def inverse(perm: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: torch.argsort(p) for k, p in perm.items()}

    def match(self, reference: torch.Tensor, other: torch.Tensor, rounds: int = 50) -> dict[str, torch.Tensor]:
        """The permutation of ``other`` [P] whose weights are nearest ``reference`` [P] (weight matching: per unit a
        linear assignment maximising Σ ⟨reference, other⟩ over every layer the unit indexes, the other units held
        at their current permutation; in unit order, until a whole round changes nothing)."""
        perm = self.identity()
        reference, other = reference.double(), other.double()
        for _ in range(rounds):
            changed = False
            for unit in self.units:
                held = self.apply(other, {**perm, unit.name: torch.arange(unit.size)})
                cost = torch.zeros(unit.size, unit.size, dtype=torch.float64)
                for name, axis, offset in unit.uses:
                    a = self._view(reference, name).movedim(axis, 0)[offset:offset + unit.size].reshape(unit.size, -1)
                    b = self._view(held, name).movedim(axis, 0)[offset:offset + unit.size].reshape(unit.size, -1)
                    cost += a @ b.T
                _, columns = linear_sum_assignment(cost.numpy(), maximize=True)
                new = torch.as_tensor(columns, dtype=torch.long)
                if not torch.equal(new, perm[unit.name]):
                    # keep the new one only if it is strictly better (ties would cycle)
                    old_score = float(cost[torch.arange(unit.size), perm[unit.name]].sum())
                    if float(cost[torch.arange(unit.size), new].sum()) > old_score + 1e-12:
                        perm[unit.name], changed = new, True
            if not changed:
                break
        return perm


def zoo_symmetry(architecture: dict, layout: list[list], regions: list[str]) -> Symmetry:
    """The symmetry of the zoo network a zoo's (or G.pt's) sidecar describes."""
    channels = int(layout[0][1][1])  # the first convolution's inputs
    return Symmetry(build_network(architecture, channels, len(regions)), layout)
