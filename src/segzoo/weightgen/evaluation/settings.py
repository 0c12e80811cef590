"""What the instrument reads, typed: the zoo's settings (to score and fine-tune its networks), the requests'
settings (draws, prompts, in-sample starts: every generator answers the same), the memorisers' k, the test cases
and the fine-tuning budget."""

from __future__ import annotations

from dataclasses import dataclass

from segzoo.weightgen.zoo.settings import ZooSettings


@dataclass(frozen=True)
class EvaluationSettings:
    zoo: ZooSettings
    sample: dict          # draws, prompts, insample_parents (segzoo.weightgen.zoo.prompts.requests)
    neighbours: int       # k of the mean-of-k memoriser
    test_cases: int | None  # whole volumes of the first N test cases (splits order); None: all
    finetune_steps: int   # Adam steps from a network and from its start (equal budgets)

    @classmethod
    def from_json(cls, data: dict) -> EvaluationSettings:
        evaluation = data["evaluation"]
        return cls(ZooSettings.from_json({**data["zoo"], "test_patches": data["test_patches"]}), dict(data["sample"]),
                   int(evaluation["neighbours"]), evaluation["test_cases"], int(evaluation["finetune_steps"]))
