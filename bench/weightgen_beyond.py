"""Beyond the best checkpoint (a bench arm, reported without a threshold): can a learned generator's own draws give
more than the zoo's best? From each held-out parent and task, ``--draws`` networks of one generator (its samples'
arm, fresh noise each), then:

- the val-chosen draw (the best of them on the validation patches);
- their soup (the mean of the draws' weights: they share the start's channel order, so averaging is meaningful);
- their ensemble (the mean of the draws' probabilities, the comparison's ensemble path);

each against the lookup memoriser (the best training checkpoint on val) and Adam's val-chosen best from the same
parent, every Dice on the whole test volumes (the instrument's scoring).

    .venv/bin/python bench/weightgen_beyond.py --workdir /tmp/wg --generator graph_grad --draws 8

Prints a Markdown table (mean over held-out parents) for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segzoo.config import load_config
from segzoo.data.loader import regions_to_channels
from segzoo.data.preprocessed import Preprocessed
from segzoo.inference.dice import region_dice
from segzoo.inference.window import Member, ensemble_probabilities
from segzoo.io import read_json
from segzoo.models.flat import load_vector
from segzoo.weightgen.evaluation.generators import Context, task_dice
from segzoo.weightgen.evaluation.settings import EvaluationSettings
from segzoo.weightgen.graph.sample import generate, start_signals
from segzoo.weightgen.graph.train import load_graph
from segzoo.weightgen.zoo import plan
from segzoo.weightgen.zoo.network import zoo_model
from segzoo.weightgen.zoo.prompts import lookup, requests
from segzoo.weightgen.zoo.runs import load_zoo
from segzoo.weightgen.zoo.schedule import resolve
from segzoo.weightgen.zoo.scoring import Scorer

DATASET = "Dataset001_SpinalPhantom"


def ensemble_dice(vectors: torch.Tensor, pre: Preprocessed, cases: list[str], settings) -> np.ndarray:
    """Mean Dice per region over ``cases`` of the ensemble of ``vectors`` [K, P] (mean of their probabilities)."""
    members = [Member(load_vector(zoo_model(pre, settings).eval(), v), settings.patch_size) for v in vectors]
    rows = []
    for case in cases:
        probability = ensemble_probabilities(members, pre.image(case), torch.device("cpu"), overlap=0.25)
        reference = torch.from_numpy(regions_to_channels(pre.label(case), list(pre.regions.values())))[None]
        rows.append(region_dice(torch.from_numpy(probability > 0.5)[None], reference)[0])
    with np.errstate(all="ignore"):
        return np.nanmean(np.asarray(rows), axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a finished run's folder (Snakemake workdir)")
    parser.add_argument("--dataset", default=DATASET)
    parser.add_argument("--generator", default="graph_grad", help="a structure-shared arm: graph_<arm>")
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    results = args.workdir / "results"
    config = load_config(args.workdir / "config.yaml", schema_path=args.workdir / "schemas" / "config.schema.yaml")
    settings = EvaluationSettings.from_json(plan.evaluate_settings(config))
    torch.set_num_threads(args.threads)
    pre = Preprocessed(results / "preprocessed" / args.dataset)
    splits = results / "splits" / args.dataset / "splits.json"
    index = results / "zoo" / args.dataset / "index.csv"
    zoo = load_zoo(index)
    zoo_settings = resolve(settings.zoo, index.parent / "starts")
    scorer = Scorer(pre, splits, zoo_settings, config["seed"])
    cases = read_json(splits)["test"][:settings.test_cases or None]
    trained = load_graph(results / "weightgen" / args.dataset / args.generator)
    ctx = Context(zoo, config["seed"], settings.neighbours)
    table = requests(zoo, {**settings.sample, "draws": 1})
    table = table[(table["kind"] == "oneshot") & (table["role"] == "heldout") & (table["task"] != plan.ALL)
                  & table["task"].isin(trained.tasks)].reset_index(drop=True)
    cond = start_signals(trained, zoo, table, pre, splits, zoo_settings, config["seed"], "cpu")
    rows = []
    for k, request in table.iterrows():
        task, start = request["task"], request["start"]
        prompt = request[[f"prompt_{n}" for n in zoo.regions]].to_numpy(np.float32)
        many = lambda x: x[None].expand(args.draws, *x.shape)  # noqa: E731
        draws = generate(trained, many(zoo.start_list[start].params), many(cond[k]), [task] * args.draws,
                         start_metrics=many(torch.from_numpy(zoo.start_list[start].dice)),
                         target_metrics=many(torch.from_numpy(prompt)), ddim_steps=trained.settings.ddim_steps,
                         generator=torch.Generator().manual_seed(config["seed"] + k))
        val = zoo.task_dice(scorer.dice_many(draws, "val"), task)
        chosen = draws[int(np.argmax(val))]
        run, row = lookup(zoo, task, prompt.astype(float))
        picks = {"one draw": draws[0], "val-chosen of the draws": chosen, "soup of the draws": draws.mean(0),
                 "lookup memoriser": zoo.runs[run].params[row], "Adam's val-chosen best": ctx.adam_best(start, task)}
        volumes = scorer.volume_dice_many(torch.stack(list(picks.values())), cases)
        out = {name: task_dice(v, task, zoo.regions) for name, v in zip(picks, volumes)}
        out["ensemble of the draws"] = task_dice(ensemble_dice(draws, pre, cases, zoo_settings), task, zoo.regions)
        rows.append({"start": start, "task": task, **out})
    frame = pd.DataFrame(rows)
    means = frame.drop(columns="start").groupby("task").mean().T
    print(f"{args.generator}, {args.draws} draws per held-out parent and task, {len(cases)} test cases; whole test "
          f"volumes, mean over {frame['start'].nunique()} held-out parents:\n")
    print(means.to_markdown(floatfmt=".3f"))


if __name__ == "__main__":
    main()
