"""Train / validation / test split of a preprocessed dataset, drawn once from the seed.

The dataset's own labelled test cases (``imagesTs`` + ``labelsTs``) are the test set; without them the
test set is drawn from the training cases. Validation is drawn from what is left. Test cases are
never used for selection (early stopping, best checkpoint, G.pt prompts): only ``train`` and ``val``
feed those.
"""

from __future__ import annotations

import numpy as np

from segzoo.data.preprocessed import Preprocessed
from segzoo.errors import SegzooError


def make_splits(case_ids: list[str], labelled_test_ids: list[str], seed: int,
                val_fraction: float, test_fraction: float) -> dict:
    """Deterministic split: the same ids, seed and fractions always give the same lists."""
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
    order = rng.permutation(len(pool))
    val = sorted(pool[i] for i in order[:n_val])
    train = sorted(pool[i] for i in order[n_val:])
    return {"seed": seed, "test_source": source, "train": train, "val": val, "test": test}


def splits_for_preprocessed(pre: Preprocessed, seed: int, val_fraction: float, test_fraction: float) -> dict:
    """Split the labelled cases of a preprocessed folder."""
    try:
        return make_splits(pre.case_ids(labelled=True, test=False), pre.case_ids(labelled=True, test=True), seed,
                           val_fraction, test_fraction)
    except SegzooError as e:
        raise SegzooError(f"{pre.folder}: {e}") from None
