"""Statistics on hand-made results tables with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from msnb import stats
from msnb.datasets import CONSENSUS_FALLBACK

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
    """A realistic results table: every experiment of the paper, random but seeded.

    Three single-dataset models (ISBI 2015's is its consensus fallback label, the union,
    shared by the ``labels`` experiment), three combinations, the other two ISBI labels, a
    linear and a UNet variant of every single and combination model, and one ablation that
    changes a setting the configuration columns do not show (it is never a default model).
    """
    rng = np.random.default_rng(seed)
    fallback = CONSENSUS_FALLBACK["isbi2015"]
    models = []

    def add(train, level, tags, **changes):
        label = fallback if train in CONSENSUS_FALLBACK else "consensus"
        config = {"label": label, "normalization": "quantile", "architecture": "unetplusplus"}
        models.append(
            {**config, **changes, "train_datasets": train, "experiment": tags, "level": level}
        )

    singles = (("isbi2015", 0.5), ("msseg2016_train", 0.6), ("3dmrms", 0.7))
    combos = (
        ("msseg2016_train+3dmrms", 0.72),
        ("isbi2015+msseg2016_train", 0.66),
        ("msseg2016_train+3dmrms+isbi2015", 0.74),
    )
    for train, level in singles:
        add(train, level, "labels;single" if train == "isbi2015" else "single")
    for train, level in combos:
        add(train, level, "combinations")
    for label, level in (("rater1", 0.45), ("rater2", 0.47), ("union", 0.5)):
        if label != fallback:
            add("isbi2015", level, "labels", label=label)
    for train, level in singles + combos:
        add(train, level - 0.1, "ablation:linear", normalization="linear")
        add(train, level - 0.02, "ablation:unet", architecture="unet")
    # normalization_reference: training, not a results column: the default's columns
    add("msseg2016_train", 0.2, "ablation:own_reference")
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


def test_wilcoxon_variant_exact_without_ties_else_normal_approximation():
    import scipy

    approx = (
        "asymptotic" if tuple(map(int, scipy.__version__.split(".")[:2])) >= (1, 15) else "approx"
    )
    assert stats.wilcoxon_method([0.1, -0.2, 0.3]) == "exact"
    assert stats.wilcoxon_method([0.1, -0.1, 0.3]) == approx  # tied |differences|
    assert stats.wilcoxon_method([0.0, 0.2, 0.3]) == approx  # a zero difference
    assert stats.wilcoxon_method(np.arange(1, 52) / 100) == approx  # over 50 pairs
    # with ties: two-sided normal approximation with tie and continuity corrections
    a = np.array([0.50, 0.61, 0.42, 0.70, 0.55, 0.66, 0.48, 0.52])
    b = a + np.array([0.02, 0.02, -0.01, 0.05, 0.03, 0.04, 0.06, 0.01])
    row = stats.compute_paired_test(a, b)
    ref = sps.wilcoxon(b, a, correction=True, method=approx)
    assert row["p_value"] == pytest.approx(ref.pvalue)
    assert row["p_value"] != pytest.approx(sps.wilcoxon(b, a, method="exact").pvalue)


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
    # ISBI's single model is its consensus-fallback (union) model; the own_reference ablation
    # has the default's columns but serves an ablation only: never a default model
    assert set(tt["train_datasets"]) == {"isbi2015", "msseg2016_train", "3dmrms"}
    assert (tt["n_models"] == 1).all()
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
    # Table 4: 4 test sets x (2 combinations x (1 + 2 components) + 1 x (1 + 3 components))
    assert len(tables["combinations"]) == 4 * (2 * 3 + 4)
    assert tables["combinations"]["role"].value_counts().to_dict() == {
        "component": 28,
        "combination": 12,
    }
    labels = tables["labels"]
    assert set(labels["label"]) == {"rater1", "rater2", "union"}
    assert set(labels["train_datasets"]) == {"isbi2015"}
    for factor in ("normalization", "architecture"):
        ab = tables[f"ablation_{factor}"]
        # single and combination models: (3 + 3) x 4 test sets, as the paper's 12 + 7
        assert len(ab) == (3 + 3) * 4
        assert ab["train_datasets"].str.contains("+", regex=False).sum() == 3 * 4
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
    assert lin["n"] == 24 and lin["mean_diff"] < 0 and lin["effect"] < 0 and lin["ci_high"] < 0


def test_ablation_pairs_only_default_models_of_tables_2_and_4():
    df = make_results(nan_fraction=0.0)
    # a rater2 model trained with linear normalization is no Table 6 model (its quantile
    # twin is no default model either), and the own_reference model is no reference
    extra = df[(df["label"] == "rater2") & (df["experiment"] == "labels")].assign(
        normalization="linear", model_id="rater2_linear", experiment="ablation:linear"
    )
    ab = stats.compute_ablation_table(pd.concat([df, extra]), factor="normalization")
    assert set(ab["label"]) == {"consensus", CONSENSUS_FALLBACK["isbi2015"]}
    ref = df[(df["model_id"].str.startswith("m01_")) & (df["test_dataset"] == "isbi2015")]
    row = ab[(ab["train_datasets"] == "msseg2016_train") & (ab["test_dataset"] == "isbi2015")]
    assert row["dice_quantile"].iloc[0] == pytest.approx(ref["dice"].mean())
    tests = stats.compute_ablation_tests(df, factor="normalization")
    assert tests.set_index("unit").loc["pair", "n"] == 24
    assert tests.set_index("unit").loc["scan", "n"] == 6 * sum(n for _, n in _all_scans())


def _all_scans():
    return [(c, n) for test in TESTS for c, n in DATASETS[test]]


def test_ablation_of_a_setting_without_a_column_against_the_defaults():
    df = make_results(nan_fraction=0.0)
    assert stats.find_setting_ablations(df) == ["own_reference"]  # linear, unet: columns
    tables = stats.compute_all_tables(df)
    ab = tables["ablation_own_reference"]
    assert len(ab) == 4 and set(ab["train_datasets"]) == {"msseg2016_train"}
    own = df[df["experiment"] == "ablation:own_reference"]
    default = df[(df["experiment"] == "single") & (df["train_datasets"] == "msseg2016_train")]
    row = ab[ab["test_dataset"] == "3dmrms"].iloc[0]
    assert row["dice_own_reference"] == pytest.approx(own[own.test_dataset == "3dmrms"].dice.mean())
    assert row["dice_default"] == pytest.approx(
        default[default.test_dataset == "3dmrms"].dice.mean()
    )
    tests = stats.select_tests(tables, "ablation_own_reference").set_index("unit")
    assert tests.loc["pair", "n"] == 4 and tests.loc["pair", "mean_diff"] < 0
    assert "ablation_own_reference" in stats.render_tables(tables)


def test_serves_main_experiment_reads_the_tags():
    df = pd.DataFrame(
        {"experiment": ["single", "labels;single", "ablation:linear", "", "ablation:a;single"]}
    )
    assert stats.serves_main_experiment(df).tolist() == [True, True, False, True, True]
    assert stats.serves_main_experiment(df.drop(columns="experiment")).all()


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
    single = df["experiment"].str.split(";").map(lambda tags: "single" in tags)
    only_two = df[single & (df["train_datasets"] != "3dmrms")]
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
    study = {k: t for k, t in empty.items() if k != "tests" and not k.startswith("paper_")}
    assert all(t.empty for k, t in study.items() if k != "findings")
    assert empty["tests"]["status"].str.startswith("not enough data: ").all()
    # the paper's cells are all there, none run; no claim can be checked
    for name in stats.PAPER_KEYS:
        assert (empty[f"paper_{name}"]["status"] == stats.NOT_RUN).all()
    assert (empty["findings"]["verdict"] == stats.NOT_RUN).all()
    assert len(empty["findings"]) == len(stats.CLAIMS)


def test_a_study_without_the_papers_models_gets_not_run():
    # the tiny study: two single-dataset models and their linear twins, on each other
    df = make_results()
    two = ["msseg2016_train", "3dmrms"]
    tags = df["experiment"].isin(["single", "ablation:linear"])
    df = df[tags & df["train_datasets"].isin(two) & df["test_dataset"].isin(two)]
    tables = stats.compute_all_tables(df)
    assert len(tables["ablation_normalization"]) == 2 * 2 and len(tables["centers"])
    verdicts = tables["findings"].set_index("claim")["verdict"]
    for claim in ("larger_heterogeneous_better", "union_marginal", "centers_consistent"):
        assert verdicts[claim] == stats.NOT_RUN
    assert verdicts["above_miccai_winner"] == stats.NOT_RUN
    t2 = tables["paper_table2"]
    assert (t2["status"] == "ok").sum() == 2 * 2  # two of the paper's cells, Dice and IoU


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
    # the paper's tables beside the study's, and the findings (CSV, Markdown, metrics.json)
    assert {"paper_table2.csv", "paper_table2.md", "findings.csv", "findings.md"} <= names
    assert "not run" in (tmp_path / "out" / "paper_table6.md").read_text()
    assert len(record["tables"]["findings"]) == len(stats.CLAIMS) == summary["n_claims"]
    verdicts = [f["verdict"] for f in record["tables"]["findings"]]
    assert summary["n_claims_reproduced"] == verdicts.count(stats.REPRODUCED)
    assert summary["n_claims_not_run"] == verdicts.count(stats.NOT_RUN)


def _cell(frame, **match):
    sel = frame
    for col, want in match.items():
        sel = sel[sel[col] == want]
    assert len(sel) == 1, match
    return sel.iloc[0]


def test_paper_comparison_matches_cells_in_any_dataset_order():
    df = make_results()
    # the study may list a combination's datasets in another order than the paper
    df["train_datasets"] = df["train_datasets"].replace(
        {"msseg2016_train+3dmrms": "3dmrms+msseg2016_train"}
    )
    tables = stats.compute_all_tables(df)
    t2 = tables["paper_table2"]
    assert list(t2.columns) == [*stats.PAPER_KEYS["table2"], *stats.COMPARISON_COLUMNS]
    assert len(t2) == 12 * 2  # every published cell, Dice and IoU
    got = _cell(t2, train_datasets="msseg2016_train", test_dataset="isbi2015", metric="dice")
    tt = tables["train_test"]
    own = _cell(tt, train_datasets="msseg2016_train", test_dataset="isbi2015", metric="dice")
    assert got["paper"] == 0.569 and got["study"] == pytest.approx(own["mean"])
    assert got["difference"] == pytest.approx(own["mean"] - 0.569)
    assert got["n_scans"] == own["n_scans"] and got["status"] == "ok"
    # no single model trained on msseg2016_test in this study
    assert (t2.loc[t2["train_datasets"] == "msseg2016_test", "status"] == stats.NOT_RUN).all()
    t4 = tables["paper_table4"]
    combo = _cell(
        t4,
        train_datasets="msseg2016_train+3dmrms",
        test_dataset="isbi2015",
        model="msseg2016_train+3dmrms",
        metric="dice",
    )
    c = tables["combinations"]
    mine = _cell(
        c, combination="3dmrms+msseg2016_train", test_dataset="isbi2015", role="combination"
    )
    assert combo["study"] == pytest.approx(mine["dice"]) and combo["paper"] == 0.611
    part = _cell(
        t4,
        train_datasets="isbi2015+3dmrms",
        test_dataset="msseg2016_test",
        model="3dmrms",
        metric="dice",
    )
    assert part["paper"] == 0.544 and part["status"] == "ok"  # the component ran
    assert (
        _cell(
            t4,
            train_datasets="isbi2015+3dmrms",
            test_dataset="msseg2016_test",
            model="isbi2015+3dmrms",
            metric="dice",
        )["status"]
        == stats.NOT_RUN
    )
    t6 = tables["paper_table6"]
    assert len(t6) == 19 * 2
    lin = _cell(t6, train_datasets="msseg2016_train+3dmrms+isbi2015", normalization="linear")
    ab = tables["ablation_normalization"]
    ab_row = _cell(
        ab, train_datasets="msseg2016_train+3dmrms+isbi2015", test_dataset="msseg2016_test"
    )
    assert lin["study"] == pytest.approx(ab_row["dice_linear"]) and lin["paper"] == 0.631
    t5 = tables["paper_table5"]
    assert (t5["status"] == "ok").all() and len(t5) == 9 * 2
    t3 = tables["paper_table3"]
    assert t3.set_index("train_datasets")["status"].to_dict() == {
        "msseg2016_train": "ok",
        "3dmrms": "ok",
        "msseg2016_test": stats.NOT_RUN,  # no model trained on it in this study
        "isbi2015": "ok",
    }
    isbi = t2[(t2["train_datasets"] == "isbi2015") & (t2["metric"] == "dice")]["study"].mean()
    assert _cell(t3, train_datasets="isbi2015")["study"] == pytest.approx(isbi)
    cen = tables["paper_centers"]
    assert (cen["status"] == "ok").all() and set(cen["center"]) == {"01", "03", "07", "08"}
    shown = stats.render_tables(tables)
    t2_shown = shown["paper_table2"]
    assert list(t2_shown.columns[:3]) == ["dice: paper", "dice: this study", "dice: difference"]
    assert t2_shown.loc[("msseg2016_test", "isbi2015"), "dice: this study"] == stats.NOT_RUN
    assert t2_shown.index[0] == ("msseg2016_train", "msseg2016_test")  # the paper's row order
    assert list(shown["paper_table6"].columns) == ["paper", "this study", "difference"]
    t3_shown = shown["paper_table3"]
    assert t3_shown.loc["isbi2015", "paper"] == "0.497"
    assert t3_shown.loc["msseg2016_test", "this study"] == stats.NOT_RUN


def test_findings_follow_their_rules():
    tables = stats.compute_all_tables(make_results())
    f = tables["findings"].set_index("claim")
    assert list(f.index) == list(stats.CLAIMS)
    assert set(f["verdict"]) <= {stats.REPRODUCED, stats.NOT_REPRODUCED, stats.NOT_RUN}
    # no single model of msseg2016_test: the ANOVA claim cannot be checked
    assert f.loc["larger_heterogeneous_better", "verdict"] == stats.NOT_RUN
    # linear is 0.1 lower on all 24 pairs
    q = f.loc["quantile_better"]
    assert q["verdict"] == stats.REPRODUCED and q["n"] == 24 and q["effect"] > 0.05
    assert q["paper_p_value"] == pytest.approx(3.624e-5)
    for claim in ("quantile_better", "unetplusplus_better"):
        r = f.loc[claim]
        ok = r["effect"] > 0 and r["p_value"] < 0.05
        assert r["verdict"] == (stats.REPRODUCED if ok else stats.NOT_REPRODUCED)
    u = f.loc["union_marginal"]
    ok = u["effect"] > 0 and u["p_value"] >= 0.05
    assert u["verdict"] == (stats.REPRODUCED if ok else stats.NOT_REPRODUCED)
    # center 03 is built 0.15 lower: more than 10 % below the whole test set
    c = f.loc["centers_consistent"]
    assert c["verdict"] == stats.NOT_REPRODUCED and c["effect"] > 0.1 and "unseen 03" in c["detail"]
    assert c["test"] == "mann_whitney" and 0 < c["p_value"] < 1
    m = f.loc["above_miccai_winner"]
    assert m["verdict"] == stats.REPRODUCED and m["effect"] > 0
    comb = f.loc["combinations_better"]
    above = int(comb["detail"].split(" of ")[0])
    assert comb["verdict"] == (stats.REPRODUCED if above == comb["n"] else stats.NOT_REPRODUCED)
    shown = stats.render_tables(tables)["findings"]
    assert shown.loc[stats.CLAIMS["quantile_better"].statement, "verdict"] == stats.REPRODUCED


def test_claims_are_not_testable_when_no_model_learned():
    # the same study with every Dice scaled to a tenth: ratios and tests would still pass
    # (similar cells, quantile above linear), but models below Dice 0.1 learned nothing
    df = make_results()
    learned = stats.compute_all_tables(df)["findings"].set_index("claim")
    df["dice"] = df["dice"] / 10
    tables = stats.compute_all_tables(df)
    assert tables["train_test"].query("metric == 'dice'")["mean"].max() < stats.MIN_LEARNED_DICE
    f = tables["findings"].set_index("claim")
    tested = learned["verdict"].isin([stats.REPRODUCED, stats.NOT_REPRODUCED])
    assert tested.sum() >= 5
    assert (f.loc[tested, "verdict"] == stats.NOT_TESTABLE).all()
    assert f.loc[tested, "detail"].str.startswith("models did not learn: best cell 0.0").all()
    # what could not run stays "not run"
    assert (f.loc[~tested, "verdict"] == stats.NOT_RUN).all()
    assert stats.summarize_tests(tables)["n_claims_not_testable"] == tested.sum()
    # the report's findings section says why, beside the rows
    from msnb.report import _findings_section

    section = _findings_section(tables)
    assert section.count(stats.NOT_TESTABLE) >= tested.sum()
    assert "Not testable: models did not learn: best cell 0.0" in section


def test_heatmap_annotates_means_and_counts():
    import matplotlib

    matplotlib.use("Agg")
    tables = stats.compute_all_tables(make_results())
    ax = stats.plot_train_test_heatmap(tables["train_test"])
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 12 and all("n=" in t for t in texts)
    assert ax.get_ylabel() == "training set"


# --------------------------------------------------------------------------- seed replicates

#: Per-seed effect of linear normalization (linear - quantile) in :func:`make_seeded_results`:
#: the third seed has the opposite sign of the seed-mean effect.
LINEAR_EFFECT = {0: -0.10, 1: -0.06, 2: 0.04}
SEED_SHIFT = {0: 0.0, 1: 0.03, 2: -0.02}
SEEDED_TRAINS = {"msseg2016_train": 0.6, "3dmrms": 0.7}
SEEDED_TESTS = ("isbi2015", "3dmrms")


def make_seeded_results(seeds=(0, 1, 2)) -> pd.DataFrame:
    """Two single-dataset models and their linear twins, each trained with ``seeds``, tested on
    two sets of three scans; values are exact: training level + seed shift + the seed's linear
    effect + 0.01 per scan. Seed 2's quantile msseg2016_train model lacks one isbi2015 value,
    so the mean of the seed means differs from the mean over all scan values."""
    rows = []
    for seed in seeds:
        for train, level in SEEDED_TRAINS.items():
            for norm in ("quantile", "linear"):
                mid = f"{train}__{norm}__unetplusplus-resnet18__consensus"
                mid += f"__seed{seed}" if seed else ""
                for test in SEEDED_TESTS:
                    for p in (1, 2, 3):
                        dice = level + SEED_SHIFT[seed] + 0.01 * p
                        dice += LINEAR_EFFECT[seed] if norm == "linear" else 0.0
                        missing = (seed, norm, train, test, p) == (
                            2,
                            "quantile",
                            "msseg2016_train",
                            "isbi2015",
                            1,
                        )
                        rows.append(
                            {
                                "model_id": mid,
                                "train_datasets": train,
                                "label": "consensus",
                                "normalization": norm,
                                "architecture": "unetplusplus",
                                "encoder": "resnet18",
                                "test_dataset": test,
                                "subject": f"{test}_{p:02d}",
                                "timepoint": "01",
                                "center": test,
                                "dice": math.nan if missing else dice,
                                "iou": math.nan if missing else dice / (2 - dice),
                                **dict.fromkeys(stats.METRICS[2:], 0.5),
                                "experiment": "single" if norm == "quantile" else "ablation:linear",
                                "train_centers": train,
                                "seed": seed,
                                "precision": "none",
                            }
                        )
    return pd.DataFrame(rows)


def _t_half(values) -> float:
    """Half-width of the 95 % t interval of the mean of ``values``."""
    v = np.asarray(values, dtype=float)
    return sps.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)


def test_cells_are_means_of_seed_means_with_seed_sd_and_t_interval():
    df = make_seeded_results()
    tables = stats.compute_all_tables(df)
    tt = tables["train_test"]
    cell = _cell(tt, train_datasets="msseg2016_train", test_dataset="isbi2015", metric="dice")
    rows = df[
        (df["model_id"].str.startswith("msseg2016_train__quantile"))
        & (df["test_dataset"] == "isbi2015")
    ]
    seed_means = rows.groupby("seed")["dice"].mean().to_numpy()
    assert cell["mean"] == pytest.approx(seed_means.mean())
    assert cell["mean"] != pytest.approx(rows["dice"].mean())  # not the pooled scan mean
    assert cell["sd_seeds"] == pytest.approx(np.std(seed_means, ddof=1))
    half = sps.t.ppf(0.975, 2) * np.std(seed_means, ddof=1) / math.sqrt(3)
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(
        (seed_means.mean() - half, seed_means.mean() + half)
    )
    assert cell["n_seeds"] == 3 and cell["n_models"] == 3 and cell["n_scans"] == 8
    # the same helper behind every cell table
    direct = stats.compute_seed_cells(rows, by=["train_datasets"], metrics=["dice"]).iloc[0]
    assert direct["dice"] == pytest.approx(cell["mean"]) and direct["n_seeds"] == 3
    # the ablation table: each level over its seeds, the difference over seed k vs seed k
    ab = _cell(tables["ablation_normalization"], train_datasets="3dmrms", test_dataset="3dmrms")
    effects = list(LINEAR_EFFECT.values())
    assert ab["dice_diff"] == pytest.approx(np.mean(effects))
    assert ab["dice_diff_sd_seeds"] == pytest.approx(np.std(effects, ddof=1))
    assert ab["dice_diff_ci_high"] == pytest.approx(np.mean(effects) + _t_half(effects))
    assert ab["dice_linear_sd_seeds"] == pytest.approx(
        np.std([SEED_SHIFT[k] + LINEAR_EFFECT[k] for k in range(3)], ddof=1)
    )
    assert (ab["n_seeds_quantile"], ab["n_seeds_linear"], ab["n_seeds"]) == (3, 3, 3)
    assert {"train_test_by_seed", "ablation_normalization_by_seed"} <= set(tables)


def test_paired_tests_count_the_seeds_that_agree():
    df = make_seeded_results()
    tests = stats.compute_ablation_tests(df, factor="normalization").set_index("unit")
    for unit in ("pair", "scan"):
        row = tests.loc[unit]
        assert row["mean_diff"] < 0  # linear is worse on the seed means
        assert row["n_seeds"] == 3 and row["stable_seeds"] == 2  # seed 2 has the opposite sign
    assert tests.loc["pair", "n"] == 4
    # seed 2 alone against seed 0: the seeds both levels have are the ones counted
    partial = df[~((df["seed"] == 2) & (df["normalization"] == "linear"))]
    row = stats.compute_ablation_tests(partial, factor="normalization").set_index("unit")
    assert row.loc["pair", "n_seeds"] == 2 and row.loc["pair", "stable_seeds"] == 2
    tables = stats.compute_all_tables(df)
    anova = _cell(tables["tests"], table="train_test", test="anova", unit="pair")
    # an ANOVA has no sign: a seed is stable when its own ANOVA (scipy on that seed's pair
    # means) takes the same decision at 0.05 as the ANOVA on the seed means
    df = df.assign(dice=df["dice"] + 0.004 * (np.arange(len(df)) * 7 % 5))  # within-cell spread
    tables = stats.compute_all_tables(df)
    anova = _cell(tables["tests"], table="train_test", test="anova", unit="pair")
    single = df[df["experiment"] == "single"]
    decisions = []
    for _, rows in single.groupby("seed"):
        cells = rows.groupby(["train_datasets", "test_dataset"])["dice"].mean()
        groups = [g.to_numpy() for _, g in cells.groupby(level="train_datasets")]
        decisions.append(sps.f_oneway(*groups).pvalue < 0.05)
    expected = sum(d == (anova["p_value"] < 0.05) for d in decisions)
    assert anova["n_seeds"] == 3 and anova["stable_seeds"] == expected
    one = stats.compute_all_tables(df[df["seed"] == 0])["tests"]
    assert np.isnan(_cell(one, table="train_test", test="anova", unit="pair")["stable_seeds"])
    assert list(tables["tests"].columns[-2:]) == ["n_seeds", "stable_seeds"]


def test_findings_give_the_effect_ci_and_its_stability_over_seeds():
    tables = stats.compute_all_tables(make_seeded_results())
    q = tables["findings"].set_index("claim").loc["quantile_better"]
    diffs = -tables["ablation_normalization"]["dice_diff"].to_numpy()  # quantile - linear
    assert q["effect"] == pytest.approx(diffs.mean()) and q["effect"] > 0
    assert (q["effect_ci_low"], q["effect_ci_high"]) == pytest.approx(
        (diffs.mean() - _t_half(diffs), diffs.mean() + _t_half(diffs))
    )
    assert (q["stable_seeds"], q["n_seeds"]) == (2, 3)
    shown = stats.render_findings(tables["findings"]).loc[stats.CLAIMS["quantile_better"].statement]
    assert shown["seeds"] == "stable in 2 of 3 seeds"
    lo, hi = q["effect_ci_low"], q["effect_ci_high"]
    assert shown["effect"] == f"{q['effect']:+.3f} [{lo:.3f}, {hi:.3f}]"


def test_one_seed_tables_are_unchanged_and_render_without_sd():
    one = make_seeded_results(seeds=(0,))
    tables = stats.compute_all_tables(one.drop(columns=["seed", "precision"]))
    tt = tables["train_test"]
    assert (tt["n_seeds"] == 1).all() and tt[["sd_seeds", "ci_low", "ci_high"]].isna().all().all()
    cell = _cell(tt, train_datasets="3dmrms", test_dataset="isbi2015", metric="dice")
    assert (
        cell["mean"]
        == one[
            (one["model_id"].str.startswith("3dmrms__quantile"))
            & (one["test_dataset"] == "isbi2015")
        ]["dice"].mean()
    )
    assert not [k for k in tables if k.endswith("_by_seed")]
    tests = tables["tests"]
    ok = tests[(tests["test"] == "wilcoxon") & (tests["status"] == "ok")]
    assert len(ok) == 2 and (ok["n_seeds"] == 1).all() and (ok["stable_seeds"] == 1).all()
    shown = stats.render_tables(tables)
    assert shown["table2_dice"].loc["3dmrms", "isbi2015"] == f"{cell['mean']:.3f} (n=3)"
    assert not shown["table6_normalization"].stack().astype(str).str.contains("±").any()
    f = stats.render_findings(tables["findings"]).loc[stats.CLAIMS["quantile_better"].statement]
    assert f["seeds"] == "1 seed"


def test_several_seeds_render_mean_and_seed_sd_also_beside_the_paper():
    tables = stats.compute_all_tables(make_seeded_results())
    shown = stats.render_tables(tables)
    cell = _cell(
        tables["train_test"], train_datasets="3dmrms", test_dataset="isbi2015", metric="dice"
    )
    expected = f"{cell['mean']:.3f} ± {cell['sd_seeds']:.3f}"
    assert shown["table2_dice"].loc["3dmrms", "isbi2015"] == expected
    diff = shown["table6_normalization"].loc[("3dmrms", "3dmrms"), "diff"]
    assert diff.startswith("-0.040 ± ")
    paper = _cell(
        tables["paper_table2"], train_datasets="3dmrms", test_dataset="isbi2015", metric="dice"
    )
    assert paper["study_sd"] == pytest.approx(cell["sd_seeds"]) and paper["n_seeds"] == 3
    assert shown["paper_table2"].loc[("3dmrms", "isbi2015"), "dice: this study"] == expected


def test_seed_and_precision_columns_default_and_load(tmp_path):
    df = make_results()
    valid = stats.validate_results(df)
    assert (valid["seed"] == 0).all() and valid["seed"].dtype.kind == "i"
    assert (valid["precision"] == "").all()
    seeded = make_seeded_results()
    seeded.loc[0, "seed"] = None  # an empty seed reads as 0
    path = tmp_path / "results.csv"
    seeded.to_csv(path, index=False)
    back = stats.load_results(path)
    assert back["seed"].dtype.kind == "i" and back["seed"].tolist()[:2] == [0, 0]
    assert set(back["seed"]) == {0, 1, 2} and (back["precision"] == "none").all()
    ids = pd.Series(["a__union", "a__union__seed1", "a__seed2x"])
    assert stats.replicate_id(ids).tolist() == ["a__union", "a__union", "a__seed2x"]


def test_a_models_seeds_are_one_row_in_centers_and_table_3():
    frames = []
    for k in range(3):
        r = make_results(k, nan_fraction=0.0)
        r["model_id"] = r["model_id"] + (f"__seed{k}" if k else "")
        frames.append(r.assign(seed=k))
    tables = stats.compute_all_tables(pd.concat(frames, ignore_index=True))
    # Table 3 beside the paper: the SD over seeds of each seed's mean over the cells
    by_seed = tables["train_test_by_seed"]
    own = by_seed[(by_seed["train_datasets"] == "3dmrms") & (by_seed["metric"] == "dice")]
    t2 = tables["paper_table2"]
    published = t2.loc[t2["train_datasets"] == "3dmrms", "test_dataset"]
    assert len(set(published)) == 3  # the paper has no 3dmrms model tested on 3dmrms
    t3 = _cell(tables["paper_table3"], train_datasets="3dmrms")
    assert t3["status"] == "ok" and t3["n_seeds"] == 3
    per_seed = own[own["test_dataset"].isin(published)].groupby("seed")["mean"].mean()
    assert t3["study_sd"] == pytest.approx(per_seed.std(ddof=1))
    # the study's own mean Dice per training set: over all its test sets
    means = tables["train_means"].set_index("train_datasets")
    assert means.loc["3dmrms", "sd_seeds"] == pytest.approx(
        own.groupby("seed")["mean"].mean().std(ddof=1)
    )
    cen = tables["centers"]
    assert not cen["model_id"].str.contains("__seed").any() and (cen["n_seeds"] == 3).all()
    tests = stats.select_tests(tables, "centers")
    assert (tests["n_seeds"] == 3).all() and tests["stable_seeds"].between(0, 3).all()
    # center 03 is built 0.15 lower in every seed
    assert (tests["stable_seeds"] == 3).all() and (tests["mean_diff"] < 0).all()
