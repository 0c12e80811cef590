"""G.pt's evaluation protocol: held-out parents, the criteria judge and its memoriser-relative criteria, the
val-chosen best checkpoint, steps to reach, the prompts, the novelty ratio, and the channel symmetry."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
import torch

from segzoo.config import load_config
from segzoo.models.flat import flatten, layout_of, load_vector
from segzoo.models.registry import ZOO_NETWORK, build_model
from segzoo.checkpoint import save_checkpoint
from segzoo.weightgen.evaluation import criteria
from segzoo.weightgen.evaluation.audit import Audit
from segzoo.weightgen.zoo.engine import Member
from segzoo.weightgen.evaluation.evaluate import Evaluation, val_best
from segzoo.weightgen.evaluation.finetune import first_step_reaching
from segzoo.weightgen.zoo.layer_scale import LayerScale
from segzoo.weightgen.gpt.sample import evaluation_prompts, lookup
from segzoo.weightgen.zoo.scoring import Scorer
from segzoo.weightgen.zoo.symmetry import Symmetry
from segzoo.weightgen.zoo.runs import Zoo, ZooRun, load_zoo, random_init, train_zoo_job, write_index

from conftest import REPO, prepared_phantom

CI = load_config(REPO / "config.yaml", REPO / "presets" / "ci.yaml", schema_path=REPO / "schemas" / "config.schema.yaml")
WG = CI["weightgen"]
REGIONS = ["sc", "canal", "lesion"]


def _run(name, task, dice, role="train", start="parent0", params=None):
    dice = np.asarray(dice, dtype=np.float32)
    params = torch.zeros(len(dice), 4) if params is None else params
    return ZooRun(name, role, task, 0.01, 0, start, params, dice, list(range(len(dice))), 0.01)


def _toy_zoo() -> Zoo:
    """Two training parents and two held-out parents, sc and all, val Dice by hand."""
    runs = {}
    for k, start in enumerate(("parent0", "parent1", "parent2", "parent3")):
        role = "train" if k < 2 else "heldout"
        for task in ("sc", "all"):
            dice = [[0.1, 0.1, 0.0], [0.3 + 0.1 * k, 0.2, 0.05], [0.2, 0.3, 0.1]]
            runs[f"{start}/{task}"] = _run(f"{start}/{task}", task, dice, role, start,
                                           torch.full((3, 4), float(k)))
    return Zoo(REGIONS, [["w", [4]]], {}, runs)


def test_val_best_picks_the_best_validation_checkpoint_of_the_parents_own_runs():
    zoo = _toy_zoo()
    assert val_best(zoo, "heldout", "sc", "parent3") == ("parent3/sc", 1)  # 0.6 on sc at row 1
    assert val_best(zoo, "heldout", "all", "parent2") == ("parent2/all", 1)  # mean over regions 0.25 beats 0.2
    assert val_best(zoo, "heldout", "sc", "parent0") is None  # parent0's runs are training runs
    assert val_best(zoo, "train", "lesion") is None


def test_prompts_start_from_held_out_parents_and_come_from_the_training_zoo():
    zoo = _toy_zoo()
    prompts = evaluation_prompts(zoo, ["sc", "all"], {"draws": 3, "prompts": 4, "insample_parents": 1})
    shots = prompts[prompts["kind"] == "oneshot"]
    assert len(shots) == 2 * 2 * 3  # held-out parents x tasks x draws
    assert set(shots["start"]) == {"parent2", "parent3"} and sorted(set(shots["draw"])) == [0, 1, 2]
    # the headline prompt is the best *training* checkpoint's val Dice (parent1: 0.4), not a held-out run's (0.6)
    assert shots.loc[shots["task"] == "sc", "prompt_sc"].unique().tolist() == [pytest.approx(0.4)]
    align = prompts[prompts["kind"] == "align"]
    assert len(align) == 2 * 4 and set(align["start"]) == {"parent2", "parent3"}  # spread over the parents
    insample = prompts[prompts["kind"] == "insample"]
    assert set(insample["start"]) == {"parent0"} and len(insample) == 2


def test_steps_to_reach_counts_the_first_scored_step_at_the_target():
    curve = pd.DataFrame({"step": [0, 1, 2, 5, 10], "task_dice": [0.1, 0.2, 0.5, 0.4, 0.7]})
    assert first_step_reaching(curve, 0.45) == 2
    assert first_step_reaching(curve, 0.1) == 0
    assert np.isnan(first_step_reaching(curve, 0.8))


def _tables(oneshot, memoriser, adam, r2, r2_lookup, sample_steps, parent_steps, novelty, unified, best_multi):
    tasks = ["sc", "lesion"]
    shots = pd.DataFrame([{"start": f"parent{p}", "task": t, "draw": d, "oneshot_dice": oneshot,
                           "adam_best_dice": adam, **{f"{m}_dice": memoriser for m in criteria.MEMORISER_NAMES},
                           "novelty_ratio": novelty, **{f"{m}_novelty_ratio": 0.0 for m in criteria.MEMORISER_NAMES}}
                          for t in tasks for p in (2, 3) for d in (0, 1)])
    aligned = pd.DataFrame([{"task": t, "n": 6, "r2": r2, "r2_lookup": r2_lookup} for t in tasks])
    tuned = pd.DataFrame([{"task": t, "start": "parent2", "draw": d, "sample_steps_to_best": sample_steps,
                           "parent_steps_to_best": parent_steps, "sample_budget": 25, "parent_budget": 100,
                           "target_dice": adam} for t in tasks for d in (0, 1)])
    unification = pd.DataFrame([{"start": "parent2", "method": criteria.UNIFIED, "mean_dice": unified},
                                {"start": "parent2", "method": criteria.BEST_MULTITASK, "mean_dice": best_multi},
                                {"start": "parent2", "method": criteria.MULTITASK_ADAM, "mean_dice": 0.5}])
    return {"oneshot": shots, "alignment": aligned, "finetune": tuned, "unification": unification}, tasks


def test_judge_fails_a_lookup_memoriser_and_passes_a_network_better_than_every_checkpoint():
    # the lookup memoriser as "G.pt": it *is* a training checkpoint (novelty 0), it ties itself, and its R² is the
    # lookup's; the one-shot share of Adam it may pass (a copy of the best checkpoint is as good as it)
    copy, tasks = _tables(0.7, 0.7, 0.7, 0.95, 0.95, np.nan, 30, 0.0, 0.6, 0.6)
    verdicts = criteria.judge(copy, tasks)
    failed = set(verdicts.loc[~verdicts["passed"], "criterion"].str.split(" ").str[:3].str.join(" "))
    assert {"one-shot above every", "prompt alignment R²", "novelty ratio (nearest", "Adam from the"} <= failed
    better, tasks = _tables(0.9, 0.7, 0.85, 0.9, 0.5, 2, 30, 0.8, 0.8, 0.6)
    verdicts = criteria.judge(better, tasks)
    assert verdicts["passed"].all(), verdicts[~verdicts["passed"]]
    assert set(verdicts["task"]) == {"sc", "lesion", "all"}


def test_a_task_without_draws_is_shown_failed_not_dropped():
    tables, _ = _tables(0.9, 0.7, 0.85, 0.9, 0.5, 2, 30, 0.8, 0.8, 0.6)
    verdicts = criteria.judge(tables, ["sc", "lesion", "canal"])
    canal = verdicts[verdicts["task"] == "canal"]
    assert len(canal) == 5 and not canal["passed"].any()


def test_a_permuted_network_computes_the_same_outputs_and_matching_undoes_it():
    torch.manual_seed(0)
    model = build_model(ZOO_NETWORK, 2, 3, features=[4, 8, 16]).double().eval()
    symmetry = Symmetry(model, layout_of(model))
    vector = flatten(model).double()
    generator = torch.Generator().manual_seed(1)
    perm = {u.name: torch.randperm(u.size, generator=generator) for u in symmetry.units}
    permuted = symmetry.apply(vector, perm)
    assert not torch.equal(permuted, vector)
    x = torch.randn(2, 2, 32, 32, 16, dtype=torch.float64)
    with torch.no_grad():
        a = load_vector(model, vector)(x).clone()
        b = load_vector(model, permuted)(x)
    assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert torch.equal(symmetry.apply(permuted, Symmetry.inverse(perm)), vector)
    assert torch.equal(symmetry.apply(permuted, symmetry.match(vector, permuted)), vector)
    other = flatten(build_model(ZOO_NETWORK, 2, 3, features=[4, 8, 16])).double()
    aligned = symmetry.apply(other, symmetry.match(vector, other))
    assert (aligned - vector).norm() < (other - vector).norm()  # matching brings a new init nearer


@pytest.fixture(scope="module")
def toy_zoo(tmp_path_factory):
    """A real zoo on the small phantom: parent0's short sc runs train, parent1's is held out."""
    root = tmp_path_factory.mktemp("protocol")
    pre, splits = prepared_phantom(root, seed=5, lesion_free_fraction=0)
    train = {k: CI["train"][k] for k in ("augment", "foreground_fraction", "workers", "bf16", "sw_batch_size")}
    settings = {**{k: WG[k] for k in ("features", "n_conv_per_stage", "batch_size", "patch_size", "val_patches",
                                      "test_patches", "parent_steps", "parent_lr")},
                "steps": 3, "checkpoints": 1, "train": train, "audit": {"neighbours": 2}}
    dirs = []
    for k, seeds in ((0, (0, 1)), (1, (0,))):
        start = root / f"parent{k}"
        save_checkpoint(start, {"params": random_init(settings, pre, 0, k)[None]}, {"start": f"parent{k}"})
        out = root / "runs" / f"parent{k}" / "job0"
        train_zoo_job(pre, splits, [{"task": "sc", "lr": 0.01, "seed": s} for s in seeds], start.with_suffix(""),
                      settings=settings, out=out, device="cpu", threads=1, data_seed=0)
        dirs.append(out)
    write_index(dirs, root / "index.csv", root / "zoo.json", 100.0, [], 1)
    return pre, splits, settings, load_zoo(root / "index.csv")


def test_memoriser_relative_criteria_on_a_real_toy_zoo(toy_zoo):
    """Through the evaluation: a 'G.pt' that returns the lookup checkpoint fails the memoriser criterion and has
    novelty 0; a network trained far longer from the held-out parent, better than every training checkpoint, passes."""
    pre, splits, settings, zoo = toy_zoo
    scorer = Scorer(pre, splits, settings, 0)
    held = zoo.select("heldout", "sc")[0]
    strong = {}
    scorer.engine.train(pre, splits, [Member("long", "sc", 0.01, 0, held.start_params, 60, {60})], settings=settings,
                        threads=1, on_snapshot=lambda step, group, weights: strong.update(v=weights[0].float()))
    training = torch.cat([r.params for r in zoo.select("train")])
    sc = zoo.regions.index("sc")
    assert scorer.volume_dice(strong["v"])[sc] > scorer.volume_dice_many(training)[:, sc].max()
    gpt = types.SimpleNamespace(scale=LayerScale.fit(zoo.layout, [r.params - r.start_params
                                                                   for r in zoo.select("train")]))
    prompts = evaluation_prompts(zoo, ["sc"], {"draws": 2, "prompts": 2, "insample_parents": 0})
    target = prompts[[f"prompt_{n}" for n in zoo.regions]].to_numpy(float)
    copies = torch.stack([zoo.runs[k[0]].params[k[1]] for k in (lookup(zoo, "sc", t) for t in target)])
    verdict = {}
    for name, params in (("lookup", copies), ("better", strong["v"].expand(len(prompts), -1).clone())):
        evaluation = Evaluation(zoo, gpt, params=params, prompts=prompts, sample_seconds=0.0, scorer=scorer,
                                settings=settings, seed=0)
        tables = {"oneshot": evaluation.oneshot(), "alignment": evaluation.alignment(),
                  "finetune": pd.DataFrame(), "unification": pd.DataFrame()}
        verdict[name] = criteria.judge(tables, ["sc"]).set_index("criterion")["passed"]
        if name == "lookup":
            assert (tables["oneshot"]["d_nearest"] == 0).all() and (tables["oneshot"]["novelty_ratio"] == 0).all()
    above = "one-shot above every memoriser (same parents and prompts, test volumes)"
    share = f"one-shot ≥ {criteria.ONESHOT_SHARE} × Adam from the same held-out parent (test volumes)"
    assert not verdict["lookup"][above] and verdict["better"][above] and verdict["better"][share]


def test_the_audit_lists_a_shared_start_once():
    """Every run of a parent begins at the parent: k copies of it must not pass for the k nearest checkpoints."""
    start = torch.zeros(4)
    runs = {f"r{k}": _run(f"r{k}", "sc", np.zeros((3, 3)), params=torch.stack([start, start + k + 1, start + k + 2]))
            for k in range(3)}
    zoo = Zoo(REGIONS, [["w", [4]]], {}, runs)
    audit = Audit(zoo, LayerScale([["w", [4]]], [1.0]), scorer=None, k=3, seed=0)
    assert len(audit.keys) == 1 + 3 * 2
    keys, d = audit.nearest(start + 0.1)
    assert keys[0] == ("r0", 0) and len({tuple(audit.checkpoint(key).tolist()) for key in keys}) == 3
