"""Figures of the weight-generation section, drawn from the evaluation's tables (Dice on the whole test volumes,
the Adam curves on test patches)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from segzoo.io import save_figure  # noqa: E402

# (column prefix in the oneshot table, label, colour, marker): G.pt, Adam from the parent and the four memorisers
NETWORKS = [("oneshot", "G.pt one-shot", "tab:red", "o"), ("adam_best", "Adam from the parent (val-chosen best)",
                                                          "tab:blue", "s"),
            ("lookup", "lookup memoriser", "tab:grey", "x"), ("mean_k", "mean of k nearest", "tab:green", "^"),
            ("nearest", "nearest checkpoint", "black", "+"), ("noise", "noise at equal distance", "tab:orange", "v")]


def _tasks(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(table["task"])) if len(table) else []


def _axes(count: int, width: float = 3.6, height: float = 3.4):
    fig, axes = plt.subplots(1, max(1, count), figsize=(width * max(1, count), height), squeeze=False)
    return fig, axes[0]


def audit_figure(shots: pd.DataFrame, png: Path) -> Path:
    """Zeng et al.'s audit: test Dice against distance to the nearest training checkpoint, per task."""
    tasks = _tasks(shots)
    fig, axes = _axes(len(tasks))
    for ax, task in zip(axes, tasks):
        s = shots[shots["task"] == task]
        for prefix, label, colour, marker in NETWORKS:
            ax.scatter(s[f"{prefix}_d_nearest" if prefix != "oneshot" else "d_nearest"], s[f"{prefix}_dice"], s=18,
                       color=colour, marker=marker, label=label)
        ax.set(title=f"task {task}", xlabel="distance to the nearest training checkpoint", ylabel="Dice (test volumes)",
               ylim=(0, 1))
    axes[0].legend(fontsize=6, loc="lower right")
    return save_figure(fig, png, dpi=90)


def alignment_figure(samples: pd.DataFrame, aligned: pd.DataFrame, png: Path) -> Path:
    align = samples[samples["kind"] == "align"]
    tasks = _tasks(align)
    fig, axes = _axes(len(tasks))
    for ax, task in zip(axes, tasks):
        g = align[align["task"] == task]
        a = aligned[aligned["task"] == task]
        r2 = f"R² {a['r2'].iloc[0]:.2f}, lookup {a['r2_lookup'].iloc[0]:.2f}" if len(a) else ""
        ax.scatter(g["task_prompt"], g["task_dice"], s=16, color="tab:red", label="G.pt")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="prompted Dice (val scale)", ylabel="achieved Dice (test volumes)",
               title=f"task {task} ({r2})")
    axes[0].legend(fontsize=7)
    return save_figure(fig, png, dpi=90)


def oneshot_figure(shots: pd.DataFrame, png: Path) -> Path:
    tasks = _tasks(shots)
    fig, ax = plt.subplots(figsize=(1.9 * len(tasks) + 4, 3.6))
    width = 0.8 / len(NETWORKS)
    for i, (prefix, label, colour, _) in enumerate(NETWORKS):
        means = [shots.loc[shots["task"] == t, f"{prefix}_dice"].mean() for t in tasks]
        ax.bar(np.arange(len(tasks)) + i * width, means, width, label=label, color=colour)
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks)
    ax.set(ylim=(0, 1), ylabel="task Dice (test volumes)", title="from held-out parents: mean over parents x draws")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, png, dpi=90)


def finetune_figure(curves: pd.DataFrame, tuned: pd.DataFrame, png: Path) -> Path:
    tasks = _tasks(tuned)
    fig, axes = _axes(len(tasks), height=3.2)
    for ax, task in zip(axes, tasks):
        for (start, source), c in curves[curves["task"] == task].groupby(["start", "source"]):
            parent = source == "parent"
            ax.plot(c["step"], c["task_dice"], color="tab:blue" if parent else "tab:red", lw=0.8, alpha=0.7)
        ax.axhline(tuned.loc[tuned["task"] == task, "target_dice"].mean(), color="black", ls=":")
        ax.set(title=f"task {task}", xlabel="Adam step", ylabel="task Dice (test patches)", ylim=(0, 1))
    axes[0].plot([], [], color="tab:blue", label="Adam from the held-out parent")
    axes[0].plot([], [], color="tab:red", label="Adam from a one-shot draw")
    axes[0].plot([], [], color="black", ls=":", label="the parent's best (mean)")
    axes[0].legend(fontsize=7, loc="lower right")
    return save_figure(fig, png, dpi=90)


def unification_figure(unified: pd.DataFrame, regions: list[str], png: Path) -> Path:
    means = unified.groupby("method", sort=False)[[f"dice_{n}" for n in regions]].mean()
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(means) + 1.5))
    height = 0.8 / len(regions)
    y = np.arange(len(means))
    for i, name in enumerate(regions):
        ax.barh(y + i * height, means[f"dice_{name}"], height, label=name)
    ax.set_yticks(y + 0.4 - height / 2, means.index, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="Dice (test volumes), mean over held-out parents", title="one network for every region")
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
    shots = tables["oneshot"]
    if len(shots):
        listed += [
            {"file": audit_figure(shots, out / "audit.png").name,
             "caption": "The memorisation audit (Zeng et al.): whole-volume test Dice against distance to the nearest "
                        "training checkpoint, for G.pt's draws from held-out parents, what Adam reaches from those "
                        "parents, and the four memorisers on the same prompts (lookup and nearest sit at 0)."},
            {"file": oneshot_figure(shots, out / "oneshot.png").name,
             "caption": "One-shot networks from held-out parents (prompted with the best training Dice) against Adam "
                        "from the same parents and the memorisers; whole test volumes, mean over parents x draws."}]
    if len(tables["alignment"]):
        listed.append({"file": alignment_figure(tables["samples"], tables["alignment"], out / "alignment.png").name,
                       "caption": "Prompt alignment from held-out parents: achieved test Dice (volumes) against the "
                                  "prompted Dice (validation scale; dashed: perfect alignment)."})
    if len(tables["finetune"]):
        png = finetune_figure(tables["finetune_curves"], tables["finetune"], out / "finetune.png")
        listed.append({"file": png.name,
                       "caption": "Adam from each one-shot draw (red) and from its held-out parent (blue), same task, "
                                  "learning rate and data order; dotted: the parents' val-chosen best (test patches)."})
    if len(tables["unification"]):
        listed.append({"file": unification_figure(tables["unification"], regions, out / "unification.png").name,
                       "caption": "One network for every region, from held-out parents: G.pt prompted on every "
                                  "region, the parents' best multi-task checkpoint, multi-task Adam and merges of "
                                  "their single-task finals (whole test volumes)."})
    if loss is not None:
        listed.append({"file": loss_figure(loss, out / "gpt_loss.png").name,
                       "caption": "G.pt training loss (denoising MSE in the normalised change space)."})
    return listed
