"""``segzoo nnunet-import``: an nnU-Net v2 model folder becomes a segzoo checkpoint, safely.

Nothing in the folder is executed: plans.json and dataset.json are read as JSON, the checkpoint with
``weights_only=True`` and a numpy allowlist (:mod:`segzoo.interop.nnunet_folder`), the network is rebuilt
from the plans' ``architecture`` block through segzoo's class and op allowlist
(:func:`segzoo.models.nnunet.build_network`) and must take the weights with ``strict=True``.

The result is ``<out>/model.safetensors`` + ``model.json``; the sidecar keeps what inference needs
(reader, transpose, spacing, patch size, normalisation, mirror axes, labels or regions) and where the
weights came from (file, SHA-256, trainer, fold, any code that was ignored).

Heads: a region-based model keeps one sigmoid head per region; a softmax model with two classes becomes
one sigmoid head (``w1 − w0`` in every segmentation layer: ``sigmoid(l1 − l0)`` is the softmax's
foreground probability); a softmax model with more classes keeps its softmax.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from segzoo.checkpoint import FOLDER_STEM, module_tensors, save_checkpoint, sha256
from segzoo.errors import SegzooError
from segzoo.interop.nnunet_folder import NnUNetModelFolder, load_nnunet_checkpoint
from segzoo.io import output_dir
from segzoo.models.nnunet import build_network

READERS = ("SimpleITKIO", "NibabelIO", "NibabelIOWithReorient")
NORMALISATIONS = ("ZScoreNormalization", "CTNormalization", "NoNormalization", "RescaleTo01Normalization")


def heads_of(dataset: dict, source: Path) -> tuple[str, dict]:
    """``("sigmoid", {region: [label values]})`` or ``("softmax", {class: value})`` from a dataset.json."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise SegzooError(f"{source}: no 'labels'")
    labels = {k: v for k, v in labels.items() if k != "ignore"}
    if any(isinstance(v, (list, tuple)) for v in labels.values()):
        order = dataset.get("regions_class_order")
        regions = {k: sorted(v) if isinstance(v, (list, tuple)) else [v] for k, v in labels.items()
                   if (v if isinstance(v, (list, tuple)) else [v]) != [0]}
        if not isinstance(order, list) or len(order) != len(regions):
            raise SegzooError(f"{source}: region-based labels need regions_class_order with one entry per region")
        return "sigmoid", regions
    values = sorted(labels.values())
    if values != list(range(len(values))):
        raise SegzooError(f"{source}: label values {values} are not consecutive from 0")
    return "softmax", dict(sorted(labels.items(), key=lambda kv: kv[1]))


