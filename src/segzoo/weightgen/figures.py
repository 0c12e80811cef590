"""Figures of the weight-generation section, drawn from the evaluation's tables (all Dice on test patches)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from segzoo.io import save_figure  # noqa: E402
from segzoo.weightgen.zoo import task_regions  # noqa: E402

ONESHOT_BARS = [("oneshot_dice", "G.pt one-shot"), ("best_checkpoint_dice", "best checkpoint (val-chosen)"),
                ("own_final_dice", "held-out run's final"), ("soup_dice", "soup of the task's finals"),
                ("nearest_dice", "nearest checkpoint"), ("mean_k_dice", "mean of k nearest"),
                ("noise_dice", "noise at equal distance"), ("lookup_dice", "lookup memoriser")]


def alignment_figure(samples: pd.DataFrame, aligned: pd.DataFrame, regions: list[str], png: Path) -> Path:
    align = samples[samples["kind"] == "align"]
    tasks = sorted(align["task"].unique())
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(3.6 * max(1, len(tasks)), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        group = align[align["task"] == task]
        for r in task_regions(task, regions):
            name = regions[r]
            pooled = aligned[(aligned["task"] == task) & (aligned["region"] == name) & (aligned["run"] == "pooled")]
            r2 = f" (R² {pooled['r2'].iloc[0]:.2f})" if len(pooled) else ""
            ax.scatter(group[f"prompt_{name}"], group[f"dice_{name}"], s=16, label=f"G.pt {name}{r2}")
            ax.scatter(group[f"prompt_{name}"], group[f"lookup_dice_{name}"], s=10, marker="x", color="grey",
                       label="lookup memoriser" if r == task_regions(task, regions)[0] else None)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="prompted Dice (val scale)", ylabel="achieved Dice (test)",
               title=f"task {task}")
        ax.legend(fontsize=7)
    return save_figure(fig, png, dpi=90)


def oneshot_figure(shots: pd.DataFrame, png: Path) -> Path:
    tasks = list(dict.fromkeys(shots["task"]))
    fig, ax = plt.subplots(figsize=(1.9 * len(tasks) + 4, 3.6))
    width = 0.8 / len(ONESHOT_BARS)
    for i, (column, label) in enumerate(ONESHOT_BARS):
        means = [shots.loc[shots["task"] == t, column].mean() for t in tasks]
        ax.bar(np.arange(len(tasks)) + i * width, means, width, label=label)
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks)
    ax.set(ylim=(0, 1), ylabel="task Dice (test patches)", title="one-shot networks and their memorisers")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, png, dpi=90)


def finetune_figure(curves: pd.DataFrame, tuned: pd.DataFrame, png: Path) -> Path:
    tasks = list(dict.fromkeys(tuned["task"]))
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(3.6 * max(1, len(tasks)), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for source, color in (("start", "tab:blue"), ("one-shot", "tab:red")):
            c = curves[(curves["task"] == task) & (curves["source"] == source)]
            ax.plot(c["step"], c["task_dice"], color=color, marker=".", ms=3, lw=1, label=f"Adam from the {source}")
        ax.axhline(tuned.loc[tuned["task"] == task, "best_checkpoint_dice"].iloc[0], color="black", ls=":",
                   label="best checkpoint")
        ax.set(title=f"task {task}", xlabel="Adam step", ylabel="task Dice (test)", ylim=(0, 1))
    axes[0][0].legend(fontsize=7, loc="lower right")
    return save_figure(fig, png, dpi=90)


def unification_figure(unified: pd.DataFrame, regions: list[str], png: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(unified) + 1.5))
    height = 0.8 / len(regions)
    y = np.arange(len(unified))
    for i, name in enumerate(regions):
        ax.barh(y + i * height, unified[f"dice_{name}"], height, label=name)
    ax.set_yticks(y + 0.4 - height / 2, unified["method"], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="Dice (test patches)", title="one network for every region")
    ax.legend(fontsize=8)
    return save_figure(fig, png, dpi=90)


def memorisation_figure(samples: pd.DataFrame, shots: pd.DataFrame, png: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.hist(samples["d_nearest"], bins=30, color="tab:red", alpha=0.7, label="G.pt networks")
    for d in shots.drop_duplicates("run")["heldout_final_d_nearest"]:
        ax.axvline(d, color="tab:blue", lw=0.8)
    ax.plot([], [], color="tab:blue", label="held-out runs' final checkpoints")
    ax.set(xlabel="distance to the nearest training checkpoint (normalised)", ylabel="networks")
    ax.legend(fontsize=8)
    return save_figure(fig, png, dpi=90)


def loss_figure(loss: pd.DataFrame, png: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(loss["step"], loss["loss"], lw=0.4, color="tab:grey", alpha=0.6, label="per step")
    window = max(1, len(loss) // 50)
    ax.plot(loss["step"], loss["loss"].rolling(window, min_periods=1).mean(), color="tab:red",
            label=f"mean of {window}")
    ax.set(xlabel="G.pt step", ylabel="MSE (normalised changes)", yscale="log", title="G.pt training loss")
    ax.legend(fontsize=8)
    return save_figure(fig, png, dpi=90)


def write_all(tables: dict[str, pd.DataFrame], regions: list[str], out: Path, loss: pd.DataFrame | None) -> list[dict]:
    """The figures into ``out``; returns ``[{file, caption}]`` in page order."""
    listed = []
    if loss is not None:
        listed.append({"file": loss_figure(loss, out / "gpt_loss.png").name,
                       "caption": "G.pt training loss (denoising MSE in the normalised change space)."})
    listed += [
        {"file": alignment_figure(tables["samples"], tables["alignment"], regions, out / "alignment.png").name,
         "caption": "Prompt alignment on held-out runs: test Dice of the one-shot network against the Dice it was "
                    "prompted with (validation scale; dashed: perfect alignment). Grey crosses: the lookup memoriser "
                    "(the training checkpoint whose validation Dice is nearest the prompt)."},
        {"file": oneshot_figure(tables["oneshot"], out / "oneshot.png").name,
         "caption": "One-shot networks (prompted with the best training Dice) against the best training checkpoint, "
                    "the held-out run's own final, a soup of the task's finals and four memorisers; test patches."},
    ]
    if len(tables["finetune"]):
        png = finetune_figure(tables["finetune_curves"], tables["finetune"], out / "finetune.png")
        listed.append({"file": png.name,
                       "caption": "The one-shot network as an initialisation: Adam from it (red) and from the start "
                                  "(blue), same task, learning rate and data order; dotted: the best checkpoint."})
    listed += [
        {"file": unification_figure(tables["unification"], regions, out / "unification.png").name,
         "caption": "One network for every region: G.pt prompted high on every region at once, merges of the "
                    "single-task finals, the best multi-task checkpoint and multi-task Adam (test patches)."},
        {"file": memorisation_figure(tables["samples"], tables["oneshot"], out / "memorisation.png").name,
         "caption": "Memorisation audit: distance of every generated network to its nearest training checkpoint; "
                    "blue lines: the same for held-out runs' final checkpoints (trained independently)."},
    ]
    return listed
