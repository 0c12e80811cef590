"""Checkpoints: safetensors + sidecar, exact round trips, and no unpickling anywhere."""

import pickle
import re
from pathlib import Path

import pytest
import torch

from segzoo.errors import SegzooError
from segzoo.checkpoint import (flatten_state, load_checkpoint, paths, save_checkpoint,
                                     unflatten_state)

from conftest import REPO


class Planted:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_round_trip_is_exact(tmp_path):
    tensors = {"model.w": torch.randn(3, 4), "model.b": torch.arange(5, dtype=torch.int64)}
    save_checkpoint(tmp_path / "ck", tensors, {"step": 7, "seed": 1})
    loaded, meta = load_checkpoint(tmp_path / "ck")
    assert meta["step"] == 7 and meta["seed"] == 1
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    assert load_checkpoint(tmp_path / "ck.safetensors")[1]["step"] == 7


def test_optimizer_state_survives_flattening(tmp_path):
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    tensors = {}
    skeleton = flatten_state(opt.state_dict(), "optim", tensors)
    save_checkpoint(tmp_path / "ck", tensors, {"optimizer": skeleton})
    loaded, meta = load_checkpoint(tmp_path / "ck")
    restored = torch.optim.AdamW(torch.nn.Linear(4, 2).parameters(), lr=0.5)
    restored.load_state_dict(unflatten_state(meta["optimizer"], loaded))
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(restored.state_dict()["state"][0][key], opt.state_dict()["state"][0][key])
    assert restored.param_groups[0]["lr"] == 0.1


def test_planted_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Planted(marker)))
    with pytest.raises(SegzooError, match="never unpickles"):
        load_checkpoint(evil)
    # The same bytes under a safetensors name, with a sidecar that matches them: still refused.
    weights, sidecar = paths(tmp_path / "last")
    weights.write_bytes(evil.read_bytes())
    save_checkpoint(tmp_path / "ok", {"x": torch.zeros(1)}, {})
    import hashlib
    sidecar.write_text('{"tensors_sha256": "%s"}' % hashlib.sha256(weights.read_bytes()).hexdigest())
    with pytest.raises(SegzooError, match="not a safetensors file"):
        load_checkpoint(tmp_path / "last")
    assert not marker.exists()


def test_torn_pair_is_detected(tmp_path):
    save_checkpoint(tmp_path / "ck", {"x": torch.zeros(4)}, {"step": 1})
    save_checkpoint(tmp_path / "other", {"x": torch.ones(4)}, {"step": 2})
    paths(tmp_path / "other")[0].replace(paths(tmp_path / "ck")[0])  # new weights, old sidecar
    with pytest.raises(SegzooError, match="does not match its sidecar"):
        load_checkpoint(tmp_path / "ck")


def test_no_code_in_the_package_unpickles():
    offenders = []
    for path in (REPO / "src" / "segzoo").rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            if re.search(r"\bpickle\.loads?\(|\bjoblib\.load\(|np\.load\(.*allow_pickle=True", line):
                offenders.append(f"{path.name}: {line.strip()}")
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.name}: {line.strip()}")
    assert not offenders
