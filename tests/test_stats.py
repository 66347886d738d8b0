"""Statistics on hand-made results tables with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from msnb import stats

DATASETS = {
    "isbi2015": [("isbi", 4)],
    "msseg2016_train": [("01", 3), ("07", 3), ("08", 3)],
    "msseg2016_test": [("01", 3), ("03", 4), ("07", 3), ("08", 3)],
    "3dmrms": [("ljubljana", 5)],
}
CENTERS = {
    "isbi2015": "isbi",
    "msseg2016_train": "01+07+08",
    "3dmrms": "ljubljana",
}
TESTS = ("isbi2015", "msseg2016_train", "msseg2016_test", "3dmrms")


def _scans(test: str):
    for center, n in DATASETS[test]:
        for p in range(1, n + 1):
            yield center, f"{center}_{p:02d}"


def make_results(seed: int = 0, *, nan_fraction: float = 0.05) -> pd.DataFrame:
    """A realistic results table: every experiment of the paper, random but seeded."""
    rng = np.random.default_rng(seed)
    models = []
    base = {"label": "consensus", "normalization": "quantile", "architecture": "unetplusplus"}
    train_sets = ("isbi2015", "msseg2016_train", "3dmrms")
    isbi = {**base, "label": "rater1"}  # the study's consensus fallback for ISBI
    for i, t in enumerate(train_sets):
        b = isbi if t == "isbi2015" else base
        models.append({**b, "train_datasets": t, "experiment": "single", "level": 0.5 + 0.1 * i})
    models.append(
        {
            **base,
            "train_datasets": "msseg2016_train+3dmrms",
            "experiment": "combination",
            "level": 0.72,
        }
    )
    models.append(
        {
            **base,
            "train_datasets": "isbi2015+msseg2016_train",
            "experiment": "combination",
            "level": 0.66,
        }
    )
    for lab, lvl in (("rater2", 0.45), ("union", 0.55)):
        models.append(
            {
                **base,
                "train_datasets": "isbi2015",
                "label": lab,
                "experiment": "labels",
                "level": lvl,
            }
        )
    for i, t in enumerate(train_sets):
        b = isbi if t == "isbi2015" else base
        models.append(
            {
                **b,
                "normalization": "linear",
                "train_datasets": t,
                "experiment": "ablation:linear",
                "level": 0.4 + 0.1 * i,
            }
        )
        models.append(
            {
                **b,
                "architecture": "unet",
                "train_datasets": t,
                "experiment": "ablation:unet",
                "level": 0.48 + 0.1 * i,
            }
        )
    rows = []
    for k, m in enumerate(models):
        level = m.pop("level")
        mid = (
            f"m{k:02d}_{m['train_datasets']}_{m['label']}_{m['normalization']}_{m['architecture']}"
        )
        centers = "+".join(CENTERS[t] for t in m["train_datasets"].split("+"))
        for test in TESTS:
            for center, subject in _scans(test):
                shift = -0.15 if center == "03" else 0.0
                dice = float(np.clip(level + shift + rng.normal(0, 0.08), 0, 1))
                if rng.random() < nan_fraction:
                    dice = math.nan
                rows.append(
                    {
                        "model_id": mid,
                        **m,
                        "encoder": "resnet18",
                        "train_centers": centers,
                        "test_dataset": test,
                        "subject": subject,
                        "timepoint": "01",
                        "center": center,
                        "dice": dice,
                        "iou": dice / (2 - dice) if np.isfinite(dice) else math.nan,
                        "lesion_sensitivity": rng.random(),
                        "lesion_ppv": rng.random(),
                        "lesion_f1": rng.random(),
                        "true_volume_ml": rng.uniform(1, 30),
                        "pred_volume_ml": rng.uniform(1, 30),
                    }
                )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- paired tests


def test_wilcoxon_on_constant_shift_has_known_exact_p():
    a = np.array([0.50, 0.61, 0.42, 0.70, 0.55, 0.66])
    b = a + np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])  # every difference positive
    row = stats.compute_paired_test(a, b, unit="pair", comparison="b - a")
    assert row["status"] == "ok"
    assert row["n"] == 6
    assert row["statistic"] == 0  # the sum of negative ranks
    assert row["p_value"] == pytest.approx(2 / 2**6)  # exact two-sided p for n = 6
    assert row["p_value"] == pytest.approx(sps.wilcoxon(b, a).pvalue)
    assert row["effect"] == pytest.approx(1.0)  # rank-biserial: b above a on every pair
    assert row["mean_diff"] == pytest.approx(0.035)
    assert row["ci_low"] <= 0.035 <= row["ci_high"] and row["ci_method"] == "bootstrap"


def test_paired_test_drops_nan_pairs_and_says_when_it_cannot_run():
    a = [0.5, np.nan, 0.6, 0.7]
    b = [0.6, 0.7, np.nan, 0.8]
    row = stats.compute_paired_test(a, b)
    assert row["n"] == 2
    assert row["status"].startswith("not enough data: ") and "2 complete pairs" in row["status"]
    assert np.isnan(row["p_value"]) and np.isnan(row["statistic"])
    zero = stats.compute_paired_test([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert zero["status"] == "not enough data: all differences are zero"
    assert zero["mean_diff"] == 0
    with pytest.raises(ValueError, match="differ in length"):
        stats.compute_paired_test([1, 2, 3], [1, 2])


def test_mean_ci_matches_scipy_t_interval_and_bootstrap_is_seeded():
    x = np.array([0.2, 0.4, 0.5, 0.9, np.nan])
    mean, lo, hi = stats.compute_mean_ci(x)
    ref = sps.t.interval(0.95, 3, loc=0.5, scale=sps.sem(x[:4]))
    assert mean == pytest.approx(0.5) and (lo, hi) == pytest.approx(ref)
    assert stats.compute_mean_ci(x, method="bootstrap", seed=3) == stats.compute_mean_ci(
        x, method="bootstrap", seed=3
    )
    assert np.isnan(stats.compute_mean_ci([0.4])[1])


def test_mann_whitney_matches_scipy_and_says_when_it_cannot_run():
    a = np.array([0.61, 0.72, 0.55, 0.80, np.nan])
    b = np.array([0.40, 0.52, 0.45, 0.38, 0.47])
    row = stats.compute_unpaired_test(a, b, table="centers", comparison="a - b")
    ref = sps.mannwhitneyu(a[:4], b)
    assert row["status"] == "ok" and row["test"] == "mann_whitney" and row["n"] == 9
    assert row["statistic"] == pytest.approx(ref.statistic)
    assert row["p_value"] == pytest.approx(ref.pvalue)
    assert row["effect"] == pytest.approx(1.0)  # every a above every b
    assert row["mean_diff"] == pytest.approx(np.nanmean(a) - b.mean())
    assert row["ci_low"] <= row["mean_diff"] <= row["ci_high"]
    one = stats.compute_unpaired_test([0.5], b, labels=("unseen-center", "seen-center"))
    assert one["status"] == "not enough data: 1 unseen-center and 5 seen-center scans (< 2 each)"


# --------------------------------------------------------------------------- ANOVA


def _groups():
    return pd.DataFrame(
        {
            "train_datasets": ["a"] * 4 + ["b"] * 4 + ["c"] * 5,
            "dice": [0.30, 0.32, 0.35, 0.31, 0.50, 0.52, 0.49, 0.55, 0.71, 0.70, 0.74, 0.69, 0.72],
        }
    )


def test_oneway_anova_matches_scipy_and_tukey_matches_scipy():
    d = _groups()
    row, tukey = stats.compute_oneway_anova(d)
    samples = [g["dice"].to_numpy() for _, g in d.groupby("train_datasets")]
    ref = sps.f_oneway(*samples)
    assert row["status"] == "ok" and row["test"] == "anova" and row["unit"] == "pair"
    assert row["statistic"] == pytest.approx(ref.statistic)
    assert row["p_value"] == pytest.approx(ref.pvalue)
    assert row["dof"] == "2,10" and row["n"] == 13 and row["n_groups"] == 3
    grand = d["dice"].mean()
    ss_between = sum(len(s) * (s.mean() - grand) ** 2 for s in samples)
    ss_total = ((d["dice"] - grand) ** 2).sum()
    assert row["effect_name"] == "eta_squared"
    assert row["effect"] == pytest.approx(ss_between / ss_total)
    # Tukey HSD: pingouin's columns, p-values and intervals agree with scipy's
    for col in ("A", "B", "mean_A", "mean_B", "diff", "se", "T", "p_tukey", "hedges"):
        assert col in tukey.columns
    assert len(tukey) == 3
    ref_t = sps.tukey_hsd(*samples)
    ci = ref_t.confidence_interval()
    names = ["a", "b", "c"]
    for _, r in tukey.iterrows():
        i, j = names.index(r["A"]), names.index(r["B"])
        assert r["p_tukey"] == pytest.approx(ref_t.pvalue[i, j], abs=1e-3)
        assert r["ci_low"] == pytest.approx(ci.low[i, j], rel=1e-3)
        assert r["ci_high"] == pytest.approx(ci.high[i, j], rel=1e-3)
    assert tukey.set_index(["A", "B"]).loc[("a", "c"), "n_B"] == 5


def test_anova_not_enough_groups_or_observations():
    one = pd.DataFrame({"train_datasets": ["a", "a", "a"], "dice": [0.1, 0.2, 0.3]})
    row, tukey = stats.compute_oneway_anova(one)
    assert row["status"] == "not enough data: 1 group(s) (< 2)" and tukey.empty
    single_obs = pd.DataFrame({"train_datasets": ["a", "b"], "dice": [0.1, 0.2]})
    row, _ = stats.compute_oneway_anova(single_obs)
    assert row["status"].startswith("not enough data: ") and "degrees of freedom" in row["status"]
    flat = pd.DataFrame({"train_datasets": ["a", "a", "b", "b"], "dice": [0.1, 0.1, 0.2, 0.2]})
    row, _ = stats.compute_oneway_anova(flat)
    assert row["status"] == "not enough data: no within-group variance"


def test_rm_anova_with_two_levels_equals_paired_t_squared():
    x = np.array([0.40, 0.55, 0.61, 0.33, 0.47])
    y = np.array([0.45, 0.57, 0.70, 0.36, 0.49])
    d = pd.DataFrame(
        {"test_dataset": list("vwxyz") * 2, "label": ["r1"] * 5 + ["r2"] * 5, "dice": [*x, *y]}
    )
    row = stats.compute_rm_anova(d)
    t = sps.ttest_rel(x, y)
    assert row["status"] == "ok" and row["dof"] == "1,4"
    assert row["statistic"] == pytest.approx(t.statistic**2)
    assert row["p_value"] == pytest.approx(t.pvalue)
    assert 0 < row["effect"] < 1
    too_few = stats.compute_rm_anova(d[d["test_dataset"] == "v"])
    assert too_few["status"].startswith("not enough data: 1 test_dataset")


# --------------------------------------------------------------------------- tables


def test_all_tables_shapes_and_counts():
    df = make_results()
    tables = stats.compute_all_tables(df)
    tt = tables["train_test"]
    assert len(tt) == 3 * 4 * 2  # 3 training sets x 4 test sets x (dice, iou)
    # ISBI's single model is the rater1 model (the study's consensus fallback)
    assert set(tt["train_datasets"]) == {"isbi2015", "msseg2016_train", "3dmrms"}
    single = df[(df["experiment"] == "single") & (df["train_datasets"] == "3dmrms")]
    cell = tt[
        (tt["train_datasets"] == "3dmrms")
        & (tt["test_dataset"] == "msseg2016_test")
        & (tt["metric"] == "dice")
    ].iloc[0]
    scans = single[single["test_dataset"] == "msseg2016_test"]["dice"]
    assert cell["n_scans"] == scans.notna().sum() and cell["n_missing"] == scans.isna().sum()
    assert cell["mean"] == pytest.approx(scans.mean())
    assert len(tables["train_means"]) == 3
    assert (tables["train_means"]["n_test_sets"] == 4).all()
    assert (tables["train_means"]["n_cross_test_sets"] == 3).all()
    # Table 4: 2 combinations x 4 test sets x (combination + 2 components)
    assert len(tables["combinations"]) == 2 * 4 * 3
    assert tables["combinations"]["role"].value_counts().to_dict() == {
        "component": 16,
        "combination": 8,
    }
    labels = tables["labels"]
    assert set(labels["label"]) == {"rater1", "rater2", "union"}
    assert set(labels["train_datasets"]) == {"isbi2015"}
    for factor in ("normalization", "architecture"):
        ab = tables[f"ablation_{factor}"]
        assert len(ab) == 3 * 4
        assert (
            ab["dice_diff"]
            == ab.filter(regex="^dice_(linear|unet)$").iloc[:, 0]
            - ab.filter(regex="^dice_(quantile|unetplusplus)$").iloc[:, 0]
        ).all()
    tests = tables["tests"]
    assert list(tests.columns) == list(stats.TEST_COLUMNS)
    assert set(tests["unit"]) >= {"pair", "scan"}
    assert {"anova", "wilcoxon", "rm_anova", "mann_whitney"} <= set(tests["test"])
    ok = tests[tests["status"] == "ok"]
    assert ok["p_value"].between(0, 1).all() and ok["effect"].notna().all()
    # the linear ablation is constructed 0.1 lower on every pair
    lin = tests[(tests["table"] == "ablation_normalization") & (tests["unit"] == "pair")].iloc[0]
    assert lin["n"] == 12 and lin["mean_diff"] < 0 and lin["effect"] < 0 and lin["ci_high"] < 0


def test_centers_flag_unseen_centers():
    tables = stats.compute_all_tables(make_results())
    cen = tables["centers"]
    assert set(cen["test_dataset"]) == {"msseg2016_train", "msseg2016_test"}
    msseg = cen[
        (cen["train_datasets"] == "msseg2016_train") & (cen["test_dataset"] == "msseg2016_test")
    ]
    flags = msseg.groupby("center")["seen_in_training"].first().to_dict()
    assert flags == {"01": True, "03": False, "07": True, "08": True}
    isbi = cen[cen["train_datasets"] == "isbi2015"]
    assert not isbi["seen_in_training"].any()
    assert (cen["n_scans"] > 0).all()
    rendered = stats.render_tables(tables)["centers"]
    assert rendered.stack().str.contains(r"\[unseen\]").any()


def test_not_enough_data_rows_instead_of_failures():
    df = make_results()
    only_two = df[(df["experiment"] == "single") & (df["train_datasets"] != "3dmrms")]
    only_two = only_two[only_two["test_dataset"] == "3dmrms"]
    tables = stats.compute_all_tables(only_two)
    tests = tables["tests"].set_index(["table", "test", "unit"])
    assert tests.loc[("train_test", "anova", "pair"), "status"].startswith("not enough data: ")
    assert tests.loc[("train_test", "anova", "scan"), "status"] == "ok"
    for table in ("combinations", "ablation_normalization", "ablation_architecture"):
        rows = tables["tests"][tables["tests"]["table"] == table]
        assert len(rows) == 2 and rows["status"].str.startswith("not enough data: ").all()
    assert tables["combinations"].empty and tables["labels"].empty
    empty = stats.compute_all_tables(df.iloc[:0])
    assert all(t.empty for k, t in empty.items() if k != "tests")
    assert empty["tests"]["status"].str.startswith("not enough data: ").all()


def test_defaults_are_the_training_recipe():
    from msnb.recipe import TrainConfig

    recipe = TrainConfig()
    assert stats.DEFAULTS == {k: getattr(recipe, k) for k in stats.DEFAULTS}
    assert set(stats.DEFAULTS) == set(stats.CONFIG_COLUMNS) - {"train_datasets"}
    assert all(ref == stats.DEFAULTS[f] for f, (ref, _) in stats.ABLATIONS.items())


def test_validation_and_loading_keep_identifiers_as_strings(tmp_path):
    df = make_results()
    path = tmp_path / "results.csv"
    df.to_csv(path, index=False)
    back = stats.load_results(path)
    assert back["center"].isin(["01", "03", "07", "08", "isbi", "ljubljana"]).all()
    assert back["timepoint"].eq("01").all()
    assert back["dice"].isna().sum() == df["dice"].isna().sum() > 0
    with pytest.raises(ValueError, match="lacks columns: dice"):
        stats.validate_results(df.drop(columns="dice"))
    with pytest.raises(ValueError, match="duplicate"):
        stats.validate_results(pd.concat([df, df.iloc[:1]]))
    with pytest.raises(FileNotFoundError):
        stats.load_results(tmp_path / "missing.csv")
    with pytest.warns(UserWarning, match="not found"):
        assert stats.load_results(tmp_path / "missing.csv", missing_ok=True).empty


def test_write_tables_is_complete_and_json_valid(tmp_path):
    tables = stats.compute_all_tables(make_results())
    written = stats.write_tables(tables, tmp_path / "out")
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"train_test.csv", "tests.csv", "table2_dice.md", "metrics.json"} <= names
    assert not [n for n in names if ".tmp" in n]
    record = json.loads(written["metrics"].read_text())
    assert record["kind"] == "statistics"
    summary = record["metrics"]
    assert summary["n_tests"] == len(tables["tests"]) and summary["n_train_test_cells"] == 12
    assert len(record["tables"]["tests"]) == len(tables["tests"])
    assert summary["n_tests_ok"] == sum(t["status"] == "ok" for t in record["tables"]["tests"])
    assert "(n=" in (tmp_path / "out" / "table2_dice.md").read_text()


def test_heatmap_annotates_means_and_counts():
    import matplotlib

    matplotlib.use("Agg")
    tables = stats.compute_all_tables(make_results())
    ax = stats.plot_train_test_heatmap(tables["train_test"])
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 12 and all("n=" in t for t in texts)
    assert ax.get_ylabel() == "training set"
