"""Scoring one run's predictions: one CSV row per test case and region (see :mod:`segzoo.evaluate.metrics`).

Predictions come in either of two forms, case by case, in the original image grid
(:class:`segzoo.inference.predictions.PredictionsFolder` reads both):

* segzoo's (``segzoo infer``): a mask per region and the probabilities;
* a label map per case, ``<case>.nii.gz``, as nnU-Net (``nnUNetv2_predict``) and most tools write them,
  with the dataset's label values: each region's mask is the voxels holding one of its values. Without
  probabilities, NLL and calibration are NaN (left out of the means).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from segzoo.data.dataset import read_dataset
from segzoo.data.nifti import load_volume
from segzoo.data.preprocessed import Preprocessed
from segzoo.errors import SegzooError
from segzoo.evaluate.metrics import METRICS, score_region
from segzoo.inference.predictions import PredictionsFolder
from segzoo.io import read_json


def evaluate_run(predictions: str | Path, raw: str | Path, pre: Preprocessed, splits: str | Path, *,
                 tolerance_mm: float, model: str, seed: int, out_of_fold: bool = False,
                 instance_regions: list[str] = (), detection: dict | None = None) -> pd.DataFrame:
    """Rows ``model, seed, case, region, <metrics>`` for every test case in ``splits`` (``out_of_fold``: every
    case of the cross-validation folds' ``val`` lists instead). Regions of ``instance_regions`` are also scored
    lesion by lesion (:mod:`segzoo.evaluate.lesions`, with ``detection``'s rule); the others get NaN there."""
    unknown = [r for r in instance_regions if r not in pre.regions]
    if unknown:
        raise SegzooError(f"instance regions {unknown} are not regions of {pre.dataset} ({', '.join(pre.regions)})")
    folder = PredictionsFolder(predictions)
    regions = pre.regions
    labels = {c.id: c.label for c in read_dataset(raw).cases}
    rows = []
    split = read_json(splits)
    if out_of_fold and not split.get("folds"):
        raise SegzooError(f"{splits}: no cross-validation folds to score out of fold (set splits.folds)")
    cases = sorted(c for f in split["folds"] for c in f["val"]) if out_of_fold else split["test"]
    for case in cases:
        if labels.get(case) is None:
            raise SegzooError(f"{raw}: test case {case} has no reference label")
        ref = load_volume(labels[case])
        masks = folder.masks(case, regions, ref)
        prob = folder.probabilities(case, ref) if folder.has_masks(case, regions) else None
        for r, (name, values) in enumerate(regions.items()):
            region_prob = None if prob is None else prob[..., r]
            row = score_region(masks[name], np.isin(ref.data, values), region_prob, ref.spacing, tolerance_mm,
                               detection=(detection or {}) if name in instance_regions else None)
            rows.append({"model": model, "seed": seed, "case": case, "region": name, **row})
    return pd.DataFrame(rows, columns=["model", "seed", "case", "region", *METRICS])
