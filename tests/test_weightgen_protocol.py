"""The instrument: every generator through the same requests, scoring and criteria. On a real toy zoo (the small
phantom, two training and two held-out parents), the baselines fail the criteria that compare with them because of
what they are, a criterion a trivial generator passes is marked not discriminative, an ideal generator passes every
discriminative criterion, and a task whose runs were all dropped is judged FAIL, not dropped."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from segzoo.weightgen.evaluation import criteria
from segzoo.weightgen.evaluation.evaluate import Evaluation, write_evaluation
from segzoo.weightgen.evaluation.folder import EvaluationFolder
from segzoo.weightgen.evaluation.generators import Context, Generator, baselines
from segzoo.weightgen.evaluation.settings import EvaluationSettings
from segzoo.weightgen.zoo.engine import Member
from segzoo.weightgen.zoo.prompts import lookup, requests
from segzoo.weightgen.zoo.runs import load_zoo, write_index
from segzoo.weightgen.zoo.scoring import Scorer
from segzoo.weightgen.zoo.symmetry import Symmetry

from conftest import prepared_phantom
from zoo_helpers import ci_settings, index_settings, job, starts

NAMES = ["parent0", "parent1", "parent2", "parent3"]  # two training parents, two held out
ROLES = index_settings(parents=2, heldout_parents={"count": 2, "seeds": [0]}, seeds=[0], heldout_seeds=[])
SAMPLE = {"draws": 2, "prompts": 3, "insample_parents": 1}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A real zoo on the small phantom: 4 parents grown 6 steps, each with a 30-step run of canal and of all (budgets
    1, 10, 25 kept); training parents 0-1, held-out parents 2-3."""
    root = tmp_path_factory.mktemp("instrument")
    pre, splits = prepared_phantom(root, seed=5, lesion_free_fraction=0)
    settings = ci_settings(steps=30, checkpoints=3, budgets=[1, 10, 25], parent_steps=6)
    folder = starts(pre, splits, settings, NAMES, root / "zoo" / "starts")
    job(pre, splits, [(n, t, 0.02, 0) for n in NAMES for t in ("canal", "all")], folder, settings,
        root / "zoo" / "runs" / "job0")
    write_index([root / "zoo" / "runs" / "job0"], root / "zoo" / "index.csv", root / "zoo" / "zoo.json", ROLES,
                ["canal", "all"])
    return pre, splits, settings, root


def _settings(settings) -> EvaluationSettings:
    return EvaluationSettings(settings, SAMPLE, neighbours=2, test_cases=None, finetune_steps=6)


class Ideal(Generator):
    """A stand-in for a generator that works: Adam 300 steps from the start, the checkpoint best on the test volumes (a
    descendant better than every training checkpoint, by construction: a test double with the property the criteria
    are about, not a method; asserted below), or the checkpoint whose val Dice is nearest a lower prompt."""

    name, label, kind, budget = "ideal", "ideal", "learned", 0

    def __init__(self, pre, splits, settings, scorer: Scorer, zoo):
        self.curves = {}
        self.pre, self.splits, self.settings, self.scorer, self.zoo = pre, splits, settings, scorer, zoo

    def trajectory(self, ctx: Context, start: str, task: str):
        if (start, task) not in self.curves:
            kept = {}
            keep = set(range(0, 301, 10))
            self.scorer.engine.train(self.pre, self.splits, [Member("a", task, 0.01, 0, ctx.start_params(start), 300,
                                                                    keep)],
                                     settings=self.settings, threads=1,
                                     on_snapshot=lambda step, group, w: kept.update({step: w[0].float()}))
            vectors = torch.stack([kept[s] for s in sorted(kept)])
            dice = self.zoo.task_dice(self.scorer.dice_many(vectors, "val"), task)
            test = self.zoo.task_dice(np.nan_to_num(self.scorer.volume_dice_many(vectors)), task)
            self.curves[(start, task)] = (vectors, dice, test)
        return self.curves[(start, task)]

    def one(self, ctx, row):
        vectors, dice, test = self.trajectory(ctx, row["start"], row["task"])
        if row["kind"] != "align":
            return vectors[int(np.argmax(test))]
        prompt = float(self.zoo.task_dice(np.array([row[f"prompt_{n}"] for n in ctx.regions]), row["task"]))
        return vectors[int(np.argmin(np.abs(dice - prompt)))]


