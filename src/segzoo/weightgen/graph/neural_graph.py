"""The zoo network as a neural graph (Kofinas et al. 2024): channels are nodes, convolution kernels are edges.

Shapes: P parameters of the flat vector (:mod:`segzoo.models.flat`), E edges, N nodes, K the largest kernel (27
for 3³), S the most values a node holds (3: conv bias, norm weight, norm bias).

Nodes are the network's channels: the image's input channels, every convolution's and transposed convolution's
output channels (the permutable units of :mod:`segzoo.weightgen.zoo.symmetry`) and each head's region outputs.
Every weight tensor ``[out, in, *kernel]`` (a transposed convolution's is ``[in, out, *kernel]``) gives one edge
per (in channel, out channel) whose features are the kernel's values, wired as the model wires them: a decoder
stage's first convolution reads the transposed convolution's channels and then the skip's. Every 1-D tensor (conv
bias, instance-norm weight and bias, transposed-conv bias, head bias) holds one value per node of its channels.
Every parameter sits in exactly one edge or node slot, so the flat vector and the graph's features map onto each
other by a gather and its inverse.

Permuting a unit's channels permutes its nodes and the edges that touch them, nothing else: a model that treats
every edge of a layer and every node of a unit alike (shared maps, sums over neighbours) is equivariant to the
network's channel permutations by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from segzoo.models.flat import layer_sizes
from segzoo.weightgen.zoo.symmetry import units


@dataclass
class NeuralGraph:
    """Index tensors of one zoo network layout.

    ``edge_index`` [E, K]: flat positions of each edge's kernel values (P: padding); ``edge_layer`` [E]: the weight
    tensor (layer) of each edge; ``edge_kernel`` [E]: its kernel size; ``src``/``dst`` [E]: in and out nodes.
    ``node_index`` [N, S]: flat positions of each node's values (P: padding); ``node_kind`` [N]: which values it
    holds (kinds below); ``node_group`` [N]: the unit (permutable) or fixed group it belongs to; ``node_fixed`` [N]:
    a fixed node's identity (input channel c, head region r), −1 for permutable nodes."""

    parameters: int
    edge_index: torch.Tensor
    edge_layer: torch.Tensor
    edge_kernel: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    node_index: torch.Tensor
    node_kind: torch.Tensor
    node_group: torch.Tensor
    node_fixed: torch.Tensor
    layers: list[str]         # the weight tensors, in edge_layer order
    groups: list[str]         # unit names and fixed groups, in node_group order
    kinds: list[str]          # node kinds, in node_kind order
    kernel_sizes: list[int]   # the distinct kernel sizes, in order

    @property
    def edges(self) -> int:
        return len(self.src)

    @property
    def nodes(self) -> int:
        return len(self.node_kind)

    def edge_values(self, flat: torch.Tensor) -> torch.Tensor:
        """[..., P] → [..., E, K] (padding zero)."""
        padded = torch.cat([flat, flat.new_zeros(*flat.shape[:-1], 1)], dim=-1)
        return padded[..., self.edge_index]

    def node_values(self, flat: torch.Tensor) -> torch.Tensor:
        """[..., P] → [..., N, S] (padding zero)."""
        padded = torch.cat([flat, flat.new_zeros(*flat.shape[:-1], 1)], dim=-1)
        return padded[..., self.node_index]

    def flat_of(self, edges: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """The inverse: edge values [..., E, K] and node values [..., N, S] → [..., P] (a gather)."""
        lead = edges.shape[:-2]
        both = torch.cat([edges.reshape(*lead, -1), nodes.reshape(*lead, -1)], dim=-1)
        return both[..., self.inverse.to(both.device)]

    @property
    def inverse(self) -> torch.Tensor:
        """[P]: where each parameter sits in the edge slots followed by the node slots, flattened."""
        if getattr(self, "_inverse", None) is None:
            slots = torch.cat([self.edge_index.reshape(-1), self.node_index.reshape(-1)])
            inverse = torch.empty(self.parameters, dtype=torch.long)
            real = slots < self.parameters
            inverse[slots[real]] = torch.nonzero(real).squeeze(1)
            self._inverse = inverse
        return self._inverse

    def kernel_slices(self) -> list[tuple[int, slice]]:
        """(kernel size, its edges' slice): the edges are ordered by kernel size."""
        out, at = [], 0
        for k in self.kernel_sizes:
            count = int((self.edge_kernel == k).sum())
            out.append((k, slice(at, at + count)))
            at += count
        return out

    def layer_of_parameter(self) -> torch.Tensor:
        """[P]: for each parameter, the index of the layout tensor it belongs to."""
        return torch.repeat_interleave(torch.arange(len(self._sizes)), torch.tensor(self._sizes))


def neural_graph(model: torch.nn.Module, layout: list[list]) -> NeuralGraph:
    """The neural graph of a zoo network (nnU-Net's PlainConvUNet) with flat layout ``layout``."""
    sizes = layer_sizes(layout)
    offsets = dict(zip([n for n, _ in layout], np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()))
    shapes = {n: tuple(s) for n, s in layout}
    total = int(sum(sizes))
    found = units(model)
    # which unit (and offset) indexes each (tensor, axis)
    covers: dict[tuple[str, int], list[tuple[int, str, int]]] = {}
    for u in found:
        for name, axis, offset in u.uses:
            covers.setdefault((name, axis), []).append((offset, u.name, u.size))
    groups, first_node, node_kind, node_group, node_fixed = [], {}, [], [], []

    def add_group(name: str, size: int, fixed: bool) -> None:
        first_node[name] = len(node_group)
        groups.append(name)
        node_group.extend([len(groups) - 1] * size)
        node_fixed.extend(range(size) if fixed else [-1] * size)

    channels = int(shapes[layout[0][0]][1])
    add_group("input", channels, fixed=True)
    for u in found:
        add_group(u.name, u.size, fixed=False)
    heads = [n for n, s in layout if n.startswith("decoder.seg_layers.") and n.endswith(".weight")]
    for head in heads:
        add_group(head.removesuffix(".weight"), shapes[head][0], fixed=True)

    def nodes_of(name: str, axis: int, size: int) -> list[int]:
        """The node of each channel along ``axis`` of tensor ``name``."""
        segments = sorted(covers.get((name, axis), []))
        out, at = [], 0
        for offset, unit, count in segments:
            if offset != at:
                raise ValueError(f"neural graph: {name} axis {axis} has an unowned gap at {at}")
            out += [first_node[unit] + c for c in range(count)]
            at += count
        if at == size:
            return out
        if not segments and axis == 1 and name == layout[0][0]:
            return [first_node["input"] + c for c in range(size)]
        module = name.rsplit(".", 1)[0]
        if not segments and module in first_node:  # a head's own outputs
            return [first_node[module] + c for c in range(size)]
        raise ValueError(f"neural graph: {name} axis {axis} is not wired ({at} of {size} channels)")

    edge_rows, edge_layer, edge_kernel, src, dst, layers = [], [], [], [], [], []
    node_values: dict[int, list[tuple[int, int]]] = {}
    kinds_of_vectors = []
    for name, shape in layout:
        at = int(offsets[name])
        module = model.get_submodule(name.rsplit(".", 1)[0])
        if len(shape) >= 3:  # a weight: [out, in, *k] or, transposed, [in, out, *k]
            transposed = isinstance(module, torch.nn.ConvTranspose3d)
            out_axis, in_axis = (1, 0) if transposed else (0, 1)
            k = int(np.prod(shape[2:]))
            outs = nodes_of(name, out_axis, shape[out_axis])
            ins = nodes_of(name, in_axis, shape[in_axis])
            layer = len(layers)
            layers.append(name)
            position = np.arange(int(np.prod(shape))).reshape(shape)
            for a in range(shape[out_axis]):
                for b in range(shape[in_axis]):
                    cell = position[b, a] if transposed else position[a, b]
                    edge_rows.append((at + cell.reshape(-1)).tolist())
                    edge_layer.append(layer)
                    edge_kernel.append(k)
                    src.append(ins[b])
                    dst.append(outs[a])
        else:  # a vector: one value per node of its channels
            label = ("head.bias" if ".seg_layers." in name else "transposed.bias" if ".transpconvs." in name
                     else ".".join(name.split(".")[-2:]))  # conv.bias, norm.weight, norm.bias
            if label not in kinds_of_vectors:
                kinds_of_vectors.append(label)
            for c, node in enumerate(nodes_of(name, 0, shape[0])):
                node_values.setdefault(node, []).append((kinds_of_vectors.index(label), at + c))
    s_max = max(len(v) for v in node_values.values())
    node_index = torch.full((len(node_group), s_max), total, dtype=torch.long)
    kind_names, node_kind = [], []
    for node in range(len(node_group)):
        values = sorted(node_values.get(node, []))
        signature = "+".join(kinds_of_vectors[v] for v, _ in values) or "none"
        if signature not in kind_names:
            kind_names.append(signature)
        node_kind.append(kind_names.index(signature))
        for slot, (_, position) in enumerate(values):
            node_index[node, slot] = position
    order = sorted(range(len(edge_rows)), key=lambda e: edge_kernel[e])  # one contiguous slice per kernel size
    edge_rows, edge_layer, edge_kernel = ([x[e] for e in order] for x in (edge_rows, edge_layer, edge_kernel))
    src, dst = [src[e] for e in order], [dst[e] for e in order]
    k_max = max(edge_kernel)
    edge_index = torch.full((len(edge_rows), k_max), total, dtype=torch.long)
    for e, row in enumerate(edge_rows):
        edge_index[e, :len(row)] = torch.tensor(row)
    graph = NeuralGraph(total, edge_index, torch.tensor(edge_layer), torch.tensor(edge_kernel), torch.tensor(src),
                        torch.tensor(dst), node_index, torch.tensor(node_kind), torch.tensor(node_group),
                        torch.tensor(node_fixed), layers, groups, kind_names, sorted(set(edge_kernel)))
    graph._sizes = sizes
    covered = torch.cat([edge_index.reshape(-1), node_index.reshape(-1)])
    covered = covered[covered < total]
    if len(covered) != total or len(torch.unique(covered)) != total:
        raise ValueError(f"neural graph: {len(torch.unique(covered))} of {total} parameters placed, "
                         f"{len(covered) - len(torch.unique(covered))} twice")
    return graph
