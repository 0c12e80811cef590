"""The report's figures (matplotlib, PNG): learning curves, per-case scores, overlays, reliability diagram."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from segzoo.evaluate.metrics import METRICS, calibration_bins  # noqa: E402
from segzoo.io import save_figure  # noqa: E402
from segzoo.report.names import model_name, region_name  # noqa: E402
from segzoo.report.slices import draw_orthogonal  # noqa: E402


def _save(fig, png: Path) -> Path:
    return save_figure(fig, png, dpi=90)


def _read_curve(tsv: Path) -> pd.DataFrame | None:
    return pd.read_csv(tsv, sep="\t") if tsv.is_file() else None


def learning_curves(runs: dict[str, Path], png: Path) -> Path:
    """Training loss and validation Dice against step, one line per run (``label → run folder``)."""
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(11, 4))
    for label, run in sorted(runs.items()):
        metrics = run / "dvclive" / "plots" / "metrics"
        loss, dice = _read_curve(metrics / "train" / "loss.tsv"), _read_curve(metrics / "val" / "dice.tsv")
        if loss is not None:
            ax_loss.plot(loss["step"], loss["loss"], marker=".", label=label)
        if dice is not None:
            ax_dice.plot(dice["step"], dice["dice"], marker=".", label=label)
    ax_loss.set(xlabel="step", ylabel="training loss (mean since last validation)", title="training loss")
    ax_dice.set(xlabel="step", ylabel="validation Dice (mean over regions)", title="validation Dice", ylim=(0, 1))
    ax_dice.legend(fontsize=8)
    return _save(fig, png)


def per_case_scores(scores: pd.DataFrame, metric: str, png: Path) -> Path:
    """Box plot per model with every test case (and seed) as a point, one panel per region."""
    regions = [r for r in dict.fromkeys(scores["region"]) if scores.loc[scores["region"] == r, metric].notna().any()]
    models = list(dict.fromkeys(scores["model"]))
    fig, axes = plt.subplots(1, len(regions), figsize=(4 * len(regions), 3.8), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, region in zip(axes[0], regions):
        data = [scores[(scores["model"] == m) & (scores["region"] == region)][metric].dropna().to_numpy()
                for m in models]
        ax.boxplot(data, showfliers=False)
        for i, values in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=12, alpha=0.7, color="k")
        ax.set_xticks(range(1, len(models) + 1), [model_name(m) for m in models], rotation=30, ha="right",
                      fontsize=8)
        ax.set(title=region_name(region), ylabel=METRICS[metric].label)
    return _save(fig, png)


def reliability(probs: dict[str, tuple[np.ndarray, np.ndarray]], png: Path, bins: int = 10) -> Path:
    """Observed frequency against predicted probability (``label → (probabilities, reference)``)."""
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    for label, (prob, ref) in sorted(probs.items()):
        counts, conf, freq = calibration_bins(prob, ref, bins)
        filled = counts > 0
        ax.plot(conf[filled], freq[filled], marker="o", label=label)
        ax_count.plot((np.arange(bins) + 0.5) / bins, np.maximum(counts, 1), marker=".", label=label)
    ax.set(ylabel="observed frequency", title="reliability (all regions, test voxels)", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    ax_count.set(xlabel="predicted probability", ylabel="voxels", yscale="log")
    return _save(fig, png)


def overlay(image: Path, reference: np.ndarray, prediction: np.ndarray, png: Path, title: str) -> Path:
    """Axial, coronal and sagittal slices through the reference's centre: reference (green) and
    prediction (magenta) contours of one region, in the image's RAS orientation."""
    img = nib.load(image)
    canonical = nib.as_closest_canonical(img)
    to_ras = nib.orientations.io_orientation(img.affine)
    ref = nib.orientations.apply_orientation(np.asarray(reference, bool), to_ras).astype(bool)
    pred = nib.orientations.apply_orientation(np.asarray(prediction, bool), to_ras).astype(bool)
    data = np.asarray(canonical.dataobj, dtype=np.float32)
    if data.ndim == 4:  # several channels (Decathlon): show the first
        data = data[..., 0]
    centre = np.round(np.argwhere(ref).mean(0)).astype(int) if ref.any() else np.asarray(data.shape) // 2
    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    draw_orthogonal(axes, data, canonical.header.get_zooms()[:3], centre, [(ref, "lime"), (pred, "magenta")])
    fig.suptitle(f"{title} — reference green, prediction magenta")
    return _save(fig, png)
