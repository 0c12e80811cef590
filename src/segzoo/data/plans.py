"""``plans.json``: what preprocessing and training take from the dataset's fingerprint, planned as nnU-Net's
experiment planner does, and read back in one place (:class:`Plans`).

- **Target spacing**: the median spacing of the training cases; on anisotropic data (the coarsest axis's
  spacing over ``ANISOTROPY`` times the others', and its median size under 1/``ANISOTROPY`` of theirs)
  the coarse axis takes the 10th percentile of its spacings instead, never finer than the other axes.
- **Normalisation per channel**, from ``channel_names``: ``CT`` clips to the foreground's 0.5–99.5th
  percentiles and z-scores with the foreground's mean and std (dataset-wide); ``noNorm`` leaves the
  intensities; anything else (MR, T1, ...) is z-scored per image.
- **Patch and batch per model**: start from a box of ``REFERENCE_VOXELS`` voxels with the same extent in
  mm along every axis, clipped to the median image (after resampling) and rounded up to the model's
  divisor; while the estimated training memory (:mod:`segzoo.models.memory`) of ``MIN_BATCH`` patches
  exceeds the budget, shrink by one divisor the axis where the patch covers most of the median image
  (never below ``MIN_SIDE`` voxels where the median image has them).
  The batch then fills the budget, at least ``MIN_BATCH`` and at most what covers ``MAX_BATCH_FRACTION``
  of the dataset's voxels.
- **nnU-Net's networks** (``nnunet``, ``nnunet_resenc``) are planned with the patch, as nnU-Net's planner plans
  them: at every candidate patch their topology (stages, strides, kernels) is nnU-Net's for that patch and the
  target spacing, its divisors per axis round the patch up, and the shrinking step is the divisor of the smaller
  patch. Each model's entry keeps ``model_options``, the options it is built with (for these, the
  ``architecture`` block; :func:`segzoo.models.registry.planned_options`).

Every value the config sets (``preprocess.spacing``, ``preprocess.normalization``, ``train.patch_size``,
``train.batch_size``) overrides the plan, and the file says which values came from where.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from segzoo.errors import SegzooError
from segzoo.io import read_json
from segzoo.models.memory import model_profile, training_bytes
from segzoo.models.nnunet import topology
from segzoo.models.registry import PLANNED, planned_options

ANISOTROPY = 3  # nnU-Net's threshold for a separately treated coarse axis
REFERENCE_VOXELS = 256**3  # the largest patch considered before the memory budget
MIN_BATCH = 2
MIN_SIDE = 8  # voxels of context a patch keeps along every axis where the median image has them
MAX_BATCH_FRACTION = 0.05  # of all training voxels in one batch, at most
SCHEMES = ("zscore", "ct", "none")
PROTOCOLS = ("equal", "budget")  # the comparison's terms: one patch and batch for every model, or each its own
MB = 2**20


def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[list[float], str]:
    """nnU-Net's full-resolution target spacing for spacings and shapes [cases, 3] (RAS order)."""
    target = np.median(spacings, axis=0)
    median_shape = np.median(shapes, axis=0)
    coarse = int(np.argmax(target))
    others = [a for a in range(3) if a != coarse]
    anisotropic_spacing = target[coarse] > ANISOTROPY * max(target[others])
    anisotropic_shape = median_shape[coarse] * ANISOTROPY < min(median_shape[others])
    if anisotropic_spacing and anisotropic_shape:
        coarse_spacing = float(np.percentile(spacings[:, coarse], 10))
        if coarse_spacing < max(target[others]):
            coarse_spacing = float(max(target[others])) + 1e-5  # never finer than the fine axes
        target[coarse] = coarse_spacing
        return [float(s) for s in target], "median; anisotropic axis at its 10th percentile"
    return [float(s) for s in target], "median"


