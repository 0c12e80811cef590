"""Checkpoint diffusion: exact parameter round trips, zoo starts and runs, G.pt, the evaluation's yardsticks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from segzoo.config import load_config
from segzoo.data.loader import PatchBatches
from segzoo.data.phantom import REGIONS
from segzoo.errors import SegzooError
from segzoo.io import read_json
from segzoo.models.registry import ZOO_NETWORK, build_model
from segzoo.checkpoint import load_checkpoint, save_checkpoint
from segzoo.weightgen.evaluation import merge
from segzoo.weightgen.zoo import plan as zoo_plan
from segzoo.weightgen.evaluation.audit import Audit
from segzoo.weightgen.evaluation.evaluate import r_squared
from segzoo.weightgen.evaluation.folder import EvaluationFolder
from segzoo.weightgen.gpt.model import GPT, Tokenizer
from segzoo.weightgen.gpt.train import load_gpt, train_gpt
from segzoo.models.flat import flatten, layout_of, load_vector, unflatten
from segzoo.weightgen.zoo.layer_scale import LayerScale
from segzoo.weightgen.gpt.sample import generate, lookup
from segzoo.weightgen.zoo.scoring import Scorer
from segzoo.weightgen.zoo.runs import (Zoo, ZooRun, load_zoo, random_init, train_start, train_zoo_job, write_index)

from conftest import PHANTOM, REPO, prepared_phantom, run_segzoo, snakemake, workflow_copy

CI = load_config(REPO / "config.yaml", REPO / "presets" / "ci.yaml",
                 schema_path=REPO / "schemas" / "config.schema.yaml")
WG = CI["weightgen"]
ZOO_KEYS = ("features", "n_conv_per_stage", "steps", "checkpoints", "batch_size", "patch_size", "val_patches",
            "test_patches", "parent_steps", "parent_lr")


def _settings(**overrides) -> dict:
    train = {k: CI["train"][k] for k in ("augment", "foreground_fraction", "workers", "bf16", "sw_batch_size")}
    return {**{k: WG[k] for k in ZOO_KEYS}, "train": train, **overrides}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepared_phantom(tmp_path_factory.mktemp("wg"), seed=5, lesion_free_fraction=0)


def _job(pre, splits, task, lr, seeds, start, settings, out):
    """A zoo job of one task and learning rate on the CPU, one thread, data seed 0."""
    return train_zoo_job(pre, splits, [{"task": task, "lr": lr, "seed": s} for s in seeds], start, settings=settings,
                         out=out, device="cpu", threads=1, data_seed=0)


def _toy_run(name: str, task: str, dice: np.ndarray, params: torch.Tensor, role: str = "train", start="parent0"):
    return ZooRun(name, role, task, 0.01, 0, start, params, dice.astype(np.float32), list(range(len(params))), 0.01)


def test_flatten_unflatten_round_trip_is_exact():
    model = build_model(ZOO_NETWORK, 1, 3, features=[4, 8, 16])
    vector = flatten(model)
    assert vector.numel() == sum(p.numel() for p in model.parameters()) == 21554
    for name, tensor in unflatten(vector, layout_of(model)).items():
        assert torch.equal(tensor, dict(model.named_parameters())[name].detach())
    other = build_model(ZOO_NETWORK, 1, 3, features=[4, 8, 16])
    assert not torch.equal(flatten(other), vector)
    load_vector(other, vector)
    assert torch.equal(flatten(other), vector)
    x = torch.randn(1, 1, 16, 16, 8)
    assert torch.equal(model.eval()(x), other.eval()(x))
    with pytest.raises(SegzooError, match="does not fit"):
        unflatten(vector[:-1], layout_of(model))


def test_layer_scale_round_trips_exactly_and_scales_each_layer():
    layout = [["a", [3, 4]], ["b", [5]], ["still", [2]]]
    torch.manual_seed(0)
    start = torch.randn(19)
    changes = torch.cat([torch.randn(6, 12) * 0.01, torch.randn(6, 5) * 3.0, torch.zeros(6, 2)], 1)
    theta = start + changes
    scale = LayerScale.fit(layout, [theta - start])
    assert scale.sigma[2] == 1.0  # a layer that never changes
    assert all(np.log2(s) == round(np.log2(s)) for s in scale.sigma)
    assert 0.004 < scale.sigma[0] < 0.02 and 2 <= scale.sigma[1] <= 4
    x = scale.encode(theta, start)
    assert 0.5 < float(x[:, :12].square().mean().sqrt()) < 2 and 0.5 < float(x[:, 12:17].square().mean().sqrt()) < 2
    assert torch.equal(scale.decode(x, start), theta)  # bit for bit
    assert torch.equal(scale.decode(scale.encode(start, start), start), start)


def test_tokens_are_per_layer_chunks_and_round_trip_exactly():
    tok = Tokenizer([5, 3, 8], chunk=4)
    assert tok.tokens == 2 + 1 + 2  # layers never share a token
    flat = torch.arange(1, 17, dtype=torch.float32)[None].repeat(2, 1)
    tokens = tok.tokens_of(flat)
    assert tokens.shape == (2, 5, 4)
    assert tokens[0, 1].tolist() == [5, 0, 0, 0]      # layer 1's tail, zero-padded
    assert tokens[0, 2].tolist() == [6, 7, 8, 0]      # layer 2 starts a new token
    assert torch.equal(tok.flat_of(tokens), flat)


def test_gpt_starts_as_the_identity_on_the_starting_checkpoint():
    model = GPT([30, 7], regions=3, tasks=2, chunk=8, width=16, layers=1, heads=2, diffusion_steps=50)
    start, noised, origin = torch.randn(4, 37), torch.randn(4, 37), torch.randn(4, 37)
    out = model(noised, start, origin, torch.tensor([0, 10, 20, 49]), torch.tensor([0, 1, 0, 1]), torch.rand(4, 3),
                torch.rand(4, 3))
    assert torch.equal(out, start)


def test_r_squared_divides_by_the_variance_of_the_prompts():
    p = np.array([0.2, 0.4, 0.6, 0.8])
    assert r_squared(p, p) == 1.0
    assert r_squared(p + 0.1, p) == pytest.approx(1 - 4 * 0.01 / 0.2)
    assert r_squared(np.full(4, 0.5), p) == pytest.approx(0.0)  # ignoring the prompt scores 0, not NaN
    assert r_squared(p[::-1].copy(), p) < 0


def test_lookup_memoriser_aligns_perfectly_on_a_toy_zoo():
    """It returns the training checkpoint whose val Dice is nearest the prompt: R² ≈ 1 without any learning."""
    dice = np.stack([np.linspace(0, 0.9, 40), np.linspace(0.1, 0.5, 40)], 1)
    zoo = Zoo(["sc", "canal"], [["w", [40]]], {}, {"r": _toy_run("r", "sc", dice, torch.eye(40))})
    prompts = np.linspace(0.1, 0.85, 8)
    picked = np.array([zoo.runs[r].dice[i][0] for r, i in (lookup(zoo, "sc", np.array([p, 0.0])) for p in prompts)])
    assert r_squared(picked, prompts) > 0.99


def test_audit_distances_and_novelty_on_a_hand_made_zoo(prepared):
    pre, splits = prepared
    settings = _settings()
    start = random_init(settings, pre, 0, 0)
    torch.manual_seed(1)
    rows = start + torch.randn(5, start.numel()) * 0.01
    rows[0] = start
    layout = layout_of(build_model(ZOO_NETWORK, 1, 3, features=settings["features"]))
    zoo = Zoo(pre.region_names, layout, {}, {"a": _toy_run("a", "sc", np.zeros((5, 3)), rows)})
    scale = LayerScale.fit(layout, [rows - start])
    audit = Audit(zoo, scale, Scorer(pre, splits, settings, 0), k=2, seed=0)
    keys, d = audit.nearest(rows[3].clone())
    assert keys[0] == ("a", 3) and d[0] == 0  # a copy of a training checkpoint: novelty ratio 0
    fresh = start + torch.randn(start.numel(), generator=torch.Generator().manual_seed(9)) * 0.01
    d_fresh = audit.nearest(fresh)[1][0]
    assert d_fresh == pytest.approx(min(audit.distance(fresh, r) for r in rows), rel=1e-5)
    noisy = audit.noise_at(rows[2], 7.0)
    assert audit.distance(noisy, rows[2]) == pytest.approx(7.0, rel=1e-4)


def test_merges_on_hand_made_task_vectors():
    base = torch.zeros(4)
    finals = torch.tensor([[1.0, -2.0, 0.1, 0.0], [1.0, 1.0, -0.1, 3.0]])
    assert torch.equal(merge.soup(base, finals), torch.tensor([1.0, -0.5, 0.0, 1.5]))
    assert torch.equal(merge.task_arithmetic(base, finals, 0.5), torch.tensor([1.0, -0.5, 0.0, 1.5]))
    # keep the top half of each task vector: {1, -2} and {1, 3}; signs elected +, -, 0, +
    assert torch.equal(merge.ties(base, finals, keep=0.5, lam=1.0), torch.tensor([1.0, -2.0, 0.0, 3.0]))


def test_lesion_runs_centre_their_foreground_patches_on_lesions(prepared):
    pre, splits = prepared
    cases = read_json(splits)["train"]
    lesion = PatchBatches(pre, cases, [16, 16, 8], 4, foreground_fraction=1.0, seed=0, centre_values=[3])
    anywhere = PatchBatches(pre, cases, [16, 16, 8], 4, foreground_fraction=1.0, seed=0)
    with_lesion = lambda batches: [bool(batches[k]["label"][i, 2].any()) for k in range(6) for i in range(4)]  # noqa: E731
    assert all(with_lesion(lesion))  # channels: canal, sc, lesion
    assert not all(with_lesion(anywhere))  # centred on any label, some patches miss the lesion


def test_init_modes_start_where_they_promise(prepared, tmp_path):
    pre, splits = prepared
    settings = _settings(steps=4, checkpoints=2, parent_steps=3)
    parent = train_start(pre, splits, "spawn", 0, settings=settings, out=tmp_path / "parent0", device="cpu", threads=1,
                         data_seed=0)
    parent_params = load_checkpoint(tmp_path / "parent0")[0]["params"][0]
    assert parent["steps"] == 3 and not torch.equal(parent_params, random_init(settings, pre, 0, 0))
    _job(pre, splits, "sc", 0.01, [0, 1], tmp_path / "parent0.safetensors", settings, tmp_path / "spawn")
    for seed in (0, 1):  # spawn: every child's row 0 is the parent's final weights
        assert torch.equal(load_checkpoint(tmp_path / "spawn" / f"sc_lr0.01_seed{seed}")[0]["params"][0], parent_params)
    train_start(pre, splits, "shared", 2, settings=settings, out=tmp_path / "init2", device="cpu", threads=1,
                data_seed=0)
    shared = load_checkpoint(tmp_path / "init2")[0]["params"][0]
    assert torch.equal(shared, random_init(settings, pre, 0, 2))  # shared: the untrained init itself
    _job(pre, splits, "sc", 0.01, [0, 1], None, settings, tmp_path / "own")
    rows = [load_checkpoint(tmp_path / "own" / f"sc_lr0.01_seed{s}")[0]["params"][0] for s in (0, 1)]
    assert all(torch.equal(rows[s], random_init(settings, pre, 0, s)) for s in (0, 1))
    assert not torch.equal(rows[0], rows[1])  # per_seed: each seed its own init
    with pytest.raises(SegzooError, match="already exists"):  # a job never overwrites a folder
        _job(pre, splits, "sc", 0.01, [0], None, settings, tmp_path / "own")


def test_zoo_run_keeps_its_start_and_untrained_heads_and_is_reproducible(prepared, tmp_path):
    pre, splits = prepared
    settings = _settings()
    meta = _job(pre, splits, "sc", 0.01, [0], None, settings, tmp_path / "a")[0]
    params = load_checkpoint(tmp_path / "a" / "sc_lr0.01_seed0")[0]["params"]
    steps = meta["checkpoints"]["step"]
    assert steps[0] == 0 and steps[-1] == WG["steps"] and len(steps) == WG["checkpoints"] + 2
    last_head = f"decoder.seg_layers.{len(settings['features']) - 2}.weight"  # the one head in use
    heads, heads0 = (unflatten(params[i], meta["layout"])[last_head] for i in (-1, 0))
    sc = meta["regions"].index("sc")
    others = [r for r in range(3) if r != sc]
    assert torch.equal(heads[others], heads0[others])  # single-task: the other heads stay at the start
    assert not torch.equal(heads[sc], heads0[sc])
    assert meta["architecture"]["network_class_name"].endswith("PlainConvUNet")
    _job(pre, splits, "sc", 0.01, [0], None, settings, tmp_path / "b")
    run = "sc_lr0.01_seed0.safetensors"
    assert (tmp_path / "a" / run).read_bytes() == (tmp_path / "b" / run).read_bytes()


def _zoo_dirs(root, pre, splits, settings, tasks=("all",), seeds=(0, 1), arm="parent0", start=None):
    """Zoo job folders laid out as the rules lay them out: runs/<arm>/job<k>/, one task each."""
    dirs = []
    for k, task in enumerate(tasks):
        d = root / "runs" / arm / f"job{k}"
        _job(pre, splits, task, 0.02, list(seeds), start, settings, d)
        dirs.append(d)
    return dirs


def test_index_roles_and_dropped_runs(prepared, tmp_path):
    pre, splits = prepared
    settings = _settings()
    dirs = _zoo_dirs(tmp_path, pre, splits, settings, seeds=(0, 1))
    dirs += _zoo_dirs(tmp_path, pre, splits, settings, seeds=(0,), arm="parent1")
    tensors, meta = load_checkpoint(dirs[0] / "all_lr0.02_seed0")
    broken = tensors["params"].clone()
    broken[1, 10] = float("nan")
    bad = tmp_path / "runs" / "parent0" / "job9"
    save_checkpoint(bad / "sc_lr0.02_seed0", {"params": broken},
                    {k: v for k, v in meta.items() if k != "tensors_sha256"})
    summary = write_index(dirs + [bad], tmp_path / "index.csv", tmp_path / "zoo.json", 100.0, [1], 1)
    assert summary["runs_kept"] == 3 and summary["runs_dropped"] == 1
    assert summary["dropped"][0]["reason"] == "non-finite weights"
    assert summary["runs_per_role"] == {"train": 1, "insample": 1, "heldout": 1}
    zoo = load_zoo(tmp_path / "index.csv")  # parent1 is held out (parents=1): its run is a held-out parent's
    assert [r.start for r in zoo.select("heldout")] == ["init0"] and list(zoo.starts("heldout")) == ["init0"]
    assert [r.seed for r in zoo.select("insample")] == [1]  # a held-out seed of a training parent: in-sample
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OSError):  # the second file cannot be written: the first must not stay behind
        write_index(dirs, tmp_path / "index2.csv", blocker / "zoo.json", 100.0, [1], 1)
    assert not (tmp_path / "index2.csv").exists()


def test_gpt_overfits_a_tiny_zoo_from_its_start(prepared, tmp_path):
    """Loss falls, and a network sampled from a training run's start, prompted with that run's final
    metrics, reaches them within 0.1 Dice on every region (in-sample: what G.pt does at the least)."""
    pre, splits = prepared
    settings = _settings(steps=30, checkpoints=10)
    _zoo_dirs(tmp_path, pre, splits, settings, seeds=(0, 1))
    write_index([tmp_path / "runs" / "parent0" / "job0"], tmp_path / "index.csv", tmp_path / "zoo.json",
                100.0, [1], 1)
    zoo = load_zoo(tmp_path / "index.csv")
    options = {"chunk": 64, "width": 32, "layers": 2, "heads": 2, "steps": 300, "batch_size": 16, "lr": 0.003,
               "diffusion_steps": 100, "init_start_fraction": 1.0, "ema": 0.9, "bf16": False}
    train_gpt(zoo, options, seed=0, out=tmp_path / "gpt", threads=2)
    loss = pd.read_csv(tmp_path / "gpt_loss.csv")["loss"]
    assert loss.tail(50).mean() < 0.5 * loss.head(50).mean()
    gpt = load_gpt(tmp_path / "gpt")
    run = zoo.select("train")[0]
    final = torch.tensor(run.dice[-1])
    assert final.max() > 0.5  # the run learned something worth prompting for
    sample = generate(gpt, run.params[:1], ["all"], start_metrics=torch.tensor(run.dice[:1]),
                      target_metrics=final[None], ddim_steps=10, generator=torch.Generator().manual_seed(0))
    achieved = Scorer(pre, splits, settings, 0).dice(sample[0], "val")
    assert np.abs(achieved - final.numpy()).max() <= 0.1, (achieved, final)


def test_gpt_training_is_reproducible(prepared, tmp_path):
    pre, splits = prepared
    _zoo_dirs(tmp_path, pre, splits, _settings(), tasks=("sc",))
    write_index([tmp_path / "runs" / "parent0" / "job0"], tmp_path / "index.csv", tmp_path / "zoo.json",
                100.0, [1], 1)
    zoo = load_zoo(tmp_path / "index.csv", roles=("train",))
    options = {**WG["gpt"], "steps": 5}
    train_gpt(zoo, options, 0, tmp_path / "a")
    train_gpt(zoo, options, 0, tmp_path / "b")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_cli_names_the_missing_index_and_writes_nothing(tmp_path):
    settings = json.dumps({"gpt": WG["gpt"]})
    result = run_segzoo("gpt-train", "--index", tmp_path / "nope.csv", "--seed", 0, "--settings", settings,
                        "--out", tmp_path / "gpt", "--device", "cpu")
    assert result.returncode == 1
    assert "nope.csv: missing" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_workflow_refuses_a_task_that_names_no_region_before_any_job(tmp_path):
    wf = workflow_copy(tmp_path / "wf")
    (wf / "bad.yaml").write_text("weightgen:\n  tasks: [sc, cord, all]\n  heldout_seeds: [9]\n")
    result = snakemake(wf, "-n", "--cores", "1", "--configfile", "presets/ci.yaml", "bad.yaml")
    assert result.returncode != 0
    said = result.stdout + result.stderr  # Snakemake prints a WorkflowError raised while parsing on stdout
    assert "weightgen.tasks: 'cord' not a region of Dataset001_SpinalPhantom (its regions: canal, sc, lesion" in said
    assert "weightgen.heldout_seeds: [9] not in weightgen.seeds" in said
    assert not (wf / "results").exists()


def test_weightgen_rules_run_under_snakemake_on_the_ci_preset(ci_run):
    """The real ci pipeline (two training parents, one held-out parent) ran starts -> zoo jobs -> index -> G.pt ->
    samples -> evaluation; check what each wrote."""
    wf, _ = ci_run
    zoo_dir = wf / "results" / "zoo" / PHANTOM
    parents = WG["parents"] + WG["heldout_parents"]["count"]
    assert (WG["parents"], WG["heldout_parents"]["count"]) == (2, 1)
    assert sorted(p.name for p in (zoo_dir / "starts").glob("*.safetensors")) == \
        [f"parent{k}.safetensors" for k in range(parents)]
    starts = [load_checkpoint(zoo_dir / "starts" / f"parent{k}")[0]["params"][0] for k in range(parents)]
    assert not any(torch.equal(starts[i], starts[j]) for i in range(parents) for j in range(i))  # own inits
    runs = sorted((zoo_dir / "runs").glob("*/job*/*_seed*.safetensors"))
    jobs = zoo_plan.jobs(WG, zoo_plan.tasks(WG, list(REGIONS)))
    assert sorted(p.relative_to(zoo_dir).as_posix() for p in (zoo_dir / "runs").glob("*/job*")) == \
        sorted(j["folder"] for j in jobs) and all(len(j["members"]) <= WG["members_per_job"] for j in jobs)
    tasks = zoo_plan.tasks(WG, list(REGIONS))  # the ci preset leaves them to the dataset: its regions and 'all'
    expected = len(tasks) * len(WG["lrs"]) * (WG["parents"] * len(WG["seeds"])
                                              + WG["heldout_parents"]["count"] * len(WG["heldout_parents"]["seeds"]))
    assert len(runs) == expected
    summary = json.loads((zoo_dir / "zoo.json").read_text())
    assert summary["runs_kept"] + summary["runs_dropped"] == len(runs)
    checkpoints = summary["runs_kept"] * (WG["checkpoints"] + 2)
    assert len(pd.read_csv(zoo_dir / "index.csv")) == summary["checkpoints"] == checkpoints
    for k in range(parents):
        assert all(torch.equal(load_checkpoint(r.with_suffix(""))[0]["params"][0], starts[k])
                   for r in runs if r.parts[-3] == f"parent{k}")
    out = wf / "results" / "weightgen" / PHANTOM
    gpt = json.loads((out / "gpt.json").read_text())
    zoo = load_zoo(zoo_dir / "index.csv")
    assert set(gpt["train_runs"]) == {r.name for r in zoo.select("train")}  # held-out and in-sample runs never
    assert {r.start for r in zoo.select("heldout")} == {"parent2"}
    evaluation = EvaluationFolder(out / "evaluation")
    samples = evaluation.table("samples")
    assert set(samples["kind"]) == {"oneshot", "align", "insample"}
    assert set(samples.loc[samples["kind"] != "insample", "start"]) == {"parent2"}  # every reported draw: held out
    assert set(samples.loc[samples["kind"] == "insample", "start"]) == {"parent0"}
    shots = evaluation.table("oneshot")
    assert len(shots) == len(tasks) * WG["sample"]["draws"]
    columns = ["oneshot_dice", "adam_best_dice", "lookup_dice", "mean_k_dice", "nearest_dice", "noise_dice",
               "novelty_ratio"]
    assert shots[columns].notna().all().all()
    assert (shots["nearest_d_nearest"] == 0).all() and (shots["lookup_d_nearest"] == 0).all()
    criteria = evaluation.table("criteria")
    assert set(criteria["task"]) == {*[t for t in tasks if t != "all"], "all"}  # every task judged, lesion too
    assert len(criteria) == 5 * (len(tasks) - 1) + 1
    methods = set(evaluation.table("unification")["method"])
    assert {"G.pt, every region prompted", "best multi-task checkpoint", "multi-task Adam (final)",
            "merge of every task vector", "merge without the lesion vector"} <= methods
    for fig in evaluation.figures():
        assert (evaluation.folder / fig["file"]).stat().st_size > 5000
    page = (wf / "results" / PHANTOM / "index.html").read_text()
    assert "Checkpoint diffusion (G.pt)" in page and "audit.png" in page and "held-out parents" in page
