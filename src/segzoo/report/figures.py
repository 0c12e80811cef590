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
from segzoo.data.preprocessed import Preprocessed
from segzoo.evaluate.metrics import METRICS
from segzoo.evaluate.report_tables import PER_CASE
from segzoo.inference.predictions import PredictionsFolder
from segzoo.inference.trained import TrainedModel, resolve_run
from segzoo.io import output_dir, write_json
from segzoo.report import plots
from segzoo.report.architecture import architecture_diagram, parameter_figure, require_dot
from segzoo.report.names import model_name, region_name


def write_figures(tables: Path, pre: Preprocessed, raw: Path, *, runs: list[dict], config: dict,
                  out: Path) -> list[dict]:
    """Learning curves, per-case box/strip plots, overlays (best/median/worst per model), reliability,
    and per model its wiring diagram (PNG, with SVG and PDF under ``also``) and parameter chart. Returns the figure
    list (also ``figures.json``). Raises :class:`SegzooError` first thing when Graphviz's ``dot`` is missing.

    ``runs``: ``[{"model", "seed", "run": training folder (None for an imported model), "predictions": inference
    folder}]`` (from the rule). A trained model is drawn as its first run's checkpoint says it was built.
    """
    drawn = list(dict.fromkeys(r["model"] for r in runs if r.get("run")))  # trained here: not imported nnU-Nets
    if drawn:
        require_dot()  # before any work, so that a missing Graphviz fails at once
    scores = pd.read_csv(Path(tables) / PER_CASE)
    regions = pre.regions
    cases = {c.id: c for c in read_dataset(raw).cases}
    models = list(dict.fromkeys(r["model"] for r in runs))
    first = {m: next(r for r in runs if r["model"] == m) for m in models}  # overlays and calibration: first seed
    curves = {f"{model_name(r['model'])} seed {r['seed']}": Path(r["run"])
              for r in runs if r["run"]}  # imported: no training
    labels: dict[str, np.ndarray] = {}

    def label_map(case_id: str) -> np.ndarray:  # each reference is read once, whatever the number of models
        if case_id not in labels:
            labels[case_id] = np.asarray(nib.load(cases[case_id].label).dataobj)
        return labels[case_id]

    figures = []
    with output_dir(out) as tmp:
        def add(png: Path, caption: str, section: str, also: list[Path] = (), **about):
            figures.append({"file": png.name, "caption": caption, "section": section, **about})
            pdf = png.with_suffix(".pdf")  # every plot is also written as PDF (io.save_figure), for the paper
            also = list(also) + ([pdf] if pdf.is_file() and pdf not in also else [])
            if also:  # the same figure in other formats
                figures[-1]["also"] = [p.name for p in also]

        add(plots.learning_curves(curves, tmp / "learning_curves.png"),
            "Training loss (mean over the steps since the previous validation) and validation Dice (mean over "
            "regions, sliding window on the validation cases) against training step, one line per run.",
            "Learning curves")
        for metric in config["evaluate"]["metrics"]:
            if scores[metric].isna().all():
                continue  # scored in no region (lesion-wise metrics without instance regions)
            add(plots.per_case_scores(scores, metric, tmp / f"scores_{metric}.png"),
                f"{METRICS[metric].label} per test case (points; all seeds) and its distribution (box: quartiles, "
                f"whiskers: 1.5 IQR) for each model and region.", "Per-case scores", metric=metric)
        focus = "sc" if "sc" in regions else next(iter(regions))
        for model in models:
            seed = first[model]["seed"]
            dice = scores[(scores["model"] == model) & (scores["seed"] == seed) & (scores["region"] == focus)]
            dice = dice.dropna(subset=["dice"]).sort_values("dice")
            if dice.empty:
                continue
            picks = {"worst": dice.iloc[0], "median": dice.iloc[len(dice) // 2], "best": dice.iloc[-1]}
            for label, row in picks.items():
                case = cases[row["case"]]
                pred = PredictionsFolder(first[model]["predictions"]).mask(row["case"], focus)
                reference = np.isin(label_map(row["case"]), regions[focus])
                add(plots.overlay(case.images[0], reference, pred > 0,
                                  tmp / f"overlay_{model}_{label}.png",
                                  f"{model_name(model)} seed {seed}, {label} case {row['case']} "
                                  f"({region_name(focus)} Dice {row['dice']:.3f})"),
                    f"{model_name(model)}: the {label} test case by {region_name(focus)} Dice ({row['case']}, Dice "
                    f"{row['dice']:.3f}); three orthogonal slices through the reference's centre.",
                    "Qualitative results", model=model, pick=label, case=row["case"], region=focus)
        probs = {}
        for model in models:
            p, y = [], []
            for case_id in scores[(scores["model"] == model)]["case"].unique():
                prob = PredictionsFolder(first[model]["predictions"]).probabilities(case_id)
                label = label_map(case_id)
                for r, values in enumerate(regions.values()):
                    p.append(prob[..., r].ravel())
                    y.append(np.isin(label, values).ravel())
            probs[model_name(model)] = (np.concatenate(p), np.concatenate(y))
        add(plots.reliability(probs, tmp / "reliability.png"),
            "Reliability diagram: observed foreground frequency against predicted probability (10 bins) over all "
            "test voxels and regions; the lower panel counts voxels per bin.", "Calibration")
        for model in drawn:  # imported nnU-Net models: see their plans
            # the options it was trained with (nnU-Net's networks: the architecture planned for the patch)
            options = TrainedModel.read(resolve_run(first[model]["run"])).model_options
            channels = len(pre.channels)
            diagram = architecture_diagram(model, options, channels, len(regions), tmp / f"architecture_{model}")
            add(diagram["png"],
                f"{model_name(model)}: how it is wired, traced from the model object (one forward pass, one level "
                "deep in its module tree). Boxes are modules with their output shape and parameters; a wire's label "
                "says what happens on it (the legend is under the title).", "Architectures",
                also=[diagram["svg"], diagram["pdf"]], model=model, kind="wiring")
            add(parameter_figure(model, options, channels, len(regions), tmp / f"parameters_{model}.png"),
                f"{model_name(model)}: parameters of every component, in the order a forward pass calls it, with "
                f"its output shape.", "Architectures", model=model, kind="parameters")
        write_json(tmp / "figures.json", figures)
    return figures
