"""Several processes for one training run (DDP), started by ``torchrun``; one process when it is not.

``torchrun --standalone --nproc-per-node N -m segzoo train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK. Every
process draws the same global batch (the patch sampler is seeded per step) and trains on its own slice of it;
DistributedDataParallel averages the gradients. Batch Dice pools its sums over the whole global batch
(:func:`Context.global_sum`), so N processes follow the loss trajectory of one process with the same global
batch, up to float rounding. Process 0 validates, logs and writes every file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Context:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def start(self, device: torch.device) -> torch.device:
        """Join the process group (NCCL on CUDA, gloo on the CPU); the device this process uses."""
        if not self.active:
            return device
        if device.type == "cuda":  # one visible GPU per process (the pool) or all of them (SLURM)
            device = torch.device("cuda", self.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's slice of the global batch [B, ...] -> [B / world, ...]."""
        if not self.active:
            return batch
        size = batch.shape[0] // self.world
        return batch[self.rank * size:(self.rank + 1) * size]

    def global_sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum over processes, with gradients flowing back to each process's own part."""
        return _GlobalSum.apply(value) if self.active else value

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def stop(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


class _GlobalSum(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient too. Every process computes the same loss from
    the pooled sums, so each one's share of the gradient arrives ``world`` times; DDP's averaging divides that
    back out, leaving the gradient of the one-process loss."""

    @staticmethod
    def forward(ctx, value: torch.Tensor) -> torch.Tensor:
        total = value.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total