def normalization(channels: list[str], intensities: list[dict], override: list[str] | None) -> list[dict]:
    """One normalisation per channel (scheme and, for CT, the dataset's clipping range, mean and std)."""
    out = []
    for c, (name, stats) in enumerate(zip(channels, intensities)):
        if override:
            scheme, source = override[c], "config"
        else:
            key = name.casefold()
            scheme, source = ("ct" if key == "ct" else "none" if key == "nonorm" else "zscore"), "channel name"
        entry = {"channel": name, "scheme": scheme, "source": source}
        if scheme == "ct":
            if stats["samples"] == 0:
                raise SegzooError(f"channel {c} ({name}): CT normalisation needs foreground intensities, and the "
                                  "training labels hold no foreground")
            entry.update(clip=[stats["percentile_00_5"], stats["percentile_99_5"]], mean=stats["mean"],
                         std=max(stats["std"], 1e-8))
        out.append(entry)
    return out


class _Planned:
    """A model as the planner sees it: the options it is built with, its divisors per axis and its memory profile,
    at a patch (nnU-Net's networks are planned for the patch: :func:`segzoo.models.registry.planned_options`)."""

    def __init__(self, name: str, options: dict, channels: int, regions: int, spacing: list[float]):
        self.name, self.config, self.channels, self.regions, self.spacing = name, options, channels, regions, spacing
        self.static = None if name in PLANNED and "architecture" not in options else \
            model_profile(name, channels, regions, options)

    def options(self, patch: list[int]) -> dict:
        return planned_options(self.name, self.config, patch, self.spacing)

    def divisors(self, patch: list[int]) -> list[int]:
        return list(self.static["divisors"]) if self.static else topology(self.spacing, patch).divisors

    def profile(self, patch: list[int]) -> dict:
        return self.static or model_profile(self.name, self.channels, self.regions, self.options(patch))


def _fit(patch: list[int], models: list[_Planned]) -> tuple[list[int], list[int]]:
    """``patch`` with every side rounded up to a multiple of every model's divisor on that axis (nnU-Net's networks:
    the topology of the rounded patch, so the rounding repeats until nothing changes); and those divisors."""
    for _ in range(64):
        divisors = [math.lcm(*axis) for axis in zip(*(m.divisors(patch) for m in models))]
        fitted = [int(max(d, math.ceil(side / d) * d)) for side, d in zip(patch, divisors)]
        if fitted == patch:
            return patch, divisors
        patch = fitted
    raise SegzooError(f"no patch near {patch} fits the divisors of {', '.join(m.name for m in models)}")


def _initial_patch(spacing: list[float], median_shape: np.ndarray, models: list[_Planned]):
    inverse = 1 / np.asarray(spacing)
    box = np.round(inverse * (REFERENCE_VOXELS / np.prod(inverse)) ** (1 / 3))
    box = np.minimum(box, median_shape)
    return _fit([int(math.ceil(side)) for side in box], models)


