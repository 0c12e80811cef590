"""Train / validation / test split of a preprocessed dataset, drawn once from the seed.

The dataset's own labelled test cases (``imagesTs`` + ``labelsTs``) are the test set; without them the
test set is drawn from the training cases. Validation is drawn from what is left. Test cases are
never used for selection (early stopping, best checkpoint, G.pt prompts): only ``train`` and ``val``
feed those. With cross-validation (``folds`` > 1) the non-test cases are dealt into folds; fold ``f`` trains
on the others and validates on its own, so every non-test case gets one out-of-fold prediction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segzoo.data.preprocessed import Preprocessed
from segzoo.errors import SegzooError
from segzoo.io import read_json


def make_splits(case_ids: list[str], labelled_test_ids: list[str], seed: int,
                val_fraction: float, test_fraction: float, folds: int = 1,
                nnunet_folds: list[dict] | None = None) -> dict:
    """Deterministic split: the same ids, seed and fractions always give the same lists.

    With ``folds`` > 1 the non-test cases are also dealt into that many folds (``folds``: each fold's
    ``train`` and ``val``, every case in exactly one ``val``); ``nnunet_folds`` (nnU-Net's
    ``splits_final.json``, test cases removed) replaces the drawn ones. ``train``/``val`` are then fold 0's."""
    pool = sorted(case_ids)
    n_val = max(1, round(val_fraction * len(pool)))  # fractions are of all labelled training cases
    rng = np.random.default_rng(seed)
    if labelled_test_ids:
        test, source = sorted(labelled_test_ids), "imagesTs"
    else:
        n_test = max(1, round(test_fraction * len(pool)))
        order = rng.permutation(len(pool))
        test, source = sorted(pool[i] for i in order[:n_test]), "drawn"
        pool = sorted(pool[i] for i in order[n_test:])
    if len(pool) - n_val < 1:
        raise SegzooError(f"{len(case_ids)} labelled training case(s) cannot give at least one train, one "
                          f"validation and one test case; add cases or use a dataset with labelsTs")
    if folds > 1 or nnunet_folds:
        dealt = _given_folds(nnunet_folds, pool, test) if nnunet_folds else _draw_folds(pool, folds, rng)
        return {"seed": seed, "test_source": source, **dealt[0], "test": test, "folds": dealt}
    order = rng.permutation(len(pool))
    val = sorted(pool[i] for i in order[:n_val])
    train = sorted(pool[i] for i in order[n_val:])
    return {"seed": seed, "test_source": source, "train": train, "val": val, "test": test}


def _draw_folds(pool: list[str], folds: int, rng: np.random.Generator) -> list[dict]:
    if folds > len(pool):
        raise SegzooError(f"splits.folds {folds}: only {len(pool)} non-test case(s) to deal into folds")
    chunks = np.array_split(rng.permutation(len(pool)), folds)
    return [{"train": sorted(pool[i] for c in chunks if c is not chunk for i in c),
             "val": sorted(pool[i] for i in chunk)} for chunk in chunks]


def _given_folds(given: list[dict], pool: list[str], test: list[str]) -> list[dict]:
    """nnU-Net's folds without the test cases; every non-test case must be validated in exactly one fold."""
    folds = [{"train": sorted(set(f["train"]) - set(test)), "val": sorted(set(f["val"]) - set(test))} for f in given]
    seen = [c for f in folds for c in f["val"]]
    unknown = sorted(set(seen) - set(pool))
    if unknown:
        raise SegzooError(f"cases {unknown} of the given folds are not labelled training cases of this dataset")
    twice = sorted({c for c in seen if seen.count(c) > 1})
    missing = sorted(set(pool) - set(seen))
    if twice or missing:
        raise SegzooError(f"the given folds validate {twice} more than once and {missing} never: every non-test case "
                          "must be in exactly one fold's val")
    return folds


def read_nnunet_splits(path: str | Path) -> list[dict]:
    """nnU-Net's ``splits_final.json``: a list of ``{"train": [ids], "val": [ids]}``, one per fold."""
    folds = read_json(path)
    if not (isinstance(folds, list) and folds and all(isinstance(f, dict) and isinstance(f.get("train"), list)
                                                      and isinstance(f.get("val"), list) for f in folds)):
        raise SegzooError(f"{path}: not nnU-Net's splits_final.json (a list of {{\"train\": [...], \"val\": [...]}})")
    return folds


def fold_split(splits: dict, fold: int | None, source: str | Path) -> dict:
    """``splits`` with ``train``/``val`` of fold ``fold`` (None: as written, i.e. without folds or fold 0)."""
    if fold is None:
        return splits
    folds = splits.get("folds")
    if not folds or not 0 <= fold < len(folds):
        held = len(folds) if folds else "no"
        raise SegzooError(f"{source}: no fold {fold} (it holds {held} folds; set splits.folds)")
    return {**splits, **folds[fold]}


def splits_for_preprocessed(pre: Preprocessed, seed: int, val_fraction: float, test_fraction: float,
                            folds: int = 1, nnunet_splits: str | Path | None = None) -> dict:
    """Split the labelled cases of a preprocessed folder."""
    given = read_nnunet_splits(nnunet_splits) if nnunet_splits else None
    try:
        return make_splits(pre.case_ids(labelled=True, test=False), pre.case_ids(labelled=True, test=True), seed,
                           val_fraction, test_fraction, folds, given)
    except SegzooError as e:
        raise SegzooError(f"{nnunet_splits or pre.folder}: {e}") from None