@pytest.fixture(scope="module")
def judged(toy):
    pre, splits, settings, root = toy
    zoo = load_zoo(root / "zoo" / "index.csv")
    scorer = Scorer(pre, splits, settings, 0)
    generators = {**baselines(settings.budgets, settings.steps), "ideal": Ideal(pre, splits, settings, scorer, zoo)}
    evaluation = Evaluation(zoo, generators, scorer, _settings(settings), seed=0)
    summary = write_evaluation(evaluation, {}, root / "evaluation")
    return evaluation, EvaluationFolder(root / "evaluation"), summary


def test_every_generator_answers_every_request_and_only_held_out_starts_are_tested(judged):
    evaluation, folder, _ = judged
    networks = folder.table("networks")
    assert networks.groupby("generator").size().nunique() == 1
    assert set(networks.loc[networks["kind"] == "oneshot", "start"]) == {"parent2", "parent3"}
    assert set(networks.loc[networks["kind"] == "insample", "start"]) == {"parent0"}
    assert evaluation.adam_learned["canal"] >= criteria.LEARNED_BY_ADAM  # the toy's canal is learned: it is judged


def test_the_baselines_are_what_they_say(judged):
    """copy is the start; lookup is a training checkpoint (distance 0 in aligned coordinates); noise lies as far from
    the start as its own Adam best; Adam@b is the start's run after b steps."""
    evaluation, _, _ = judged
    ctx, req = evaluation.context, evaluation.requests
    shots = req.index[(req["kind"] == "oneshot") & (req["task"] == "canal")]
    for k in shots:
        start = req.loc[k, "start"]
        assert torch.equal(evaluation.params["copy"][k], ctx.start_params(start))
        best = ctx.adam_best(start, "canal")
        assert float(ctx.distance(evaluation.params["noise"][k], ctx.start_params(start))) == pytest.approx(
            float(ctx.distance(best, ctx.start_params(start))), rel=1e-4)
        run = ctx.own_runs(start, "canal")[0]
        assert torch.equal(evaluation.params["adam10"][k], run.params[run.at_step(10)])
    networks = evaluation.networks
    looked = networks[(networks["generator"] == "lookup") & (networks["kind"] == "oneshot")]
    assert (looked["d_train"] < 1e-3).all()  # a training checkpoint, permuted into the start's order
    pick = lookup(evaluation.zoo, "canal", req.loc[shots[0], [f"prompt_{n}" for n in ctx.regions]].to_numpy(float))
    run = evaluation.zoo.runs[pick[0]]
    assert float(ctx.distance(ctx.to_reference(evaluation.params["lookup"][shots[0]], req.loc[shots[0], "start"]),
                              ctx.to_reference(run.params[pick[1]], run.start))) < 1e-3


def test_trivial_generators_fail_the_criteria_that_compare_with_them_by_what_they_are(judged):
    _, folder, _ = judged
    table = folder.table("criteria")
    heldout = table[(table["starts"] == "heldout") & (table["task"] == "canal")].set_index(["generator", "criterion"])
    for name in ("copy", "task_vector", "noise"):  # not above itself: its paired difference with itself is 0
        assert not heldout.loc[(name, "above"), "passed"]
        assert f"{name} +0.000 [+0.000, +0.000]" in heldout.loc[(name, "above"), "detail"]
    for criterion in ("descends", "equal_budget", "one_gradient"):  # a training checkpoint descends from no start
        assert not heldout.loc[("lookup", criterion), "passed"]


def test_a_criterion_a_trivial_generator_passes_is_not_discriminative_and_never_counts(judged):
    _, folder, summary = judged
    table = folder.table("criteria")
    passed_by_trivial = table[table["generator"].isin(criteria.TRIVIAL) & table["passed"]]
    assert len(passed_by_trivial)  # the lookup is within 0.05 of itself, at least
    for _, row in passed_by_trivial.iterrows():
        same = table[(table["starts"] == row["starts"]) & (table["task"] == row["task"])
                     & (table["criterion"] == row["criterion"])]
        assert not same["discriminative"].any() and not same["counts"].any()
    looked = table[(table["generator"] == "lookup") & (table["criterion"] == "lookup") & (table["task"] == "canal")]
    assert looked["passed"].all() and not looked["discriminative"].any()
    counted = table[(table["generator"] == "ideal") & table["counts"]]
    assert summary["headline"]["ideal"]["heldout"] == {"passed": int(counted["passed"].sum()), "of": len(counted),
                                                       "rows": int(table[table["generator"] == "ideal"]
                                                                   ["applicable"].sum())}


