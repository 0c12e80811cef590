"""The README's "Your own data" command on datasets that are not the phantom (issue 15): the default config, on
the ci preset's sizes, runs end to end through Snakemake (zoo included, on the dataset's own regions), plans
from the data's fingerprint and writes the dataset's own page beside any other dataset's."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from conftest import PHANTOM, digest, snakemake, workflow_copy
from own_datasets import heterogeneous_dataset, two_channel_dataset

pytestmark = pytest.mark.slow
MODELS = ["unet3plus", "ms_unet3plus", "diffnet", "ms_diffnet"]


def _own_data(wf: Path, raw: Path, *config: str):
    return snakemake(wf, "--cores", "2", "--configfile", "presets/ci.yaml", "--config", f"dataset={{raw: '{raw}'}}",
                     "train={patch_size: null, batch_size: null}", *config)  # as in config.yaml: planned


def _zoo_tasks(wf: Path, name: str) -> list[str]:
    """The tasks of the first parent's zoo runs (runs/job<g>/parent0_<task>_lr<lr>_seed<s>.safetensors)."""
    return sorted({p.name[len("parent0_"):].rsplit("_lr", 1)[0] for p in (wf / "results" / "zoo" / name / "runs").glob(
        "job*/parent0_*_seed*.safetensors")})


def _compared_models(wf: Path, name: str) -> set[str]:
    with open(wf / "results" / "tables" / name / "comparison.csv") as f:
        return {row["model"] for row in csv.DictReader(f)}


