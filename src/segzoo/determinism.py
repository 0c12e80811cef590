"""Every random choice from one seed, and torch's deterministic algorithms: on the CPU two runs with the same
seed and thread count give bit-identical results (DESIGN section 8)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def make_deterministic(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