def import_model(folder: str | Path, out: str | Path, *, fold: str = "0", which: str = "final",
                 configuration: str | None = None) -> dict:
    """Import one fold's checkpoint of ``folder`` into ``out``; return the sidecar written.

    Refused, naming the file: a network class or op outside the allowlist, a pickle global outside the
    allowlist, weights that do not load strictly into the network the plans describe.
    """
    model_folder = NnUNetModelFolder.read(folder)
    checkpoint_path = model_folder.checkpoint_path(fold, which)
    checkpoint = load_nnunet_checkpoint(checkpoint_path)
    init_args = checkpoint.get("init_args") or {}
    configuration = configuration or init_args.get("configuration")
    if not configuration:
        raise SegzooError(f"{checkpoint_path}: names no configuration (init_args.configuration); pass --configuration")
    config = model_folder.configuration(configuration)
    plans, dataset = model_folder.plans, model_folder.dataset
    plans_path, dataset_path = model_folder.folder / "plans.json", model_folder.folder / "dataset.json"

    reader = plans.get("image_reader_writer", "SimpleITKIO")
    if reader not in READERS:
        raise SegzooError(f"{plans_path}: image_reader_writer {reader!r} is not supported (segzoo reads "
                          f"{', '.join(READERS)})")
    schemes = list(config.get("normalization_schemes", []))
    for scheme in schemes:
        if scheme not in NORMALISATIONS:
            raise SegzooError(f"{plans_path}: normalisation {scheme!r} is not supported ({', '.join(NORMALISATIONS)})")
    channels = [name for _, name in sorted(dataset.get("channel_names", dataset.get("modality", {})).items(),
                                           key=lambda kv: int(kv[0]))]
    if len(channels) != len(schemes):
        raise SegzooError(f"{dataset_path}: {len(channels)} channels but the plans normalise {len(schemes)}")
    kind, heads = heads_of(dataset, dataset_path)
    n_out = len(heads)

    weights = checkpoint["network_weights"]
    network = build_network(config["architecture"], len(channels), n_out, deep_supervision=False,
                            source=f"{plans_path} ({configuration})")
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        problem = " ".join(str(e).split())[:400]
        raise SegzooError(f"{checkpoint_path}: its weights do not load strictly into the network the plans describe "
                          f"(a trainer that changes the architecture, e.g. swaps in another norm, is not supported): "
                          f"{problem}") from None
    converted = None
    if kind == "softmax" and n_out == 2:
        name = list(heads)[1]
        network = _binary_to_sigmoid(network, config["architecture"], len(channels), plans_path)
        kind, heads, converted = "sigmoid", {name: [1]}, "binary softmax to one sigmoid head (w1 - w0)"

    code = [str(p.relative_to(model_folder.folder)) for p in model_folder.code_files()]
    sidecar = {
        "model": "nnunet",
        "model_options": {"architecture": config["architecture"]},
        "channels": channels,
        "output": kind,
        ("regions" if kind == "sigmoid" else "classes"): heads,
        "patch_size": list(config["patch_size"]),
        "nnunet": {
            "configuration": configuration,
            "reader": reader,
            "transpose_forward": list(plans.get("transpose_forward", [0, 1, 2])),
            "transpose_backward": list(plans.get("transpose_backward", [0, 1, 2])),
            "spacing": [float(s) for s in config["spacing"]],
            "normalization_schemes": schemes,
            "use_mask_for_norm": list(config.get("use_mask_for_norm", [False] * len(schemes))),
            "intensity_properties": plans.get("foreground_intensity_properties_per_channel", {}),
            "mirror_axes": list(checkpoint.get("inference_allowed_mirroring_axes") or []),
            "regions_class_order": list(dataset.get("regions_class_order") or []) if kind == "sigmoid" else None,
        },
        "source": {
            "folder": str(folder),
            "checkpoint": str(checkpoint_path.relative_to(model_folder.folder)),
            "sha256": sha256(checkpoint_path),
            "trainer": checkpoint.get("trainer_name"),
            "fold": fold,
            "plans_name": plans.get("plans_name"),
            "dataset_name": plans.get("dataset_name"),
            "converted": converted,
            "ignored_code": code,
        },
    }
    if converted:
        sidecar["nnunet"]["regions_class_order"] = [1]
    with output_dir(out) as tmp:
        save_checkpoint(tmp / FOLDER_STEM, module_tensors(network), sidecar)
    return sidecar


def _binary_to_sigmoid(network: torch.nn.Module, architecture: dict, channels: int, source: Path) -> torch.nn.Module:
    """The same network with one output: every segmentation layer's weight and bias become ``row1 − row0``."""
    state = network.state_dict()
    seg_keys = [k for k in state if k.startswith("decoder.seg_layers.")]
    if not seg_keys:
        raise SegzooError(f"{source}: no decoder.seg_layers in the network; cannot turn its softmax into a sigmoid")
    for key in seg_keys:
        state[key] = (state[key][1] - state[key][0])[None]
    single = build_network(architecture, channels, 1, deep_supervision=False, source=str(source))
    single.load_state_dict(state, strict=True)
    return single


PREFIX = "nnunet:"


def imported_models(models: list[str]) -> dict[str, Path]:
    """``train.models`` entries ``nnunet:<path>`` as ``{row name: checkpoint stem}``: the row is ``nnunet_`` and
    the import folder's name (``nnunet:imported/sc_model`` → ``nnunet_sc_model``)."""
    rows = {}
    for entry in models:
        if not entry.startswith(PREFIX):
            continue
        stem = imported_checkpoint(entry[len(PREFIX):])
        label = stem.parent.name if stem.name == FOLDER_STEM else stem.name
        name = "nnunet_" + re.sub(r"[^A-Za-z0-9_]", "_", label)
        if name in rows:
            raise SegzooError(f"train.models: {entry} and another imported model share the row name {name}")
        rows[name] = stem
    return rows


def imported_checkpoint(path: str | Path) -> Path:
    """The checkpoint stem of an import folder (``<dir>/model``), or the stem given."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix("")
    return path / FOLDER_STEM if path.is_dir() or not path.name == FOLDER_STEM else path
