"""`segzoo export CHECKPOINT --onnx OUT`: each model as ONNX, run by ONNX Runtime, against PyTorch.

The exports run the real CLI, all at once (each is mostly torch.export's single-threaded symbolic tracing).
ONNX Runtime then runs every file at a batch and spatial size other than the export example's (the axes are
dynamic) and the logits must match PyTorch's within the command's stated tolerance. The tests need the
segzoo[onnx] extra: they skip, saying why, when it is not installed, and fail under CI=true (where .ci/run
installs it).
"""

from __future__ import annotations

import importlib.util
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from segzoo import __version__
from segzoo.checkpoint import module_tensors, save_checkpoint
from segzoo.data.phantom import PhantomSpec, make_case
from segzoo.models.registry import build_model

from conftest import run_segzoo

# Smaller than presets/ci.yaml's sizes (U-Net 3+ levels 4, MS DiffNet 3 scales), which export about 40 % slower:
# torch.export's symbolic-shape tracing, not the weights, takes the time. Every op kind is still there.
MODELS = {"unet3plus": {"base": 2, "levels": 3}, "ms_unet3plus": {"base": 2, "levels": 3},
          "diffnet": {"channels": 2, "layers": 1, "hidden": 2},
          "ms_diffnet": {"channels": 2, "layers": 1, "hidden": 2, "scales": 2}}
CHANNELS = ["T2w", "T1w"]
REGIONS = {"canal": [1, 2, 3], "sc": [2, 3], "lesion": [3]}
PATCH = [32, 32, 16]


@pytest.fixture(scope="module", autouse=True)
def onnx_packages():
    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{', '.join(missing)} missing under CI=true: .ci/run installs the segzoo[onnx] extra")
    pytest.skip(f"{', '.join(missing)} not installed (pip install -c constraints.txt -e '.[onnx]'); CI installs them")


def _checkpoint(folder: Path, name: str) -> tuple[Path, torch.nn.Module]:
    """A checkpoint as training writes one (weights under ``model.``, the sidecar's keys), with weights moved
    off their initial values (instance norm's affine ones and zeros too) so every parameter counts."""
    options = MODELS[name]
    torch.manual_seed(list(MODELS).index(name))
    model = build_model(name, len(CHANNELS), len(REGIONS), **options)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    stem = folder / name / "best"
    save_checkpoint(stem, module_tensors(model), {
        "model": name, "model_options": options, "seed": 0, "config_hash": "test", "regions": REGIONS,
        "channels": CHANNELS, "patch_size": PATCH, "step": 2,
        "preprocessing": {"target_spacing": [1.0, 1.0, 3.0], "label_values": [0, 1, 2, 3],
                          "normalization": [{"scheme": "zscore"}] * len(CHANNELS), "spacing_range": None}})
    return stem, model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every model's checkpoint and what `segzoo export` made of it, the exports run concurrently. The
    unet3plus one goes over an existing file with --force."""
    folder = tmp_path_factory.mktemp("onnx")
    checkpoints = {name: _checkpoint(folder, name) for name in MODELS}
    (folder / "unet3plus.onnx").write_text("an older export")
    commands = {name: ["export", f"{stem}.safetensors" if name == "diffnet" else stem, "--onnx",
                       folder / f"{name}.onnx", *(["--force"] if name == "unet3plus" else [])]
                for name, (stem, _) in checkpoints.items()}
    with ThreadPoolExecutor(len(commands)) as pool:
        results = dict(zip(commands, pool.map(lambda args: run_segzoo(*args), commands.values())))
    return {name: (checkpoints[name][1], folder / f"{name}.onnx", results[name]) for name in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_export_runs_in_onnx_runtime_like_pytorch(exported, name):
    import onnx
    import onnxruntime as ort

    from segzoo.interop.onnx_export import OPSET, tolerance

    model, path, result = exported[name]
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "max abs difference" in result.stdout, result.stdout
    assert not [p.name for p in path.parent.iterdir() if ".partial-" in p.name]

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["regions"]) == REGIONS and json.loads(meta["channels"]) == CHANNELS
    assert json.loads(meta["patch_size"]) == PATCH and meta["segzoo_version"] == __version__
    assert json.loads(meta["spacing_mm"]) == [1.0, 1.0, 3.0] and meta["model"] == name
    assert int(meta["divisor"]) == model.divisor and f"multiples of {model.divisor}" in proto.doc_string
    assert [i.name for i in proto.graph.input] == ["image"] and [o.name for o in proto.graph.output] == ["logits"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", len(CHANNELS), "X", "Y", "Z"]

    # Phantom patches at another batch and spatial size than the export example (2, C, k·d, k·d, k·d) and the
    # CLI's own check (noise, 64×64×32).
    d = model.divisor
    shape = [d * k for k in (3, 2, 5)] if d >= 4 else [12, 8, 20]
    image = torch.from_numpy(np.stack([_phantom(shape, seed) for seed in range(3)]))
    with torch.no_grad():
        expected = model(image).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"image": image.numpy()})
    assert got.shape == (3, len(REGIONS), *shape)
    diff = float(np.abs(got - expected).max())
    assert diff <= tolerance(float(np.abs(expected).max())), diff
    print(f"{name}: max abs difference {diff:.3g} at {list(image.shape)}")


def _phantom(shape: list[int], seed: int) -> np.ndarray:
    """A z-scored phantom image [C, *shape]: the image and its mirror image as the two channels."""
    image = make_case(np.random.default_rng(seed), PhantomSpec(shape=tuple(shape)))[0].astype(np.float32)
    image = (image - image.mean()) / image.std()
    return np.stack([image, image[::-1].copy()])


def test_refusals_are_one_clear_line_and_leave_nothing(tmp_path):
    stem, _ = _checkpoint(tmp_path, "diffnet")
    existing = tmp_path / "existing.onnx"
    existing.write_text("keep me")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint")
    vectors = tmp_path / "zoo_run"
    save_checkpoint(vectors, {"params": torch.zeros(1, 8)}, {"regions": list(REGIONS)})
    cases = {  # args -> what the one error line says
        (stem, existing): "already exists",
        (notes, tmp_path / "a.onnx"): "not a segzoo checkpoint",
        (tmp_path / "nowhere", tmp_path / "b.onnx"): "missing",
        (vectors, tmp_path / "c.onnx"): "not a model checkpoint segzoo can rebuild",
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda args: run_segzoo("export", args[0], "--onnx", args[1]), cases))
    for (checkpoint, out), result, message in zip(cases, results, cases.values()):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
        assert message in lines[0], lines[0]
    assert existing.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["diffnet", "existing.onnx", "notes.txt", "zoo_run.safetensors", "zoo_run.json"])
