"""`segzoo predict --tta` mirrors a model only along the axes it was trained to be mirror-invariant on, and a model
is refused images whose dataset.json names other channels (issue 26).

The data is not mirror-symmetric (tests/own_datasets.asymmetric_dataset): the one region lies in front of a bright
plate (+Y), never behind it. A U-Net 3+ trained with flips along X only learns that; averaging in flips along Y
or Z (what `--tta` did before: all 7 flips) puts the region behind the plate as well.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from segzoo.cli import main
from segzoo.config import load_config
from segzoo.data.preprocess import preprocess_dataset, to_original_grid
from segzoo.data.splits import splits_for_preprocessed
from segzoo.inference.trained import load_model
from segzoo.inference.window import predict_probabilities
from segzoo.io import write_json
from segzoo.train.loop import Run, train

from conftest import REPO, run_segzoo
from own_datasets import asymmetric_dataset

CI = load_config(REPO / "config.yaml", REPO / "presets" / "ci.yaml",
                 schema_path=REPO / "schemas" / "config.schema.yaml")
SETTINGS = {k: v for k, v in CI["train"].items() if k not in ("models", "seeds", "threads")}
STEPS = 100  # enough for a Dice near 0.99 on this data (13 s on 2 cores)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The asymmetric dataset, preprocessed and split; a U-Net 3+ trained on it with flips along X (axis 0)."""
    root = tmp_path_factory.mktemp("asym")
    raw = asymmetric_dataset(root / "Dataset905_Asymmetric")
    pre = preprocess_dataset(raw, root / "pre")
    write_json(root / "splits.json", splits_for_preprocessed(pre, 0, 0.2, 0.2))
    settings = {**SETTINGS, "steps": STEPS, "val_every": STEPS, "patch_size": [32, 32, 16], "batch_size": 2,
                "lr": 1e-2, "augment": {**SETTINGS["augment"], "flip_axes": [0]}}
    train(Run(preprocessed=pre, splits=root / "splits.json", model="unet3plus", model_options=CI["models"]["unet3plus"],
              seed=0, out=root / "run", settings=settings, progress=False))
    return root, raw, pre


