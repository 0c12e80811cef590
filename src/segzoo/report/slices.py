"""Three orthogonal slices through a volume, with label contours, as a PNG a person can look at."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

CONTOUR_COLOURS = {1: "tab:cyan", 2: "tab:orange", 3: "tab:red"}


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
    spacing = img.header.get_zooms()[:3]
    label = None
    if label_path is not None:
        label = np.asarray(nib.as_closest_canonical(nib.load(label_path)).dataobj).astype(np.int16)
    c = centre or tuple(n // 2 for n in data.shape)
    views = [  # (slice, aspect of rows/cols in mm, name)
        (lambda a: a[:, :, c[2]].T, spacing[1] / spacing[0], "axial"),
        (lambda a: a[:, c[1], :].T, spacing[2] / spacing[0], "coronal"),
        (lambda a: a[c[0], :, :].T, spacing[2] / spacing[1], "sagittal"),
    ]
    lo, hi = np.percentile(data, [0.5, 99.5])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, (cut, aspect, name) in zip(axes, views):
        ax.imshow(cut(data), cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect,
                  interpolation="nearest")
        if label is not None:
            lab = cut(label)
            for value, colour in CONTOUR_COLOURS.items():
                if (lab == value).any():
                    ax.contour(lab >= value, levels=[0.5], colors=colour, linewidths=0.8)
        ax.set_title(name)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
