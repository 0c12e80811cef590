"""The memorisation audit (Zeng et al. 2025): where a generated network lies among the training checkpoints.

Distances are L2 in G.pt's normalised change space, ``||(θ_a − θ_b) / σ_layer||``, so every layer counts
by how much training moves it. Beside each generated network stand four memorisers:

- ``nearest``   the training checkpoint closest to it;
- ``mean_k``    the average of its k nearest training checkpoints;
- ``noise``     the nearest checkpoint plus Gaussian noise (shaped by σ_layer) at the same distance;
- ``lookup``    the training checkpoint of the same task whose *validation* Dice is nearest the prompt:
                it aligns with prompts by construction, which shows that alignment alone proves nothing.

The novelty ratio divides a network's nearest distance by that of the final checkpoint of a held-out parent's
own run (trained independently, never seen): about 1 means "as new as a fresh run", near 0 a copy.
"""

from __future__ import annotations

import numpy as np
import torch

from segzoo.weightgen.zoo.layer_scale import LayerScale
from segzoo.weightgen.zoo.scoring import Scorer
from segzoo.weightgen.zoo.runs import Zoo


class Audit:
    """Training checkpoints of a zoo, searchable by distance, each scored (once) on demand."""

    def __init__(self, zoo: Zoo, scale: LayerScale, scorer: Scorer, k: int, seed: int):
        runs = zoo.select("train")
        self.zoo, self.scorer, self.k = zoo, scorer, k
        self.sigma = scale.per_parameter.float()
        # every run's row 0 is its start: a start shared by many runs is one checkpoint, listed once (else the k
        # nearest of a network far from every run would be k copies of one parent)
        first = {}
        for r in runs:
            first.setdefault(r.start, r.name)
        self.keys = [(r.name, i) for r in runs for i in range(len(r.params)) if i or first[r.start] == r.name]
        self.scaled = torch.stack([zoo.runs[n].params[i] for n, i in self.keys]) / self.sigma  # [N, P]
        self.generator = torch.Generator().manual_seed(seed)
        self._dice: dict[tuple, np.ndarray] = {}
        self._volume: dict[tuple, np.ndarray] = {}

    def checkpoint(self, key: tuple[str, int]) -> torch.Tensor:
        return self.zoo.runs[key[0]].params[key[1]]

    def distances(self, vector: torch.Tensor) -> np.ndarray:
        # the direct differences, not cdist's |a|² + |b|² − 2ab shortcut, which leaves ~0.2 between identical vectors
        return torch.cdist((vector / self.sigma).float()[None], self.scaled,
                           compute_mode="donot_use_mm_for_euclid_dist")[0].numpy()

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return float(((a - b) / self.sigma).norm())

    def nearest(self, vector: torch.Tensor) -> tuple[list[tuple[str, int]], np.ndarray]:
        d = self.distances(vector)
        order = np.argsort(d, kind="stable")[:self.k]
        return [self.keys[i] for i in order], d[order]

    def prefetch(self, keys: list[tuple[str, int]]) -> None:
        """Score the checkpoints ``keys`` not scored yet on the test patches, in one batched pass."""
        todo = list(dict.fromkeys(k for k in keys if k not in self._dice))
        if todo:
            for key, d in zip(todo, self.scorer.dice_many(torch.stack([self.checkpoint(k) for k in todo]))):
                self._dice[key] = d

    def test_dice(self, key: tuple[str, int]) -> np.ndarray:
        """Test-patch Dice per region [R] of a checkpoint."""
        self.prefetch([key])
        return self._dice[key]

    def volume_dice(self, keys: list[tuple[str, int]]) -> list[np.ndarray]:
        """Whole-test-volume Dice per region [R] of checkpoints ``keys``, each scored once."""
        todo = list(dict.fromkeys(k for k in keys if k not in self._volume))
        if todo:
            for key, d in zip(todo, self.scorer.volume_dice_many(torch.stack([self.checkpoint(k) for k in todo]))):
                self._volume[key] = d
        return [self._volume[k] for k in keys]

    def noise_at(self, centre: torch.Tensor, distance: float) -> torch.Tensor:
        """``centre`` plus σ-shaped Gaussian noise whose normalised length is ``distance``."""
        noise = torch.randn(centre.shape, generator=self.generator)
        return centre + noise / noise.norm() * distance * self.sigma