def _predict(raw: Path, run: Path, out: Path, *extra) -> str:
    result = run_segzoo("predict", "-i", raw / "imagesTs", "-o", out, "--run", run, "--device", "cpu", *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def _dice(raw: Path, out: Path) -> float:
    scores = []
    for label_file in sorted((raw / "labelsTs").iterdir()):
        truth = np.asarray(nib.load(label_file).dataobj) == 1
        mask = np.asarray(nib.load(out / label_file.name).dataobj) == 1
        scores.append(2 * (truth & mask).sum() / (truth.sum() + mask.sum()))
    return float(np.mean(scores))


def _all_flips_dice(pre, run: Path, cases: list[str]) -> float:
    """Mean Dice on the preprocessed test cases when the prediction averages all 8 flips (3 axes), as --tta did."""
    model, trained = load_model(run / "best", CPU)
    scores = []
    for case in cases:
        image, truth = pre.image(case), pre.label(case)[0] == 1
        prob = np.zeros(image.shape[1:], dtype=np.float32)
        for bits in range(8):
            axes = tuple(a + 1 for a in range(3) if bits >> a & 1)
            flipped = np.flip(image, axes) if axes else image
            p = predict_probabilities(model, flipped, trained.patch_size, CPU)
            prob += (np.flip(p, axes) if axes else p)[0] / 8
        mask = prob > 0.5
        scores.append(2 * (truth & mask).sum() / (truth.sum() + mask.sum()))
    return float(np.mean(scores))


def test_tta_flips_only_the_trained_axis_and_costs_no_dice(lab, tmp_path):
    root, raw, pre = lab
    run = root / "run"
    assert json.loads((run / "best.json").read_text())["mirror_axes"] == [0]
    assert json.loads((run / "final.json").read_text())["mirror_axes"] == [0]
    plain = _predict(raw, run, tmp_path / "plain")  # segzoo runs' default (issue 35): no mirroring, said
    assert (f"{run / 'best'}: no test-time mirroring (segzoo runs' default; --tta averages the 2 flips it was trained "
            "with)") in plain
    said = _predict(raw, run, tmp_path / "tta", "--tta", "--probabilities")
    assert "test-time mirroring along axes 0 (X): 2 flips [] [0]" in said
    without, with_tta = _dice(raw, tmp_path / "plain"), _dice(raw, tmp_path / "tta")
    assert without > 0.9, without  # the model learned the front of the plate
    assert with_tta >= without - 0.01, (with_tta, without)
    # The data is what the test needs: all eight flips (the old --tta) cost far more than 0.01.
    test = json.loads((root / "splits.json").read_text())["test"]
    assert sorted(f"{c}.nii.gz" for c in test) == sorted(p.name for p in (raw / "labelsTs").iterdir())
    assert _all_flips_dice(pre, run, test) < without - 0.3
    # Exactly the flips () and (X,): the probabilities are the mean of the two, computed here by hand.
    model, trained = load_model(run / "best", CPU)
    case = test[0]
    image = pre.image(case)
    expected = (predict_probabilities(model, image, trained.patch_size, CPU) +
                np.flip(predict_probabilities(model, np.flip(image, 1), trained.patch_size, CPU), 1)) / 2
    expected = np.clip(to_original_grid(expected, pre.properties(case), mode="bilinear"), 0, 1)
    got = np.moveaxis(np.asarray(nib.load(tmp_path / "tta" / f"{case}_prob.nii.gz").dataobj), -1, 0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_run_trained_without_flips_gets_no_mirroring_and_old_runs_assume_the_default(lab, tmp_path):
    root, raw, pre = lab
    settings = {**SETTINGS, "steps": 4, "val_every": 4, "patch_size": [32, 32, 16], "batch_size": 2,
                "augment": {**SETTINGS["augment"], "flip_axes": []}}
    train(Run(preprocessed=pre, splits=root / "splits.json", model="unet3plus", model_options=CI["models"]["unet3plus"],
              seed=0, out=tmp_path / "unflipped", settings=settings, progress=False))
    assert json.loads((tmp_path / "unflipped" / "best.json").read_text())["mirror_axes"] == []
    said = _predict(raw, tmp_path / "unflipped", tmp_path / "tta", "--tta", "--probabilities")
    assert "trained without flips: no test-time mirroring" in said
    _predict(raw, tmp_path / "unflipped", tmp_path / "plain", "--probabilities")
    for name in sorted(p.name for p in (tmp_path / "plain").iterdir()):
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "tta" / name).read_bytes(), name
    # A run written before runs recorded their axes: the default train.augment.flip_axes, said out loud.
    old = Path(shutil.copytree(root / "run", tmp_path / "old_run"))
    sidecar = json.loads((old / "best.json").read_text())
    del sidecar["mirror_axes"]
    (old / "best.json").write_text(json.dumps(sidecar))
    said = _predict(raw, old, tmp_path / "old", "--tta")
    assert "records no mirror axes" in said and "2 flips [] [0]" in said


def test_images_whose_dataset_json_names_other_channels_are_refused(lab, tmp_path, capsys):
    root, raw, _ = lab
    images = Path(shutil.copytree(raw / "imagesTs", tmp_path / "Dataset906_Other" / "imagesTs"))
    dataset = json.loads((raw / "dataset.json").read_text())
    (images.parent / "dataset.json").write_text(json.dumps({**dataset, "channel_names": {"0": "CT"}}))
    result = run_segzoo("predict", "-i", images, "-o", tmp_path / "out", "--run", root / "run", "--device", "cpu")
    assert result.returncode == 1 and not (tmp_path / "out").exists()
    assert f"{images.parent / 'dataset.json'}: names the channels ['CT']" in result.stderr
    assert "was trained on ['MR']" in result.stderr
    # a dataset.json that names no channels says nothing of them: passed over, with a notice (issue 35) ...
    (images / "dataset.json").write_text(json.dumps({"name": "unrelated"}))
    capsys.readouterr()
    assert main(["predict", "-i", str(images), "-o", str(tmp_path / "out"), "--run", str(root / "run"),
                 "--device", "cpu"]) == 1
    said = capsys.readouterr().err
    assert f"{images / 'dataset.json'}: names no channels" in said and "names the channels ['CT']" in said
    (images.parent / "dataset.json").write_text(json.dumps({"name": "unrelated too", "labels": {"background": 0}}))
    assert main(["predict", "-i", str(images), "-o", str(tmp_path / "none"), "--run", str(root / "run"),
                 "--device", "cpu"]) == 0  # ... so none that names channels: nothing to refuse
    assert f"{images.parent / 'dataset.json'}: names no channels" in capsys.readouterr().err
    # the same names beside the images are accepted
    (images / "dataset.json").write_text(json.dumps(dataset))
    assert run_segzoo("predict", "-i", images, "-o", tmp_path / "ok", "--run", root / "run",
                      "--device", "cpu").returncode == 0


def test_data_is_refused_where_a_run_records_its_preprocessing_and_a_raw_dataset_is_named(lab, tmp_path, capsys):
    """--data serves runs that record no preprocessing; given a raw dataset there, the hint says what it needs."""
    root, raw, pre = lab
    run = root / "run"

    def refused(run_folder: Path, data: Path) -> str:
        capsys.readouterr()
        assert main(["predict", "-i", str(raw / "imagesTs"), "-o", str(tmp_path / "x"), "--run", str(run_folder),
                     "--data", str(data), "--device", "cpu"]) == 1
        return capsys.readouterr().err

    assert f"--data {pre.folder}: {run / 'best'} records its own preprocessing" in refused(run, pre.folder)
    old = Path(shutil.copytree(run, tmp_path / "old_run"))
    sidecar = json.loads((old / "best.json").read_text())
    del sidecar["preprocessing"]
    (old / "best.json").write_text(json.dumps(sidecar))
    said = refused(old, raw)
    assert f"--data {raw}: a raw dataset (dataset.json, no preprocess.json)" in said and "segzoo preprocess" in said
    assert main(["predict", "-i", str(raw / "imagesTs"), "-o", str(tmp_path / "ok"), "--run", str(old), "--data",
                 str(pre.folder), "--device", "cpu", "--no-tta"]) == 0
    assert f"{old / 'best'}: no test-time mirroring (--no-tta / --disable_tta)" in capsys.readouterr().out
    assert not (tmp_path / "x").exists()
