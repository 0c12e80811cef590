"""Figures of the weight-generation section, drawn from the evaluation's tables (Dice on the whole test volumes,
prompt following on the validation patches, the fine-tuning curves on test patches)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from segzoo.io import save_figure  # noqa: E402

MARKERS = {"learned": "o", "trivial": "x", "memoriser": "^", "adam": "s"}


def _axes(count: int, width: float = 3.6, height: float = 3.4):
    fig, axes = plt.subplots(1, max(1, count), figsize=(width * max(1, count), height), squeeze=False)
    return fig, axes[0]


def _colours(names: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab20")
    return {n: cmap(i % 20) for i, n in enumerate(names)}


def _shots(networks: pd.DataFrame) -> pd.DataFrame:
    shots = networks[(networks["kind"] == "oneshot") & (networks["role"] == "heldout")]
    return shots[np.isfinite(shots["task_dice"].to_numpy(float))]


def audit_figure(networks: pd.DataFrame, png: Path) -> Path:
    """Zeng et al.'s audit: test Dice against distance to the nearest training checkpoint of the task (aligned),
    per task, for every generator's networks from the held-out parents."""
    shots = _shots(networks)
    tasks = list(dict.fromkeys(shots["task"]))
    colours = _colours(list(dict.fromkeys(shots["generator"])))
    fig, axes = _axes(len(tasks))
    for ax, task in zip(axes, tasks):
        s = shots[shots["task"] == task]
        for name, g in s.groupby("generator", sort=False):
            ax.scatter(g["d_train"], g["task_dice"], s=16, color=colours[name],
                       marker=MARKERS.get(g["generator_kind"].iloc[0], "o"), label=g["label"].iloc[0])
        ax.set(title=f"task {task}", xlabel="distance to the nearest training checkpoint (aligned)",
               ylabel="Dice (test volumes)", ylim=(0, 1))
    axes[0].legend(fontsize=5, loc="lower right")
    return save_figure(fig, png, dpi=90)


def generators_figure(networks: pd.DataFrame, png: Path) -> Path:
    """Mean whole-volume Dice per generator and task (held-out parents), with the spread over starts."""
    shots = _shots(networks)
    per_start = shots.groupby(["label", "task", "start"], sort=False)["task_dice"].mean().reset_index()
    tasks = list(dict.fromkeys(per_start["task"]))
    labels = list(dict.fromkeys(per_start["label"]))
    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) * max(1, len(labels)) / 4 + 4, 3.8))
    width = 0.8 / max(1, len(labels))
    colours = _colours(labels)
    for i, label in enumerate(labels):
        g = per_start[per_start["label"] == label]
        means = [g.loc[g["task"] == t, "task_dice"].mean() for t in tasks]
        spread = [g.loc[g["task"] == t, "task_dice"].std() for t in tasks]
        ax.bar(np.arange(len(tasks)) + i * width, means, width, yerr=spread, label=label, color=colours[label],
               error_kw={"lw": 0.6})
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks)
    ax.set(ylim=(0, 1), ylabel="task Dice (test volumes)", title="from held-out parents: mean (± SD over starts)")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, png, dpi=90)


def prompting_figure(networks: pd.DataFrame, png: Path) -> Path:
    """Achieved against prompted val Dice of the learned generators and the lookup memoriser, per task."""
    align = networks[(networks["kind"] == "align")
                     & ((networks["generator_kind"] == "learned") | (networks["generator"] == "lookup"))]
    tasks = list(dict.fromkeys(align["task"]))
    labels = list(dict.fromkeys(align["label"]))
    colours = _colours(labels)
    fig, axes = _axes(len(tasks))
    for ax, task in zip(axes, tasks):
        for label in labels:
            g = align[(align["task"] == task) & (align["label"] == label)]
            ax.scatter(g["task_prompt"], g["task_dice_val"], s=12, color=colours[label], label=label)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="prompted Dice (val patches)", ylabel="achieved Dice (val patches)",
               title=f"task {task}")
    axes[0].legend(fontsize=6)
    return save_figure(fig, png, dpi=90)


