"""A generator's answers to the instrument's requests: ``<stem>.safetensors|json`` (params [N, P], row k for
request k) and ``<stem>.csv`` (the request table, :func:`segzoo.weightgen.zoo.prompts.requests`). The sidecar names
the generator (``generator``, ``label``), its budget in gradient evaluations per network (``budget``) and the zoo
network (regions, layout, architecture), so a sample can be run or exported on its own (segzoo nnunet-export).
Every learned generator writes this format; the evaluation reads it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from segzoo.checkpoint import load_checkpoint, save_checkpoint
from segzoo.errors import SegzooError
from segzoo.io import write_text

REQUIRED = ("generator", "label", "budget")


def save_samples(stem: Path, params: torch.Tensor, table: pd.DataFrame, sidecar: dict) -> None:
    missing = [k for k in REQUIRED if k not in sidecar]
    if missing or len(table) != len(params):
        raise SegzooError(f"{stem}: samples need {', '.join(REQUIRED)} and one request row per network "
                          f"(missing {missing}; {len(table)} rows for {len(params)} networks)")
    save_checkpoint(stem, {"params": params}, {**sidecar, "networks": len(params)})
    write_text(Path(f"{stem}.csv"), table.to_csv(index=False, float_format="%.6g"))


def load_samples(stem: Path) -> tuple[torch.Tensor, pd.DataFrame, dict]:
    """What :func:`save_samples` wrote: params [N, P], the request table, the sidecar."""
    tensors, sidecar = load_checkpoint(stem)
    table = Path(f"{stem}.csv")
    if not table.is_file():
        raise SegzooError(f"{table}: missing (a generator's samples are written with their request table)")
    prompts = pd.read_csv(table)
    if len(prompts) != len(tensors["params"]):
        raise SegzooError(f"{table}: {len(prompts)} requests for {len(tensors['params'])} sampled networks")
    missing = [k for k in REQUIRED if k not in sidecar]
    if missing:
        raise SegzooError(f"{stem}.json: not a generator's samples (no {', '.join(missing)})")
    return tensors["params"], prompts, sidecar
