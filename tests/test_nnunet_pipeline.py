"""nnU-Net in the workflow: its networks trained as rows of the comparison, imported models and external label maps
as rows, and an imported network as a start for the checkpoint zoo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from segzoo.models.nnunet import plain_conv_unet_architecture, planned_architecture

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
    starts = f"results/zoo/{PHANTOM}/starts"  # one job writes every start
    start = f"{starts}/parent0.json"
    result = snakemake(workflow, starts, "--cores", "2", "--configfile", "presets/ci.yaml", accepted)
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


def _jobs(dry_run: str) -> set[str]:
    """The rules a dry run would run (its job-stats table)."""
    rows = [line.split()[0] for line in dry_run.split("Job stats:", 1)[1].splitlines()[3:] if line.split()]
    return set(rows[:rows.index("total")])


def test_nnunet_trains_as_a_row_beside_an_external_run_against_a_chosen_baseline(workflow):
    """nnU-Net's PlainConvUNet trained by the ci preset's loop on its terms; label maps made outside segzoo (here the
    reference labels, one case's erased: its Dice is 0, the others' 1) as a row whose caption says its protocol
    differs; then switching the baseline reruns the comparison and what shows it, and nothing else."""
    import nibabel as nib
    import numpy as np

    raw = workflow / "results" / "raw" / PHANTOM
    test_cases = json.loads((workflow / "results" / "splits" / PHANTOM / "splits.json").read_text())["test"]
    external = workflow / "nnunet_own"
    external.mkdir()
    for i, case in enumerate(test_cases):
        label = nib.load(raw / "labelsTs" / f"{case}.nii.gz")
        data = np.asarray(label.dataobj) * (i > 0)  # the first test case: an empty label map
        nib.save(nib.Nifti1Image(data.astype(np.uint8), label.affine), external / f"{case}.nii.gz")
    protocol = "nnU-Net 2.8.1 3d_fullres, its own trainer"
    compare = {"external": {"nnunet_own": {"predictions": str(external), "protocol": protocol}}}
    extra = _config(workflow, "nnunet_rows.yaml", {"train": {"models": ["unet3plus", "nnunet"]}, "compare": compare,
                                                   "weightgen": {"enabled": False}})
    result = snakemake(workflow, "--cores", "2", "--resources", "gpu=2", "--configfile", "presets/ci.yaml", extra)
    assert result.returncode == 0, result.stderr[-3000:]

    plans = json.loads((workflow / "results" / "plans" / PHANTOM / "plans.json").read_text())
    planned = plans["models"]["nnunet"]
    trained = json.loads((workflow / "results" / "train" / PHANTOM / "nnunet" / "seed0" / "best.json").read_text())
    assert trained["model_options"] == planned["model_options"]  # the architecture the plan made for the patch
    assert planned["model_options"]["architecture"] == planned_architecture(
        "nnunet", planned["patch_size"], plans["target_spacing"], base_features=4, max_features=16)
    tables = workflow / "results" / "tables" / PHANTOM
    dice = pd.read_csv(tables / "comparison.csv").query("metric == 'dice'").set_index(["model", "region"])
    assert set(dice.index.get_level_values("model")) == {"unet3plus", "nnunet", "nnunet_own"}
    assert set(dice["baseline"]) == {"unet3plus"}
    scores = pd.read_csv(tables / "per_case.csv").query("model == 'nnunet_own' and region == 'sc'")
    assert scores.set_index("case")["dice"].to_dict() == {c: 0.0 if i == 0 else 1.0 for i, c in enumerate(test_cases)}
    assert dice.loc[("nnunet_own", "sc"), "mean"] == pytest.approx(2 / 3) and dice.loc[("nnunet", "sc"), "pairs"] == 3
    caption = (tables / "dice.md").read_text()
    assert f"not trained on these terms: nnunet_own ({protocol}): its protocol differs" in caption
    assert "every model trained on patch 16×16×16" in caption
    paper = (workflow / "results" / PHANTOM / "paper" / "main.tex").read_text()  # its tables are in the text
    assert "nnunet\\_own" in paper and "its protocol differs" in paper
    assert (workflow / "results" / "figures" / PHANTOM / "architecture_nnunet.png").is_file()
    page = (workflow / "results" / PHANTOM / "index.html").read_text()
    assert "differs from the baseline, <b>U-Net 3+</b>" in page  # by its display name

    switched = _config(workflow, "nnunet_baseline.yaml", {**yaml.safe_load((workflow / extra).read_text()),
                                                          "compare": {**compare, "baseline": "nnunet"}})
    result = snakemake(workflow, "-n", "--configfile", "presets/ci.yaml", switched)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _jobs(result.stdout) == {"compare", "figures", "page", "paper", "site_index", "all"}
    wrong = _config(workflow, "wrong_baseline.yaml", {"compare": {"baseline": "ms_unet3plus"},
                                                      "train": {"models": ["unet3plus", "nnunet"]}})
    result = snakemake(workflow, "-n", "--configfile", "presets/ci.yaml", wrong)
    assert result.returncode != 0
    assert "compare.baseline: 'ms_unet3plus' is not a row of the comparison (rows: unet3plus, nnunet)" in \
        result.stdout + result.stderr
