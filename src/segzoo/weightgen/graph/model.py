"""The denoiser of the structure-shared generator: message passing on the zoo network's neural graph.

Shapes: B batch, P parameters, C input channels per parameter (the noised change and the conditioning: the start's
weights and its signal), E edges, N nodes, K the largest kernel, S values per node, D width, R regions.

Every parameter's C values are gathered onto its edge (a kernel's values) or node (bias and norm values). Edges are
encoded by one linear map per kernel size (27, 8, 1) plus an embedding of their layer; nodes by one map per kind of
node plus an embedding of their unit (shared by the unit's channels) or, for the fixed input and head nodes, of
their identity. A global vector carries the diffusion step, the task, the start's val Dice and the prompted Dice.
``layers`` rounds of message passing follow: each edge is updated from itself, its two nodes and the global vector;
each node from itself, the mean of its incoming and of its outgoing edges, and the global vector. Zero-initialised
decoders map edges and nodes back to one value per parameter: the predicted clean change (DDPM with prediction type
"sample"), so an untrained denoiser predicts no change. Nothing depends on a channel's position within its unit, so
permuting the network's hidden channels permutes the output the same way (equivariance by construction). With
``layers`` 0 it is a per-edge and per-node MLP (the first rung: each kernel and each channel's values on their own).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segzoo.weightgen.graph.neural_graph import NeuralGraph


def _mlp(fan_in: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(fan_in, width), nn.SiLU(), nn.Linear(width, width))


class GraphDenoiser(nn.Module):
    """``forward(channels [B, C, P], t [B], task [B], start_metrics [B, R], target_metrics [B, R]) → [B, P]``
    (channel 0 of ``channels`` is the noised change)."""

    def __init__(self, graph: NeuralGraph, *, channels: int, regions: int, tasks: int, width: int, layers: int,
                 diffusion_steps: int):
        super().__init__()
        self.graph, self.channels, self.diffusion_steps = graph, channels, diffusion_steps
        for name in ("edge_index", "edge_layer", "edge_kernel", "src", "dst", "node_index", "node_kind", "node_group",
                     "node_fixed"):
            self.register_buffer(name, getattr(graph, name).clone(), persistent=False)
        self.slices = graph.kernel_slices()
        self.edge_in = nn.ModuleList(nn.Linear(k * channels, width) for k, _ in self.slices)
        self.edge_out = nn.ModuleList(nn.Linear(width, k) for k, _ in self.slices)
        self.node_kinds = [torch.nonzero(graph.node_kind == i).squeeze(1) for i in range(len(graph.kinds))]
        order = torch.cat(self.node_kinds)
        self.register_buffer("node_order", torch.argsort(order), persistent=False)  # back from kind-sorted order
        self.layer_embedding = nn.Embedding(len(graph.layers), width)
        slots = graph.node_index.shape[1]
        self.node_in = nn.ModuleList(nn.Linear(slots * channels, width) for _ in graph.kinds)
        self.node_out = nn.ModuleList(nn.Linear(width, slots) for _ in graph.kinds)
        self.group_embedding = nn.Embedding(len(graph.groups), width)
        fixed = sorted({(int(g), int(f)) for g, f in zip(graph.node_group, graph.node_fixed) if f >= 0})
        self.register_buffer("fixed_id", torch.tensor([fixed.index((int(g), int(f))) if f >= 0 else len(fixed)
                                                       for g, f in zip(graph.node_group, graph.node_fixed)]),
                             persistent=False)
        self.fixed_embedding = nn.Embedding(len(fixed) + 1, width)  # the last row: permutable nodes (kept at zero)
        with torch.no_grad():
            self.fixed_embedding.weight[-1].zero_()
        self.task_embedding = nn.Embedding(tasks, width)
        self.metrics = nn.Linear(2 * regions, width)
        self.step = _mlp(2 * 16, width)
        self.global_mlp = _mlp(width, width)
        self.edge_mlps = nn.ModuleList(_mlp(4 * width, width) for _ in range(layers))
        self.node_mlps = nn.ModuleList(_mlp(4 * width, width) for _ in range(layers))
        self.edge_norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.node_norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        for decoder in (*self.edge_out, *self.node_out):
            nn.init.zeros_(decoder.weight)
            nn.init.zeros_(decoder.bias)
        in_degree = torch.bincount(graph.dst, minlength=graph.nodes).clamp(min=1).float()
        out_degree = torch.bincount(graph.src, minlength=graph.nodes).clamp(min=1).float()
        self.register_buffer("in_degree", in_degree[:, None], persistent=False)
        self.register_buffer("out_degree", out_degree[:, None], persistent=False)

    def _global(self, t, task, start_metrics, target_metrics) -> torch.Tensor:
        freqs = torch.exp(-math.log(1000.0) * torch.arange(16, device=t.device) / 16)
        dtype = self.metrics.weight.dtype
        angles = ((t.double() / self.diffusion_steps)[:, None] * 1000.0 * freqs).to(dtype)
        step = self.step(torch.cat([angles.sin(), angles.cos()], 1))
        return self.global_mlp(step + self.task_embedding(task)
                               + self.metrics(torch.cat([start_metrics, target_metrics], 1).to(dtype)))

    def forward(self, channels: torch.Tensor, t: torch.Tensor, task: torch.Tensor, start_metrics: torch.Tensor,
                target_metrics: torch.Tensor) -> torch.Tensor:
        b = channels.shape[0]
        g = self._global(t, task, start_metrics, target_metrics)                        # [B, D]
        padded = torch.cat([channels, channels.new_zeros(b, self.channels, 1)], dim=2)  # [B, C, P + 1]
        edges_in = padded[:, :, self.edge_index].permute(0, 2, 3, 1)                    # [B, E, K, C]
        nodes_in = padded[:, :, self.node_index].permute(0, 2, 3, 1)                    # [B, N, S, C]
        h_e = self.layer_embedding(self.edge_layer) + torch.cat(                         # [B, E, D]
            [enc(edges_in[:, s, :k].reshape(b, s.stop - s.start, -1)) for enc, (k, s) in zip(self.edge_in, self.slices)],
            dim=1)
        encoded = torch.cat([enc(nodes_in[:, idx].reshape(b, len(idx), -1))
                             for enc, idx in zip(self.node_in, self.node_kinds)], dim=1)[:, self.node_order]
        h_v = self.group_embedding(self.node_group) + self.fixed_embedding(self.fixed_id) + encoded  # [B, N, D]
        for edge_mlp, node_mlp, edge_norm, node_norm in zip(self.edge_mlps, self.node_mlps, self.edge_norms,
                                                            self.node_norms):
            glob_e = g[:, None].expand(-1, h_e.shape[1], -1)
            h_e = h_e + edge_mlp(torch.cat([edge_norm(h_e), h_v[:, self.src], h_v[:, self.dst], glob_e], dim=2))
            incoming = h_v.new_zeros(h_v.shape).index_add_(1, self.dst, h_e) / self.in_degree
            outgoing = h_v.new_zeros(h_v.shape).index_add_(1, self.src, h_e) / self.out_degree
            glob_v = g[:, None].expand(-1, h_v.shape[1], -1)
            h_v = h_v + node_mlp(torch.cat([node_norm(h_v), incoming, outgoing, glob_v], dim=2))
        h_e = h_e + g[:, None]
        h_v = h_v + g[:, None]
        k_max = self.edge_index.shape[1]
        edges_out = torch.cat([nn.functional.pad(dec(h_e[:, s]), (0, k_max - k))
                               for dec, (k, s) in zip(self.edge_out, self.slices)], dim=1)   # [B, E, K]
        nodes_out = torch.cat([dec(h_v[:, idx]) for dec, idx in zip(self.node_out, self.node_kinds)],
                              dim=1)[:, self.node_order]                                     # [B, N, S]
        return self.graph.flat_of(edges_out, nodes_out)                                     # [B, P]
