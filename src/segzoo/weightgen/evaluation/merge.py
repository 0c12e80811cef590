"""Model merging baselines for "one network for every region": weight soup, task arithmetic, TIES.

All take the single-task networks ``finals`` [K, P] that share one start ``base`` [P] and work on the
task vectors τ_k = finals_k − base:

- uniform soup      base + mean_k τ_k (the plain average of the networks);
- task arithmetic   base + λ Σ_k τ_k (Ilharco et al. 2023);
- TIES              per task keep the ``keep`` share of largest |τ_k| entries, elect each entry's sign by
                    the summed trimmed vectors, average the trimmed entries that agree with it, and add
                    λ times that (Yadav et al. 2023).
"""

from __future__ import annotations

import torch


def soup(base: torch.Tensor, finals: torch.Tensor) -> torch.Tensor:
    return finals.mean(0) if len(finals) else base


def task_arithmetic(base: torch.Tensor, finals: torch.Tensor, lam: float) -> torch.Tensor:
    return base + lam * (finals - base).sum(0)


def ties(base: torch.Tensor, finals: torch.Tensor, keep: float, lam: float) -> torch.Tensor:
    tau = finals - base                                                          # [K, P]
    k = max(1, int(round(keep * tau.shape[1])))
    threshold = tau.abs().kthvalue(tau.shape[1] - k + 1, dim=1, keepdim=True).values  # [K, 1]
    trimmed = torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau))
    sign = torch.sign(trimmed.sum(0))                                            # [P]
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    merged = (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
    return base + lam * merged