def test_a_network_better_than_every_training_checkpoint_passes_every_discriminative_criterion(judged):
    evaluation, folder, _ = judged
    networks = folder.table("networks")
    ideal = networks[(networks["generator"] == "ideal") & (networks["kind"] == "oneshot") & (networks["task"] ==
                                                                                            "canal")]
    training = evaluation.scores.volumes(torch.cat([r.params for r in evaluation.zoo.select("train", "canal")]))
    assert ideal["task_dice"].min() > evaluation.zoo.task_dice(training, "canal").max()
    table = folder.table("criteria")
    mine = table[(table["generator"] == "ideal") & table["counts"]]
    assert len(mine) >= 3
    assert mine["passed"].all(), mine[~mine["passed"]][["task", "criterion", "detail"]]


def test_a_task_whose_runs_were_all_dropped_is_judged_failed(toy, tmp_path):
    pre, splits, settings, root = toy
    zoo_dir = tmp_path / "zoo"
    shutil.copytree(root / "zoo", zoo_dir)
    for run in (zoo_dir / "runs" / "job0").glob("*_canal_*"):  # every canal run gone (as if dropped)
        run.unlink()
    (zoo_dir / "index.csv").unlink()
    (zoo_dir / "zoo.json").unlink()
    write_index([zoo_dir / "runs" / "job0"], zoo_dir / "index.csv", zoo_dir / "zoo.json", ROLES, ["canal", "all"])
    zoo = load_zoo(zoo_dir / "index.csv")
    assert zoo.tasks == ["canal", "all"] and not zoo.select("train", "canal")
    scorer = Scorer(pre, splits, settings, 0)
    generators = {n: g for n, g in baselines(settings.budgets, settings.steps).items() if n in ("copy", "adam_best")}
    evaluation = Evaluation(zoo, generators, scorer, _settings(settings), seed=0)
    write_evaluation(evaluation, {}, tmp_path / "evaluation")
    table = EvaluationFolder(tmp_path / "evaluation").table("criteria")
    canal = table[table["task"] == "canal"]
    assert len(canal) == len(generators) * (len(criteria.CRITERIA) - 1) and not canal["passed"].any()
    assert canal["detail"].str.contains("no training run of this task was kept").all()


def test_requests_put_every_prompt_to_every_held_out_start(toy):
    _, _, _, root = toy
    zoo = load_zoo(root / "zoo" / "index.csv")
    table = requests(zoo, SAMPLE)
    align = table[table["kind"] == "align"]
    assert (align.groupby(["task", "start"]).size() == SAMPLE["prompts"]).all()
    assert set(align["start"]) == {"parent2", "parent3"}
    shots = table[table["kind"] == "oneshot"]
    assert len(shots) == 2 * 2 * SAMPLE["draws"]  # held-out parents x tasks x draws


def test_statistics_nest_draws_in_starts_and_state_what_they_resolve():
    networks = pd.DataFrame([{"generator": "g", "kind": "oneshot", "role": "heldout", "task": "sc", "start": s,
                              "task_dice": v, "d_train": 1.0, "d_own": 0.5}
                             for s, values in (("a", (0.5, 0.7)), ("b", (0.2, 0.2)), ("c", (0.9, 0.9)))
                             for v in values])
    per = criteria._PerStart(networks)
    assert per.values("g", "sc", "heldout").to_dict() == {"a": pytest.approx(0.6), "b": 0.2, "c": 0.9}
    mean, low, high = criteria.mean_ci(per.values("g", "sc", "heldout"), 0)
    assert mean == pytest.approx((0.6 + 0.2 + 0.9) / 3) and low <= mean <= high
    paired = np.array([0.1, 0.12, 0.08, 0.11, 0.09, 0.1, 0.13, 0.07])
    assert criteria.smallest_difference(paired) == pytest.approx(2.8 * paired.std(ddof=1) / np.sqrt(8))


def test_a_permuted_network_computes_the_same_outputs_and_matching_undoes_it():
    from segzoo.models.flat import flatten, layout_of, load_vector
    from segzoo.models.registry import ZOO_NETWORK, build_model

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
