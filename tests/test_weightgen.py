"""Checkpoint diffusion: exact parameter round trips, zoo starts and runs, G.pt, the evaluation's yardsticks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from segzoo.data.loader import PatchBatches
from segzoo.data.phantom import REGIONS
from segzoo.data.preprocessed import Preprocessed
from segzoo.errors import SegzooError
from segzoo.io import read_json
from segzoo.models.registry import ZOO_NETWORK, build_model
from segzoo.checkpoint import load_checkpoint, save_checkpoint
from segzoo.weightgen.evaluation import merge
from segzoo.weightgen.evaluation.evaluate import r_squared
from segzoo.weightgen.evaluation.folder import EvaluationFolder
from segzoo.weightgen.gpt.model import GPT, Tokenizer
from segzoo.weightgen.gpt.sample import generate
from segzoo.weightgen.gpt.train import load_gpt, train_gpt
from segzoo.weightgen.zoo import plan as zoo_plan
from segzoo.models.flat import flatten, layout_of, load_vector, unflatten
from segzoo.weightgen.zoo.layer_scale import LayerScale
from segzoo.weightgen.zoo.prompts import lookup
from segzoo.weightgen.zoo.runs import Zoo, ZooRun, load_zoo, write_index
from segzoo.weightgen.zoo.scoring import Scorer
from segzoo.weightgen.zoo.train import random_init

from conftest import PHANTOM, prepared_phantom, run_segzoo, snakemake, workflow_copy
from zoo_helpers import CI, WG, ci_settings, index_settings, job, starts


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepared_phantom(tmp_path_factory.mktemp("wg"), seed=5, lesion_free_fraction=0)


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
    settings = ci_settings(steps=4, checkpoints=2, parent_steps=3, budgets=[])
    folder = starts(pre, splits, settings, ["parent0", "parent1", "init2"], tmp_path / "starts")
    parent = read_json(folder / "parent0.json")
    parent_params = load_checkpoint(folder / "parent0")[0]["params"][0]
    assert parent["steps"] == 3 and not torch.equal(parent_params, random_init(settings, pre, 0, 0))
    assert not torch.equal(parent_params, load_checkpoint(folder / "parent1")[0]["params"][0])  # own inits
    job(pre, splits, [("parent0", "sc", 0.01, 0), ("parent0", "sc", 0.01, 1), ("init2", "sc", 0.01, 0)], folder,
        settings, tmp_path / "runs" / "job0")
    for seed in (0, 1):  # spawn: every child's row 0 is the parent's final weights
        row = load_checkpoint(tmp_path / "runs" / "job0" / f"parent0_sc_lr0.01_seed{seed}")[0]["params"][0]
        assert torch.equal(row, parent_params)
    fresh = load_checkpoint(tmp_path / "runs" / "job0" / "init2_sc_lr0.01_seed0")[0]["params"][0]
    assert torch.equal(fresh, random_init(settings, pre, 0, 2))  # a fresh init: the untrained init itself
    with pytest.raises(SegzooError, match="already exists"):  # a job never overwrites a folder
        job(pre, splits, [("parent0", "sc", 0.01, 0)], folder, settings, tmp_path / "runs" / "job0")
    with pytest.raises(SegzooError, match="parent7.safetensors: missing"):
        job(pre, splits, [("parent7", "sc", 0.01, 0)], folder, settings, tmp_path / "runs" / "job1")


def test_zoo_run_keeps_its_start_and_untrained_heads_and_is_reproducible(prepared, tmp_path):
    pre, splits = prepared
    settings = ci_settings()
    folder = starts(pre, splits, settings, ["init0"], tmp_path / "starts", mode="shared")
    meta = job(pre, splits, [("init0", "sc", 0.01, 0)], folder, settings, tmp_path / "a")[0]
    params = load_checkpoint(tmp_path / "a" / "init0_sc_lr0.01_seed0")[0]["params"]
    steps = meta["checkpoints"]["step"]
    budgets = {b for b in WG["budgets"] if b < WG["steps"]}
    assert steps[0] == 0 and steps[-1] == WG["steps"] and budgets <= set(steps)  # the budgets are always kept
    assert WG["checkpoints"] + 2 <= len(steps) <= WG["checkpoints"] + 2 + len(budgets)
    last_head = f"decoder.seg_layers.{len(settings.features) - 2}.weight"  # the one head in use
    heads, heads0 = (unflatten(params[i], meta["layout"])[last_head] for i in (-1, 0))
    sc = meta["regions"].index("sc")
    others = [r for r in range(3) if r != sc]
    assert torch.equal(heads[others], heads0[others])  # single-task: the other heads stay at the start
    assert not torch.equal(heads[sc], heads0[sc])
    assert meta["architecture"]["network_class_name"].endswith("PlainConvUNet")
    job(pre, splits, [("init0", "sc", 0.01, 0)], folder, settings, tmp_path / "b")
    run = "init0_sc_lr0.01_seed0.safetensors"
    assert (tmp_path / "a" / run).read_bytes() == (tmp_path / "b" / run).read_bytes()


def _zoo(root, pre, splits, settings, tasks=("all",), seeds=(0, 1), names=("parent0",)) -> list:
    """Starts ``names`` and one zoo job of their runs (every task x seed), laid out as the rules lay them out."""
    folder = starts(pre, splits, settings, list(names), root / "starts")
    runs = [(n, task, 0.02, s) for n in names for task in tasks for s in seeds]
    job(pre, splits, runs, folder, settings, root / "runs" / "job0")
    return [root / "runs" / "job0"]


def test_index_roles_and_dropped_runs(prepared, tmp_path):
    pre, splits = prepared
    settings = ci_settings()
    dirs = _zoo(tmp_path, pre, splits, settings, seeds=(0, 1), names=("parent0", "parent1"))
    tensors, meta = load_checkpoint(dirs[0] / "parent1_all_lr0.02_seed1")
    broken = tensors["params"].clone()
    broken[1, 10] = float("nan")
    bad = tmp_path / "runs" / "job9"
    save_checkpoint(bad / "parent0_sc_lr0.02_seed0", {"params": broken},
                    {k: v for k, v in meta.items() if k != "tensors_sha256"} | {"start": "parent0", "task": "sc"})
    roles = index_settings(parents=1, heldout_parents={"count": 1, "seeds": [0, 1]}, heldout_seeds=[1])
    summary = write_index(dirs + [bad], tmp_path / "index.csv", tmp_path / "zoo.json", roles, ["sc", "all"])
    assert summary["runs_kept"] == 4 and summary["runs_dropped"] == 1
    assert summary["dropped"][0]["reason"] == "non-finite weights"
    assert summary["runs_per_role"] == {"train": 1, "insample": 1, "heldout": 2}
    assert summary["tasks"] == ["sc", "all"] and summary["checkpoints_per_task"]["sc"] == 0  # sc: every run dropped
    zoo = load_zoo(tmp_path / "index.csv")  # parent1 is held out (parents=1): its runs are a held-out parent's
    assert {r.start for r in zoo.select("heldout")} == {"parent1"} and list(zoo.starts("heldout")) == ["parent1"]
    assert [s.name for s in zoo.starts_of("heldout")] == ["parent1"] and zoo.tasks == ["sc", "all"]
    assert [r.seed for r in zoo.select("insample")] == [1]  # a held-out seed of a training parent: in-sample
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OSError):  # the second file cannot be written: the first must not stay behind
        write_index(dirs, tmp_path / "index2.csv", blocker / "zoo.json", roles, ["all"])
    assert not (tmp_path / "index2.csv").exists()


def test_gpt_overfits_a_tiny_zoo_from_its_start(prepared, tmp_path):
    """Loss falls, and a network sampled from a training run's start, prompted with that run's final
    metrics, reaches them within 0.1 Dice on every region (in-sample: what G.pt does at the least)."""
    pre, splits = prepared
    settings = ci_settings(steps=30, checkpoints=10)
    dirs = _zoo(tmp_path, pre, splits, settings, seeds=(0, 1))
    write_index(dirs, tmp_path / "index.csv", tmp_path / "zoo.json", index_settings(parents=1), ["all"])
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
    dirs = _zoo(tmp_path, pre, splits, ci_settings(), tasks=("sc",))
    write_index(dirs, tmp_path / "index.csv", tmp_path / "zoo.json", index_settings(parents=1), ["sc"])
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
    """The real ci pipeline (two training parents, one held-out parent) ran starts -> zoo jobs -> index -> G.pt and
    the structure-shared generator's arms -> samples -> the instrument; check what each wrote."""
    wf, _ = ci_run
    zoo_dir = wf / "results" / "zoo" / PHANTOM
    names = zoo_plan.starts(WG)
    assert (WG["parents"], WG["heldout_parents"]["count"], WG["fresh_inits"]["count"]) == (2, 1, 1)
    assert names == ["parent0", "parent1", "parent2", "init3"]
    assert sorted(p.name for p in (zoo_dir / "starts").glob("*.safetensors")) == sorted(f"{n}.safetensors" for n in names)
    start = {n: load_checkpoint(zoo_dir / "starts" / n)[0]["params"][0] for n in names}
    assert not any(torch.equal(start[a], start[b]) for a in names for b in names if a < b)  # own inits
    tasks = zoo_plan.tasks(WG, list(REGIONS))  # the ci preset leaves them to the dataset: its regions and 'all'
    jobs = zoo_plan.jobs(WG, tasks)
    assert sorted(p.relative_to(zoo_dir).as_posix() for p in (zoo_dir / "runs").glob("job*")) == \
        sorted(j["folder"] for j in jobs) and all(len(j["members"]) <= WG["members_per_job"] for j in jobs)
    runs = sorted((zoo_dir / "runs").glob("job*/*_seed*.safetensors"))
    assert len(runs) == len(zoo_plan.runs(WG, tasks)) == len(tasks) * len(WG["lrs"]) * (
        WG["parents"] * len(WG["seeds"]) + WG["heldout_parents"]["count"] * len(WG["heldout_parents"]["seeds"])
        + WG["fresh_inits"]["count"] * len(WG["fresh_inits"]["seeds"]))
    assert torch.equal(start["init3"], random_init(ci_settings(), Preprocessed(wf / "results" / "preprocessed" / PHANTOM),
                                                   CI["seed"], 3))  # a fresh init: never grown
    for run in runs:  # every run starts at its start, whatever job trained it
        name = run.name.split("_")[0]
        assert torch.equal(load_checkpoint(run.with_suffix(""))[0]["params"][0], start[name])
    summary = json.loads((zoo_dir / "zoo.json").read_text())
    assert summary["runs_kept"] + summary["runs_dropped"] == len(runs) and summary["tasks"] == tasks
    assert len(pd.read_csv(zoo_dir / "index.csv")) == summary["checkpoints"]
    out = wf / "results" / "weightgen" / PHANTOM
    zoo = load_zoo(zoo_dir / "index.csv")
    assert {r.start for r in zoo.select("heldout")} == {"parent2"}
    trained_on = {r.name for r in zoo.select("train")}
    assert set(json.loads((out / "gpt.json").read_text())["train_runs"]) == trained_on  # never a held-out run
    for arm in WG["graph"]["arms"]:
        sidecar = json.loads((out / f"graph_{arm}.json").read_text())
        assert set(sidecar["train_runs"]) == trained_on and sidecar["budget"] >= 1
    evaluation = EvaluationFolder(out / "evaluation")
    networks = evaluation.table("networks")
    learned = {"gpt", *(f"graph_{arm}" for arm in WG["graph"]["arms"])}
    assert learned | {"copy", "task_vector", "lookup", "nearest", "mean_k", "noise", "adam_best"} <= \
        set(networks["generator"])
    assert set(networks["kind"]) == {"oneshot", "align", "insample"}
    assert set(networks.loc[networks["kind"] == "oneshot", "start"]) == {"parent2", "init3"}  # the test starts
    assert set(networks.loc[networks["kind"] == "align", "start"]) == {"parent2"}
    assert set(networks.loc[networks["kind"] == "insample", "start"]) == {"parent0"}
    per_generator = networks.groupby("generator").size()
    assert per_generator.nunique() == 1  # every generator answered the same requests
    criteria = evaluation.table("criteria")
    assert set(criteria["task"]) == set(tasks) and set(criteria["generator"]) == set(networks["generator"])
    assert set(criteria["starts"]) == {"heldout", "fresh"}  # each kind of test start judged on its own
    assert {"discriminative", "applicable", "counts"} <= set(criteria.columns)
    methods = set(evaluation.table("unification")["generator"])
    assert learned | {"merge of every task vector", "merge without the lesion vector"} <= methods
    for fig in evaluation.figures():
        assert (evaluation.folder / fig["file"]).stat().st_size > 5000
    page = (wf / "results" / PHANTOM / "index.html").read_text()
    assert "every generator through every criterion" in page and "audit.png" in page and "held-out parents" in page


