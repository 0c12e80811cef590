"""Beyond the best checkpoint (a bench arm, reported without a threshold): can G.pt from a held-out parent give
more than the zoo's best? Three ways, each against the parent's own val-chosen best (Adam) and the lookup
memoriser, on the whole test volumes:

- a prompt above the zoo's best (halfway from the best training val Dice to 1 on the task's regions);
- guidance on the prompt (w = 2; the null prediction is G.pt's for the start's own metrics as the target);
- the one-shot network plus 5 Adam steps (same task, learning rate and data seed as the parent's run).

    .venv/bin/python bench/weightgen_beyond.py --workdir /tmp/wg1        # a finished weight-generation stage

Prints a Markdown table (mean over held-out parents x draws) for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segzoo.data.preprocessed import Preprocessed
from segzoo.weightgen.zoo import plan
from segzoo.weightgen.zoo.engine import Member
from segzoo.weightgen.evaluation.evaluate import val_best
from segzoo.weightgen.gpt.train import load_gpt
from segzoo.weightgen.gpt.sample import _best_target, fill_untrained, generate, lookup
from segzoo.weightgen.zoo.scoring import Scorer
from segzoo.weightgen.zoo.runs import ALL, load_zoo, task_regions

DATASET = "Dataset001_SpinalPhantom"
GUIDANCE = 2.0
ADAM_STEPS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a finished run's folder (Snakemake workdir)")
    parser.add_argument("--dataset", default=DATASET)
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    results = args.workdir / "results"
    from segzoo.config import load_config

    config = load_config(args.workdir / "config.yaml", schema_path=args.workdir / "schemas" / "config.schema.yaml")
    settings = plan.evaluate_settings(config)
    scoring = {**settings["zoo"], "test_patches": settings["test_patches"], "audit": settings["audit"]}
    torch.set_num_threads(args.threads)
    pre = Preprocessed(results / "preprocessed" / args.dataset)
    splits = results / "splits" / args.dataset / "splits.json"
    zoo = load_zoo(results / "zoo" / args.dataset / "index.csv")
    gpt = load_gpt(results / "weightgen" / args.dataset / "gpt")
    scorer = Scorer(pre, splits, scoring, config["seed"])
    generator = torch.Generator().manual_seed(config["seed"])
    held = zoo.starts("heldout")
    rows = []
    for task in [t for t in zoo.tasks if t != ALL]:
        regions = task_regions(task, zoo.regions)
        best = fill_untrained(zoo, task, _best_target(zoo, task))
        above = best.copy()
        above[regions] = best[regions] + (1 - best[regions]) / 2
        above = fill_untrained(zoo, task, above)
        for start, run in held.items():
            n = args.draws
            starts = run.start_params.expand(n, -1)
            metrics = torch.tensor(run.dice[:1]).expand(n, -1)

            def draw(target, guidance=1.0):
                return generate(gpt, starts, [task] * n, start_metrics=metrics,
                                target_metrics=torch.tensor(target, dtype=torch.float32).expand(n, -1),
                                ddim_steps=config["weightgen"]["sample"]["ddim_steps"], generator=generator,
                                guidance=guidance)

            plain, high, guided = draw(best), draw(above), draw(best, GUIDANCE)
            key = val_best(zoo, "heldout", task, start)
            child = zoo.runs[key[0]]
            tuned = {}
            members = [Member(f"d{i}", task, child.lr, child.seed, plain[i], ADAM_STEPS, {ADAM_STEPS})
                       for i in range(n)]
            scorer.engine.train(pre, splits, members, settings=scoring, threads=args.threads,
                                on_snapshot=lambda step, group, w: tuned.update({m.name: v.float()
                                                                                 for m, v in zip(group, w)}))
            adam_more = torch.stack([tuned[f"d{i}"] for i in range(n)])
            looked = [lookup(zoo, task, best), lookup(zoo, task, above)]
            fixed = torch.stack([child.params[key[1]]] + [zoo.runs[k[0]].params[k[1]] for k in looked])
            dice = scorer.volume_dice_many(torch.cat([plain, high, guided, adam_more, fixed]))
            task_dice = np.nanmean(dice[:, regions], axis=1)
            for name, values in (("one-shot (best prompt)", task_dice[:n]), ("prompt above the best", task_dice[n:2 * n]),
                                 (f"guidance w={GUIDANCE:g}", task_dice[2 * n:3 * n]),
                                 (f"one-shot + {ADAM_STEPS} Adam steps", task_dice[3 * n:4 * n]),
                                 ("Adam from the parent (val-chosen best)", task_dice[4 * n:4 * n + 1]),
                                 ("lookup memoriser (best prompt)", task_dice[4 * n + 1:4 * n + 2]),
                                 ("lookup memoriser (prompt above)", task_dice[4 * n + 2:])):
                rows += [{"task": task, "start": start, "network": name, "dice": float(v)} for v in values]
    table = pd.DataFrame(rows)
    summary = table.pivot_table(index="network", columns="task", values="dice", aggfunc="mean", sort=False)
    print(f"{len(held)} held-out parents, {args.draws} draws each; whole test volumes; aligned: "
          f"{gpt.reference is not None}\n")
    print(summary.to_markdown(floatfmt=".3f"))
    print("\n" + json.dumps({"guidance": GUIDANCE, "adam_steps": ADAM_STEPS}))


if __name__ == "__main__":
    main()
