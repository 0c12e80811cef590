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


FOLD_IDS = [f"c{i:02d}" for i in range(11)]


def test_folds_validate_every_non_test_case_exactly_once():
    a = make_splits(FOLD_IDS, [], seed=3, val_fraction=0.2, test_fraction=0.2, folds=3)
    assert a == make_splits(FOLD_IDS, [], seed=3, val_fraction=0.2, test_fraction=0.2, folds=3)
    pool = sorted(set(FOLD_IDS) - set(a["test"]))
    assert len(a["folds"]) == 3 and sorted(c for f in a["folds"] for c in f["val"]) == pool
    for fold in a["folds"]:
        assert sorted(fold["train"] + fold["val"]) == pool and not set(fold["val"]) & set(a["test"])
    assert (a["train"], a["val"]) == (a["folds"][0]["train"], a["folds"][0]["val"])
    assert "folds" not in make_splits(FOLD_IDS, [], seed=3, val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(SegzooError, match="splits.folds 20: only 9 non-test case"):
        make_splits(FOLD_IDS, [], seed=3, val_fraction=0.2, test_fraction=0.2, folds=20)


def test_nnunet_folds_are_taken_without_the_test_cases(tmp_path):
    import json

    from segzoo.data.splits import fold_split, read_nnunet_splits

    given = [{"train": FOLD_IDS[4:], "val": FOLD_IDS[:4]}, {"train": FOLD_IDS[:4] + FOLD_IDS[8:], "val": FOLD_IDS[4:8]},
             {"train": FOLD_IDS[:8], "val": FOLD_IDS[8:]}]
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps(given))
    split = make_splits(FOLD_IDS, ["t0"], seed=0, val_fraction=0.2, test_fraction=0.2,
                        nnunet_folds=read_nnunet_splits(path))
    assert split["test"] == ["t0"] and [f["val"] for f in split["folds"]] == [FOLD_IDS[:4], FOLD_IDS[4:8], FOLD_IDS[8:]]
    drawn = make_splits(FOLD_IDS, [], seed=0, val_fraction=0.2, test_fraction=0.2, nnunet_folds=given)
    assert all(not set(f["train"] + f["val"]) & set(drawn["test"]) for f in drawn["folds"])
    assert fold_split(split, 2, path)["val"] == FOLD_IDS[8:]
    with pytest.raises(SegzooError, match="no fold 3"):
        fold_split(split, 3, path)
    overlap = [{"train": FOLD_IDS[4:], "val": FOLD_IDS[:5]}, {"train": FOLD_IDS[:4], "val": FOLD_IDS[4:]}]
    with pytest.raises(SegzooError, match=r"validate \['c04'\] more than once"):
        make_splits(FOLD_IDS, ["t0"], seed=0, val_fraction=0.2, test_fraction=0.2, nnunet_folds=overlap)
    path.write_text(json.dumps({"train": []}))
    with pytest.raises(SegzooError, match="not nnU-Net's splits_final.json"):
        read_nnunet_splits(path)
