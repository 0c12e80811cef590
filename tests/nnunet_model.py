"""An nnU-Net v2 model folder made in the test itself: plans.json, dataset.json and fold_0/checkpoint_final.pth
holding a small PlainConvUNet trained for a few steps on a phantom, saved the way nnU-Net saves it (numpy
scalars in ``logging``, a torch.device in ``init_args``)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from segzoo.data.dataset import read_dataset
from segzoo.interop.nnunet_export import nnunet_plans
from segzoo.inference.nnunet import ReaderGrid, crop_to_nonzero, new_shape, normalise, resample
from segzoo.models.nnunet import build_network

PATCH = [8, 16, 16]  # [Z, Y, X]: SimpleITK's axis order


def architecture(features=(4, 8, 16)) -> dict:
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2]][:len(features)]
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": len(features), "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[1, 3, 3]] + [[3, 3, 3]] * (len(features) - 1), "strides": strides,
            "n_conv_per_stage": [2] * len(features), "n_conv_per_stage_decoder": [2] * (len(features) - 1),
            "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def plans(spacing_zyx: list[float], arch: dict | None = None) -> dict:
    """Plans as nnU-Net writes them for SimpleITK-read images ([Z, Y, X], no transpose)."""
    return nnunet_plans(dataset="Dataset901_Tiny", spacing=spacing_zyx, patch=PATCH, channels=1,
                        architecture=arch or architecture(), reader="SimpleITKIO", transpose=[0, 1, 2],
                        intensity={"0": {"max": 1.0, "mean": 0.5, "median": 0.5, "min": 0.0, "percentile_00_5": 0.0,
                                         "percentile_99_5": 1.0, "std": 0.2}})


REGIONS = {"background": 0, "canal": [1, 2, 3], "sc": [2, 3], "lesion": 3}


def write_model_folder(raw: Path, out: Path, *, labels: dict | None = None, members: dict | None = None,
                       steps: int = 30, seed: int = 0, arch: dict | None = None) -> Path:
    """Train a small nnU-Net network on ``raw``'s training cases (in nnU-Net's preprocessed space) and save it
    as nnU-Net would. ``labels``: dataset.json labels; region-based (the phantom's regions) by default, or a
    softmax map such as ``{"background": 0, "sc": 1}`` with ``members={1: [2, 3]}`` (class 1 is phantom labels 2
    and 3); without ``members`` a softmax class is the phantom label of the same value."""
    labels = labels or REGIONS
    region_based = any(isinstance(v, list) for v in labels.values())
    ds = read_dataset(raw)
    cases = [c for c in ds.cases if not c.test and c.label is not None]
    spacings = [ReaderGrid("SimpleITKIO", nib.load(str(c.images[0]))).spacing for c in cases]
    target = [float(s) for s in np.median(np.asarray(spacings), axis=0)]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    heads = [v for k, v in labels.items() if k != "background"] if region_based else list(labels.values())
    data = []
    for case in cases:
        image, label = nib.load(str(case.images[0])), nib.load(str(case.label))
        grid = ReaderGrid("SimpleITKIO", image)
        x = grid.forward(np.asarray(image.dataobj, dtype=np.float32))[None]
        y = grid.forward(np.asarray(label.dataobj).astype(np.float32))[None]
        x, seg, box = crop_to_nonzero(x)
        y = y[(slice(None), *box)]
        x = normalise(x[0], "ZScoreNormalization", False, seg, {})[None]
        shape = new_shape(x.shape[1:], grid.spacing, target)
        data.append((resample(x, shape, grid.spacing, target, 3), resample(y, shape, grid.spacing, target, 0)))
    net = build_network(arch or architecture(), 1, len(heads))
    optim = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(2):
            x, y = data[rng.integers(len(data))]
            start = [rng.integers(0, max(s - p, 0) + 1) for s, p in zip(x.shape[1:], PATCH)]
            box = tuple(slice(s, s + p) for s, p in zip(start, PATCH))
            px, py = x[(slice(None), *box)], np.rint(y[(0, *box)])
            pad = [(0, 0)] + [(0, p - s) for s, p in zip(px.shape[1:], PATCH)]
            xs.append(np.pad(px, pad)), ys.append(np.pad(py, pad[1:]))
        x, y = torch.from_numpy(np.stack(xs)), np.stack(ys)
        logits = net(x)
        if region_based:
            target_maps = torch.from_numpy(np.stack([np.isin(y, v) for v in heads], 1).astype(np.float32))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target_maps)
        else:
            classes = y.astype(np.int64)
            if members:
                classes = np.zeros(y.shape, dtype=np.int64)
                for value, values in members.items():
                    classes[np.isin(y, values)] = int(value)
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(classes))
        optim.zero_grad()
        loss.backward()
        optim.step()
    dataset_json = {"channel_names": {"0": "T2"}, "labels": labels,
                    "numTraining": len(cases), "file_ending": ".nii.gz"}
    if region_based:
        dataset_json["regions_class_order"] = [1, 2, 3]
    fold = out / "fold_0"
    fold.mkdir(parents=True)
    (out / "plans.json").write_text(json.dumps(plans(target, arch), indent=2))
    (out / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    torch.save({
        "network_weights": net.state_dict(), "optimizer_state": optim.state_dict(), "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float32(0.5)], "ema_fg_dice": [np.float32(0.4)],
                    "train_losses": [float(loss.detach())]},
        "_best_ema": np.float32(0.4), "current_epoch": 1,
        "init_args": {"plans": plans(target, arch), "configuration": "3d_fullres", "fold": 0,
                      "dataset_json": dataset_json, "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2),
    }, fold / "checkpoint_final.pth")
    return out


def train_zoo_network(pre, steps: int = 30, seed: int = 0) -> torch.nn.Module:
    """The zoo network (PlainConvUNet [4, 8, 16]) after a few Adam steps on whole preprocessed cases, so that its
    masks are not empty (segzoo's RAS arrays; case sides must be multiples of 4)."""
    from segzoo.models.registry import build_model

    torch.manual_seed(seed)
    model = build_model("plain_conv_unet", len(pre.channels), len(pre.regions), features=[4, 8, 16])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids = pre.case_ids(labelled=True)
    for step in range(steps):
        case = pre.case(ids[step % len(ids)])
        target = np.stack([np.isin(np.asarray(case.label)[0], v) for v in pre.regions.values()])[None]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(torch.from_numpy(np.asarray(case.image))[None]), torch.from_numpy(target.astype(np.float32)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model


HALF_ULP = 2.0 ** -11  # float16's unit roundoff: one rounding of a logit moves a sigmoid probability by less


def parity_tolerance(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per voxel and head, how far nnU-Net's probabilities may lie from segzoo's (``ours``), both computed with the
    weighted tile logits summed in float16: twice segzoo's distance there from the fp32 ``reference`` (nnU-Net
    rounds the same sums; each side may be that far off, in opposite directions), plus one float16 rounding.
    Where the Gaussian weights are tiny (the image's outermost voxels, covered by tile edges only) float16
    keeps few bits and the bound is wide; inside it is a few 1e-4."""
    return 2 * np.abs(ours - reference) + HALF_ULP