def finetune_figure(curves: pd.DataFrame, png: Path) -> Path:
    tasks = list(dict.fromkeys(curves["task"]))
    sources = list(dict.fromkeys(curves["source"]))
    colours = _colours(sources)
    fig, axes = _axes(len(tasks), height=3.2)
    for ax, task in zip(axes, tasks):
        for (start, source), c in curves[curves["task"] == task].groupby(["start", "source"]):
            ax.plot(c["step"], c["task_dice"], color="black" if source == "start" else colours[source], lw=0.7,
                    alpha=0.7)
        ax.set(title=f"task {task}", xlabel="Adam step", ylabel="task Dice (test patches)", ylim=(0, 1))
    for source in sources:
        axes[0].plot([], [], color="black" if source == "start" else colours[source],
                     label="Adam from the start" if source == "start" else f"Adam from {source}")
    axes[0].legend(fontsize=6, loc="lower right")
    return save_figure(fig, png, dpi=90)


def unification_figure(unified: pd.DataFrame, regions: list[str], png: Path) -> Path:
    means = unified.groupby("generator", sort=False)[[f"dice_{n}" for n in regions]].mean()
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(means) + 1.5))
    height = 0.8 / len(regions)
    y = np.arange(len(means))
    for i, name in enumerate(regions):
        ax.barh(y + i * height, means[f"dice_{name}"], height, label=name)
    ax.set_yticks(y + 0.4 - height / 2, means.index, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="Dice (test volumes), mean over held-out parents", title="one network for every region")
    ax.legend(fontsize=8)
    return save_figure(fig, png, dpi=90)


def loss_figure(losses: dict[str, pd.DataFrame], png: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3))
    colours = _colours(list(losses))
    for name, loss in losses.items():
        window = max(1, len(loss) // 50)
        ax.plot(loss["step"], loss["loss"].rolling(window, min_periods=1).mean(), color=colours[name],
                label=f"{name} (mean of {window})")
    ax.set(xlabel="training step", ylabel="denoising MSE (normalised changes)", yscale="log",
           title="learned generators: training loss")
    ax.legend(fontsize=8)
    return save_figure(fig, png, dpi=90)


def write_all(tables: dict[str, pd.DataFrame], regions: list[str], out: Path, losses: dict[str, pd.DataFrame],
              judged) -> list[dict]:
    """The figures into ``out``; returns ``[{file, caption}]`` in page order."""
    listed = []
    networks = tables["networks"]
    if len(_shots(networks)):
        listed += [
            {"file": audit_figure(networks, out / "audit.png").name,
             "caption": "The memorisation audit (Zeng et al.): whole-volume test Dice against distance to the nearest "
                        "training checkpoint of the task (aligned coordinates), for every generator's networks from "
                        "the held-out parents. A memoriser sits at 0; a descendant of its start sits far from the zoo."},
            {"file": generators_figure(networks, out / "generators.png").name,
             "caption": "Every generator from the held-out parents, prompted with the best training Dice: whole test "
                        "volumes, mean over starts (draws averaged within a start), bars ± SD over starts."}]
    if (networks["kind"] == "align").any():
        listed.append({"file": prompting_figure(networks, out / "prompting.png").name,
                       "caption": "Prompt following from the held-out parents: achieved against prompted Dice, both "
                                  "on the validation patches (dashed: perfect following)."})
    if len(tables["finetune_curves"]):
        listed.append({"file": finetune_figure(tables["finetune_curves"], out / "finetune.png").name,
                       "caption": "Adam from each generator's network (draw 0) and from its held-out parent (black), same "
                                  "task, learning rate and data order (test patches)."})
    if len(tables["unification"]):
        listed.append({"file": unification_figure(tables["unification"], regions, out / "unification.png").name,
                       "caption": "One network for every region, from the held-out parents: each generator prompted on "
                                  "every region, and merges of the parents' own single-task finals (whole test "
                                  "volumes)."})
    if losses:
        listed.append({"file": loss_figure(losses, out / "loss.png").name,
                       "caption": "The learned generators' training loss (denoising MSE in the normalised change "
                                  "space)."})
    return listed
