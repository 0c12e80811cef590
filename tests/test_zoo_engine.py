"""The zoo engine: many zoo runs at once, each as the per-run training loop trains it alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import dataclasses

from segzoo.checkpoint import load_checkpoint
from segzoo.models.flat import layout_of
from segzoo.weightgen.zoo.engine import Engine, Member, pooled_dice
from segzoo.weightgen.zoo.network import zoo_model
from segzoo.weightgen.zoo.runs import write_index
from segzoo.weightgen.zoo.scoring import Batch
from segzoo.weightgen.zoo.train import adam_from, random_init, snapshot_steps, train_zoo_job

from conftest import REPO, prepared_phantom
from zoo_helpers import ci_settings, index_settings, starts

SETTINGS = ci_settings()
# Different tasks, learning rates, seeds and lengths in one batch.
MIXED = [("canal", 0.01, 0, 20), ("sc", 0.003, 1, 20), ("all", 0.01, 2, 12), ("lesion", 0.02, 3, 20)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepared_phantom(tmp_path_factory.mktemp("engine"), seed=3, lesion_free_fraction=0)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_each_member_trains_as_it_would_alone(prepared):
    """Member k of a mixed batch and the same run through the per-run loop (zoo.adam_from), both in float64: the
    same snapshot steps, the same weights within 1e-5 relative, the same val Dice. (In float32 both sides round
    differently, and Adam's first steps, about lr x sign(gradient), make rounding visible: the per-run loop on 1
    and on 2 threads differs as much from itself; bench/zoo_throughput.py prints both.)"""
    pre, splits = prepared
    start = random_init(SETTINGS, pre, 0, 0)
    members = []
    for task, lr, seed, steps in MIXED:
        index = 3 if task == "all" else pre.region_names.index(task)
        keep = set(snapshot_steps(steps, 5, seed, index))
        members.append(Member(f"{task}/{seed}", task, lr, seed, start, steps, keep))
    engine = Engine(pre, SETTINGS, dtype=torch.float64)
    batch = Batch.of(pre, splits, "val", SETTINGS, 0)
    batched = {}

    def snapshot(step, group, weights):
        dice = engine.score(weights, batch.image, batch.label)[1]
        for member, vector, d in zip(group, weights, dice):
            batched[(member.name, step)] = (vector, d)

    outcomes = engine.train(pre, splits, members, settings=SETTINGS, threads=1, on_snapshot=snapshot)
    assert [o.steps_done for o in outcomes] == [m.steps for m in members] and not any(o.stopped for o in outcomes)
    model = zoo_model(pre, SETTINGS).double()
    for member in members:
        alone = {}

        def observe(step, net, loss, keep=member.keep, alone=alone):
            if step in keep:
                vector = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
                with torch.no_grad():
                    logits = net.eval()(batch.image.double())
                net.train()
                alone[step] = (vector, pooled_dice((logits > 0).double(), batch.label.double()))

        adam_from(pre, splits, member.task, lr=member.lr, seed=member.seed, start=start, steps=member.steps,
                  settings=SETTINGS, observe=observe, device="cpu", threads=1, dtype=torch.float64)
        assert sorted(alone) == sorted(s for n, s in batched if n == member.name) == sorted(member.keep)
        for step, (vector, dice) in alone.items():
            got, got_dice = batched[(member.name, step)]
            assert _relative(got, vector) <= 1e-5, (member.name, step, _relative(got, vector))
            assert torch.allclose(got_dice.double(), dice, atol=1e-6), (member.name, step)
    assert layout_of(model) == engine.layout


def test_a_member_that_goes_nan_stops_alone_and_is_named(prepared, tmp_path, capfd):
    """A run whose loss stops being finite stops there with a message naming it; the others finish as a batch
    without it would; the index drops it with the reason."""
    pre, splits = prepared
    start = random_init(SETTINGS, pre, 0, 0)
    broken = start.clone()
    broken[5] = float("nan")
    engine = Engine(pre, SETTINGS, dtype=torch.float64)
    finals = {}

    def keep(step, group, weights):
        for member, vector in zip(group, weights):
            finals[member.name] = vector

    good = [Member(f"ok{s}", "sc", 0.01, s, start, 6, {6}) for s in (0, 1)]
    outcomes = engine.train(pre, splits, [good[0], Member("bad", "sc", 0.01, 2, broken, 6, {6}), good[1]],
                            settings=SETTINGS, threads=1, on_snapshot=keep)
    assert [o.steps_done for o in outcomes] == [6, 0, 6]
    assert outcomes[1].stopped == "training loss not finite at step 1; the run stops after step 0"
    assert "zoo run bad: training loss not finite at step 1" in capfd.readouterr().err
    with_bad = dict(finals)
    finals.clear()
    engine.train(pre, splits, good, settings=SETTINGS, threads=1, on_snapshot=keep)
    assert set(with_bad) == {"ok0", "ok1"}
    assert all(_relative(with_bad[n], finals[n]) <= 1e-9 for n in finals)
    # Through a zoo job: the stopped run is written (its snapshots so far) and the index drops it, naming why.
    job = tmp_path / "runs" / "job0"
    runs = [{"start": "init0", "task": "sc", "lr": 0.01, "seed": 0}, {"start": "init0", "task": "sc", "lr": 1e30,
                                                                      "seed": 1}]
    folder = starts(pre, splits, SETTINGS, ["init0"], tmp_path / "starts", mode="shared")
    sidecars = train_zoo_job(pre, splits, runs, folder, settings=dataclasses.replace(SETTINGS, steps=4, checkpoints=2,
                                                                                   budgets=[]),
                             out=job, device="cpu", threads=1, data_seed=0)
    assert sidecars[0]["stopped"] is None and sidecars[1]["stopped"].startswith("training loss not finite at step 2")
    summary = write_index([job], tmp_path / "index.csv", tmp_path / "zoo.json",
                          index_settings(init="shared", heldout_seeds=[], parents=1), ["sc"])
    assert summary["runs_kept"] == 1 and summary["dropped"][0]["run"] == "init0/sc_lr1e+30/seed1"
    assert summary["dropped"][0]["reason"].startswith("stopped early: training loss not finite")


def _zoo_command(prepared, out, starts_dir) -> list[str]:
    pre, splits = prepared
    settings = json.dumps({"zoo": dataclasses.replace(SETTINGS, steps=150).to_json()})
    runs = [a for task in ("sc", "canal") for seed in (0, 1) for a in ("--run", "init0", task, "0.01", str(seed))]
    return [sys.executable, "-m", "segzoo", "zoo", "--data", str(pre.folder), "--splits", str(splits),
            "--data-seed", "0", "--settings", settings, "--starts", str(starts_dir), "--out", str(out), "--device",
            "cpu", "--threads", "1", *runs]


@pytest.mark.slow
def test_a_killed_job_leaves_no_run_and_restarts_to_the_same_files(prepared, tmp_path):
    out = tmp_path / "runs" / "job0"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    folder = starts(*prepared, SETTINGS, ["init0"], tmp_path / "starts", mode="shared")
    process = subprocess.Popen(_zoo_command(prepared, out, folder), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(7)  # imports, then training: 4 runs x 150 steps take longer than this
    assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))  # not even a partial folder
    for folder in (out, tmp_path / "again"):
        finished = subprocess.run(_zoo_command(prepared, folder, tmp_path / "starts"), env=env, capture_output=True,
                                  text=True)
        assert finished.returncode == 0, finished.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "again").iterdir()) and len(names) == 8
    for name in names:  # a restarted job gives the same weights, bit for bit (CPU, same threads), and sidecars
        a, b = out / name, tmp_path / "again" / name
        if name.endswith(".safetensors"):
            assert a.read_bytes() == b.read_bytes()
        else:  # but for the wall-clock seconds per step
            untimed = [{k: v for k, v in json.loads(p.read_text()).items() if k != "seconds_per_step"} for p in (a, b)]
            assert untimed[0] == untimed[1]
    tensors, sidecar = load_checkpoint(out / "init0_sc_lr0.01_seed0")
    assert sidecar["members_in_job"] == 4 and bool(torch.isfinite(tensors["params"]).all())


def test_data_loader_workers_change_no_weight(prepared):
    """train.workers > 0 draws every member's batches in worker processes; the weights are the same bytes."""
    pre, splits = prepared
    start = random_init(SETTINGS, pre, 0, 0)
    finals = []
    for workers in (0, 2):
        settings = dataclasses.replace(SETTINGS, train={**SETTINGS.train, "workers": workers})
        got = {}
        members = [Member("a", "sc", 0.01, 0, start, 4, {4}), Member("b", "all", 0.003, 1, start, 3, {3})]
        Engine(pre, settings).train(pre, splits, members, settings=settings, threads=1,
                                    on_snapshot=lambda step, group, w: got.update(zip([m.name for m in group], w)))
        finals.append(got)
    assert finals[0].keys() == finals[1].keys() == {"a", "b"}
    assert all(torch.equal(finals[0][n], finals[1][n]) for n in ("a", "b"))
