"""G.pt (Peebles et al. 2022): a transformer that denoises a network's future parameters.

Shapes: B batch, P parameters, T tokens, C chunk size, D width, R regions (metric slots).

Everything lives in the normalised change space of :class:`segzoo.weightgen.layer_scale.LayerScale`:
``x = (θ − θ_start) / σ_layer``, where θ_start is the run's start (its parent, or its random init).
A vector [B, P] is cut per layer into chunks of C values (a layer's last chunk is zero-padded), giving
tokens [B, T, C]; every token position has its own linear encoder (C → D) and decoder (D → C). The
sequence is

    T noised target tokens | T starting-checkpoint tokens (+ the start's own weights) | diffusion step |
    task | R starting metrics | R target metrics

with a learned position embedding, through a transformer encoder (no causal mask). The starting
checkpoint's token t also carries an encoding of the start θ_start's chunk t (its weights divided by
a per-layer scale), so G.pt knows which start the change applies to. The first T outputs are decoded
and added to the starting checkpoint's x: the model predicts the clean target (DDPM with prediction
type "sample"); with its zero-initialised decoders it starts as the identity on the starting
checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch import nn



class Tokenizer:
    """Per-layer chunking of a flat parameter vector: ``tokens`` [B, P] → [B, T, C] and back."""

    def __init__(self, layer_sizes: list[int], chunk: int):
        index = []  # for every token slot, the flat position it holds, or P (a padding zero)
        total = sum(layer_sizes)
        at = 0
        for n in layer_sizes:
            for begin in range(0, n, chunk):
                stop = min(begin + chunk, n)
                index.append(list(range(at + begin, at + stop)) + [total] * (chunk - (stop - begin)))
            at += n
        self.index = torch.tensor(index)                      # [T, C]
        slots = self.index.reshape(-1)
        self.inverse = torch.nonzero(slots < total).squeeze(1)  # [P]: token-slot of each parameter
        self.tokens, self.chunk, self.size = len(index), chunk, total

    def tokens_of(self, flat: torch.Tensor) -> torch.Tensor:
        """[B, P] → [B, T, C]."""
        padded = torch.cat([flat, flat.new_zeros(flat.shape[0], 1)], dim=1)
        return padded[:, self.index.to(flat.device)]

    def flat_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, T, C] → [B, P] (padding dropped)."""
        return tokens.reshape(tokens.shape[0], -1)[:, self.inverse.to(tokens.device)]


class PerTokenLinear(nn.Module):
    """A separate linear map for each of T token positions: [B, T, I] → [B, T, O]; with ``tokens`` 1, one map
    shared by every position."""

    def __init__(self, tokens: int, fan_in: int, fan_out: int, zero: bool = False):
        super().__init__()
        bound = 0.0 if zero else 1 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.empty(tokens, fan_in, fan_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(tokens, fan_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.shape[0] == 1:
            return x @ self.weight[0] + self.bias[0]
        return torch.einsum("bti,tio->bto", x, self.weight) + self.bias


class ScalarEmbedding(nn.Module):
    """Scalars [B, S] → tokens [B, S, D]: sinusoidal features (``frequencies`` of them), then a
    linear map of its own for each of the S slots."""

    def __init__(self, slots: int, width: int, frequencies: int = 32, max_period: float = 1000.0):
        super().__init__()
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(frequencies) / frequencies),
                             persistent=False)
        self.project = PerTokenLinear(slots, 2 * frequencies, width)

    def forward(self, values: torch.Tensor, scale: float) -> torch.Tensor:
        angles = values[..., None] * scale * self.freqs
        return self.project(torch.cat([angles.sin(), angles.cos()], dim=-1))


class GPT(nn.Module):
    """Denoiser ``forward(noised [B, P], start [B, P], origin [B, P], t [B], task [B], start_metrics [B, R],
    target_metrics [B, R]) → predicted clean target [B, P]`` (``noised``, ``start`` and the result are
    normalised changes; ``origin`` is the run's start θ_start divided by its per-layer scale)."""

    def __init__(self, layer_sizes: list[int], *, regions: int, tasks: int, chunk: int, width: int, layers: int,
                 heads: int, diffusion_steps: int, token_layers: str = "per_token"):
        super().__init__()
        self.tokenizer = Tokenizer(layer_sizes, chunk)
        t = self.tokenizer.tokens
        self.diffusion_steps = diffusion_steps
        # per_token: each position its own encoders and decoder (G.pt's design); shared: one of each for every
        # position, told apart by the position embedding (tokens x fewer parameters: bench/zoo_throughput.py)
        own = {"per_token": t, "shared": 1}[token_layers]
        self.encode_noised = PerTokenLinear(own, chunk, width)
        self.encode_start = PerTokenLinear(own, chunk, width)
        self.encode_origin = PerTokenLinear(own, chunk, width)
        self.decode = PerTokenLinear(own, width, chunk, zero=True)
        self.step_embedding = ScalarEmbedding(1, width)
        self.metric_embedding = ScalarEmbedding(2 * regions, width)
        self.task_embedding = nn.Embedding(tasks, width)
        self.position = nn.Parameter(torch.randn(1, 2 * t + 2 + 2 * regions, width) * 0.02)
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    @classmethod
    def from_config(cls, layout: list[list], regions: int, tasks: int, gpt_config: dict) -> GPT:
        """The G.pt the config's ``weightgen.gpt`` section describes, for a zoo network of ``layout``."""
        from segzoo.models.flat import layer_sizes

        return cls(layer_sizes(layout), regions=regions, tasks=tasks, token_layers=gpt_config.get("token_layers",
                                                                                                  "per_token"),
                   **{k: gpt_config[k] for k in ("chunk", "width", "layers", "heads", "diffusion_steps")})

    def forward(self, noised: torch.Tensor, start: torch.Tensor, origin: torch.Tensor, t: torch.Tensor,
                task: torch.Tensor, start_metrics: torch.Tensor, target_metrics: torch.Tensor) -> torch.Tensor:
        tok = self.tokenizer
        n = tok.tokens
        sequence = torch.cat([
            self.encode_noised(tok.tokens_of(noised)),                                    # [B, T, D]
            self.encode_start(tok.tokens_of(start)) + self.encode_origin(tok.tokens_of(origin)),  # [B, T, D]
            self.step_embedding(t[:, None].float() / self.diffusion_steps, 1000.0),       # [B, 1, D]
            self.task_embedding(task)[:, None],                                           # [B, 1, D]
            self.metric_embedding(torch.cat([start_metrics, target_metrics], 1), 100.0),  # [B, 2R, D]
        ], dim=1) + self.position
        hidden = self.norm(self.transformer(sequence))[:, :n]                            # [B, T, D]
        return start + tok.flat_of(self.decode(hidden))                                  # [B, P]
