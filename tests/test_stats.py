"""The comparison statistics on synthetic scores with known answers."""

import numpy as np
import pandas as pd
import pytest

from segzoo.evaluate.stats import bootstrap_ci, compare, holm, wide_table


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, np.nan]) == pytest.approx([0.5, np.nan], nan_ok=True)


def test_bootstrap_interval_brackets_the_mean_and_is_seeded():
    values = np.random.default_rng(0).normal(0.8, 0.05, 40)
    mean, low, high = bootstrap_ci(values, seed=1)
    assert low < mean < high and mean == pytest.approx(values.mean())
    assert (mean, low, high) == bootstrap_ci(values, seed=1)
    assert bootstrap_ci(np.array([0.7, np.nan, 0.7]), seed=1) == (0.7, 0.7, 0.7)


def test_a_consistently_better_model_gets_the_exact_wilcoxon_p():
    rng = np.random.default_rng(0)
    rows = []
    for case in range(8):
        base = rng.uniform(0.6, 0.8)
        for seed in (0, 1):  # seeds are averaged per case first
            rows.append({"model": "unet3plus", "seed": seed, "case": f"c{case}", "region": "sc", "dice": base})
            rows.append({"model": "diffnet", "seed": seed, "case": f"c{case}", "region": "sc",
                         "dice": base + 0.1 + 0.01 * case})
    table = compare(pd.DataFrame(rows), "dice")
    better = table.set_index("model").loc["diffnet"]
    assert better["p_vs_baseline"] == pytest.approx(2 / 2**8)  # all 8 differences positive
    assert better["n"] == 8 and np.isnan(table.set_index("model").loc["unet3plus", "p_vs_baseline"])
    cells = wide_table(table)
    assert cells.loc["diffnet", "sc"].startswith(f"{better['mean']:.3f} [") and "p=" in cells.loc["diffnet", "sc"]


def test_effect_size_is_the_median_paired_difference_with_a_bootstrap_interval():
    rows = []
    for case in range(12):
        rows.append({"model": "unet3plus", "seed": 0, "case": f"c{case}", "region": "sc", "dice": 0.8})
        rows.append({"model": "diffnet", "seed": 0, "case": f"c{case}", "region": "sc", "dice": 0.8 - 0.1 - 0.01 * case})
    row = compare(pd.DataFrame(rows), "dice").set_index("model").loc["diffnet"]
    differences = -0.1 - 0.01 * np.arange(12)
    assert row["median_diff"] == pytest.approx(np.median(differences))
    assert differences.min() <= row["diff_ci_low"] < row["median_diff"] < row["diff_ci_high"] <= differences.max()
    assert "Δ -0.155 [" in wide_table(compare(pd.DataFrame(rows), "dice")).loc["diffnet", "sc"]


def test_seed_spread_is_the_sd_of_the_per_seed_means_and_unscored_regions_have_no_row():
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.02), (2, 0.04)):
        for case in range(5):
            rows.append({"model": "unet3plus", "seed": seed, "case": f"c{case}", "region": "sc",
                         "dice": 0.7 + shift + 0.01 * case, "lesion_f1": np.nan})
            rows.append({"model": "unet3plus", "seed": seed, "case": f"c{case}", "region": "lesion",
                         "dice": 0.5, "lesion_f1": 0.6})
    scores = pd.DataFrame(rows)
    row = compare(scores, "dice").set_index("region").loc["sc"]
    assert row["seeds"] == 3 and row["seed_sd"] == pytest.approx(np.std([0.72, 0.74, 0.76], ddof=1))
    assert "± 0.020 over 3 seeds" in wide_table(compare(scores, "dice")).loc["unet3plus", "sc"]
    assert list(compare(scores, "lesion_f1")["region"]) == ["lesion"]


def _score_files(folder) -> list:
    """Per-case scores of three models on 10 cases (every metric column, as `segzoo evaluate` writes them)."""
    from segzoo.evaluate.metrics import METRICS

    rng = np.random.default_rng(3)
    files = []
    for model, shift in (("unet3plus", 0.0), ("nnunet", 0.05), ("diffnet", -0.03)):
        rows = [{"model": model, "seed": 0, "case": f"c{case}", "region": region,
                 **{m: rng.uniform(0.5, 0.9) + shift for m in METRICS}}
                for case in range(10) for region in ("sc", "canal")]
        files.append(folder / f"{model}.csv")
        pd.DataFrame(rows).to_csv(files[-1], index=False)
    return files


def test_the_baseline_switch_changes_the_differences_and_nothing_else(tmp_path):
    from segzoo.evaluate.report_tables import write_tables

    files = _score_files(tmp_path)
    write_tables(files, tmp_path / "a", ["dice", "hd95_mm"], 0, tmp_path / "a.json")
    write_tables(files, tmp_path / "b", ["dice", "hd95_mm"], 0, tmp_path / "b.json", baseline="nnunet")
    assert (tmp_path / "a" / "per_case.csv").read_bytes() == (tmp_path / "b" / "per_case.csv").read_bytes()
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()  # the means
    a, b = (pd.read_csv(tmp_path / t / "comparison.csv") for t in ("a", "b"))
    differences = ["median_diff", "diff_ci_low", "diff_ci_high", "p_vs_baseline", "pairs", "baseline", "p_holm"]
    pd.testing.assert_frame_equal(a.drop(columns=differences), b.drop(columns=differences))
    assert set(a["baseline"]) == {"unet3plus"} and set(b["baseline"]) == {"nnunet"}
    a, b = a.set_index(["model", "region", "metric"]), b.set_index(["model", "region", "metric"])
    assert np.isnan(b.loc[("nnunet", "sc", "dice"), "p_vs_baseline"]) and b.loc[("nnunet", "sc", "dice"), "pairs"] == 0
    assert b.loc[("unet3plus", "sc", "dice"), "pairs"] == 10
    scores = pd.concat(map(pd.read_csv, files)).pivot_table(index="case", columns=["model", "region"], values="dice")
    expected = np.median(scores[("diffnet", "sc")] - scores[("nnunet", "sc")])
    assert b.loc[("diffnet", "sc", "dice"), "median_diff"] == pytest.approx(expected, abs=1e-6)
    assert a.loc[("diffnet", "sc", "dice"), "median_diff"] != pytest.approx(expected, abs=1e-6)
    assert "median paired difference from nnunet" in (tmp_path / "b" / "dice.md").read_text()


def test_a_baseline_that_is_no_row_is_refused_and_external_rows_are_captioned(tmp_path):
    from segzoo.errors import SegzooError
    from segzoo.evaluate.report_tables import write_tables

    files = _score_files(tmp_path)
    with pytest.raises(SegzooError, match="baseline 'ms_unet3plus' is not a row of the comparison "
                                          r"\(rows: unet3plus, nnunet, diffnet\)"):
        write_tables(files, tmp_path / "t", ["dice"], 0, baseline="ms_unet3plus")
    assert not (tmp_path / "t").exists()
    write_tables(files, tmp_path / "t", ["dice"], 0, external={"nnunet": "nnU-Net 2.8.1 3d_fullres, 5 folds"})
    caption = (tmp_path / "t" / "dice.md").read_text().splitlines()[2]
    assert "not trained on these terms: nnunet (nnU-Net 2.8.1 3d_fullres, 5 folds): its protocol differs" in caption