def _shrunk(patch: list[int], axis: int, divisors: list[int], models: list[_Planned], median_shape: np.ndarray):
    """``patch`` one step smaller along ``axis`` (the step is the divisor of the smaller patch, as nnU-Net steps, so
    that a side such as 224 between 256 and 192 is not skipped), or None where that axis may not shrink: it keeps
    at least ``MIN_SIDE`` voxels (or the median image's side, if smaller) and its divisor, and the coarsest level
    more than one voxel, so a model with divisor 1 is not left with a patch two slices thick."""
    trial = patch[:axis] + [patch[axis] - divisors[axis]] + patch[axis + 1:]
    if trial[axis] < 1:
        return None
    step = math.lcm(*(m.divisors(trial)[axis] for m in models))
    smaller, after = _fit(patch[:axis] + [patch[axis] - step] + patch[axis + 1:], models)
    floor = max(after[axis], min(MIN_SIDE, math.ceil(median_shape[axis])))
    coarse = all(d == 1 for d in after) or np.prod([p // d for p, d in zip(smaller, after)]) >= 2
    if smaller[axis] >= patch[axis] or smaller[axis] < floor or not coarse:
        return None
    return smaller, after


def plan_model(models: list[_Planned], spacing: list[float], median_shape: np.ndarray, dataset_voxels: float,
               budget_bytes: float) -> dict:
    """One patch and batch size that every model of ``models`` trains with under the memory budget: a side is a
    multiple of every model's divisor, and the most memory-hungry model decides (one model: its own plan)."""

    def needed(patch: list[int], batch: int) -> float:
        return max(training_bytes(m.profile(patch), patch, batch) for m in models)

    patch, divisors = _initial_patch(spacing, median_shape, models)
    while needed(patch, MIN_BATCH) > budget_bytes:
        ratios = np.asarray(patch) / median_shape
        order = [int(a) for a in np.argsort(ratios, kind="stable")[::-1]]  # most covered first (ties: last axis)
        smaller = next(filter(None, (_shrunk(patch, a, divisors, models, median_shape) for a in order)), None)
        if smaller is None:
            break  # the smallest patch the model takes; the plan says it is over budget
        patch, divisors = smaller
    profiles = [m.profile(patch) for m in models]
    fits = min(int((budget_bytes - training_bytes(p, patch, 0)) //
                   (training_bytes(p, patch, 1) - training_bytes(p, patch, 0))) for p in profiles)
    cap = int(round(MAX_BATCH_FRACTION * dataset_voxels / np.prod(patch)))
    batch = max(MIN_BATCH, min(fits, cap))
    estimate = needed(patch, batch)
    return {"patch_size": patch, "batch_size": batch, "divisor": max(divisors), "estimated_mb": round(estimate / MB, 1),
            "within_budget": bool(estimate <= budget_bytes)}


def data_plan(fingerprint: dict, *, spacing: list[float] | None = None,
              normalization_override: list[str] | None = None) -> dict:
    """What preprocessing takes from the fingerprint: target spacing, median resampled shape, normalisation.

    Preprocessing calls this on the fingerprint file itself, so a change to the models' plans (widths,
    memory budget) never reruns preprocessing."""
    cases = fingerprint["cases"]
    if not cases:
        raise SegzooError(f"dataset {fingerprint['dataset']}: no labelled training case to plan from")
    spacings = np.asarray([c["spacing"] for c in cases], dtype=np.float64)
    shapes = np.asarray([c["shape"] for c in cases], dtype=np.float64)
    if spacing:
        target, spacing_source = [float(s) for s in spacing], "config"
    else:
        target, spacing_source = target_spacing(spacings, shapes)
    median_shape = np.median(shapes * spacings / np.asarray(target), axis=0)
    return {"target_spacing": target, "spacing_source": spacing_source,
            "median_shape": [round(float(s), 1) for s in median_shape],
            "normalization": normalization(fingerprint["channels"], fingerprint["intensities"], normalization_override)}


def make_plans(fingerprint: dict, *, models: dict[str, dict], memory_mb: float, spacing: list[float] | None = None,
               normalization_override: list[str] | None = None, patch_size: list[int] | None = None,
               batch_size: int | None = None, protocol: str = "equal") -> dict:
    """The plans for a fingerprint (:func:`segzoo.data.fingerprint.dataset_fingerprint`) and the config's models.

    ``protocol`` (the comparison's terms, config ``compare.protocol``): ``equal`` plans one patch and batch that
    every model fits under the budget, so models differ by architecture alone; ``budget`` plans each model's own
    patch and batch under the same budget (each at its best under the same memory)."""
    if protocol not in PROTOCOLS:
        raise SegzooError(f"compare.protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    data = data_plan(fingerprint, spacing=spacing, normalization_override=normalization_override)
    cases = fingerprint["cases"]
    median_shape = np.asarray(data["median_shape"])
    dataset_voxels = float(np.prod(median_shape) * len(cases))
    target = data["target_spacing"]
    candidates = {name: _Planned(name, options, len(fingerprint["channels"]), len(fingerprint["regions"]), target)
                  for name, options in models.items()}
    shared = plan_model(list(candidates.values()), target, median_shape, dataset_voxels,
                        memory_mb * MB) if protocol == "equal" and candidates else None
    planned = {}
    for name, model in candidates.items():
        entry = dict(shared) if shared else plan_model([model], target, median_shape, dataset_voxels,
                                                       memory_mb * MB)
        entry["patch_source"] = entry["batch_source"] = "plan" if protocol == "budget" else "plan (equal)"
        if patch_size:
            entry.update(patch_size=list(patch_size), patch_source="config")
        if batch_size:
            entry.update(batch_size=int(batch_size), batch_source="config")
        try:
            options = model.options(entry["patch_size"])
        except SegzooError as e:
            raise SegzooError(f"train.patch_size: {e}") from None
        profile = model_profile(name, model.channels, model.regions, options)
        entry.update(divisor=profile["divisor"], divisors=profile["divisors"], model_options=options)
        estimate = training_bytes(profile, entry["patch_size"], entry["batch_size"])
        entry.update(estimated_mb=round(estimate / MB, 1), within_budget=bool(estimate <= memory_mb * MB))
        planned[name] = entry
    spacings = np.asarray([c["spacing"] for c in cases], dtype=np.float64)
    return {
        "dataset": fingerprint["dataset"],
        "channels": fingerprint["channels"],
        **data,
        "memory_mb": memory_mb,
        "protocol": protocol,
        "models": planned,
        "fingerprint": {
            "cases": len(cases),
            "spacing_min": spacings.min(axis=0).tolist(),
            "spacing_median": np.median(spacings, axis=0).tolist(),
            "spacing_max": spacings.max(axis=0).tolist(),
            "shape_median": np.median([c["shape"] for c in cases], axis=0).tolist(),
            "intensities": fingerprint["intensities"],
        },
    }


class Plans:
    """A ``plans.json`` read once: ``.target_spacing``, ``.normalization``, ``.model(name)``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.data = read_json(self.path)
        for key in ("target_spacing", "normalization", "models", "fingerprint"):
            if key not in self.data:
                raise SegzooError(f"{self.path}: no {key!r} (not a plans file written by `segzoo plan`)")

    @property
    def target_spacing(self) -> list[float]:
        return list(self.data["target_spacing"])

    @property
    def normalization(self) -> list[dict]:
        return list(self.data["normalization"])

    @property
    def fingerprint(self) -> dict:
        return dict(self.data["fingerprint"])

    @property
    def protocol(self) -> str:
        """``equal`` or ``budget`` (plans written before protocols planned each model alone: ``budget``)."""
        return self.data.get("protocol", "budget")

    def terms(self, models: list[str]) -> str:
        """The comparison's protocol in one sentence, for captions and the page: what patch and batch each of
        ``models`` (those planned here) trained with."""
        entries = {m: self.model(m) for m in models if m in self.data["models"]}
        if not entries:
            return f"protocol {self.protocol}"
        size = lambda e: "×".join(map(str, e["patch_size"]))  # noqa: E731
        shared = len({(tuple(e["patch_size"]), e["batch_size"]) for e in entries.values()}) == 1
        if self.protocol == "equal" or shared:
            e = next(iter(entries.values()))
            source = ("set in the config" if e["patch_source"] == "config" else
                      f"the largest patch every model fits in {self.data['memory_mb']:g} MiB")
            return (f"protocol {self.protocol}: every model trained on patch {size(e)} voxels, batch {e['batch_size']} "
                    f"({source}), with the same steps, optimiser, schedule and augmentation")
        each = "; ".join(f"{m} {size(e)} (batch {e['batch_size']})" for m, e in entries.items())
        return (f"protocol {self.protocol}: each model its own patch and batch under {self.data['memory_mb']:g} MiB "
                f"({each}), the same steps, optimiser, schedule and augmentation; differences mix architecture "
                "with patch size")

    def model_options(self, name: str, config_options: dict) -> dict:
        """The options model ``name`` is built with: the plan's (nnU-Net's networks: the planned architecture), or,
        in plans written before the plan kept them, ``config_options``."""
        return dict(self.model(name).get("model_options", config_options))

    def model(self, name: str) -> dict:
        """The patch and batch size planned for model ``name``."""
        if name not in self.data["models"]:
            raise SegzooError(f"{self.path}: no plan for model {name!r} (planned: {', '.join(self.data['models'])}); "
                              "rerun `segzoo plan` with this model in its settings")
        return dict(self.data["models"][name])
