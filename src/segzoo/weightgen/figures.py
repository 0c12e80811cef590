"""Figures of the weight-generation section: prompt alignment, one-shot vs Adam, unification, memorisation."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from segzoo.report.slices import save_figure  # noqa: E402
from segzoo.weightgen.zoo import task_regions  # noqa: E402


def alignment_figure(scored: pd.DataFrame, aligned: pd.DataFrame, regions: list[str], png: Path) -> Path:
    align = scored[(scored["kind"] == "align") & (scored["round"] == 1)]
    tasks = sorted(align["task"].unique())
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(3.6 * max(1, len(tasks)), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        group = align[align["task"] == task]
        for r in task_regions(task, regions):
            name = regions[r]
            r2 = aligned[(aligned["task"] == task) & (aligned["region"] == name)]["r2"]
            ax.scatter(group[f"prompt_{name}"], group[f"dice_{name}"], s=14,
                       label=f"{name} (R² {r2.iloc[0]:.2f})" if len(r2) else name)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="prompted Dice", ylabel="achieved Dice", title=f"task {task}")
        ax.legend(fontsize=7)
    return save_figure(fig, png, dpi=90)


def oneshot_figure(shots: pd.DataFrame, curves: pd.DataFrame, png: Path) -> Path:
    runs = sorted(curves["run"].unique())
    cols = min(4, max(1, len(runs)))
    rows = int(np.ceil(len(runs) / cols)) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        curve = curves[curves["run"] == run]
        ax.plot(curve["step"], curve["task_dice"], color="tab:blue", lw=1, label="Adam, same init")
        shot = shots[(shots["run"] == run) & (shots["round"] == 1)]
        if len(shot):
            s = shot.iloc[0]
            ax.axhline(s["oneshot_dice"], color="tab:red", label="G.pt one-shot")
            ax.axhline(s["best_zoo_dice"], color="black", ls=":", label="best training checkpoint")
            ax.axhline(s["nearest_task_dice"], color="tab:grey", ls="--", lw=0.8, label="nearest checkpoint")
            if not np.isnan(s["adam_steps_to_match"]):
                ax.axvline(s["adam_steps_to_match"], color="tab:red", lw=0.6, ls=":")
        ax.set(title=run, xlabel="Adam step", ylabel="task Dice (val)", ylim=(0, 1))
    for ax in axes.flat[len(runs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="lower right")
    return save_figure(fig, png, dpi=90)


def unification_figure(unified: pd.DataFrame, regions: list[str], png: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(unified) + 1.5))
    height = 0.8 / len(regions)
    y = np.arange(len(unified))
    for i, name in enumerate(regions):
        ax.barh(y + i * height, unified[f"dice_{name}"], height, label=name)
    ax.set_yticks(y + 0.4 - height / 2, unified["method"], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="Dice (val)", title="one network for every region")
    ax.legend(fontsize=8)
    return save_figure(fig, png, dpi=90)


def memorisation_figure(scored: pd.DataFrame, shots: pd.DataFrame, png: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.hist(scored["d_nearest"], bins=30, color="tab:red", alpha=0.7, label="G.pt networks")
    for d in shots.drop_duplicates("run")["heldout_final_d_nearest"]:
        ax.axvline(d, color="tab:blue", lw=0.8)
    ax.plot([], [], color="tab:blue", label="held-out runs' final checkpoints")
    ax.set(xlabel="L2 distance to the nearest training checkpoint", ylabel="networks")
    ax.legend(fontsize=8)
    return save_figure(fig, png, dpi=90)


def write_all(scored, aligned, shots, curves, unified, regions, out: Path) -> list[dict]:
    """The four figures into ``out``; returns ``[{file, caption}]`` in page order."""
    return [
        {"file": alignment_figure(scored, aligned, regions, out / "alignment.png").name,
         "caption": "Prompt alignment on held-out inits: Dice achieved by the one-shot network against the Dice it "
                    "was prompted with (dashed: perfect alignment)."},
        {"file": oneshot_figure(shots, curves, out / "oneshot_adam.png").name,
         "caption": "Held-out runs: Adam's validation Dice against steps from the same init (blue), the G.pt one-shot "
                    "network (red; dotted red line: the step where Adam matches it), the best training checkpoint "
                    "(black dotted) and the nearest training checkpoint to the one-shot network (grey dashed)."},
        {"file": unification_figure(unified, regions, out / "unification.png").name,
         "caption": "One network for all regions: G.pt prompted high on every region at once, next to the training "
                    "checkpoint nearest to it, a weight soup of the single-task bests and multi-task Adam."},
        {"file": memorisation_figure(scored, shots, out / "memorisation.png").name,
         "caption": "Memorisation audit: distance of every generated network to its nearest training checkpoint; "
                    "blue lines: the same distance for held-out runs' final checkpoints (trained independently)."},
    ]
