"""The preprocessed folder, read and written in one place (like nnU-Net's ``PlansManager`` and ``load_case``).

Layout (written by :mod:`segzoo.data.preprocess`)::

    preprocess.json      the plan: dataset, channels, regions, label values, target spacing, case list
    <case>.npy           float32 [C, X, Y, Z]   the image (memory-mapped in training)
    <case>_seg.npy       uint8   [1, X, Y, Z]   label values as in the raw data (uint16 above 255; absent if
                                                unlabelled)
    <case>.json          properties: original shape/affine, preprocessed shape/affine, crop box

Every other module asks :class:`Preprocessed` for these (``.regions``, ``.case(name)``, ...) instead of
building file names or reading ``preprocess.json`` itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segzoo.errors import SegzooError
from segzoo.io import read_json, write_json

PLAN = "preprocess.json"


@dataclass(frozen=True)
class PreprocessedCase:
    """One case: ``image`` [C, X, Y, Z], ``label`` [1, X, Y, Z] (None if unlabelled), ``properties``."""

    id: str
    image: np.ndarray
    label: np.ndarray | None
    properties: dict


class Preprocessed:
    """A preprocessed folder: its plan read once, its cases on demand."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / PLAN
        if not path.is_file():
            raise SegzooError(f"{path}: missing (run `segzoo preprocess` first)")
        self.plan_bytes = path.read_bytes()  # as read, for fingerprints
        try:
            self.plan = json.loads(self.plan_bytes)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SegzooError(f"{path}: not valid JSON ({e})") from None

    def __repr__(self) -> str:
        return f"Preprocessed({str(self.folder)!r})"

    @property
    def dataset(self) -> str:
        return self.plan["dataset"]

    @property
    def channels(self) -> list[str]:
        return list(self.plan["channels"])

    @property
    def regions(self) -> dict[str, list[int]]:
        """Region name → the label values it covers (nnU-Net regions), in channel order."""
        return dict(self.plan["regions"])

    @property
    def region_names(self) -> list[str]:
        return list(self.plan["regions"])

    @property
    def label_values(self) -> list[int]:
        return list(self.plan["label_values"])

    @property
    def spacing(self) -> list[float]:
        """The target spacing every case was resampled to (mm)."""
        return list(self.plan["target_spacing"])

    @property
    def normalization(self) -> list[dict] | None:
        """Each channel's normalisation as planned (None: a per-image z-score, preprocessing without plans)."""
        return self.plan.get("normalization")

    @property
    def spacing_range(self) -> list[list[float]] | None:
        """[[min x, y, z], [max x, y, z]] RAS spacing of the training cases (None: preprocessed without plans)."""
        return self.plan.get("spacing_range")

    def case_ids(self, *, labelled: bool | None = None, test: bool | None = None) -> list[str]:
        """Case ids in the plan's order, optionally only (un)labelled or (non-)test ones."""
        return [c["id"] for c in self.plan["cases"]
                if (labelled is None or c["labelled"] == labelled) and (test is None or c["test"] == test)]

    def image(self, case: str, *, mmap: bool = False) -> np.ndarray:
        return self._load(self.image_path(case), mmap)

    def label(self, case: str, *, mmap: bool = False) -> np.ndarray:
        return self._load(self.label_path(case), mmap)

    def properties(self, case: str) -> dict:
        """What maps the case's arrays back to its original grid."""
        return read_json(self.folder / f"{case}.json")

    def case(self, case: str, *, mmap: bool = False) -> PreprocessedCase:
        label = self.label_path(case)
        return PreprocessedCase(case, self.image(case, mmap=mmap), self._load(label, mmap) if label.is_file() else None,
                                self.properties(case))

    def image_path(self, case: str) -> Path:
        return self.folder / f"{case}.npy"

    def label_path(self, case: str) -> Path:
        return self.folder / f"{case}_seg.npy"

    def _load(self, path: Path, mmap: bool) -> np.ndarray:
        if not path.is_file():
            raise SegzooError(f"{path}: missing; is {self.folder} the preprocessed folder these cases come from?")
        return np.load(path, mmap_mode="r" if mmap else None)


def write_case(folder: Path, case: str, image: np.ndarray, label: np.ndarray | None, properties: dict) -> None:
    """The files of one case, under the names :class:`Preprocessed` reads."""
    np.save(folder / f"{case}.npy", image)
    if label is not None:
        np.save(folder / f"{case}_seg.npy", label)
    write_json(folder / f"{case}.json", properties)


def write_plan(folder: Path, plan: dict) -> None:
    write_json(folder / PLAN, plan)
