"""``segzoo nnunet-export``: a segzoo PlainConvUNet network as an nnU-Net v2 model folder.

The folder holds what ``nnUNetv2_predict_from_modelfolder`` reads::

    plans.json      reader NibabelIOWithReorient and transpose [2, 1, 0] (nnU-Net's readers give [Z, Y, X];
                    transposed, the network sees segzoo's RAS [X, Y, Z]), configuration
                    ``3d_fullres`` with the preprocessed dataset's spacing, the network's patch size,
                    z-score per channel over the whole image and the network's ``architecture`` block
    dataset.json    several regions: region-based labels with a regions_class_order; one region: a
                    2-class softmax (background logit 0, foreground logit the sigmoid head's)
    fold_0/checkpoint_final.pth  only tensors and plain types: network_weights, trainer_name, init_args
                    {configuration, fold}, inference_allowed_mirroring_axes None (segzoo does not mirror);
                    it loads with ``torch.load(weights_only=True)`` and no allowlist

Sources: a file of flat parameter vectors (a zoo run, G.pt samples; ``network`` picks the row), a checkpoint
of the zoo network (``plain_conv_unet``), or an imported nnU-Net checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from segzoo.checkpoint import load_checkpoint, load_module_tensors
from segzoo.data.preprocessed import Preprocessed
from segzoo.errors import SegzooError
from segzoo.inference.predictions import region_labels
from segzoo.inference.trained import TrainedModel
from segzoo.io import output_dir
from segzoo.models.nnunet import build_network, plain_conv_unet_architecture
from segzoo.models.registry import ZOO_NETWORK

CONFIGURATION = "3d_fullres"
PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def network_from(checkpoint: str | Path, pre: Preprocessed, network: int = -1) -> tuple[torch.nn.Module, dict, list]:
    """The network a checkpoint holds, its architecture block and its patch size (None when unknown)."""
    tensors, sidecar = load_checkpoint(checkpoint)
    channels = len(pre.channels)
    if "params" in tensors:  # zoo runs and G.pt samples: [N, P] flat vectors
        from segzoo.models.flat import load_vector

        if "architecture" not in sidecar:
            raise SegzooError(f"{checkpoint}: holds parameter vectors but no architecture in its sidecar (zoo runs "
                              "and G.pt samples record it; samples written before the nnU-Net export do not: rerun "
                              "`segzoo gpt-sample`)")
        params = tensors["params"]
        if not -len(params) <= network < len(params):
            raise SegzooError(f"{checkpoint}: --network {network} out of range (it holds {len(params)})")
        architecture = sidecar["architecture"]
        model = build_network(architecture, channels, len(sidecar["regions"]), source=str(checkpoint))
        return load_vector(model, params[network]), architecture, None
    trained = TrainedModel.from_sidecar(checkpoint, sidecar)
    if trained.model == ZOO_NETWORK:
        options = trained.model_options
        architecture = plain_conv_unet_architecture(list(options.get("features", (4, 8, 16))),
                                                    options.get("n_conv_per_stage", 2))
    elif trained.imported and trained.output == "sigmoid":
        architecture = trained.model_options["architecture"]
    else:
        raise SegzooError(f"{checkpoint}: model {trained.model!r} is not nnU-Net's PlainConvUNet with sigmoid "
                          f"heads; only {ZOO_NETWORK} networks and imported region models export")
    if architecture["network_class_name"] != PLAIN:
        raise SegzooError(f"{checkpoint}: {architecture['network_class_name']} does not export (PlainConvUNet only)")
    model = build_network(architecture, channels, len(trained.heads), source=str(checkpoint))
    return load_module_tensors(model, tensors, str(checkpoint)), architecture, trained.patch_size


def nnunet_plans(*, dataset: str, spacing: list[float], patch: list[int], channels: int, architecture: dict,
                 reader: str, transpose: list[int], intensity: dict | None = None) -> dict:
    """A plans.json with one configuration (``3d_fullres``): z-score per channel over the whole image,
    nnU-Net's default resampling (cubic, linear for probabilities, the anisotropic axis separately).
    ``spacing`` and ``patch`` are in the transposed axis order; ``transpose`` is its own inverse here."""
    resample = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": f"nnUNetPlans_{CONFIGURATION}", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": list(patch), "median_image_size_in_voxels": list(patch), "spacing": list(spacing),
        "normalization_schemes": ["ZScoreNormalization"] * channels, "use_mask_for_norm": [False] * channels,
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resample, "resampling_fn_seg_kwargs": {**resample, "is_seg": True, "order": 1},
        "resampling_fn_probabilities_kwargs": {**resample, "order": 1},
        "architecture": architecture, "batch_dice": False,
    }
    return {
        "dataset_name": dataset, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing), "original_median_shape_after_transp": list(patch),
        "image_reader_writer": reader, "transpose_forward": list(transpose), "transpose_backward": list(transpose),
        "configurations": {CONFIGURATION: configuration}, "experiment_planner_used": "segzoo",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": intensity or {str(i): {} for i in range(channels)},
    }


def export_model(checkpoint: str | Path, pre: Preprocessed, out: str | Path, *, network: int = -1,
                 patch_size: list[int] | None = None) -> Path:
    model, architecture, stored_patch = network_from(checkpoint, pre, network)
    patch = patch_size or stored_patch
    if not patch:
        raise SegzooError(f"{checkpoint}: records no patch size; pass --patch-size X Y Z (the zoo's is "
                          "weightgen.patch_size)")
    regions = pre.regions
    state = model.state_dict()
    if len(regions) == 1:
        for key in [k for k in state if k.startswith("decoder.seg_layers.")]:
            state[key] = torch.cat([torch.zeros_like(state[key]), state[key]])  # logits (0, l): softmax = sigmoid(l)
        (name,) = regions
        labels, order = {"background": 0, name: 1}, None
    else:
        labels, order = region_labels(regions)
    dataset_json = {"channel_names": {str(i): c for i, c in enumerate(pre.channels)}, "labels": labels,
                    "numTraining": len(pre.case_ids(labelled=True)), "file_ending": ".nii.gz",
                    "description": f"exported by segzoo from {Path(checkpoint).name}"}
    if order:
        dataset_json["regions_class_order"] = order
    plans = nnunet_plans(dataset=pre.plan["dataset"], spacing=[float(s) for s in pre.spacing], patch=list(patch),
                         channels=len(pre.channels), architecture=architecture, reader="NibabelIOWithReorient",
                         transpose=[2, 1, 0])
    checkpoint_fields = {"network_weights": {k: v.detach().clone() for k, v in state.items()},
                         "trainer_name": "nnUNetTrainer", "init_args": {"configuration": CONFIGURATION, "fold": 0},
                         "inference_allowed_mirroring_axes": None, "current_epoch": 0}
    with output_dir(out) as tmp:
        (tmp / "plans.json").write_text(json.dumps(plans, indent=2))
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        (tmp / "fold_0").mkdir()
        torch.save(checkpoint_fields, tmp / "fold_0" / "checkpoint_final.pth")
    return Path(out)
