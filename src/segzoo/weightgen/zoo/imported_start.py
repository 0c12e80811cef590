"""``weightgen.init: imported:<folder>``: the zoo spawns from a network imported from nnU-Net.

The first parent is the imported network itself (no parent training); held-out parents (and any further training parents) still grow
from random inits. It works only when the imported network *is* the zoo network: nnU-Net's PlainConvUNet
with the zoo's widths and convolutions, one sigmoid head per region. A lab's own nnU-Net models (31M-140M
parameters) are not: G.pt here reads a network as 256-parameter tokens, sized for tens of thousands of
parameters. :func:`start_problems` says so before any job runs; :func:`imported_parameters` loads the weights.
"""

from __future__ import annotations

import math
import torch
from safetensors import safe_open

from segzoo.checkpoint import load_checkpoint, load_module_tensors, paths
from segzoo.errors import SegzooError
from segzoo.interop.nnunet_import import imported_checkpoint
from segzoo.io import read_json
from segzoo.models.nnunet import plain_conv_unet_architecture
from segzoo.models.flat import flatten


def _describe(architecture: dict, parameters: int) -> str:
    kwargs = architecture.get("arch_kwargs", {})
    return (f"{architecture.get('network_class_name', '?').rsplit('.', 1)[-1]}, features "
            f"{kwargs.get('features_per_stage')}, {parameters:,} parameters")


def start_problems(folder: str, weightgen: dict, regions: list[str] | None) -> list[str]:
    """Why the imported network cannot start the zoo (empty when it can)."""
    key = f"weightgen.init imported:{folder}"
    weights, sidecar_path = paths(imported_checkpoint(folder))
    if not sidecar_path.is_file():
        return [f"{key}: {sidecar_path} missing (import the model first: "
                f"segzoo nnunet-import MODEL_FOLDER --out {folder})"]
    sidecar = read_json(sidecar_path)
    architecture = sidecar.get("model_options", {}).get("architecture", {})
    with safe_open(str(weights), "pt") as f:
        parameters = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    zoo = plain_conv_unet_architecture(list(weightgen["features"]), weightgen.get("n_conv_per_stage", 2))
    found = []
    if architecture != zoo:
        found.append(f"{key}: its network ({_describe(architecture, parameters)}) is not the zoo network "
                     f"({_describe(zoo, 0).rsplit(',', 1)[0]}). The zoo spawns from a start with exactly the zoo "
                     "network's architecture, and G.pt here is sized for networks of tens of thousands of parameters "
                     "(256-parameter tokens); a lab's 31M-140M-parameter nnU-Net is not one. Compare it instead "
                     f"(train.models: nnunet:{folder}), or set weightgen.features to its widths if it is small.")
    if sidecar.get("output") != "sigmoid":
        found.append(f"{key}: a softmax model with {len(sidecar.get('classes', {}))} classes; the zoo network has one "
                     "sigmoid head per region")
    elif regions is not None and list(sidecar.get("regions", {})) != list(regions):
        found.append(f"{key}: its heads {list(sidecar.get('regions', {}))} are not the dataset's regions "
                     f"{list(regions)}")
    return found


def imported_parameters(folder: str, model: torch.nn.Module) -> torch.Tensor:
    """The imported network's weights as the zoo network's flat vector [P] (loaded strictly into ``model``)."""
    stem = imported_checkpoint(folder)
    tensors, _ = load_checkpoint(stem)
    try:
        load_module_tensors(model, tensors, str(stem))
    except RuntimeError as e:
        raise SegzooError(f"{stem}: does not load into the zoo network ({' '.join(str(e).split())[:300]})") from None
    return flatten(model)