def test_the_zoo_is_sized_from_the_data_its_patch_from_the_plan_its_length_from_a_pilot(prepared, tmp_path):
    """weightgen.patch_size null takes the compared models' planned patch (rounded to the zoo network's divisor);
    weightgen.plateau trains a pilot run and gives every run the steps it took to stop improving, within the cap and
    past the largest budget; every zoo job reads that schedule."""
    from segzoo.io import write_json
    from segzoo.weightgen.zoo.schedule import plateau_step, resolve

    assert plateau_step([10, 20, 30, 40, 50], [0.2, 0.5, 0.501, 0.49, 0.5], patience=3, min_delta=0.005) == 20
    assert plateau_step([10, 20, 30], [0.2, 0.5, 0.6], patience=2, min_delta=0.005) is None  # still improving
    pre, splits = prepared
    plans = tmp_path / "plans.json"
    write_json(plans, {"models": {"a": {"patch_size": [19, 16, 13]}, "b": {"patch_size": [24, 17, 16]}}})
    settings = ci_settings(patch_size=None, steps=12, budgets=[1, 2], plateau={"every": 2, "patience": 2,
                                                                               "min_delta": 0.0})
    with pytest.raises(SegzooError, match="pass --plans"):
        starts(pre, splits, settings, ["init0"], tmp_path / "nope", mode="shared")
    from segzoo.weightgen.zoo.train import train_starts

    train_starts(pre, splits, "shared", ["init0"], settings=settings, out=tmp_path / "starts", device="cpu",
                 threads=1, data_seed=0, plans=plans)
    schedule = read_json(tmp_path / "starts" / "schedule.json")
    assert schedule["patch_size"] == [16, 16, 12]  # the smallest planned sides, down to a multiple of 4
    assert 3 <= schedule["steps"] <= 12 and schedule["pilot"]["steps"] == [2, 4, 6, 8, 10, 12]
    stop = plateau_step(schedule["pilot"]["steps"], schedule["pilot"]["val_dice"], patience=2, min_delta=0.0)
    assert schedule["steps"] == (12 if stop is None else max(3, stop))
    resolved = resolve(settings, tmp_path / "starts")
    assert resolved.patch_size == [16, 16, 12] and resolved.steps == schedule["steps"]
    meta = job(pre, splits, [("init0", "sc", 0.01, 0)], tmp_path / "starts", settings, tmp_path / "runs" / "job0")[0]
    assert meta["checkpoints"]["step"][-1] == schedule["steps"]
