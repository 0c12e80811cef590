"""Checkpoints as safetensors plus a JSON sidecar; nothing here (or anywhere in segzoo) unpickles.

``<stem>.safetensors`` holds tensors only: model weights under ``model.``, optimizer state under
``optim.``. ``<stem>.json`` holds everything else (step, config hash, seed, metrics, the
optimizer's non-tensor state) and the SHA-256 of the tensor file, so a pair torn by a crash between
the two writes is detected instead of loaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from segzoo.errors import SegzooError
from segzoo.io import output_file, read_json, write_json

PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin"}
FOLDER_STEM = "model"  # a folder given as a checkpoint holds <folder>/model.safetensors|json (segzoo nnunet-import)


def paths(stem: str | Path) -> tuple[Path, Path]:
    stem = Path(stem)
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_checkpoint(stem: str | Path, tensors: dict[str, torch.Tensor], sidecar: dict) -> None:
    """Write ``<stem>.safetensors`` then ``<stem>.json``, each atomically (temporary file + rename)."""
    weights, sidecar_path = paths(stem)
    with output_file(weights, overwrite=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)
        digest = sha256(tmp)
    write_json(sidecar_path, {**sidecar, "tensors_sha256": digest}, overwrite=True)


def load_checkpoint(stem: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint pair; raise SegzooError if it is missing, torn, or not safetensors."""
    stem = Path(stem)
    if stem.suffix in PICKLE_SUFFIXES:
        raise SegzooError(f"{stem}: a pickle-based checkpoint; segzoo never unpickles (it could run code). "
                          f"Convert it to safetensors first.")
    if stem.is_dir():
        stem = stem / FOLDER_STEM
    weights, sidecar_path = paths(stem.with_suffix("") if stem.suffix in (".safetensors", ".json") else stem)
    if not weights.is_file():
        raise SegzooError(f"{weights}: missing")
    sidecar = read_json(sidecar_path)
    if sidecar.get("tensors_sha256") != sha256(weights):
        raise SegzooError(f"{weights}: does not match its sidecar {sidecar_path.name} (torn or edited checkpoint)")
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError, ValueError) as e:
        raise SegzooError(f"{weights}: not a safetensors file ({e})") from None
    return tensors, sidecar


def sha256(path: Path) -> str:
    """The file's SHA-256 (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def flatten_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested state (e.g. ``optimizer.state_dict()``) into ``tensors``.

    Returns a JSON-able skeleton: tensors become ``{"tensor": name}``, dicts become lists of
    ``[key, value]`` pairs (optimizer state is keyed by int), tuples become lists.
    """
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().clone()
        return {"tensor": prefix}
    if isinstance(obj, dict):
        return {"items": [[k, flatten_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict) and "tensor" in skeleton:
        return tensors[skeleton["tensor"]]
    if isinstance(skeleton, dict) and "items" in skeleton:
        return {k: unflatten_state(v, tensors) for k, v in skeleton["items"]}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def module_tensors(model: torch.nn.Module, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """Every parameter and buffer once, under its first name (nnU-Net's networks reach the same tensors by
    several names, which safetensors refuses to store twice)."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return {f"{prefix}{name}": t.detach().clone() for name, t in named}


def load_module_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str,
                        prefix: str = "model.") -> torch.nn.Module:
    """Load :func:`module_tensors` (or a full state dict) strictly: every parameter and buffer must be there,
    and nothing else; names the file on a mismatch."""
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    required = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    known = set(model.state_dict())
    missing, unexpected = sorted(required - set(state)), sorted(set(state) - known)
    if missing or unexpected:
        raise SegzooError(f"{source}: weights do not fit the model (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]})")
    model.load_state_dict(state, strict=False)
    return model
