"""nnU-Net's networks as models of the comparison: planned for the patch as nnU-Net's planner plans them, built
through the allowlist, trained by the one loop, and predicted like the other models."""

from __future__ import annotations

import itertools
import json
import os

import pytest
import torch

from segzoo.config import load_config
from segzoo.data.plans import Plans, make_plans
from segzoo.errors import SegzooError
from segzoo.inference.trained import TrainedModel, load_model
from segzoo.models.nnunet import planned_architecture, topology
from segzoo.models.registry import build_model, planned_options
from segzoo.train.loop import Run, train

from conftest import REPO, prepared_phantom

CI = load_config(REPO / "config.yaml", REPO / "presets" / "ci.yaml", schema_path=REPO / "schemas" / "config.schema.yaml")
SETTINGS = {k: v for k, v in CI["train"].items() if k not in ("models", "seeds", "threads")}
SMALL = {"base_features": 4, "max_features": 16}


def test_topology_on_thick_slices_pools_the_thin_axes_first():
    # the demo's 0.8 x 0.8 x 2.5 mm: z is 3.1x coarser, so only x and y pool at first (with in-plane 3x3x1
    # kernels); after one pool x, y are 1.6 mm, within twice z's 2.5 mm, and all three pool; x, y stop at 6 voxels
    # (under 2 x 4), z at 4
    t = topology([0.8, 0.8, 2.5], [48, 48, 16])
    assert t.strides == [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]]
    assert t.kernels == [[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    assert t.pools == [3, 3, 2] and t.divisors == [8, 8, 4] and t.fits([48, 48, 16])
    # isotropic: an axis pools while it keeps 8 voxels (44 -> 22 -> 11 -> 6, 20 -> 10 -> 5), but a lone axis only
    # while it keeps 12 (y stops at 8); a side the topology does not divide is padded, as nnU-Net pads it
    t = topology([1.0, 1.0, 1.0], [44, 64, 20])
    assert t.pools == [3, 3, 2] and not t.fits([44, 64, 20]) and t.padded([44, 64, 20]) == [48, 64, 20]


def test_topology_is_nnunets_get_pool_and_conv_props():
    try:
        from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("nnunetv2 missing under CI=true: .ci/run installs the segzoo[nnunet] extra")
        pytest.skip("nnunetv2 is not installed (pip install -e '.[nnunet]'); CI installs it")
    for spacing in [(1, 1, 1), (0.8, 0.8, 2.5), (0.5, 0.5, 6), (3, 1, 1), (1, 2.1, 0.7)]:
        for patch in itertools.product([8, 12, 20, 48, 112, 224], [16, 28, 128], [4, 10, 24, 40]):
            pools, strides, kernels, padded, _ = get_pool_and_conv_props(list(spacing), list(patch), 4, 999999)
            ours = topology(list(spacing), list(patch))
            assert ours.pools == list(pools), (spacing, patch)
            assert ours.strides == [list(s) for s in strides] and ours.kernels == [list(k) for k in kernels]
            assert ours.padded(list(patch)) == list(padded), (spacing, patch)


def test_planned_blocks_are_nnunets_presets():
    plain = planned_architecture("nnunet", [64, 64, 64], [1.0, 1.0, 1.0], base_features=32, max_features=320)
    kwargs = plain["arch_kwargs"]
    assert plain["network_class_name"].endswith(".PlainConvUNet") and kwargs["n_stages"] == 5
    assert kwargs["features_per_stage"] == [32, 64, 128, 256, 320]  # doubled per stage, capped (nnU-Net 3D)
    assert kwargs["n_conv_per_stage"] == [2] * 5 and kwargs["n_conv_per_stage_decoder"] == [2] * 4
    resenc = planned_architecture("nnunet_resenc", [128, 128, 128], [1.0, 1.0, 1.0])
    kwargs = resenc["arch_kwargs"]
    assert resenc["network_class_name"].endswith(".ResidualEncoderUNet") and kwargs["n_stages"] == 6
    assert kwargs["n_blocks_per_stage"] == [1, 3, 4, 6, 6, 6]  # nnUNetPlannerResEncM
    assert kwargs["n_conv_per_stage_decoder"] == [1] * 5
    with pytest.raises(SegzooError, match=r"must be multiples of \[8, 8, 4\] \(nnU-Net would pad it to \[48, 64, 20\]"):
        planned_architecture("nnunet", [44, 64, 20], [1.0, 1.0, 1.0])


@pytest.mark.parametrize("name", ["nnunet", "nnunet_resenc"])
def test_each_network_is_built_from_its_planned_block(name):
    options = planned_options(name, SMALL, [48, 48, 16], [0.8, 0.8, 2.5])
    assert set(options) == {"architecture", "deep_supervision"} and options["deep_supervision"] is True
    model = build_model(name, 1, 3, **options)
    assert model.divisors == (8, 8, 4) and model.divisor == 8
    assert model.architecture == options["architecture"]
    x = torch.randn(2, 1, 48, 48, 16)
    outs = model.train()(x)  # deep supervision: one output per decoder stage, full resolution first
    assert [tuple(o.shape[2:]) for o in outs] == [(48, 48, 16), (24, 24, 16), (12, 12, 8)]
    assert model.eval()(x).shape == (2, 3, 48, 48, 16)  # one output in eval mode, as every model gives
    with pytest.raises(SegzooError, match="no architecture block"):
        build_model(name, 1, 3, **SMALL)  # the config's options alone: the plan makes the block


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepared_phantom(tmp_path_factory.mktemp("data"), seed=6)


@pytest.mark.parametrize("name", ["nnunet", "nnunet_resenc"])
def test_both_networks_train_through_the_loop_from_the_plan_and_predict(prepared, tmp_path, name):
    pre, splits = prepared
    fingerprint = {"dataset": "D", "channels": pre.channels, "regions": pre.regions,
                   "cases": [{"id": c, "spacing": pre.spacing, "shape": list(pre.case(c).image.shape[1:])}
                             for c in pre.case_ids()],
                   "intensities": [{"mean": 0.0, "std": 1.0, "percentile_00_5": -1.0, "percentile_99_5": 1.0,
                                    "samples": 10}]}
    (tmp_path / "plans.json").write_text(json.dumps(make_plans(
        fingerprint, models={"unet3plus": CI["models"]["unet3plus"], name: CI["models"][name]}, memory_mb=256,
        spacing=pre.spacing, patch_size=[16, 16, 16], batch_size=2)))
    plans = Plans(tmp_path / "plans.json")
    options = plans.model_options(name, CI["models"][name])
    assert options == {"architecture": planned_architecture(name, [16, 16, 16], pre.spacing, **SMALL),
                       "deep_supervision": True}
    metrics = train(Run(preprocessed=pre, splits=splits, model=name, model_options=options, seed=0,
                        out=tmp_path / "run", settings={**SETTINGS, "steps": 4, "val_every": 2}, progress=False))
    assert metrics["steps"] == 4 and metrics["parameters"] > 0
    model, trained = load_model(tmp_path / "run" / "best", torch.device("cpu"))
    assert trained.model == name and not trained.imported  # a segzoo run of nnU-Net's network, not an import
    assert trained.model_options["architecture"] == options["architecture"]
    assert model(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    assert TrainedModel.read(tmp_path / "run" / "final").model_options == options


def test_the_plan_gives_them_nnunets_patch_under_budget_and_the_shared_one_under_equal():
    fingerprint = {"dataset": "D", "channels": ["T2"], "regions": {"a": [1]},
                   "cases": [{"id": str(i), "spacing": [0.8, 0.8, 2.5], "shape": [64, 64, 32]} for i in range(6)],
                   "intensities": [{"mean": 0.0, "std": 1.0, "percentile_00_5": -1.0, "percentile_99_5": 1.0,
                                    "samples": 10}]}
    models = {"unet3plus": {"base": 4, "levels": 5}, "nnunet": SMALL, "nnunet_resenc": SMALL}
    equal = make_plans(fingerprint, models=models, memory_mb=64)
    shared = {tuple(e["patch_size"]) for e in equal["models"].values()}
    assert len(shared) == 1
    for name in ("nnunet", "nnunet_resenc"):
        entry = equal["models"][name]
        assert entry["model_options"]["architecture"] == planned_architecture(
            name, entry["patch_size"], equal["target_spacing"], **SMALL)
        assert all(side % d == 0 for side, d in zip(entry["patch_size"], entry["divisors"]))
    budget = make_plans(fingerprint, models={"nnunet": SMALL}, memory_mb=64, protocol="budget")
    entry = budget["models"]["nnunet"]
    assert topology(budget["target_spacing"], entry["patch_size"]).fits(entry["patch_size"])
    assert entry["within_budget"] and entry["patch_size"] != [64, 64, 32]  # the budget shrank the median image
    with pytest.raises(SegzooError, match=r"train.patch_size: nnunet: patch \[18, 24, 12\] does not fit.*"
                                          r"pad it to \[20, 24, 12\]"):
        make_plans(fingerprint, models={"nnunet": SMALL}, memory_mb=64, patch_size=[18, 24, 12])
