"""What a zoo job reads, typed: the zoo network's size, a run's length and snapshots, the scoring batches, and the
training options a zoo run inherits from ``train``.

The workflow passes these as JSON (``--settings``, built by :func:`segzoo.weightgen.zoo.plan.zoo_settings`); every
zoo module reads the fields here instead of by key.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

from segzoo.errors import SegzooError


@dataclass(frozen=True)
class ZooSettings:
    """A zoo job's settings.

    ``features`` / ``n_conv_per_stage``: the PlainConvUNet; ``steps``: Adam steps per run (with ``plateau``, the
    cap: :mod:`segzoo.weightgen.zoo.schedule`); ``checkpoints``: random
    snapshot steps per run; ``budgets``: the steps every run also keeps (the Adam yardsticks the generators are judged
    against, and the prefix a generator may read); ``batch_size`` / ``patch_size``: the training batches;
    ``val_patches`` / ``test_patches``: the fixed scoring batches; ``parent_steps`` / ``parent_lr``: how a parent is
    grown; ``train``: the inherited training options (augmentation, foreground share, workers, bf16,
    sliding-window batch)."""

    features: list[int]
    n_conv_per_stage: int
    steps: int
    checkpoints: int
    batch_size: int
    patch_size: list[int] | None  # None: from the plan (segzoo.weightgen.zoo.schedule)
    val_patches: int
    parent_steps: int
    parent_lr: float
    train: dict
    budgets: list[int] = field(default_factory=list)
    test_patches: int = 0
    lrs: list[float] = field(default_factory=lambda: [0.01])
    plateau: dict | None = None  # every, patience, min_delta: steps until val Dice stops improving (a pilot run)

    @classmethod
    def from_json(cls, data: dict) -> ZooSettings:
        names = {f.name for f in fields(cls)}
        missing = sorted(f.name for f in fields(cls)
                         if f.default is MISSING and f.default_factory is MISSING and f.name not in data)
        if missing:
            raise SegzooError(f"zoo settings: missing {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def network_options(self) -> dict:
        """The zoo network's registry options."""
        return {"features": list(self.features), "n_conv_per_stage": self.n_conv_per_stage}
