"""Checkpoint diffusion: exact parameter round trips, the zoo's runs and index, G.pt learning a tiny zoo."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from segzoo.config import load_config
from segzoo.data.phantom import PhantomSpec, write_phantom_dataset
from segzoo.data.preprocess import preprocess_dataset
from segzoo.data.splits import splits_for_preprocessed
from segzoo.errors import SegzooError
from segzoo.io import write_json
from segzoo.models.registry import build_model
from segzoo.train.checkpoint import load_checkpoint, save_checkpoint
from segzoo.weightgen.evaluate import r_squared
from segzoo.weightgen.gpt import GPT, Tokenizer
from segzoo.weightgen.gpt_train import load_zoo, train_gpt
from segzoo.weightgen.params import flatten, layout_of, load_vector, unflatten
from segzoo.weightgen.sample import ddim_sample
from segzoo.weightgen.zoo import make_scorer, train_zoo_run, write_index

from conftest import PHANTOM, REPO, run_segzoo

CI = load_config(REPO / "config.yaml", REPO / "presets" / "ci.yaml", schema_path=REPO / "schemas" / "config.schema.yaml")
TRAIN = {k: v for k, v in CI["train"].items() if k not in ("models", "seeds", "threads")}


def _options(**overrides) -> dict:
    return {**CI["weightgen"], "train": TRAIN, **overrides}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("wg")
    raw = write_phantom_dataset(root / "raw" / "D", cases=6, seed=5,
                                spec=PhantomSpec(shape=(32, 32, 16), spacing=(1.0, 1.0, 3.0), lesion_free_fraction=0))
    pre = preprocess_dataset(raw, root / "pre" / "D")
    write_json(root / "splits.json", splits_for_preprocessed(pre, 0, 0.2, 0.2))
    return pre, root / "splits.json"


def test_flatten_unflatten_round_trip_is_exact():
    model = build_model("small_unet", 1, 3, filters=[4, 8, 16])
    vector = flatten(model)
    assert vector.numel() == sum(p.numel() for p in model.parameters()) == 21275
    for name, tensor in unflatten(vector, layout_of(model)).items():
        assert torch.equal(tensor, dict(model.named_parameters())[name].detach())
    other = build_model("small_unet", 1, 3, filters=[4, 8, 16])
    assert not torch.equal(flatten(other), vector)
    load_vector(other, vector)
    assert torch.equal(flatten(other), vector)
    x = torch.randn(1, 1, 16, 16, 8)
    assert torch.equal(model.eval()(x), other.eval()(x))
    with pytest.raises(SegzooError, match="does not fit"):
        unflatten(vector[:-1], layout_of(model))


def test_tokens_are_per_layer_chunks_and_round_trip_exactly():
    tok = Tokenizer([5, 3, 8], chunk=4)
    assert tok.tokens == 2 + 1 + 2  # layers never share a token
    flat = torch.arange(1, 17, dtype=torch.float32)[None].repeat(2, 1)
    tokens = tok.tokens_of(flat)
    assert tokens.shape == (2, 5, 4)
    assert tokens[0, 1].tolist() == [5, 0, 0, 0]      # layer 1's tail, zero-padded
    assert tokens[0, 2].tolist() == [6, 7, 8, 0]      # layer 2 starts a new token
    assert torch.equal(tok.flat_of(tokens), flat)


def test_gpt_starts_as_the_identity_on_the_starting_parameters():
    model = GPT([30, 7], regions=3, tasks=2, chunk=8, width=16, layers=1, heads=2, diffusion_steps=50)
    start, noised = torch.randn(4, 37), torch.randn(4, 37)
    out = model(noised, start, torch.tensor([0, 10, 20, 49]), torch.tensor([0, 1, 0, 1]), torch.rand(4, 3),
                torch.rand(4, 3))
    assert torch.equal(out, start)


def test_r_squared_against_the_identity():
    p = np.array([0.2, 0.4, 0.6, 0.8])
    assert r_squared(p, p) == 1.0
    assert r_squared(p + 0.1, p) == pytest.approx(1 - 4 * 0.01 / 0.2)
    assert r_squared(p[::-1].copy(), p) < 0


def test_zoo_run_keeps_init_checkpoints_and_untrained_heads(prepared, tmp_path):
    pre, splits = prepared
    meta = train_zoo_run(pre, splits, "sc", 0.01, 0, _options(), tmp_path / "sc", "cpu", 1, 0)
    tensors, sidecar = load_checkpoint(tmp_path / "sc")
    params = tensors["params"]
    steps = sidecar["checkpoints"]["step"]
    assert steps[0] == 0 and steps[-1] == CI["weightgen"]["steps"] and len(steps) == CI["weightgen"]["checkpoints"] + 2
    torch.manual_seed(0)
    init = build_model("small_unet", 1, 3, filters=CI["weightgen"]["filters"])
    assert params.shape == (len(steps), flatten(init).numel())
    assert torch.equal(params[0], flatten(init))  # row 0 is the run's random init
    heads = unflatten(params[-1], meta["layout"])["output_block.conv.conv.weight"]
    heads0 = unflatten(params[0], meta["layout"])["output_block.conv.conv.weight"]
    sc = meta["regions"].index("sc")
    others = [r for r in range(3) if r != sc]
    assert torch.equal(heads[others], heads0[others])  # single-task: the other heads stay at init
    assert not torch.equal(heads[sc], heads0[sc])
    assert {"train_loss", "val_loss", "dice_sc", "dice_canal", "dice_lesion"} <= set(sidecar["checkpoints"])
    again = train_zoo_run(pre, splits, "sc", 0.01, 0, _options(), tmp_path / "again", "cpu", 1, 0)
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "sc.safetensors").read_bytes()
    assert again["checkpoints"] == meta["checkpoints"]


def test_index_drops_and_counts_runs_with_nan_or_huge_weights(prepared, tmp_path):
    pre, splits = prepared
    train_zoo_run(pre, splits, "all", 0.01, 0, _options(), tmp_path / "good", "cpu", 1, 0)
    tensors, meta = load_checkpoint(tmp_path / "good")
    broken = tensors["params"].clone()
    broken[3, 10] = float("nan")
    save_checkpoint(tmp_path / "nan", {"params": broken}, {k: v for k, v in meta.items() if k != "tensors_sha256"})
    save_checkpoint(tmp_path / "huge", {"params": tensors["params"] * 1e6},
                    {k: v for k, v in meta.items() if k != "tensors_sha256"})
    summary = write_index([tmp_path / f"{n}.safetensors" for n in ("good", "nan", "huge")], tmp_path / "index.csv",
                          tmp_path / "zoo.json", 100.0)
    assert summary["runs_kept"] == 1 and summary["runs_dropped"] == 2
    assert {d["run"]: d["reason"].split()[0] for d in summary["dropped"]} == {"nan": "non-finite", "huge": "max"}
    index = pd.read_csv(tmp_path / "index.csv")
    assert len(index) == len(meta["checkpoints"]["step"]) and set(index["run"]) == {"good"}
    assert json.loads((tmp_path / "zoo.json").read_text())["checkpoints"] == len(index)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OSError):  # the second file cannot be written: the first must not stay behind
        write_index([tmp_path / "good.safetensors"], tmp_path / "index2.csv", blocker / "zoo.json", 100.0)
    assert not (tmp_path / "index2.csv").exists()


def test_gpt_overfits_a_tiny_zoo(prepared, tmp_path):
    """Loss falls, and a network sampled from a training run's init, prompted with that run's final
    metrics, reaches them: |achieved - prompted| <= 0.1 Dice on every trained region."""
    pre, splits = prepared
    options = _options(steps=30, checkpoints=10)
    runs = tmp_path / "runs"
    for seed in (0, 1):
        train_zoo_run(pre, splits, "all", 0.02, seed, options, runs / f"all_lr0.02_seed{seed}", "cpu", 1, 0)
    write_index(sorted(runs.glob("*.safetensors")), tmp_path / "index.csv", tmp_path / "zoo.json", 100.0)
    zoo = load_zoo(tmp_path / "index.csv", runs, heldout_seeds=[1])
    gpt_options = {"chunk": 64, "width": 32, "layers": 2, "heads": 2, "steps": 300, "batch_size": 16, "lr": 0.003,
                   "diffusion_steps": 100, "init_start_fraction": 1.0}
    meta = train_gpt(zoo, ["all"], gpt_options, seed=0, out=tmp_path / "gpt", threads=2)
    loss = pd.read_csv(tmp_path / "gpt_loss.csv")["loss"]
    assert loss.tail(50).mean() < 0.5 * loss.head(50).mean()
    from segzoo.weightgen.gpt_train import load_gpt

    model, meta = load_gpt(tmp_path / "gpt")
    run = zoo.train_runs[0]
    final = torch.tensor(zoo.dice(run)[-1])
    assert final.max() > 0.5  # the run learned something worth prompting for
    sample = ddim_sample(model, meta["scale"], zoo.params[run][:1], torch.tensor([0]), torch.tensor(zoo.dice(run)[:1]),
                         final[None], steps=10, generator=torch.Generator().manual_seed(0))
    achieved = np.asarray(make_scorer(pre, splits, options, 0)(sample[0]))
    assert np.abs(achieved - final.numpy()).max() <= 0.1, (achieved, final)


def test_gpt_training_is_reproducible(prepared, tmp_path):
    pre, splits = prepared
    runs = tmp_path / "runs"
    for seed in (0, 1):
        train_zoo_run(pre, splits, "sc", 0.01, seed, _options(), runs / f"sc_lr0.01_seed{seed}", "cpu", 1, 0)
    write_index(sorted(runs.glob("*.safetensors")), tmp_path / "index.csv", tmp_path / "zoo.json", 100.0)
    zoo = load_zoo(tmp_path / "index.csv", runs, heldout_seeds=[1])
    options = {**CI["weightgen"]["gpt"], "steps": 5}
    train_gpt(zoo, ["sc"], options, 0, tmp_path / "a")
    train_gpt(zoo, ["sc"], options, 0, tmp_path / "b")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_cli_names_the_missing_index_and_writes_nothing(tmp_path):
    settings = json.dumps(CI["weightgen"])
    result = run_segzoo("gpt-train", "--index", tmp_path / "nope.csv", "--runs-dir", tmp_path, "--seed", 0,
                        "--settings", settings, "--out", tmp_path / "gpt", "--device", "cpu")
    assert result.returncode == 1
    assert "nope.csv: missing" in result.stderr
    assert not list(tmp_path.iterdir())


def test_weightgen_rules_run_under_snakemake_on_the_ci_preset(ci_run):
    """The real ci pipeline ran zoo -> index -> G.pt -> samples -> evaluation; check what each wrote."""
    wf, _ = ci_run
    wg = CI["weightgen"]
    zoo = wf / "results" / "zoo" / PHANTOM
    runs = sorted((zoo / "runs").glob("*.safetensors"))
    assert len(runs) == len(wg["tasks"]) * len(wg["lrs"]) * len(wg["seeds"])
    index = pd.read_csv(zoo / "index.csv")
    summary = json.loads((zoo / "zoo.json").read_text())
    assert summary["runs_kept"] + summary["runs_dropped"] == len(runs)
    assert len(index) == summary["checkpoints"] == summary["runs_kept"] * (wg["checkpoints"] + 2)
    out = wf / "results" / "weightgen" / PHANTOM
    gpt = json.loads((out / "gpt.json").read_text())
    heldout = {r.name.removesuffix(".safetensors") for r in runs if r.name.endswith(f"seed{wg['heldout_seeds'][0]}.safetensors")}
    assert heldout and not heldout & set(gpt["train_runs"])  # held-out runs never reach training
    evaluation = out / "evaluation"
    shots = pd.read_csv(evaluation / "oneshot.csv")
    assert set(shots["run"]) == heldout
    assert shots[["d_nearest", "nearest_task_dice", "noisy_task_dice"]].notna().all().all()
    samples = pd.read_csv(evaluation / "samples.csv")
    assert set(samples["kind"]) == {"align", "best", "unify", "seen"}
    assert samples["round"].max() == wg["sample"]["recursions"]
    assert {"G.pt unify (round 1)", "best multi-task checkpoint"} <= set(pd.read_csv(evaluation / "unification.csv")["method"])
    for fig in json.loads((evaluation / "figures.json").read_text()):
        assert (evaluation / fig["file"]).stat().st_size > 5000
    assert "Checkpoint diffusion (G.pt)" in (wf / "results" / "index.html").read_text()