def test_two_channel_dataset_with_its_own_test_set(ci_run, tmp_path):
    """Two MR channels, classes instead of regions, imagesTs/labelsTs; run in the ci run's folder (a copy), so
    the phantom's page must survive it."""
    wf = Path(shutil.copytree(ci_run[0], tmp_path / "wf", symlinks=True))  # other tests expect ci_run's folder as is
    first = wf / "results" / PHANTOM / "index.html"
    before = hashlib.sha256(first.read_bytes()).hexdigest()
    raw = two_channel_dataset(tmp_path / "Dataset902_TwoChannel")
    result = _own_data(wf, raw, "weightgen={enabled: false}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    # the zoo on a user's two-channel data, sized from its plan (the generators on it are the phantom's code paths)
    zoo = snakemake(wf, f"results/zoo/{raw.name}/index.csv", "--cores", "2", "--configfile", "presets/ci.yaml",
                    "--config", f"dataset={{raw: '{raw}'}}", "train={patch_size: null, batch_size: null}")
    assert zoo.returncode == 0, (zoo.stdout + zoo.stderr)[-3000:]
    name = raw.name
    splits = json.loads((wf / "results" / "splits" / name / "splits.json").read_text())
    assert splits["test_source"] == "imagesTs" and splits["test"] == ["hippo_006", "hippo_007"]
    plans = json.loads((wf / "results" / "plans" / name / "plans.json").read_text())
    assert [n["channel"] for n in plans["normalization"]] == ["T1", "T2"]
    assert {m: e["patch_source"] for m, e in plans["models"].items()} == {m: "plan (equal)" for m in MODELS}
    trained = json.loads((wf / "results" / "train" / name / "unet3plus" / "seed0" / "best.json").read_text())
    assert trained["patch_size"] == plans["models"]["unet3plus"]["patch_size"] and trained["channels"] == ["T1", "T2"]
    assert _compared_models(wf, name) == set(MODELS)
    assert _zoo_tasks(wf, name) == ["all", "anterior", "posterior"]
    page = (wf / "results" / name / "index.html").read_text()
    assert f"segzoo results: {name}" in page and "<h2 id='plan'>Plan</h2>" in page
    assert hashlib.sha256(first.read_bytes()).hexdigest() == before
    index = (wf / "results" / "index.html").read_text()
    assert f"href='{PHANTOM}/index.html'" in index and f"href='{name}/index.html'" in index


def test_heterogeneous_anisotropic_decathlon_dataset(tmp_path):
    """Five unlike cases (6.5 mm brain slices, thin breast slices, LPS and RAS, another intensity scale) in the
    Decathlon layout, under a path with a space: planned with nnU-Net's anisotropy rule, read and never written.
    The zoo and its generators on a user's dataset are the two-channel test's; here only their runs (the zoo sized
    from this plan), to keep the suite's time."""
    raw = heterogeneous_dataset(tmp_path / "my data" / "Task01_Tumour")
    before = digest(raw)
    wf = workflow_copy(tmp_path / "wf")
    result = _own_data(wf, raw, "weightgen={enabled: false}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    zoo = snakemake(wf, f"results/zoo/{raw.name}/index.csv", "--cores", "2", "--configfile", "presets/ci.yaml",
                    "--config", f"dataset={{raw: '{raw}'}}", "train={patch_size: null, batch_size: null}")
    assert zoo.returncode == 0, (zoo.stdout + zoo.stderr)[-3000:]
    name = raw.name
    plans = json.loads((wf / "results" / "plans" / name / "plans.json").read_text())
    assert "anisotropic" in plans["spacing_source"] and plans["target_spacing"][2] < 5.0
    assert _compared_models(wf, name) == set(MODELS)
    assert _zoo_tasks(wf, name) == ["all", "edema", "tumour"]
    splits = json.loads((wf / "results" / "splits" / name / "splits.json").read_text())
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == [f"tumour_{i}" for i in range(5)]
    for case in splits["test"]:  # predictions come back on each case's own grid
        image = nib.load(raw / "imagesTr" / f"{case}.nii.gz")
        mask = nib.load(wf / "results" / "infer" / name / "diffnet" / "seed0" / f"{case}_tumour.nii.gz")
        assert mask.shape == image.shape and np.allclose(mask.affine, image.affine, atol=1e-4)
    assert (wf / "results" / name / "index.html").is_file()
    assert not (wf / "results" / "raw").exists()
    assert digest(raw) == before  # the user's data is read, never written


def test_three_fold_cross_validation_predicts_every_training_case_once(ci_run, tmp_path):
    """splits.folds 3 on the ci run (a copy; one model, no zoo, to stay cheap): three fold runs, every non-test
    case predicted out of fold exactly once and compared with n = every non-test case; the test set is predicted
    by the folds' ensemble."""
    wf = Path(shutil.copytree(ci_run[0], tmp_path / "wf", symlinks=True))  # other tests expect ci_run's folder as is
    oof = f"results/tables_oof/{PHANTOM}"
    test = f"results/infer/{PHANTOM}/unet3plus/seed0"
    result = snakemake(wf, oof, test, "--cores", "2", "--configfile", "presets/ci.yaml", "--config",
                       "splits={folds: 3}", "train={models: [unet3plus]}", "weightgen={enabled: false}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    splits = json.loads((wf / "results" / "splits" / PHANTOM / "splits.json").read_text())
    pool = sorted(set(splits["folds"][0]["train"] + splits["folds"][0]["val"]))
    phantom = yaml.safe_load((wf / "presets" / "ci.yaml").read_text())["phantom"]
    assert len(splits["folds"]) == 3 and (len(pool), len(splits["test"])) == (phantom["cases"], phantom["test_cases"])
    predicted = sorted(p.name.removesuffix("_prob.nii.gz")
                       for p in (wf / "results" / "infer_oof" / PHANTOM / "unet3plus" / "seed0").glob("*_prob.nii.gz"))
    assert predicted == pool
    for fold in range(3):
        sidecar = json.loads((wf / "results" / "train" / PHANTOM / "unet3plus" / "seed0" / f"fold{fold}" /
                              "final.json").read_text())
        assert sidecar["fold"] == fold
    with open(wf / oof / "comparison.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == "dice" and r["region"] == "canal"]
    assert [int(r["n"]) for r in rows] == [len(pool)]
    log = (wf / "results" / "logs" / "infer" / PHANTOM / "unet3plus" / "seed0.log").read_text()
    assert f"predicted {len(splits['test'])} test case(s)" in log
