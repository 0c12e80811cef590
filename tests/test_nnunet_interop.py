"""nnU-Net v2 models in and out: a safe import, nnU-Net's own predictions, export, and scoring label maps.

The parity tests run nnU-Net itself (`nnUNetv2_predict_from_modelfolder`, from the `segzoo[nnunet]` extra):
they skip, saying why, when it is not installed, and fail under CI=true (where .ci/run installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from segzoo.checkpoint import load_checkpoint, module_tensors, save_checkpoint
from segzoo.cli import main
from segzoo.data.phantom import PhantomSpec, write_phantom_dataset
from segzoo.data.preprocess import preprocess_dataset
from segzoo.interop.nnunet_folder import load_nnunet_checkpoint
from segzoo.models.nnunet import build_network
from segzoo.models.registry import build_model

from conftest import run_segzoo
from nnunet_model import architecture, parity_tolerance, train_zoo_network, write_model_folder

NNUNET_PREDICT = Path(sys.executable).parent / "nnUNetv2_predict_from_modelfolder"
REGIONS = {"canal": [1, 2, 3], "sc": [2, 3], "lesion": [3]}
# An imported model's probabilities are held to what float16 accumulation allows, measured in each test against an
# fp32 reference (see _parity); an exported one's masks to a stated fraction (measured: 5 of 65,536 mask voxels),
# since its segzoo side uses MONAI's sliding window rather than nnU-Net's.
EXPORT_MASK_FRACTION = 5e-3


@pytest.fixture
def nnunet():
    if NNUNET_PREDICT.is_file():
        return NNUNET_PREDICT
    if os.environ.get("CI") == "true":
        pytest.fail(f"{NNUNET_PREDICT} missing under CI=true: .ci/run installs the segzoo[nnunet] extra")
    pytest.skip("nnunetv2 is not installed (pip install -e '.[nnunet]'); CI installs it")


def _nnunet_predict(exe: Path, model: Path, images: list[Path], out: Path, tmp: Path, tta: bool = True,
                   folds: tuple[str, ...] = ("0",)) -> Path:
    inputs = tmp / "nnunet_in"
    inputs.mkdir(parents=True, exist_ok=True)
    for image in images:
        shutil.copy(image, inputs / image.name)
    env = {**os.environ, **{k: str(tmp) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
    cmd = [str(exe), "-i", str(inputs), "-o", str(out), "-m", str(model), "-f", *folds, "-device", "cpu",
           "-npp", "1", "-nps", "1", "--save_probabilities", *([] if tta else ["--disable_tta"])]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A phantom (rotated, spacing jittered: nnU-Net resamples) and a region-based nnU-Net model trained on it."""
    root = tmp_path_factory.mktemp("lab")
    raw = write_phantom_dataset(root / "Dataset903_Lab", cases=6, seed=4,
                                spec=PhantomSpec(shape=(24, 24, 10), spacing=(1.0, 1.0, 3.0)))
    model = write_model_folder(raw, root / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    pre = preprocess_dataset(raw, root / "pre")
    test = [c.id for c in pre_cases(raw)][-2:]
    (root / "splits.json").write_text(json.dumps({"train": [], "val": [], "test": test}))
    return root, raw, model, pre


def pre_cases(raw):
    from segzoo.data.dataset import read_dataset

    return [c for c in read_dataset(raw).cases if c.label is not None]


def _segzoo_infer(root: Path, checkpoint: Path, out: Path, *extra) -> None:
    result = run_segzoo("infer", "--checkpoint", checkpoint, "--data", root / "pre", "--splits", root / "splits.json",
                        "--out", out, "--raw", root / "Dataset903_Lab", "--device", "cpu", *extra)
    assert result.returncode == 0, result.stderr


def test_import_keeps_weights_and_what_inference_needs_and_predicts_in_the_original_grid(lab, tmp_path):
    root, raw, model, _ = lab
    result = run_segzoo("nnunet-import", model, "--out", tmp_path / "imported")
    assert result.returncode == 0, result.stderr
    tensors, sidecar = load_checkpoint(tmp_path / "imported" / "model")
    original = load_nnunet_checkpoint(model / "fold_0" / "checkpoint_final.pth")["network_weights"]
    for name, value in tensors.items():
        torch.testing.assert_close(value, original[name.removeprefix("model.")], rtol=0, atol=0)
    assert sidecar["output"] == "sigmoid" and sidecar["regions"] == REGIONS
    assert sidecar["nnunet"]["reader"] == "SimpleITKIO" and sidecar["nnunet"]["mirror_axes"] == [0, 1, 2]
    assert sidecar["nnunet"]["normalization_schemes"] == ["ZScoreNormalization"]
    assert len(sidecar["source"]["sha256"]) == 64 and sidecar["source"]["trainer"] == "nnUNetTrainer"
    _segzoo_infer(root, tmp_path / "imported", tmp_path / "pred")
    case = json.loads((root / "splits.json").read_text())["test"][0]
    image = nib.load(raw / "imagesTr" / f"{case}_0000.nii.gz")
    prob = nib.load(tmp_path / "pred" / f"{case}_prob.nii.gz")
    assert prob.shape == (*image.shape, 3)
    np.testing.assert_allclose(prob.affine, image.affine, atol=1e-6)


def test_a_binary_softmax_model_becomes_one_sigmoid_head(lab, tmp_path):
    root, raw, _, _ = lab
    folder = write_model_folder(raw, tmp_path / "binary", labels={"background": 0, "sc": 1}, members={1: [2, 3]},
                                steps=5)
    result = run_segzoo("nnunet-import", folder, "--out", tmp_path / "imported")
    assert result.returncode == 0, result.stderr
    assert "binary softmax to one sigmoid head" in result.stdout
    softmax_net = build_network(architecture(), 1, 2)
    softmax_net.load_state_dict(load_nnunet_checkpoint(folder / "fold_0" / "checkpoint_final.pth")["network_weights"])
    tensors, sidecar = load_checkpoint(tmp_path / "imported" / "model")
    assert sidecar["regions"] == {"sc": [1]}
    sigmoid_net = build_model("nnunet", 1, 1, **sidecar["model_options"])
    sigmoid_net.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items()}, strict=False)
    x = torch.randn(1, 1, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.softmax(softmax_net.eval()(x), 1)[:, 1:]
        got = torch.sigmoid(sigmoid_net.eval()(x))
    assert (expected - got).abs().max() < 1e-5


def test_a_planted_trainer_class_never_runs(lab, tmp_path):
    _, _, model, _ = lab
    folder = Path(shutil.copytree(model, tmp_path / "sct_model"))
    marker = tmp_path / "ran.txt"
    (folder / "trainer_class.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    result = run_segzoo("nnunet-import", folder, "--out", tmp_path / "imported")
    assert result.returncode == 0, result.stderr
    assert "trainer_class.py: segzoo never runs code" in result.stderr and not marker.exists()
    _, sidecar = load_checkpoint(tmp_path / "imported" / "model")
    assert sidecar["source"]["ignored_code"] == ["trainer_class.py"]


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_naming_a_global_outside_the_allowlist_is_refused(lab, tmp_path):
    _, _, model, _ = lab
    folder = Path(shutil.copytree(model, tmp_path / "evil"))
    path = folder / "fold_0" / "checkpoint_final.pth"
    marker = tmp_path / "owned"
    checkpoint = torch.load(path, weights_only=False)  # the test's own file
    checkpoint["init_args"]["payload"] = _RunsCode(marker)
    torch.save(checkpoint, path)
    result = run_segzoo("nnunet-import", folder, "--out", tmp_path / "imported")
    assert result.returncode == 1 and str(path) in result.stderr and "refused" in result.stderr
    assert "os.system" in result.stderr or "posix.system" in result.stderr
    assert not marker.exists() and not (tmp_path / "imported").exists()


def test_weights_that_do_not_fit_the_plans_and_unknown_classes_are_refused(lab, tmp_path):
    root, raw, _, _ = lab
    batchnorm = architecture()
    batchnorm["arch_kwargs"]["norm_op"] = "torch.nn.modules.batchnorm.BatchNorm3d"
    folder = write_model_folder(raw, tmp_path / "bn", steps=1, arch=batchnorm)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"] = architecture()  # the plans say instance norm
    (folder / "plans.json").write_text(json.dumps(plans))
    result = run_segzoo("nnunet-import", folder, "--out", tmp_path / "a")
    assert result.returncode == 1 and "do not load strictly" in result.stderr and "running_mean" in result.stderr
    assert not (tmp_path / "a").exists()
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "evil.module.Net"
    (folder / "plans.json").write_text(json.dumps(plans))
    result = run_segzoo("nnunet-import", folder, "--out", tmp_path / "b")
    assert result.returncode == 1 and "'evil.module.Net' is not allowed" in result.stderr
    assert str(folder / "plans.json") in result.stderr and not (tmp_path / "b").exists()


def test_label_maps_from_elsewhere_are_scored(lab, tmp_path):
    root, raw, _, _ = lab
    folder = tmp_path / "label_maps"
    folder.mkdir()
    for case in json.loads((root / "splits.json").read_text())["test"]:
        shutil.copy(raw / "labelsTr" / f"{case}.nii.gz", folder / f"{case}.nii.gz")  # a perfect "prediction"
    out = tmp_path / "scores.csv"
    result = run_segzoo("evaluate", "--predictions", folder, "--raw", raw, "--data", root / "pre",
                        "--splits", root / "splits.json", "--model", "sct", "--seed", "0", "--out", out)
    assert result.returncode == 0, result.stderr
    import pandas as pd

    scores = pd.read_csv(out)
    present = scores.dropna(subset=["dice"])
    assert len(present) and (present["dice"] == 1.0).all() and scores["nll"].isna().all()


def _reference(imported: list[Path], images: list[Path], mirror: bool) -> np.ndarray:
    """The imported model's (or folds') probabilities [K, X, Y, Z] with every sum in float32, not float16."""
    from segzoo.inference.trained import load_model
    from segzoo.inference.nnunet import predict_case

    loaded = [load_model(stem, torch.device("cpu")) for stem in imported]
    prob, _ = predict_case([m for m, _ in loaded], loaded[0][1], images, torch.device("cpu"), mirror=mirror,
                           accumulate=torch.float32)
    return prob


def _parity(ours: np.ndarray, theirs: np.ndarray, reference: np.ndarray, ours_masks: dict, label: np.ndarray) -> None:
    """segzoo (``ours``) and nnU-Net (``theirs``) both sum the weighted tile logits in float16; the tolerance is
    what that rounding costs, measured against the fp32 ``reference`` (nnunet_model.parity_tolerance). A mask
    voxel may differ only where a head's reference probability lies within that tolerance of 0.5: a tie that the
    rounding decides."""
    tolerance = parity_tolerance(ours, reference)
    assert (np.abs(theirs - reference) <= tolerance).all(), np.abs(theirs - reference).max()
    assert (np.abs(ours - theirs) <= tolerance).all(), np.abs(ours - theirs).max()
    tie = np.any(np.abs(reference - 0.5) <= tolerance, axis=0)
    for name, values in REGIONS.items():
        differ = ours_masks[name] != np.isin(label, values)
        assert tie[differ].all(), (name, int(differ.sum()), int((differ & ~tie).sum()))


def test_imported_model_predicts_like_nnunet(lab, tmp_path, nnunet):
    root, raw, model, _ = lab
    assert run_segzoo("nnunet-import", model, "--out", tmp_path / "imported").returncode == 0
    test = json.loads((root / "splits.json").read_text())["test"]
    for tta, cases in ((True, test[:1]), (False, test[1:])):  # one case each keeps the suite short
        images = [raw / "imagesTr" / f"{c}_0000.nii.gz" for c in cases]
        nn_out = _nnunet_predict(nnunet, model, images, tmp_path / f"nn_{tta}", tmp_path / f"work_{tta}", tta=tta)
        ours = tmp_path / f"ours_{tta}"
        _segzoo_infer(root, tmp_path / "imported", ours, *([] if tta else ["--no-mirror"]))
        for case, image in zip(cases, images):
            label = np.asarray(nib.load(nn_out / f"{case}.nii.gz").dataobj)
            nn_prob = np.load(nn_out / f"{case}.npz", allow_pickle=False)["probabilities"].transpose(0, 3, 2, 1)
            prob = np.moveaxis(np.asarray(nib.load(ours / f"{case}_prob.nii.gz").dataobj), -1, 0)
            masks = {name: np.asarray(nib.load(ours / f"{case}_{name}.nii.gz").dataobj) > 0 for name in REGIONS}
            _parity(prob, nn_prob, _reference([tmp_path / "imported" / "model"], [image], tta), masks, label)


def test_predict_takes_an_imported_model_from_images_alone_as_infer_raw_does(lab, tmp_path, capsys):
    """No preprocessed folder, splits or raw dataset: images in, nnU-Net's road, the masks `infer --raw` gives;
    mirrored by default as nnU-Net mirrors, not with nnU-Net's --disable_tta; each line says which flips and why.
    Options an import has no use for are refused, and the hints name the command that helps (issue 35)."""
    root, raw, model, _ = lab
    imported = tmp_path / "imported"
    assert main(["nnunet-import", str(model), "--out", str(imported)]) == 0
    test = json.loads((root / "splits.json").read_text())["test"]
    new = tmp_path / "Notes" / "scans"  # the folder above holds a dataset.json that names no channels: not a refusal
    new.mkdir(parents=True)
    (new.parent / "dataset.json").write_text(json.dumps({"name": "my notes", "labels": {"background": 0}}))
    for case in test:
        shutil.copy(raw / "imagesTr" / f"{case}_0000.nii.gz", new / f"{case}_0000.nii.gz")
    stem = imported / "model"
    out = tmp_path / "predict"
    capsys.readouterr()
    assert main(["predict", "-i", str(new), "-o", str(out), "--run", str(imported), "--probabilities",
                 "--device", "cpu", "--disable_tta"]) == 0
    said = capsys.readouterr()
    assert f"{stem}: no test-time mirroring (--no-tta / --disable_tta)" in said.out, said.out
    assert f"{new.parent / 'dataset.json'}: names no channels" in said.err
    _segzoo_infer(root, imported, tmp_path / "infer", "--no-mirror")
    for case in test:
        label = np.asarray(nib.load(out / f"{case}.nii.gz").dataobj)
        for name, values in REGIONS.items():
            mask = np.asarray(nib.load(tmp_path / "infer" / f"{case}_{name}.nii.gz").dataobj) > 0
            np.testing.assert_array_equal(np.isin(label, values), mask)
        np.testing.assert_array_equal(np.asarray(nib.load(out / f"{case}_prob.nii.gz").dataobj),
                                      np.asarray(nib.load(tmp_path / "infer" / f"{case}_prob.nii.gz").dataobj))
    # Without --disable_tta it mirrors (one case keeps this short; against nnU-Net's own default prediction: the
    # fold-ensemble test below).
    one = new.parent / "one"
    one.mkdir()
    shutil.copy(new / f"{test[0]}_0000.nii.gz", one)
    assert main(["predict", "-i", str(one), "-o", str(tmp_path / "mirrored"), "--run", str(imported),
                 "--probabilities", "--device", "cpu"]) == 0
    assert (f"{stem}: test-time mirroring along nnU-Net's axes 0, 1, 2: 8 flips [] [0] [1] [2] [0, 1] [0, 2] [1, 2] "
            "[0, 1, 2] (nnU-Net's default") in capsys.readouterr().out
    mirrored, plain = (np.asarray(nib.load(folder / f"{test[0]}_prob.nii.gz").dataobj)
                       for folder in (tmp_path / "mirrored", out))
    assert np.abs(mirrored - plain).max() > 1e-3  # the flips change the answer: mirroring is seen to be on

    def refused(*args) -> str:
        capsys.readouterr()
        assert main(["predict", "-i", str(new), "-o", str(tmp_path / "x"), "--device", "cpu", *map(str, args)]) == 1
        return capsys.readouterr().err

    assert f"{model}: an nnU-Net model folder; import it first" in refused("--run", model)
    fold = model / "fold_0"
    assert (f"{fold}: fold_0 of the nnU-Net model folder {model}; import that folder first (segzoo nnunet-import "
            f"{model} --fold 0 --out DIR) and pass DIR to --run") in refused("--run", fold)
    assert f"in fold_0 of the nnU-Net model folder {model}" in refused("--run", fold / "checkpoint_final.pth")
    assert f"{tmp_path}: neither a segzoo run folder" in refused("--run", tmp_path)
    assert main(["predict", "-i", str(tmp_path / "typo"), "-o", str(tmp_path / "x"), "--run", str(imported)]) == 1
    assert f"{tmp_path / 'typo'}: no such folder" in capsys.readouterr().err
    # a raw dataset given as --data with an import: the import needs no --data (not "run segzoo preprocess")
    said = refused("--run", imported, "--data", raw)
    assert f"--data {raw}: {stem} is an imported nnU-Net model" in said and "drop --data" in said
    assert "run `segzoo preprocess` first" not in said
    said = refused("--run", imported, "--sw-batch-size", 2, "--any-spacing")
    assert said.count("error: ") == 2, said
    assert f"error: --sw-batch-size 2: {stem} is an imported nnU-Net model" in said
    assert f"error: --any-spacing: {stem} is an imported nnU-Net model" in said
    assert not (tmp_path / "x").exists()


def test_imported_folds_are_ensembled_as_nnunet_ensembles_them(lab, tmp_path, nnunet):
    root, raw, model, _ = lab
    folder = Path(shutil.copytree(model, tmp_path / "two_folds"))
    other = write_model_folder(raw, tmp_path / "seed1", steps=30, seed=1)
    shutil.copytree(other / "fold_0", folder / "fold_1")
    for fold in ("0", "1"):
        result = run_segzoo("nnunet-import", folder, "--fold", fold, "--out", tmp_path / f"fold{fold}")
        assert result.returncode == 0, result.stderr
    case = json.loads((root / "splits.json").read_text())["test"][0]
    image = raw / "imagesTr" / f"{case}_0000.nii.gz"
    new = tmp_path / "new_images"
    new.mkdir()
    shutil.copy(image, new / image.name)
    # a plain predict, as a plain nnUNetv2_predict: mirrored by default, every fold saying so
    result = run_segzoo("predict", "-i", new, "-o", tmp_path / "ours", "--run", tmp_path / "fold0", tmp_path / "fold1",
                        "--probabilities", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    for fold in ("fold0", "fold1"):
        assert (f"{tmp_path / fold / 'model'}: test-time mirroring along nnU-Net's axes 0, 1, 2: 8 flips [] [0] [1] "
                "[2] [0, 1] [0, 2] [1, 2] [0, 1, 2] (nnU-Net's default") in result.stdout, result.stdout
    nn_out = _nnunet_predict(nnunet, folder, [image], tmp_path / "nn", tmp_path / "work", folds=("0", "1"))
    label = np.asarray(nib.load(nn_out / f"{case}.nii.gz").dataobj)
    nn_prob = np.load(nn_out / f"{case}.npz", allow_pickle=False)["probabilities"].transpose(0, 3, 2, 1)
    ours = np.asarray(nib.load(tmp_path / "ours" / f"{case}.nii.gz").dataobj)
    prob = np.moveaxis(np.asarray(nib.load(tmp_path / "ours" / f"{case}_prob.nii.gz").dataobj), -1, 0)
    reference = _reference([tmp_path / "fold0" / "model", tmp_path / "fold1" / "model"], [image], True)
    single = _reference([tmp_path / "fold0" / "model"], [image], True)
    assert np.abs(single - reference).max() > 0.01  # the second fold changes the answer: an ensemble is tested
    _parity(prob, nn_prob, reference, {n: np.isin(ours, v) for n, v in REGIONS.items()}, label)


def test_an_exported_zoo_network_runs_under_nnunet_like_segzoo(tmp_path, nnunet):
    raw = write_phantom_dataset(tmp_path / "Dataset904_Aligned", cases=4, seed=5,
                                spec=PhantomSpec(shape=(32, 32, 16), spacing=(1.0, 1.0, 2.0), spacing_jitter=0.0,
                                                 max_rotation_deg=0.0))
    pre = preprocess_dataset(raw, tmp_path / "pre")
    model = train_zoo_network(pre)
    ids = pre.case_ids(labelled=True)
    save_checkpoint(tmp_path / "net", module_tensors(model),
                    {"model": "plain_conv_unet", "model_options": {"features": [4, 8, 16]}, "channels": pre.channels,
                     "regions": pre.regions, "patch_size": [32, 32, 16]})
    (tmp_path / "splits.json").write_text(json.dumps({"train": [], "val": [], "test": ids}))
    result = run_segzoo("infer", "--checkpoint", tmp_path / "net", "--data", tmp_path / "pre", "--splits",
                        tmp_path / "splits.json", "--out", tmp_path / "ours", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    result = run_segzoo("nnunet-export", tmp_path / "net", "--data", tmp_path / "pre", "--out", tmp_path / "exported")
    assert result.returncode == 0, result.stderr
    fields = torch.load(tmp_path / "exported" / "fold_0" / "checkpoint_final.pth", weights_only=True)  # no allowlist
    assert set(fields) >= {"network_weights", "trainer_name", "init_args", "inference_allowed_mirroring_axes"}
    nn_out = _nnunet_predict(nnunet, tmp_path / "exported", [raw / "imagesTr" / f"{c}_0000.nii.gz" for c in ids],
                             tmp_path / "nn", tmp_path, tta=False)
    foreground = 0
    for case in ids:
        label = np.asarray(nib.load(nn_out / f"{case}.nii.gz").dataobj)
        for name, values in pre.regions.items():
            mask = np.asarray(nib.load(tmp_path / "ours" / f"{case}_{name}.nii.gz").dataobj) > 0
            foreground += int(mask.sum())
            assert (mask != np.isin(label, values)).mean() <= EXPORT_MASK_FRACTION, (case, name)
    assert foreground > 0


@pytest.mark.slow
def test_a_gpt_sample_exports_as_an_nnunet_folder_holding_its_weights(ci_run, tmp_path):
    from conftest import PHANTOM
    from segzoo.models.flat import flatten

    wf, _ = ci_run
    samples = wf / "results" / "weightgen" / PHANTOM / "samples"
    result = run_segzoo("nnunet-export", samples, "--data", wf / "results" / "preprocessed" / PHANTOM,
                        "--network", "1", "--patch-size", "16", "16", "16", "--out", tmp_path / "sample1")
    assert result.returncode == 0, result.stderr
    fields = torch.load(tmp_path / "sample1" / "fold_0" / "checkpoint_final.pth", weights_only=True)
    plans = json.loads((tmp_path / "sample1" / "plans.json").read_text())
    dataset = json.loads((tmp_path / "sample1" / "dataset.json").read_text())
    assert dataset["regions_class_order"] == [1, 2, 3] and dataset["labels"]["sc"] == [2, 3]
    network = build_network(plans["configurations"]["3d_fullres"]["architecture"], 1, 3)
    network.load_state_dict(fields["network_weights"], strict=True)
    params, _ = load_checkpoint(samples)
    assert torch.equal(flatten(network), params["params"][1].float())
    result = run_segzoo("nnunet-export", samples, "--data", wf / "results" / "preprocessed" / PHANTOM,
                        "--out", tmp_path / "no_patch")
    assert result.returncode == 1 and "pass --patch-size" in result.stderr and not (tmp_path / "no_patch").exists()
