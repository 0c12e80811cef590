"""A trained model's checkpoint, typed, and the one loader that rebuilds its network.

A checkpoint is ``<stem>.safetensors`` + ``<stem>.json`` (:mod:`segzoo.checkpoint`). Its sidecar says what the
network is and what it needs (:class:`TrainedModel`): a segzoo run's ``best``/``final`` (written by
:mod:`segzoo.train.loop`), or a model imported from nnU-Net (``<folder>/model``, :mod:`segzoo.interop.nnunet_import`).
Every module that predicts reads these fields here instead of by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from segzoo.checkpoint import FOLDER_STEM, load_checkpoint, load_module_tensors, paths
from segzoo.errors import SegzooError
from segzoo.io import read_json
from segzoo.models.registry import IMPORTED, build_model

RUN_STEM = "best"  # a run folder predicts with its best checkpoint (chosen on validation)


@dataclass(frozen=True)
class TrainedModel:
    """What a checkpoint's sidecar says of its network.

    ``heads`` maps each output to its label values: regions (``output == "sigmoid"``) or, for an imported softmax
    model, classes. ``preprocessing`` (segzoo runs): target spacing, label values, normalisation and the training
    spacings' range. ``mirror_axes``: the flips it was trained with (None: not recorded). ``nnunet``: an imported
    model's plans (reader, transpose, spacing, normalisation, mirror axes, regions order). ``sidecar``: the whole
    record, for how it was made (seed, step, fold, config hash, source, metrics)."""

    stem: Path
    model: str
    model_options: dict
    channels: list[str]
    heads: dict
    output: str
    patch_size: list[int] | None
    preprocessing: dict | None
    mirror_axes: list[int] | None
    nnunet: dict | None
    sidecar: dict = field(repr=False)

    @classmethod
    def from_sidecar(cls, stem: str | Path, sidecar: dict) -> TrainedModel:
        try:
            heads = sidecar["regions"] if "regions" in sidecar else sidecar["classes"]
            return cls(Path(stem), sidecar["model"], dict(sidecar.get("model_options", {})), list(sidecar["channels"]),
                       dict(heads), sidecar.get("output", "sigmoid"), sidecar.get("patch_size"),
                       sidecar.get("preprocessing"), sidecar.get("mirror_axes"), sidecar.get("nnunet"), sidecar)
        except KeyError as e:
            raise SegzooError(f"{stem}: not a model checkpoint segzoo can rebuild (its sidecar has no {e})") from None

    @classmethod
    def read(cls, stem: str | Path) -> TrainedModel:
        """The sidecar alone (no tensors read)."""
        return cls.from_sidecar(stem, read_json(paths(checkpoint_stem(stem))[1]))

    @property
    def imported(self) -> bool:
        """Imported from an nnU-Net model folder (its sidecar keeps nnU-Net's plans); a segzoo run of the same
        registry model (``nnunet``, trained here) is not."""
        return self.model == IMPORTED and self.nnunet is not None

    @property
    def regions(self) -> dict[str, list[int]]:
        """Region → label values, one sigmoid head each."""
        if self.output != "sigmoid":
            raise SegzooError(f"{self.stem}: a softmax model (classes {list(self.heads)}), not one head per region")
        return self.heads


def checkpoint_stem(path: str | Path) -> Path:
    """``path`` as a checkpoint stem: a folder made by ``segzoo nnunet-import`` is ``<folder>/model``; a
    ``.safetensors`` or ``.json`` file name loses its suffix."""
    path = Path(path)
    if path.is_dir():
        return path / FOLDER_STEM
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def resolve_run(path: str | Path) -> Path:
    """The checkpoint stem a ``--run`` names: a segzoo run folder's ``best``, an import folder's ``model``
    (``segzoo nnunet-import``), or a checkpoint stem or file given directly. An nnU-Net model folder, one of its
    ``fold_<F>`` folders or a checkpoint ``.pth`` in one is refused with the import command that reads it."""
    path = Path(path)
    if path.is_dir():
        for stem in (path / RUN_STEM, path / FOLDER_STEM):
            if paths(stem)[0].is_file():
                return stem
    fold = path if path.is_dir() else path.parent
    if (path.is_dir() or path.suffix == ".pth") and fold.name.startswith("fold_") and \
            (fold.parent / "plans.json").is_file():
        best = " --checkpoint best" if path.stem == "checkpoint_best" else ""
        raise SegzooError(f"{path}: {'in ' if fold != path else ''}{fold.name} of the nnU-Net model folder "
                          f"{fold.parent}; import that folder first (segzoo nnunet-import {fold.parent} --fold "
                          f"{fold.name.removeprefix('fold_')}{best} --out DIR) and pass DIR to --run")
    if path.is_dir():
        if (path / "plans.json").is_file() and any(path.glob("fold_*")):
            raise SegzooError(f"{path}: an nnU-Net model folder; import it first (segzoo nnunet-import {path} --fold F "
                              "--out DIR, once per fold) and pass the import folder(s) to --run")
        raise SegzooError(f"{path}: neither a segzoo run folder (best.safetensors, from segzoo train) nor an imported "
                          f"nnU-Net model (model.safetensors, from segzoo nnunet-import)")
    stem = checkpoint_stem(path)
    if not paths(stem)[0].is_file():
        raise SegzooError(f"{path}: no such run folder or checkpoint")
    return stem


def load_model(checkpoint: str | Path, device: torch.device) -> tuple[torch.nn.Module, TrainedModel]:
    """The network rebuilt from its checkpoint's sidecar and loaded from safetensors, in eval mode; and the
    checkpoint's typed sidecar."""
    tensors, sidecar = load_checkpoint(checkpoint)
    trained = TrainedModel.from_sidecar(checkpoint_stem(checkpoint), sidecar)
    model = build_model(trained.model, len(trained.channels), len(trained.heads), **trained.model_options)
    load_module_tensors(model, tensors, str(checkpoint))
    return model.to(device).eval(), trained
