"""Every figure of the report for one dataset, written to one folder (``segzoo figures``).

``figures.json`` beside the PNGs lists each figure with its caption, in page order; the page and
the Snakemake report read it.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from segzoo.data.dataset import read_dataset
from segzoo.io import output_dir, read_json, write_json
from segzoo.report import plots
from segzoo.report.architecture import architecture_figure


def write_figures(results: Path, dataset: str, raw: Path, config: dict, out: Path) -> list[dict]:
    """Learning curves, per-case box/strip plots, overlays (best/median/worst per model), reliability,
    and one architecture figure per model. Returns the figure list (also ``figures.json``)."""
    scores = pd.read_csv(results / "tables" / dataset / "per_case.csv")
    meta = read_json(results / "preprocessed" / dataset / "preprocess.json")
    regions = meta["regions"]
    cases = {c.id: c for c in read_dataset(raw).cases}
    runs = {f"{m} seed {s}": results / "train" / dataset / m / f"seed{s}"
            for m in config["train"]["models"] for s in config["train"]["seeds"]}
    labels: dict[str, np.ndarray] = {}

    def label_map(case_id: str) -> np.ndarray:  # each reference is read once, whatever the number of models
        if case_id not in labels:
            labels[case_id] = np.asarray(nib.load(cases[case_id].label).dataobj)
        return labels[case_id]

    figures = []
    with output_dir(out) as tmp:
        def add(png: Path, caption: str, section: str):
            figures.append({"file": png.name, "caption": caption, "section": section})

        add(plots.learning_curves(runs, tmp / "learning_curves.png"),
            "Training loss (mean over the steps since the previous validation) and validation Dice (mean over "
            "regions, sliding window on the validation cases) against training step, one line per run.",
            "Learning curves")
        for metric in config["evaluate"]["metrics"]:
            add(plots.per_case_scores(scores, metric, tmp / f"scores_{metric}.png"),
                f"{plots.LABELS[metric]} per test case (points; all seeds) and its distribution (box: quartiles, "
                f"whiskers: 1.5 IQR) for each model and region.", "Per-case scores")
        focus = "sc" if "sc" in regions else next(iter(regions))
        for model in config["train"]["models"]:
            seed = config["train"]["seeds"][0]
            dice = scores[(scores["model"] == model) & (scores["seed"] == seed) & (scores["region"] == focus)]
            dice = dice.dropna(subset=["dice"]).sort_values("dice")
            if dice.empty:
                continue
            picks = {"worst": dice.iloc[0], "median": dice.iloc[len(dice) // 2], "best": dice.iloc[-1]}
            for label, row in picks.items():
                case = cases[row["case"]]
                pred = nib.load(results / "infer" / dataset / model / f"seed{seed}" / f"{row['case']}_{focus}.nii.gz")
                reference = np.isin(label_map(row["case"]), regions[focus])
                add(plots.overlay(case.images[0], reference, np.asarray(pred.dataobj) > 0,
                                  tmp / f"overlay_{model}_{label}.png",
                                  f"{model} seed {seed}, {label} case {row['case']} ({focus} Dice {row['dice']:.3f})"),
                    f"{model}: the {label} test case by {focus} Dice ({row['case']}, Dice {row['dice']:.3f}); "
                    f"three orthogonal slices through the reference's centre.", "Qualitative results")
        probs = {}
        for model in config["train"]["models"]:
            seed = config["train"]["seeds"][0]
            p, y = [], []
            for case_id in scores[(scores["model"] == model)]["case"].unique():
                prob = np.asarray(nib.load(results / "infer" / dataset / model / f"seed{seed}" /
                                           f"{case_id}_prob.nii.gz").dataobj)
                label = label_map(case_id)
                for r, values in enumerate(regions.values()):
                    p.append(prob[..., r].ravel())
                    y.append(np.isin(label, values).ravel())
            probs[model] = (np.concatenate(p), np.concatenate(y))
        add(plots.reliability(probs, tmp / "reliability.png"),
            "Reliability diagram: observed foreground frequency against predicted probability (10 bins) over all "
            "test voxels and regions; the lower panel counts voxels per bin.", "Calibration")
        for model in config["train"]["models"]:
            add(architecture_figure(model, config["models"][model], len(meta["channels"]), len(regions),
                                    tmp / f"architecture_{model}.png"),
                f"{model} as built from the model object: every component in the order a forward pass calls it, "
                f"with its output shape and parameter count.", "Architectures")
        write_json(tmp / "figures.json", figures)
    return figures
