import pytest

from segzoo.data.splits import make_splits
from segzoo.errors import SegzooError

IDS = [f"case_{i:02d}" for i in range(20)]


def test_same_seed_same_split_and_seed_matters():
    a = make_splits(IDS, [], seed=1, val_fraction=0.2, test_fraction=0.2)
    assert a == make_splits(list(reversed(IDS)), [], seed=1, val_fraction=0.2, test_fraction=0.2)
    assert a != make_splits(IDS, [], seed=2, val_fraction=0.2, test_fraction=0.2)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (12, 4, 4)


@pytest.mark.parametrize("seed", range(25))
def test_test_cases_never_in_train_or_val(seed):
    s = make_splits(IDS, [], seed=seed, val_fraction=0.25, test_fraction=0.3)
    assert not set(s["test"]) & (set(s["train"]) | set(s["val"]))
    assert not set(s["train"]) & set(s["val"])
    assert sorted(s["train"] + s["val"] + s["test"]) == IDS


def test_dataset_test_set_is_used_as_is():
    s = make_splits(IDS, ["ts_1", "ts_0"], seed=0, val_fraction=0.2, test_fraction=0.5)
    assert s["test"] == ["ts_0", "ts_1"] and s["test_source"] == "imagesTs"
    assert sorted(s["train"] + s["val"]) == IDS


def test_too_few_cases_is_a_clear_error():
    with pytest.raises(SegzooError, match="at least one train"):
        make_splits(IDS[:2], [], seed=0, val_fraction=0.2, test_fraction=0.2)
