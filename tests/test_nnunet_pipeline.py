"""Imported nnU-Net models in the workflow: a row of the comparison, and a start for the checkpoint zoo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from segzoo.models.nnunet import plain_conv_unet_architecture

from conftest import PHANTOM, run_segzoo, snakemake
from nnunet_model import write_model_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workflow(ci_run, tmp_path_factory):
    """A copy of the ci preset's finished run (other tests expect that folder as is), and two nnU-Net models
    trained on its phantom and imported: a lab's (its own widths) and one with exactly the ci zoo network's
    architecture."""
    wf = Path(shutil.copytree(ci_run[0], tmp_path_factory.mktemp("nnunet") / "wf", symlinks=True))
    raw = wf / "results" / "raw" / PHANTOM
    zoo = yaml.safe_load((wf / "presets" / "ci.yaml").read_text())["weightgen"]["features"]
    for name, arch in (("lab", None), ("zoo_like", plain_conv_unet_architecture(zoo))):
        folder = write_model_folder(raw, wf / "nnUNet_results" / name, arch=arch)
        result = run_segzoo("nnunet-import", folder, "--out", wf / "imported" / name)
        assert result.returncode == 0, result.stderr
    return wf


def _config(wf, name: str, content: dict) -> str:
    (wf / name).write_text(yaml.safe_dump(content))
    return name


def test_an_imported_model_is_a_row_of_the_comparison(workflow):
    extra = _config(workflow, "rows.yaml", {"train": {"models": ["unet3plus", "nnunet:imported/lab"]},
                                            "weightgen": {"enabled": False}})
    result = snakemake(workflow, "--cores", "2", "--resources", "gpu=2", "--configfile", "presets/ci.yaml", extra)
    assert result.returncode == 0, result.stderr[-3000:]
    tables = workflow / "results" / "tables" / PHANTOM
    comparison = pd.read_csv(tables / "comparison.csv")
    row = comparison[(comparison["model"] == "nnunet_lab") & (comparison["metric"] == "dice")]
    assert list(row["region"]) == ["canal", "sc", "lesion"] and row["n"].sum() > 0
    assert "nnunet_lab" in (tables / "dice.md").read_text()
    assert not (workflow / "results" / "train" / PHANTOM / "nnunet_lab").exists()  # predicted, never trained
    log = (workflow / "results" / "logs" / "infer" / PHANTOM / "nnunet_lab" / "seed0.log").read_text()
    assert "predicted" in log


def test_an_imported_network_starts_the_zoo_only_when_it_is_the_zoo_network(workflow):
    refused = _config(workflow, "lab_init.yaml", {"weightgen": {"init": "imported:imported/lab"}})
    result = snakemake(workflow, "-n", "--configfile", "presets/ci.yaml", refused)
    message = result.stdout + result.stderr  # Snakemake prints a workflow error on stdout
    assert result.returncode != 0
    assert "weightgen.init imported:imported/lab: its network (PlainConvUNet, features [4, 8, 16]" in message
    assert "tens of thousands of parameters" in message and "train.models: nnunet:imported/lab" in message

    accepted = _config(workflow, "zoo_init.yaml", {"weightgen": {"init": "imported:imported/zoo_like"}})
    start = f"results/zoo/{PHANTOM}/starts/parent0.json"
    result = snakemake(workflow, start, "--cores", "2", "--configfile", "presets/ci.yaml", accepted)
    assert result.returncode == 0, result.stderr[-3000:]
    sidecar = json.loads((workflow / start).read_text())
    assert sidecar["init"] == "imported:imported/zoo_like"
    assert sidecar["steps"] == 0  # the imported weights, as they are
    from segzoo.checkpoint import load_checkpoint

    params, _ = load_checkpoint(workflow / start.removesuffix(".json"))
    imported, _ = load_checkpoint(workflow / "imported" / "zoo_like")
    assert params["params"].shape[1] == sum(t.numel() for t in imported.values())


def test_an_imported_model_trained_on_other_channels_is_refused_before_any_job(workflow):
    relabelled = Path(shutil.copytree(workflow / "imported" / "lab", workflow / "imported" / "lab_t1"))
    sidecar = json.loads((relabelled / "model.json").read_text())
    (relabelled / "model.json").write_text(json.dumps({**sidecar, "channels": ["T1"]}))  # the tensors are unchanged
    extra = _config(workflow, "t1.yaml", {"train": {"models": ["unet3plus", "nnunet:imported/lab_t1"]},
                                          "weightgen": {"enabled": False}})
    result = snakemake(workflow, "-n", "--configfile", "presets/ci.yaml", extra)
    message = result.stdout + result.stderr
    assert result.returncode != 0
    assert "names the channels ['T2']" in message and "train.models: nnunet_lab_t1" in message
    assert "was trained on ['T1']" in message
