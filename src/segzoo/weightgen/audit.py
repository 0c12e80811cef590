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
from segzoo.weightgen.engine import pooled_dice
from segzoo.weightgen.scoring import Scorer
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

    def prefetch(self, keys: list[tuple[str, int]], masks: bool = False) -> None:
        """Score the checkpoints ``keys`` not scored yet in one batched pass (``masks``: keep their test masks)."""
        todo = list(dict.fromkeys(k for k in keys if k not in self._dice or (masks and k not in self._masks)))
        if todo:
            dice, predicted = self.scorer.score(torch.stack([self.checkpoint(k) for k in todo]))
            for key, d, m in zip(todo, dice, predicted):
                self._dice[key] = d
                if masks:
                    self._masks[key] = m.float()

    def test_dice(self, key: tuple[str, int]) -> np.ndarray:
        self.prefetch([key])
        return self._dice[key]

    def test_masks(self, key: tuple[str, int]) -> torch.Tensor:
        self.prefetch([key], masks=True)
        return self._masks[key]

    def noise_at(self, centre: torch.Tensor, distance: float) -> torch.Tensor:
        """``centre`` plus σ-shaped Gaussian noise whose normalised length is ``distance``."""
        noise = torch.randn(centre.shape, generator=self.generator)
        return centre + noise / noise.norm() * distance * self.sigma

    def rows(self, vectors: torch.Tensor, tasks: list[str], lookup_keys: list[tuple[str, int]], masks: torch.Tensor,
             full: list[bool]) -> list[dict]:
        """Distances and the memorisers' test task Dice for generated networks ``vectors`` [N, P] whose test
        ``masks`` [N, ...] are given (``full`` False: only the nearest distance and the lookup memoriser, as
        alignment prompts need); every memoriser of every row scored in one batched pass per kind."""
        nearest = [self.nearest(v) for v in vectors]
        self.prefetch([keys[0] for (keys, _), f in zip(nearest, full) if f], masks=True)  # their masks too
        self.prefetch(list(lookup_keys))
        wanted = [i for i, f in enumerate(full) if f]
        averages = [torch.stack([self.checkpoint(k) for k in nearest[i][0]]).mean(0) for i in wanted]
        noisy = [self.noise_at(self.checkpoint(nearest[i][0][0]), float(nearest[i][1][0])) for i in wanted]
        scored = self.scorer.dice_many(torch.stack(averages + noisy)) if wanted else np.zeros((0, 0))
        out = []
        for i, (vector, task) in enumerate(zip(vectors, tasks)):
            keys, d = nearest[i]
            regions = task_regions(task, self.zoo.regions)
            task_dice = lambda dice: float(np.mean(np.asarray(dice)[regions]))  # noqa: E731
            row = {"d_nearest": float(d[0]), "nearest_run": keys[0][0], "nearest_index": keys[0][1],
                   "lookup_run": lookup_keys[i][0], "lookup_index": lookup_keys[i][1],
                   "lookup_dice": task_dice(self.test_dice(lookup_keys[i]))}
            if full[i]:
                at = wanted.index(i)
                own, near = masks[i][:, regions].float(), self.test_masks(keys[0])[:, regions]
                row |= {"nearest_dice": task_dice(self.test_dice(keys[0])), "mean_k_dice": task_dice(scored[at]),
                        "noise_dice": task_dice(scored[len(wanted) + at]),
                        "mask_agreement": float(pooled_dice(own, near).mean())}
            out.append(row)
        return out
