"""Test-time mirroring: Dice without `--tta`, with it (the flips each run records), and with the code of a commit
before runs recorded them (its `--tta` averaged all 7 flips), on the phantom and on a dataset that is not
mirror-symmetric.

    .venv/bin/python bench/tta.py --work /tmp/tta [--before a402184] [--steps 250]

Each dataset goes through the workflow as a user's would (`snakemake --config 'dataset={raw: ...}'`, U-Net 3+
only, the zoo off, the default config otherwise: flips along X in training); its test cases are then predicted
with `segzoo predict`, and the `--before` commit's `segzoo predict --tta` runs from a git worktree on the same
runs. Dice per region (probability > 0.5, against the dataset's labels, on the input grid), mean over the test
cases. Prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from own_datasets import asymmetric_dataset  # noqa: E402

WORKFLOW = ["Snakefile", "rules", "schemas", "envs", "presets", "profiles", "config.yaml", "src"]
BIN = Path(sys.executable).parent


def run(cmd: list, cwd: Path | None = None, env: dict | None = None) -> str:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{cmd[:3]} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def train(workdir: Path, raw: Path | None, steps: int) -> tuple[Path, Path, Path]:
    """A workflow copy that trains U-Net 3+ on ``raw`` (None: the phantom); its run, raw dataset and splits."""
    for name in WORKFLOW:  # a second call on the same folder reuses its runs (Snakemake finds nothing to do)
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, workdir / name, dirs_exist_ok=True)
        else:
            shutil.copy(REPO / name, workdir / name)
    config = {"train": {"models": ["unet3plus"], "steps": steps}, "weightgen": {"enabled": False}}
    if raw is not None:
        config["dataset"] = {"raw": str(raw)}
    (workdir / "tta.json").write_text(json.dumps(config))
    name = raw.name if raw is not None else "Dataset001_SpinalPhantom"
    run_folder = workdir / "results" / "train" / name / "unet3plus" / "seed0"
    run([BIN / "snakemake", f"{run_folder.relative_to(workdir)}/best.safetensors",
         f"results/splits/{name}/splits.json", "--cores", "2", "--configfile", "tta.json"], cwd=workdir,
        env={**os.environ, "PATH": f"{BIN}:/usr/bin:/bin"})
    return run_folder, raw or workdir / "results" / "raw" / name, workdir / "results" / "splits" / name / "splits.json"


def dice(out: Path, raw: Path, cases: list[str], regions: dict[str, list[int]]) -> dict[str, float]:
    scores = {r: [] for r in regions}
    for case in cases:
        label_file = next(p for p in (raw / "labelsTr" / f"{case}.nii.gz", raw / "labelsTs" / f"{case}.nii.gz")
                          if p.is_file())
        label = np.asarray(nib.load(label_file).dataobj)
        prob = np.asarray(nib.load(out / f"{case}_prob.nii.gz").dataobj)
        for r, (name, values) in enumerate(regions.items()):
            truth, mask = np.isin(label, values), prob[..., r] > 0.5
            if truth.sum() + mask.sum():
                scores[name].append(2 * (truth & mask).sum() / (truth.sum() + mask.sum()))
    return {r: float(np.mean(s)) if s else float("nan") for r, s in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="new folder for everything")
    parser.add_argument("--before", default="a402184", help="a commit whose --tta averaged all 7 flips")
    parser.add_argument("--steps", type=int, default=250)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    before = args.work / "before"
    run(["git", "-C", REPO, "worktree", "add", "--detach", before, args.before])
    try:
        rows = []
        asymmetric = args.work / "Dataset905_Asymmetric"
        datasets = [("phantom", None),
                    ("asymmetric", asymmetric if asymmetric.is_dir() else asymmetric_dataset(asymmetric))]
        for label, raw in datasets:
            (args.work / label).mkdir(exist_ok=True)
            run_folder, raw_copy, splits = train(args.work / label, raw, args.steps)
            sidecar = json.loads((run_folder / "best.json").read_text())
            regions = {r: list(v) for r, v in sidecar["regions"].items()}
            cases = json.loads(splits.read_text())["test"]
            images = args.work / label / "test_images"
            images.mkdir(exist_ok=True)
            for case in cases:
                for f in (raw_copy / "imagesTr").glob(f"{case}_*.nii.gz"):
                    shutil.copy(f, images / f.name)
                for f in (raw_copy / "imagesTs").glob(f"{case}_*.nii.gz") if (raw_copy / "imagesTs").is_dir() else []:
                    shutil.copy(f, images / f.name)
            arms = {}
            for arm, extra, env in (("no --tta", [], None), ("--tta (recorded flips)", ["--tta"], None),
                                    (f"--tta at {args.before} (all 7 flips)", ["--tta"],
                                     {**os.environ, "PYTHONPATH": str(before / "src")})):
                out = args.work / label / f"out_{len(arms)}"
                shutil.rmtree(out, ignore_errors=True)
                said = run([sys.executable, "-m", "segzoo", "predict", "-i", images, "-o", out, "--run", run_folder,
                            "--probabilities", "--device", "cpu", *extra], env=env)
                arms[arm] = dice(out, raw_copy, cases, regions)
                flips = next((line.split(": ", 1)[1] for line in said.splitlines() if "mirroring" in line), "")
                rows.append((label, len(cases), arm, flips, arms[arm]))
        print(f"## Test-time mirroring — {date.today()}, {platform.node()} ({os.cpu_count()} cores, CPU), "
              f"U-Net 3+ {args.steps} steps, flips along X in training\n")
        print("| dataset | test cases | prediction | flips | Dice per region |")
        print("|---|---|---|---|---|")
        for label, n, arm, flips, scores in rows:
            print(f"| {label} | {n} | {arm} | {flips or '-'} | "
                  + ", ".join(f"{r} {v:.3f}" for r, v in scores.items()) + " |")
    finally:
        run(["git", "-C", REPO, "worktree", "remove", "--force", before])


if __name__ == "__main__":
    main()
