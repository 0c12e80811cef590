"""The memorisation audit (Zeng et al. 2025): where a generated network lies among the training checkpoints.

Distances are L2 in G.pt's normalised change space, ``||(θ_a − θ_b) / σ_layer||``, so every layer counts
by how much training moves it. Beside each generated network stand four memorisers:

- ``nearest``   the training checkpoint closest to it;
- ``mean_k``    the average of its k nearest training checkpoints;
- ``noise``     the nearest checkpoint plus Gaussian noise (shaped by σ_layer) at the same distance;
- ``lookup``    the training checkpoint of the same task whose *validation* Dice is nearest the prompt:
                it aligns with prompts by construction, which shows that alignment alone proves nothing.

The novelty ratio divides a generated network's nearest distance by that of a held-out run's final
checkpoint (trained independently, never seen): about 1 means "as new as a fresh run", near 0 a copy.
"""

from __future__ import annotations

import numpy as np
import torch

from segzoo.weightgen.layer_scale import LayerScale
from segzoo.weightgen.scoring import Scorer, pooled_dice
from segzoo.weightgen.zoo import Zoo, task_regions


class Audit:
    """Training checkpoints of a zoo, searchable by distance, each scored (once) on demand."""

    def __init__(self, zoo: Zoo, scale: LayerScale, scorer: Scorer, k: int, seed: int):
        runs = zoo.select("train")
        self.zoo, self.scorer, self.k = zoo, scorer, k
        self.sigma = scale.per_parameter.float()
        self.keys = [(r.name, i) for r in runs for i in range(len(r.params))]
        self.scaled = torch.cat([r.params for r in runs]) / self.sigma  # [N, P]
        self.generator = torch.Generator().manual_seed(seed)
        self._dice: dict[tuple, np.ndarray] = {}
        self._masks: dict[tuple, torch.Tensor] = {}

    def checkpoint(self, key: tuple[str, int]) -> torch.Tensor:
        return self.zoo.runs[key[0]].params[key[1]]

    def distances(self, vector: torch.Tensor) -> np.ndarray:
        return torch.cdist((vector / self.sigma)[None], self.scaled)[0].numpy()

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return float(((a - b) / self.sigma).norm())

    def nearest(self, vector: torch.Tensor) -> tuple[list[tuple[str, int]], np.ndarray]:
        d = self.distances(vector)
        order = np.argsort(d, kind="stable")[:self.k]
        return [self.keys[i] for i in order], d[order]

    def test_dice(self, key: tuple[str, int]) -> np.ndarray:
        if key not in self._dice:
            self._dice[key] = self.scorer.dice(self.checkpoint(key))
        return self._dice[key]

    def test_masks(self, key: tuple[str, int]) -> torch.Tensor:
        if key not in self._masks:
            self._masks[key] = self.scorer.masks(self.checkpoint(key))
        return self._masks[key]

    def noise_at(self, centre: torch.Tensor, distance: float) -> torch.Tensor:
        """``centre`` plus σ-shaped Gaussian noise whose normalised length is ``distance``."""
        noise = torch.randn(centre.shape, generator=self.generator)
        return centre + noise / noise.norm() * distance * self.sigma

    def row(self, vector: torch.Tensor, task: str, lookup_key: tuple[str, int], masks: torch.Tensor,
            full: bool = True) -> dict:
        """Distances and the memorisers' test task Dice for one generated network whose test ``masks`` are
        given (``full=False``: only the nearest distance and the lookup memoriser, as alignment prompts need)."""
        keys, d = self.nearest(vector)
        regions = task_regions(task, self.zoo.regions)
        task_dice = lambda dice: float(np.mean(np.asarray(dice)[regions]))  # noqa: E731
        row = {"d_nearest": float(d[0]), "nearest_run": keys[0][0], "nearest_index": keys[0][1],
               "lookup_run": lookup_key[0], "lookup_index": lookup_key[1],
               "lookup_dice": task_dice(self.test_dice(lookup_key))}
        if full:
            average = torch.stack([self.checkpoint(k) for k in keys]).mean(0)
            own, near = masks[:, regions], self.test_masks(keys[0])[:, regions]
            row |= {"nearest_dice": task_dice(self.test_dice(keys[0])),
                    "mean_k_dice": task_dice(self.scorer.dice(average)),
                    "noise_dice": task_dice(self.scorer.dice(self.noise_at(self.checkpoint(keys[0]), float(d[0])))),
                    "mask_agreement": float(pooled_dice(own, near).mean())}
        return row
