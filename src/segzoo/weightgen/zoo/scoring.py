"""How zoo networks are scored: Dice per region pooled over a fixed batch of patches.

Two batches, both fixed by the config seed: ``val`` (patches of the validation cases: every zoo
checkpoint's metrics, G.pt's prompts, every selection) and ``test`` (patches of the test cases: every
number the evaluation reports). They share no case. Headline networks are also scored on the whole
test volumes with the pipeline's sliding-window inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segzoo.data.loader import PatchBatches
from segzoo.data.preprocessed import Preprocessed
from segzoo.errors import SegzooError
from segzoo.io import read_json
from segzoo.weightgen.zoo.engine import Engine
from segzoo.weightgen.zoo.settings import ZooSettings

FOREGROUND_SHARE = 0.75  # of a scoring batch's patches centred on a labelled voxel


@dataclass
class Batch:
    """``image`` [N, C, *patch], ``label`` [N, R, *patch] of one split's cases."""

    split: str
    image: torch.Tensor
    label: torch.Tensor

    @classmethod
    def of(cls, pre: Preprocessed, splits: Path, split: str, settings: ZooSettings, data_seed: int) -> Batch:
        cases = read_json(splits)[split]
        if not cases:
            raise SegzooError(f"{splits}: no {split} cases; the zoo scores its networks on them")
        count = settings.val_patches if split == "val" else settings.test_patches
        if count < 1:
            raise SegzooError(f"{split}_patches is {count}: the zoo's {split} batch needs at least one patch")
        batch = PatchBatches(pre, cases, settings.patch_size, count, foreground_fraction=FOREGROUND_SHARE,
                             seed=data_seed)[0]
        return cls(split, batch["image"], batch["label"])


class Scorer:
    """Scores flat parameter vectors of the zoo network on the val and test batches, many at once (the engine's
    grouped forward)."""

    def __init__(self, pre: Preprocessed, splits: Path, settings: ZooSettings, data_seed: int, device: str = "cpu"):
        self.pre, self.splits, self.settings = pre, Path(splits), settings
        self.regions = pre.region_names
        self.device = torch.device(device)
        self.engine = Engine(pre, settings, device)
        self.model = self.engine.template.to(self.device).eval()
        self._batches, self._data_seed = {}, data_seed

    def batch(self, split: str) -> Batch:
        """The split's fixed batch, cut on first use (a scorer of val networks never needs the test patches)."""
        if split not in self._batches:
            self._batches[split] = Batch.of(self.pre, self.splits, split, self.settings, self._data_seed)
        return self._batches[split]

    def load(self, vector: torch.Tensor) -> torch.nn.Module:
        from segzoo.models.flat import load_vector

        return load_vector(self.model, vector.to(self.device))

    def score(self, vectors: torch.Tensor, split: str = "test") -> tuple[np.ndarray, torch.Tensor]:
        """Pooled Dice per region [K, R] and binary predictions [K, N, R, *patch] (bool) of K networks [K, P]."""
        batch = self.batch(split)
        _, dice, masks = self.engine.score(vectors, batch.image, batch.label)
        return dice.numpy(), masks

    def dice_many(self, vectors: torch.Tensor, split: str = "test") -> np.ndarray:
        """Pooled Dice per region [K, R] of K networks [K, P]."""
        return self.score(vectors, split)[0]

    def dice(self, vector: torch.Tensor, split: str = "test") -> np.ndarray:
        """Pooled Dice per region [R] of one network [P] on the split's batch."""
        return self.dice_many(vector[None], split)[0]

    def volume_dice(self, vector: torch.Tensor, cases: list[str] | None = None) -> np.ndarray:
        """Mean Dice per region [R] over the whole test volumes (``cases``; None: every test case): the sliding
        window over the preprocessed volumes with the zoo's patch (overlap 0.25), NaN where a region is absent from a
        case and not predicted left out of the mean."""
        from segzoo.train.validate import validation_dice

        per_case = validation_dice(self.load(vector), self.pre, cases or read_json(self.splits)["test"],
                                   patch_size=self.settings.patch_size, sw_batch_size=4, device=self.device)
        with np.errstate(all="ignore"):
            return np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in per_case.T])

    def volume_dice_many(self, vectors: torch.Tensor, cases: list[str] | None = None) -> np.ndarray:
        """:meth:`volume_dice` of K networks [K, P]: [K, R] (one network at a time: on the CPU the grouped forward is
        no faster, bench/RESULTS.md)."""
        return (np.stack([self.volume_dice(v, cases) for v in vectors]) if len(vectors)
                else np.zeros((0, len(self.regions))))
