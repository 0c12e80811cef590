"""An nnU-Net v2 model folder, read without running any of its code.

A trained model lives in ``nnUNet_results/<Dataset>/<Trainer>__<Plans>__<configuration>/``::

    plans.json                  the plans: reader, transpose, per-configuration spacing, patch size,
                                normalisation and the network's ``architecture`` block
    dataset.json                channels, labels (classes or regions), regions_class_order
    fold_<F>/checkpoint_final.pth   (or checkpoint_best.pth) a torch pickle: network_weights, init_args, ...
    trainer_class.py            sometimes shipped beside them (the spinal cord toolbox does); never run here

nnU-Net opens checkpoints with torch.load and ``weights_only=False``, which runs whatever the pickle names.
:func:`load_nnunet_checkpoint` uses ``weights_only=True`` and allows exactly the numpy globals nnU-Net's
logging leaves in the file (numpy 1 and 2 spellings); anything else is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segzoo.errors import SegzooError

# The globals a plain nnU-Net v2 checkpoint names besides torch's own safe set: numpy scalars in ``logging``
# and ``_best_ema``. numpy 2 writes ``numpy._core``, numpy 1 ``numpy.core``; both resolve to the same objects.
_SCALAR = np._core.multiarray.scalar
ALLOWED_GLOBALS = [
    _SCALAR, np.dtype, np.dtypes.Float32DType, np.dtypes.Float64DType, np.dtypes.Int64DType,
    (_SCALAR, "numpy.core.multiarray.scalar"),
]
CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
# What inference needs from a checkpoint; the rest (optimizer, grad scaler, logging) is dropped on import.
KEPT_FIELDS = ("network_weights", "trainer_name", "init_args", "inference_allowed_mirroring_axes")


def load_nnunet_checkpoint(path: Path) -> dict:
    """The checkpoint's fields, loaded with ``weights_only=True`` and the numpy allowlist."""
    if not path.is_file():
        raise SegzooError(f"{path}: missing")
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError or others depending on the file
        first = str(e).strip().splitlines()
        reason = next((line.strip() for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first
                      else type(e).__name__)
        raise SegzooError(f"{path}: refused: not loadable as plain tensors and allowlisted types ({reason}). "
                          "segzoo never unpickles arbitrary objects.") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("network_weights"), dict):
        raise SegzooError(f"{path}: not an nnU-Net v2 checkpoint (no network_weights)")
    return {k: checkpoint[k] for k in KEPT_FIELDS if k in checkpoint}


@dataclass
class NnUNetModelFolder:
    """plans.json and dataset.json of a model folder (as JSON), and where its checkpoints and code are."""

    folder: Path
    plans: dict
    dataset: dict

    @classmethod
    def read(cls, folder: str | Path) -> "NnUNetModelFolder":
        folder = Path(folder)
        if not folder.is_dir():
            raise SegzooError(f"{folder}: not a folder (expected an nnU-Net model folder with plans.json, "
                              "dataset.json and fold_<F>/)")
        return cls(folder, _read_json(folder / "plans.json"), _read_json(folder / "dataset.json"))

    def checkpoint_path(self, fold: str, which: str) -> Path:
        path = self.folder / f"fold_{fold}" / CHECKPOINTS[which]
        if not path.is_file():
            folds = sorted(p.name for p in self.folder.glob("fold_*"))
            raise SegzooError(f"{path}: missing (folds here: {', '.join(folds) or 'none'})")
        return path

    def configuration(self, name: str) -> dict:
        configurations = self.plans.get("configurations", {})
        if name not in configurations:
            raise SegzooError(f"{self.folder / 'plans.json'}: no configuration {name!r} "
                              f"(has {', '.join(configurations)})")
        config = dict(configurations[name])
        parent = config.pop("inherits_from", None)  # nnU-Net's configurations may inherit from another
        if parent:
            config = {**self.configuration(parent), **config}
        if "architecture" not in config:
            raise SegzooError(f"{self.folder / 'plans.json'}: configuration {name!r} has no 'architecture' block "
                              "(plans written before nnU-Net v2.3 are not supported)")
        return config

    def code_files(self) -> list[Path]:
        """Python files shipped in the folder (e.g. trainer_class.py): listed, never imported."""
        return sorted(self.folder.rglob("*.py"))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise SegzooError(f"{path}: missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SegzooError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise SegzooError(f"{path}: expected a JSON object")
    return data
