"""The fingerprint and the plan (nnU-Net's rules), CT normalisation, and the start-time checks of the config."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO, snakemake, workflow_copy
from own_datasets import heterogeneous_dataset
from segzoo.data.dataset import read_dataset
from segzoo.data.fingerprint import dataset_fingerprint
from segzoo.data.plans import Plans, make_plans, normalization, target_spacing
from segzoo.data.preprocess import preprocess_dataset
from segzoo.dataset_checks import config_problems, outline_raw
from segzoo.errors import SegzooError
from segzoo.models.memory import model_profile, training_bytes

UNET = {"base": 4, "levels": 4}
DIFFNET = {"channels": 4, "layers": 2, "hidden": 4}


def test_target_spacing_is_the_median_unless_one_axis_is_much_coarser():
    spacings = np.array([[1.0, 1.0, 1.2], [0.9, 0.9, 1.0], [1.1, 1.1, 1.1]])
    shapes = np.full((3, 3), 64.0)
    assert target_spacing(spacings, shapes) == ([1.0, 1.0, 1.1], "median")
    # 5 mm slices, few of them: the coarse axis takes the 10th percentile of its spacings (nnU-Net)
    spacings = np.array([[0.5, 0.5, 6.0], [0.5, 0.5, 5.0], [0.5, 0.5, 3.0], [0.5, 0.5, 6.0], [0.5, 0.5, 5.0]])
    shapes = np.array([[256, 256, 20]] * 5, dtype=float)
    spacing, source = target_spacing(spacings, shapes)
    assert spacing[:2] == [0.5, 0.5] and spacing[2] == pytest.approx(np.percentile([6, 5, 3, 6, 5], 10))
    assert "anisotropic" in source
    # coarse spacing, but as many voxels along that axis as the others: the median stays
    assert target_spacing(spacings, np.array([[256, 256, 200]] * 5, dtype=float))[0][2] == 5.0


def test_normalisation_follows_the_channel_names_as_nnunet_does():
    stats = {"mean": 40.0, "std": 10.0, "percentile_00_5": -100.0, "percentile_99_5": 300.0, "samples": 50}
    schemes = normalization(["CT", "noNorm", "T2"], [stats, stats, stats], None)
    assert [s["scheme"] for s in schemes] == ["ct", "none", "zscore"]
    assert schemes[0]["clip"] == [-100.0, 300.0] and schemes[0]["mean"] == 40.0
    assert [s["scheme"] for s in normalization(["CT"], [stats], ["zscore"])] == ["zscore"]
    with pytest.raises(SegzooError, match="CT normalisation needs foreground"):
        normalization(["CT"], [{**stats, "samples": 0}], None)


def test_memory_estimate_grows_with_the_patch_and_the_batch():
    profile = model_profile("unet3plus", 1, 2, UNET)
    assert profile["divisor"] == 8 and profile["elements_per_voxel"] > 0
    one = training_bytes(profile, [32, 32, 32], 1) - training_bytes(profile, [32, 32, 32], 0)
    assert training_bytes(profile, [64, 32, 32], 1) - training_bytes(profile, [64, 32, 32], 0) == pytest.approx(2 * one)
    assert training_bytes(profile, [32, 32, 32], 4) - training_bytes(profile, [32, 32, 32], 0) == pytest.approx(4 * one)


def _fingerprint(cases: int = 4, shape=(160, 160, 40), spacing=(0.8, 0.8, 2.0)) -> dict:
    return {"dataset": "D", "channels": ["T2"], "regions": {"a": [1]},
            "cases": [{"id": str(i), "spacing": list(spacing), "shape": list(shape)} for i in range(cases)],
            "intensities": [{"mean": 0.0, "std": 1.0, "percentile_00_5": -1.0, "percentile_99_5": 1.0,
                             "samples": 10}]}


def test_each_models_patch_fits_the_budget_and_its_divisor():
    fp = _fingerprint()
    models = {"unet3plus": UNET, "diffnet": DIFFNET}
    large = make_plans(fp, models=models, memory_mb=2048, protocol="budget")
    small = make_plans(fp, models=models, memory_mb=256, protocol="budget")
    for plans in (large, small):
        for name, entry in plans["models"].items():
            divisor = model_profile(name, 1, 1, models[name])["divisor"]
            assert all(p % divisor == 0 for p in entry["patch_size"]), (name, entry)
            assert entry["within_budget"] and entry["estimated_mb"] <= plans["memory_mb"]
            assert entry["batch_size"] >= 2
            assert all(p <= -(-m // divisor) * divisor for p, m in zip(entry["patch_size"], plans["median_shape"]))
    for name in models:
        assert np.prod(small["models"][name]["patch_size"]) < np.prod(large["models"][name]["patch_size"])
    # a small dataset: the whole median image fits, and the batch is capped to 5 % of the dataset's voxels
    tiny = make_plans(_fingerprint(cases=2, shape=(24, 24, 16), spacing=(1, 1, 1)), models=models, memory_mb=2048)
    assert tiny["models"]["unet3plus"]["patch_size"] == [24, 24, 16]
    assert tiny["models"]["unet3plus"]["batch_size"] == 2


def test_the_equal_protocol_gives_every_model_the_largest_patch_all_of_them_fit(tmp_path):
    fp = _fingerprint()
    models = {"unet3plus": UNET, "diffnet": DIFFNET, "ms_diffnet": {"channels": 4, "layers": 1, "hidden": 4}}
    budget = make_plans(fp, models=models, memory_mb=256, protocol="budget")
    equal = make_plans(fp, models=models, memory_mb=256)  # the default
    assert equal["protocol"] == "equal" and budget["protocol"] == "budget"
    own = {m: budget["models"][m]["patch_size"] for m in models}
    assert len({tuple(p) for p in own.values()}) > 1  # on its own budget each model gets another patch
    shared = {(tuple(e["patch_size"]), e["batch_size"]) for e in equal["models"].values()}
    assert len(shared) == 1
    (patch, batch), = shared
    divisors = {m: model_profile(m, 1, 1, models[m])["divisor"] for m in models}
    for name, entry in equal["models"].items():
        assert all(p % divisors[name] == 0 for p in patch) and entry["within_budget"], (name, entry)
    # the hungriest model decides: no larger patch than any model's own plan, and the next box (one common divisor
    # more along every axis) no longer fits all of them
    assert np.prod(patch) <= min(np.prod(p) for p in own.values())
    step = int(np.lcm.reduce([model_profile(m, 1, 1, models[m])["divisor"] for m in models]))
    profiles = [model_profile(m, 1, 1, models[m]) for m in models]
    assert max(training_bytes(p, [side + step for side in patch], 2) for p in profiles) > 256 * 2**20
    (tmp_path / "plans.json").write_text(json.dumps(equal))
    (tmp_path / "budget.json").write_text(json.dumps(budget))
    assert f"every model trained on patch {'×'.join(map(str, patch))} voxels, batch {batch}" in \
        Plans(tmp_path / "plans.json").terms(list(models))
    assert "each model its own patch" in Plans(tmp_path / "budget.json").terms(list(models))


def test_config_values_override_the_plan_and_say_so():
    plans = make_plans(_fingerprint(), models={"unet3plus": UNET}, memory_mb=512, spacing=[1.0, 1.0, 1.0],
                       patch_size=[16, 16, 16], batch_size=3)
    entry = plans["models"]["unet3plus"]
    assert plans["target_spacing"] == [1.0, 1.0, 1.0] and plans["spacing_source"] == "config"
    assert (entry["patch_size"], entry["patch_source"], entry["batch_size"], entry["batch_source"]) == \
        ([16, 16, 16], "config", 3, "config")


def _write_ct_dataset(root: Path) -> Path:
    """Two CT cases in LPS voxel order: air outside, a body at 40 HU with a label, a bone block at 1000 HU."""
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    affine = np.diag([-0.7, -0.7, 5.0, 1.0])
    for i in range(2):
        image = np.full((40, 36, 8), -1000.0, dtype=np.float32)
        label = np.zeros(image.shape, dtype=np.uint8)
        image[8:32, 8:28, 1:7] = 40 + rng.normal(0, 20, (24, 20, 6))
        label[12:24, 12:20, 2:6] = 1
        image[30:32, 8:10, 1:3] = 1000
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"ct_{i}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"ct_{i}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "numTraining": 2,
                                                   "labels": {"background": 0, "organ": 1}, "file_ending": ".nii.gz"}))
    return root


def test_ct_fingerprint_and_normalisation(tmp_path):
    raw = _write_ct_dataset(tmp_path / "Dataset903_CT")
    fp = dataset_fingerprint(read_dataset(raw), seed=0)
    assert fp["cases"][0]["spacing"] == pytest.approx([0.7, 0.7, 5.0])  # RAS order
    assert fp["cases"][0]["shape"] == [40, 36, 8]  # CT is non-zero everywhere: nothing cropped
    stats = fp["intensities"][0]
    assert stats["samples"] == 2 * 12 * 8 * 4  # every foreground voxel (fewer than the per-case cap)
    assert -40 < stats["percentile_00_5"] < stats["mean"] < stats["percentile_99_5"] < 120  # body only, no air
    pre = preprocess_dataset(raw, tmp_path / "pre", fingerprint=fp)
    scheme = pre.normalization[0]
    assert scheme["scheme"] == "ct"
    image = pre.image("ct_0")
    low, high = (np.asarray(scheme["clip"]) - scheme["mean"]) / scheme["std"]
    assert image.min() == pytest.approx(low, abs=1e-4) and image.max() == pytest.approx(high, abs=1e-4)
    assert np.asarray(pre.spacing_range) == pytest.approx(np.array([[0.7, 0.7, 5.0]] * 2))


def test_start_time_checks_name_the_key_and_the_datasets_values(tmp_path):
    raw = heterogeneous_dataset(tmp_path / "Task01_Tumour")
    outline = outline_raw(raw)
    assert outline.channels == ["MRI"] and outline.regions == ["edema", "tumour"]
    config = {"preprocess": {"spacing": None, "normalization": ["zscore", "ct"]},
              "models": {"unet3plus": UNET}, "train": {"patch_size": [20, 24, 400]},
              "weightgen": {"enabled": True, "patch_size": [16, 16, 16], "features": [2, 4, 8]},
              "evaluate": {"instance_regions": ["tumour", "lesion"]}, "predict": {"input": str(raw / "imagesTr")}}
    problems = config_problems(config, outline, ["unet3plus"], {})
    assert len(problems) == 4, problems
    assert "train.patch_size: [20, 24, 400] does not fit model unet3plus: every side must be a multiple of 8" \
        in problems[0]
    assert "train.patch_size: [20, 24, 400] is more than twice every training image of Task01_Tumour (z 400 > 2 x" \
        in problems[1]
    assert problems[2] == "preprocess.normalization: 2 scheme(s) ['zscore', 'ct'] for 1 channel(s) of " \
        "Task01_Tumour (MRI)"
    assert problems[3].startswith("evaluate.instance_regions: ['lesion'] not regions of Task01_Tumour")


@pytest.mark.slow
def test_the_workflow_refuses_a_bad_patch_before_any_job_runs(tmp_path):
    wf = workflow_copy(tmp_path / "wf")
    result = snakemake(wf, "-n", "--configfile", "presets/ci.yaml", "--config", "train={patch_size: [12, 16, 16]}")
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "invalid configuration for this dataset" in out
    assert "train.patch_size: [12, 16, 16] does not fit model unet3plus: every side must be a multiple of 8" in out
    assert not (wf / "results").exists()


def test_the_gpu_preset_leaves_patch_and_batch_to_the_plan():
    import yaml

    gpu = yaml.safe_load((REPO / "presets" / "gpu.yaml").read_text())
    assert gpu["train"]["patch_size"] is None and gpu["train"]["batch_size"] is None and gpu["plan"]["memory_mb"]


def test_a_tight_budget_keeps_some_context_along_every_axis():
    """DiffNet (divisor 1) on thick slices: the axis the patch covers most is shrunk first, but never below 8
    voxels where the median image has them (the bench's CT once planned a patch two slices thick)."""
    plans = make_plans(_fingerprint(shape=(500, 500, 20), spacing=(0.7, 0.7, 5.0)), models={"diffnet": DIFFNET},
                       memory_mb=128)
    assert min(plans["models"]["diffnet"]["patch_size"]) >= 8, plans["models"]["diffnet"]
