"""Three orthogonal slices through a volume, with label contours, as a PNG a person can look at."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from segzoo.io import save_figure  # noqa: E402

CONTOUR_COLOURS = {1: "tab:cyan", 2: "tab:orange", 3: "tab:red"}


def draw_orthogonal(axes, data: np.ndarray, spacing, centre, contours: list[tuple[np.ndarray, str]]) -> None:
    """Axial, coronal and sagittal slices of a RAS volume through ``centre`` on three axes, in mm
    proportions, with each ``(mask, colour)`` of ``contours`` outlined."""
    c = centre
    views = [  # (slice, aspect of rows/cols in mm, name)
        (lambda a: a[:, :, c[2]].T, spacing[1] / spacing[0], "axial"),
        (lambda a: a[:, c[1], :].T, spacing[2] / spacing[0], "coronal"),
        (lambda a: a[c[0], :, :].T, spacing[2] / spacing[1], "sagittal"),
    ]
    lo, hi = np.percentile(data, [0.5, 99.5])
    for ax, (cut, aspect, name) in zip(axes, views):
        ax.imshow(cut(data), cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect, interpolation="nearest")
        for mask, colour in contours:
            if cut(mask).any():
                ax.contour(cut(mask), levels=[0.5], colors=colour, linewidths=0.8)
        ax.set_title(name)
        ax.set_axis_off()


def render_orthogonal(image_path: str | Path, png: str | Path, label_path: str | Path | None = None,
                      centre: tuple[int, int, int] | None = None, title: str | None = None) -> Path:
    """Axial, coronal and sagittal slices through ``centre`` (default: the middle), drawn in mm.

    The volume is reoriented to RAS first so every case looks the same way up whatever its affine.
    Label values 1, 2, 3 are drawn as contours when ``label_path`` is given.
    """
    img = nib.as_closest_canonical(nib.load(image_path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    contours = []
    if label_path is not None:
        label = np.asarray(nib.as_closest_canonical(nib.load(label_path)).dataobj).astype(np.int16)
        contours = [(label >= value, colour) for value, colour in CONTOUR_COLOURS.items() if (label == value).any()]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    draw_orthogonal(axes, data, img.header.get_zooms()[:3], centre or tuple(n // 2 for n in data.shape), contours)
    if title:
        fig.suptitle(title)
    return save_figure(fig, png)
