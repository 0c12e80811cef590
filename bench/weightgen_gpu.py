"""The weight-generation stage on one GPU machine (or the CPU) without Snakemake: the CLI verbs the rules run, zoo
jobs several at a time, and the init-scaling arm (both learned generators, G.pt and the structure-shared one,
trained on the first 4, 8, ... training parents, or per_seed inits, and judged from the same held-out starts).

    # on a machine with the project installed: the resolved configuration, as JSON
    .venv/bin/python bench/weightgen_gpu.py --resolve config.yaml presets/gpu.yaml presets/gpu_lent.yaml > wg.json
    # on the GPU machine (segzoo importable, e.g. PYTHONPATH=src):
    python bench/weightgen_gpu.py --config wg.json --workdir /tmp/wg --parallel 8 --device cuda
    python bench/weightgen_gpu.py --config wg.json --workdir /tmp/wg --init-scaling 16,64,256,1024
    # the CPU arm: the demo's zoo with 32 training parents
    .venv/bin/python bench/weightgen_gpu.py --resolve config.yaml bench/init_scaling_cpu.yaml > wg.json
    .venv/bin/python bench/weightgen_gpu.py --config wg.json --workdir /tmp/wg-inits --device cpu --parallel 2 \
        --init-scaling 4,8,16,32

Snakemake gives each GPU job a GPU of its own; here every job shares the one GPU
(``CUDA_VISIBLE_DEVICES=0``), which is what a small zoo network wants. Prints the time of each phase and
the criteria table (as bench/weightgen.py), for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from segzoo.weightgen.evaluation.criteria import matrix  # noqa: E402
from segzoo.weightgen.evaluation.folder import EvaluationFolder  # noqa: E402
from segzoo.weightgen.zoo import plan  # noqa: E402


def resolve(paths: list[str]) -> None:
    from segzoo.config import load_config

    print(json.dumps(load_config(*paths, schema_path=REPO / "schemas" / "config.schema.yaml"), indent=1))


class Stage:
    def __init__(self, config: dict, workdir: Path, device: str, parallel: int):
        self.config, self.work, self.device, self.parallel = config, workdir, device, parallel
        self.wg = config["weightgen"]
        self.pre, self.splits = workdir / "pre", workdir / "splits.json"
        self.zoo = workdir / "zoo"
        path = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
        self.env = {**os.environ, "PYTHONPATH": path, "CUDA_VISIBLE_DEVICES": "0",
                    "PYTHONUNBUFFERED": "1"}
        self.seconds: dict[str, float] = {}

    def segzoo(self, *args, log: str) -> None:
        with open(self.work / "logs" / f"{log}.log", "w") as out:
            code = subprocess.run([sys.executable, "-m", "segzoo", *map(str, args)], env=self.env, stdout=out,
                                  stderr=subprocess.STDOUT).returncode
        if code:
            sys.exit(f"segzoo {args[0]} failed; see {self.work / 'logs' / f'{log}.log'}:\n"
                     + (self.work / "logs" / f"{log}.log").read_text()[-3000:])

    def timed(self, name: str, fn, *args) -> None:
        began = time.perf_counter()
        fn(*args)
        self.seconds[name] = time.perf_counter() - began
        print(f"{name}: {self.seconds[name]:.0f} s", file=sys.stderr, flush=True)

    def data(self) -> None:
        c, p = self.config, self.config["phantom"]
        self.segzoo("phantom", "--out", self.work / "raw", "--cases", p["cases"], "--seed", c["seed"], "--shape",
                    *p["shape"], "--spacing", *p["spacing"], log="phantom")
        self.segzoo("preprocess", self.work / "raw", "--out", self.pre, log="preprocess")
        self.segzoo("splits", self.pre, "--out", self.splits, "--seed", c["seed"], "--val-fraction",
                    c["splits"]["val_fraction"], "--test-fraction", c["splits"]["test_fraction"], log="splits")

    def common(self, settings: dict) -> list:
        return ["--data", self.pre, "--splits", self.splits, "--data-seed", self.config["seed"], "--settings",
                json.dumps(settings), "--device", self.device]

    def starts(self) -> None:
        settings = plan.zoo_settings(self.config)
        self.segzoo("zoo-starts", *self.common(settings), *[a for s in plan.starts(self.wg) for a in ("--start", s)],
                    "--out", self.zoo / "starts", log="starts")

    def jobs(self) -> None:
        regions = list(json.loads((self.pre / "preprocess.json").read_text())["regions"])
        settings = plan.zoo_settings(self.config)
        self.tasks = plan.tasks(self.wg, regions)

        def one(job):
            runs = [a for r in job["members"] for a in ("--run", r["start"], r["task"], r["lr"], r["seed"])]
            self.segzoo("zoo", *self.common(settings), *runs, "--starts", self.zoo / "starts", "--out",
                        self.zoo / job["folder"], log=job["folder"].replace("/", "_"))

        with ThreadPoolExecutor(self.parallel) as pool:
            list(pool.map(one, plan.jobs(self.wg, self.tasks)))
        self.job_dirs = [self.zoo / j["folder"] for j in plan.jobs(self.wg, self.tasks)]

    def index(self) -> None:
        self.segzoo("zoo-index", *self.job_dirs, "--settings",
                    json.dumps({**plan.index_settings(self.config), "tasks": self.tasks}),
                    "--index", self.zoo / "index.csv", "--summary", self.zoo / "zoo.json", log="index")

    def generators(self, index: Path, out: Path) -> None:
        """G.pt and every arm of the structure-shared generator trained on ``index``'s training runs, sampled, and the
        instrument over them and the baselines (into ``out``)."""
        seed, wg = self.config["seed"], self.wg
        zoo = plan.zoo_settings(self.config)
        self.segzoo("gpt-train", "--index", index, "--seed", seed, "--settings", json.dumps({"gpt": wg["gpt"]}),
                    "--out", out / "gpt", "--device", self.device, log=f"gpt_train_{out.name}")
        self.segzoo("gpt-sample", "--gpt", out / "gpt", "--index", index, "--seed", seed, "--settings",
                    json.dumps({"sample": wg["sample"]}), "--out", out / "samples", "--device", self.device,
                    log=f"gpt_sample_{out.name}")
        samples, losses = [out / "samples"], [f"gpt={out / 'gpt_loss.csv'}"]

        def arm(name: str) -> None:
            self.segzoo("graph-train", *self.common({**zoo, "graph": wg["graph"]}), "--index", index, "--arm", name,
                        "--seed", seed, "--out", out / f"graph_{name}", log=f"graph_{name}_train_{out.name}")
            self.segzoo("graph-sample", *self.common({**zoo, "sample": wg["sample"]}), "--index", index, "--model",
                        out / f"graph_{name}", "--seed", seed, "--out", out / f"graph_{name}_samples",
                        log=f"graph_{name}_sample_{out.name}")

        with ThreadPoolExecutor(self.parallel) as pool:
            list(pool.map(arm, wg["graph"]["arms"]))
        samples += [out / f"graph_{a}_samples" for a in wg["graph"]["arms"]]
        losses += [f"graph_{a}={out / f'graph_{a}_loss.csv'}" for a in wg["graph"]["arms"]]
        self.segzoo("weightgen-evaluate", *self.common(plan.evaluate_settings(self.config)), "--index", index,
                    "--seed", seed, *[a for s in samples for a in ("--samples", s)],
                    *[a for loss in losses for a in ("--loss", loss)], "--out", out / "evaluation",
                    log=f"evaluate_{out.name}")


def subset_index(stage: Stage, n: int) -> Path:
    """index.csv with the training runs of the first ``n`` training starts (parents, or per_seed inits; every
    held-out and in-sample run kept), beside the runs."""
    import pandas as pd

    index = pd.read_csv(stage.zoo / "index.csv")
    train = index[index["role"] == "train"]["start"].unique()
    starts = sorted(train, key=plan.start_index)[:n]
    if len(starts) < n:
        sys.exit(f"--init-scaling {n}: the zoo has only {len(starts)} training starts")
    kept = index[(index["role"] != "train") | index["start"].isin(starts)]
    folder = stage.work / f"inits{n}"
    folder.mkdir()
    for name in ("runs", "starts", "zoo.json"):
        (folder / name).symlink_to(stage.zoo / name)
    kept.to_csv(folder / "index.csv", index=False)
    return folder


def report(stage: Stage, evaluation: Path) -> None:
    print("\n| phase | seconds |\n| --- | ---: |")
    for name, value in stage.seconds.items():
        print(f"| {name} | {value:.0f} |")
    print(f"\nzoo: {json.loads((stage.zoo / 'zoo.json').read_text())}")
    folder = EvaluationFolder(evaluation)
    for name, by_role in folder.summary()["headline"].items():
        for role, h in by_role.items():
            print(f"{name} ({role}): {h['passed']} of {h['of']} discriminative criteria")
    table = folder.table("criteria")
    for role in dict.fromkeys(table["starts"]):
        print(f"\n{role}:\n" + matrix(table, role).to_markdown(index=False))
    print("\n" + oneshot_means(folder).to_markdown(floatfmt=".3f"))


def oneshot_means(folder: EvaluationFolder):
    """Mean whole-volume Dice per generator and task from the held-out parents (each start's draws averaged)."""
    networks = folder.table("networks")
    shots = networks[(networks["kind"] == "oneshot") & (networks["role"] == "heldout")]
    per = shots.groupby(["generator", "task", "start"], sort=False)["task_dice"].mean().reset_index()
    return per.groupby(["generator", "task"], sort=False)["task_dice"].mean().unstack("task")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolve", nargs="+", help="config files to merge and validate; prints the JSON")
    parser.add_argument("--config", type=Path, help="resolved configuration (JSON from --resolve)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--parallel", type=int, default=8, help="zoo jobs at once")
    parser.add_argument("--init-scaling", help="comma-separated numbers of training inits (per_seed zoo)")
    args = parser.parse_args()
    if args.resolve:
        return resolve(args.resolve)
    if args.workdir.exists():
        sys.exit(f"{args.workdir}: already exists; give a new folder")
    stage = Stage(json.loads(args.config.read_text()), args.workdir, args.device, args.parallel)
    (args.workdir / "logs").mkdir(parents=True)
    stage.timed("data", stage.data)
    stage.timed("zoo starts", stage.starts)
    stage.timed("zoo jobs", stage.jobs)
    stage.timed("zoo index", stage.index)
    if not args.init_scaling:
        stage.timed("generators + evaluation", stage.generators, stage.zoo / "index.csv", stage.work / "all")
        return report(stage, stage.work / "all" / "evaluation")
    import pandas as pd

    rows = []
    for n in map(int, args.init_scaling.split(",")):
        folder = subset_index(stage, n)
        stage.timed(f"generators on {n} training starts", stage.generators, folder / "index.csv", folder)
        means = oneshot_means(EvaluationFolder(folder / "evaluation"))
        for task in means.columns:
            rows.append({"training starts": n, "task": task, **{g: means.loc[g, task] for g in means.index}})
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False, floatfmt=".3f"))
    print("\n" + "\n".join(f"{k}: {v:.0f} s" for k, v in stage.seconds.items()))
    print(f"\nfigure: {init_scaling_figure(table, stage.work / 'init_scaling.png')}")


LEARNED_STYLE = {"gpt": "-", "graph_grad": "--", "graph_adam10": "-."}


def init_scaling_figure(table, png: Path) -> Path:
    """Held-out one-shot Dice of each learned generator against the number of training starts, per task (Adam's
    best from the same starts dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segzoo.io import save_figure

    learned = [c for c in table.columns if c == "gpt" or c.startswith("graph_")]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for (task, group), colour in zip(table.groupby("task"), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        for name in learned:
            ax.plot(group["training starts"], group[name], marker="o", ls=LEARNED_STYLE.get(name, "-"), color=colour,
                    label=f"{task}: {name}")
        ax.plot(group["training starts"], group["adam_best"], ls=":", color=colour)
    ax.set(xscale="log", xlabel="training parents the generators saw", ylabel="one-shot Dice (test volumes)",
           ylim=(0, 1), title="from held-out parents (dotted: Adam's best from them)")
    ax.set_xticks(sorted(table["training starts"].unique()), [str(n) for n in sorted(table["training starts"].unique())])
    ax.minorticks_off()
    ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, png, dpi=90)


if __name__ == "__main__":
    main()
