"""The paper's tables from a results table, each with its statistical tests.

================== ==============================================================================
key                content
================== ==============================================================================
train_test         Table 2/3: single-dataset models (default settings), mean Dice / IoU per
                   train x test cell, with the number of scans behind each cell
train_means        mean Dice per training dataset (over its test sets)
tukey_train        Tukey HSD post hoc of the one-way ANOVA of Dice by training dataset
combinations       Table 4: each dataset combination next to the datasets it combines
labels             Table 5: models trained on different labels (rater1 / rater2 / union)
ablation_normalization, ablation_architecture
                   Tables 6 and 7: quantile vs linear, UNet++ vs UNet, matching train/test pairs
                   of the single-dataset and combination models (the paper's 19 pairs)
ablation_<name>    an ablation that changes a setting the results table has no column for
                   (e.g. ``own_reference``), against the default models: levels ``default`` and
                   ``<name>`` (:func:`msnb.stats.results.find_setting_ablations`)
centers            per-center scores on multi-center test sets, centers unseen in training flagged
tests              every statistical test, one tidy row each (:data:`TEST_COLUMNS`)
paper_<table>      the paper's published cells beside the study's (``table2`` .. ``table7``,
                   ``centers``): paper | study | difference (:mod:`msnb.stats.compare`)
findings           each claim of the paper with this study's effect, test, p and verdict
                   (:mod:`msnb.stats.findings`)
================== ==============================================================================

:func:`compute_all_tables` builds them all; each ``compute_*_table`` / ``compute_*_tests``
pair can also be called alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from msnb.paper import load_paper_numbers
from msnb.stats.compare import compute_paper_comparison
from msnb.stats.findings import compute_findings
from msnb.stats.inference import (
    compute_oneway_anova,
    compute_paired_test,
    compute_rm_anova,
    compute_unpaired_test,
    make_tests_frame,
    not_enough_row,
)
from msnb.stats.results import (
    CONFIG_COLUMNS,
    DEFAULTS,
    SCAN_COLUMNS,
    SEP,
    find_setting_ablations,
    is_default,
    label_setting_ablation,
    select_single_default,
    split_names,
    validate_results,
)

__all__ = [
    "ABLATIONS",
    "compute_ablation_table",
    "compute_ablation_tests",
    "compute_all_tables",
    "compute_center_table",
    "compute_center_tests",
    "compute_combination_table",
    "compute_combination_tests",
    "compute_label_table",
    "compute_label_tests",
    "compute_pair_means",
    "compute_train_anova",
    "compute_train_means",
    "compute_train_test_table",
    "select_tests",
]

#: Tables 6 and 7: (reference, alternative) level of each ablated setting; the reference is
#: the paper's default (:data:`msnb.stats.results.DEFAULTS`).
ABLATIONS = {
    "normalization": (DEFAULTS["normalization"], "linear"),
    "architecture": (DEFAULTS["architecture"], "unet"),
}


# --------------------------------------------------------------------------- aggregation


def compute_pair_means(
    results: pd.DataFrame,
    *,
    by: Sequence[str] = (*CONFIG_COLUMNS, "test_dataset"),
    metrics: Sequence[str] = ("dice", "iou"),
) -> pd.DataFrame:
    """Mean of each metric over test scans, per group (default: per train/test pair).

    Returns
    -------
    DataFrame
        ``by`` columns, then per metric ``<metric>`` (mean), ``<metric>_std``,
        ``<metric>_n`` (scans with a value) and ``<metric>_missing`` (NaN scans); plus
        ``n_scans`` (distinct test scans) and ``n_models``.
    """
    by = list(by)
    cols = [*by]
    for m in metrics:
        cols += [m, f"{m}_std", f"{m}_n", f"{m}_missing"]
    cols += ["n_scans", "n_models"]
    if results.empty:
        return pd.DataFrame(columns=cols)
    g = results.groupby(by, sort=True, dropna=False)
    out = g.size().rename("rows").to_frame()
    for m in metrics:
        out[m] = g[m].mean()
        out[f"{m}_std"] = g[m].std()
        out[f"{m}_n"] = g[m].count()
        out[f"{m}_missing"] = g[m].apply(lambda s: int(s.isna().sum()))
    scan_key = results[list(SCAN_COLUMNS)].astype(str).agg("/".join, axis=1)
    out["n_scans"] = scan_key.groupby([results[c] for c in by], sort=True, dropna=False).nunique()
    out["n_models"] = g["model_id"].nunique()
    return out.reset_index()[cols]


def _scan_means(results: pd.DataFrame, keys: Sequence[str], metric: str) -> pd.DataFrame:
    """Per-scan values, averaged over models that share ``keys`` (e.g. several seeds)."""
    return results.groupby([*keys, *SCAN_COLUMNS], sort=True)[metric].mean().reset_index()


# --------------------------------------------------------------------------- Table 2/3


def compute_train_test_table(
    results: pd.DataFrame, *, metrics: Sequence[str] = ("dice", "iou")
) -> pd.DataFrame:
    """Table 2/3: train x test mean of each metric for single-dataset default models.

    Returns
    -------
    DataFrame, shape (n_train * n_test * len(metrics), 9)
        Tidy: ``train_datasets, test_dataset, metric, mean, std, n_scans, n_missing, n_models,
        cross`` (``cross`` is False on the diagonal, where training and test set share a name).
    """
    cols = ["train_datasets", "test_dataset", "metric", "mean", "std"]
    cols += ["n_scans", "n_missing", "n_models", "cross"]
    sel = select_single_default(results)
    pm = compute_pair_means(sel, by=["train_datasets", "test_dataset"], metrics=metrics)
    rows = []
    for _, r in pm.iterrows():
        for m in metrics:
            rows.append(
                {
                    "train_datasets": r["train_datasets"],
                    "test_dataset": r["test_dataset"],
                    "metric": m,
                    "mean": r[m],
                    "std": r[f"{m}_std"],
                    "n_scans": int(r[f"{m}_n"]),
                    "n_missing": int(r[f"{m}_missing"]),
                    "n_models": int(r["n_models"]),
                    "cross": r["train_datasets"] != r["test_dataset"],
                }
            )
    return pd.DataFrame(rows, columns=cols)


def compute_train_means(train_test: pd.DataFrame, *, metric: str = "dice") -> pd.DataFrame:
    """Mean of the train/test cell means per training dataset (the paper's "mean Dice").

    Parameters
    ----------
    train_test : DataFrame
        Output of :func:`compute_train_test_table`.

    Returns
    -------
    DataFrame
        ``train_datasets, mean, n_test_sets, mean_cross, n_cross_test_sets, n_scans``
        (``mean_cross`` leaves out the test set with the training set's own name).
    """
    cols = ["train_datasets", "mean", "n_test_sets", "mean_cross", "n_cross_test_sets", "n_scans"]
    t = train_test[(train_test["metric"] == metric) & train_test["mean"].notna()]
    rows = []
    for train, g in t.groupby("train_datasets", sort=True):
        cross = g[g["cross"]]
        rows.append(
            {
                "train_datasets": train,
                "mean": g["mean"].mean(),
                "n_test_sets": len(g),
                "mean_cross": cross["mean"].mean() if len(cross) else np.nan,
                "n_cross_test_sets": len(cross),
                "n_scans": int(g["n_scans"].sum()),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def compute_train_anova(
    results: pd.DataFrame, *, metric: str = "dice"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One-way ANOVA of ``metric`` by training dataset (single-dataset default models),
    with Tukey HSD; once on train/test pair means (the paper's unit) and once per scan.

    Returns
    -------
    tests : DataFrame, shape (2, len(TEST_COLUMNS))
    tukey : DataFrame
        Both units stacked (column ``unit``).
    """
    sel = select_single_default(results)
    pairs = compute_pair_means(sel, by=["train_datasets", "test_dataset"], metrics=[metric])
    scans = _scan_means(sel, ["train_datasets"], metric)
    rows, tukeys = [], []
    for unit, data in (("pair", pairs), ("scan", scans)):
        row, tk = compute_oneway_anova(data, dv=metric, table="train_test", unit=unit)
        rows.append(row)
        tukeys.append(tk)
    tukey = (
        pd.concat([t for t in tukeys if len(t)], ignore_index=True)
        if any(len(t) for t in tukeys)
        else tukeys[0]
    )
    return make_tests_frame(rows), tukey


# --------------------------------------------------------------------------- Table 4


def compute_combination_table(
    results: pd.DataFrame, *, metrics: Sequence[str] = ("dice", "iou")
) -> pd.DataFrame:
    """Table 4: each combination model next to the single-dataset models it combines.

    Only default settings; scores are means over the same test set.

    Returns
    -------
    DataFrame
        ``combination, test_dataset, model, role`` (``"combination"`` or ``"component"``),
        then per metric the mean and its ``_n`` (scans), plus ``n_scans`` and
        ``diff_vs_best_component`` / ``diff_vs_mean_component`` (on the combination's rows).
        A component without results on that test set has NaN scores and ``n_scans`` 0.
    """
    cols = ["combination", "test_dataset", "model", "role"]
    for m in metrics:
        cols += [m, f"{m}_n"]
    cols += ["n_scans", "diff_vs_best_component", "diff_vs_mean_component"]
    dflt = results[is_default(results)]
    pm = compute_pair_means(dflt, by=["train_datasets", "test_dataset"], metrics=metrics)
    index = pm.set_index(["train_datasets", "test_dataset"])
    rows = []
    combos = pm[pm["train_datasets"].str.contains(SEP, regex=False)]
    for _, c in combos.iterrows():
        combo, test = c["train_datasets"], c["test_dataset"]
        members = []
        for name in [combo, *split_names(combo)]:
            role = "combination" if name == combo else "component"
            row = {"combination": combo, "test_dataset": test, "model": name, "role": role}
            if (name, test) in index.index:
                r = index.loc[(name, test)]
                for m in metrics:
                    row[m], row[f"{m}_n"] = r[m], int(r[f"{m}_n"])
                row["n_scans"] = int(r["n_scans"])
            else:
                for m in metrics:
                    row[m], row[f"{m}_n"] = np.nan, 0
                row["n_scans"] = 0
            members.append(row)
        comp = [r[metrics[0]] for r in members[1:] if np.isfinite(r[metrics[0]])]
        if comp:
            members[0]["diff_vs_best_component"] = members[0][metrics[0]] - max(comp)
            members[0]["diff_vs_mean_component"] = members[0][metrics[0]] - float(np.mean(comp))
        rows += members
    return pd.DataFrame(rows, columns=cols)


def compute_combination_tests(results: pd.DataFrame, *, metric: str = "dice") -> pd.DataFrame:
    """Paired Wilcoxon: combination vs its best component (best on each test set).

    Unit ``pair``: one pair per (combination, test set) with its best component's mean.
    Unit ``scan``: the same best component, paired on the scans both models were tested on.
    """
    table = compute_combination_table(results, metrics=[metric])
    a, b, sa, sb = [], [], [], []
    dflt = results[is_default(results)]
    scans = _scan_means(dflt, ["train_datasets"], metric)
    for (combo, test), g in table.groupby(["combination", "test_dataset"], sort=True):
        comp = g[(g["role"] == "component") & g[metric].notna()]
        if comp.empty:
            continue
        best = comp.loc[comp[metric].idxmax(), "model"]
        a.append(float(comp[metric].max()))
        b.append(float(g.loc[g["role"] == "combination", metric].iloc[0]))
        x = scans[(scans["train_datasets"] == best) & (scans["test_dataset"] == test)]
        y = scans[(scans["train_datasets"] == combo) & (scans["test_dataset"] == test)]
        m = x.merge(y, on=list(SCAN_COLUMNS), suffixes=("_a", "_b"))
        sa += m[f"{metric}_a"].tolist()
        sb += m[f"{metric}_b"].tolist()
    comparison = f"{metric}: combination - best component"
    rows = [
        compute_paired_test(a, b, table="combinations", unit="pair", comparison=comparison),
        compute_paired_test(sa, sb, table="combinations", unit="scan", comparison=comparison),
    ]
    return make_tests_frame(rows)


# --------------------------------------------------------------------------- Table 5


def compute_label_table(
    results: pd.DataFrame,
    *,
    labels: Sequence[str] | None = None,
    metrics: Sequence[str] = ("dice", "iou"),
) -> pd.DataFrame:
    """Table 5: models that differ only in their training label (e.g. ISBI rater1 / rater2 /
    union), other settings at their defaults, per test set.

    Parameters
    ----------
    labels : sequence of str, optional
        Labels to keep (default: all labels of training sets that have at least two).

    Returns
    -------
    DataFrame
        Output of :func:`compute_pair_means` by ``train_datasets, label, test_dataset``.
    """
    dflt = results[is_default(results, ignore=["label"])]
    if labels is not None:
        dflt = dflt[dflt["label"].isin(list(labels))]
    counts = dflt.groupby("train_datasets")["label"].nunique()
    keep = counts[counts >= 2].index
    dflt = dflt[dflt["train_datasets"].isin(keep)]
    return compute_pair_means(dflt, by=["train_datasets", "label", "test_dataset"], metrics=metrics)


def compute_label_tests(
    results: pd.DataFrame, *, labels: Sequence[str] | None = None, metric: str = "dice"
) -> pd.DataFrame:
    """Repeated-measures ANOVA of ``metric`` over training labels, per training set, on the
    test sets (unit ``pair``) or test scans (unit ``scan``) shared by all labels; plus a
    paired Wilcoxon for every pair of labels."""
    dflt = results[is_default(results, ignore=["label"])]
    if labels is not None:
        dflt = dflt[dflt["label"].isin(list(labels))]
    rows = []
    trains = sorted(t for t, g in dflt.groupby("train_datasets") if g["label"].nunique() >= 2)
    if not trains:
        rows.append(
            not_enough_row("labels", "rm_anova", "pair", metric, "no training set with >= 2 labels")
        )
    for train in trains:
        d = dflt[dflt["train_datasets"] == train]
        pairs = compute_pair_means(d, by=["label", "test_dataset"], metrics=[metric])
        scans = _scan_means(d, ["label"], metric)
        scans["scan"] = scans[list(SCAN_COLUMNS)].agg("/".join, axis=1)
        for unit, data, subject in (("pair", pairs, "test_dataset"), ("scan", scans, "scan")):
            row = compute_rm_anova(data, dv=metric, within="label", subject=subject, unit=unit)
            row["comparison"] = f"{train}: {row['comparison']}"
            rows.append(row)
            wide = data.pivot_table(index=subject, columns="label", values=metric)
            for la, lb in itertools.combinations(sorted(wide.columns), 2):
                rows.append(
                    compute_paired_test(
                        wide[la].to_numpy(),
                        wide[lb].to_numpy(),
                        table="labels",
                        unit=unit,
                        comparison=f"{train}: {metric} {lb} - {la}",
                    )
                )
    return make_tests_frame(rows)


# --------------------------------------------------------------------------- Tables 6 and 7


def _ablation_rows(results: pd.DataFrame, factor: str, levels: tuple[str, str]) -> pd.DataFrame:
    """The default models at the reference level of ``factor``, and the models at its
    alternative level with every other setting at its default (those serve ablations)."""
    ref, alt = levels
    ref_rows = (results[factor] == ref) & is_default(results, ignore=[factor])
    alt_rows = (results[factor] == alt) & is_default(results, ignore=[factor], ablations=True)
    return results[ref_rows | alt_rows]


def compute_ablation_table(
    results: pd.DataFrame,
    *,
    factor: str = "normalization",
    levels: tuple[str, str] | None = None,
    metrics: Sequence[str] = ("dice", "iou"),
) -> pd.DataFrame:
    """Tables 6/7: the two levels of ``factor`` on matching train/test pairs.

    The models of Tables 2 and 4 (single-dataset and combination models, every setting but
    ``factor`` at its default, as :func:`msnb.stats.results.is_default` says), matched on
    every other configuration column (:data:`CONFIG_COLUMNS`) and the test set; only pairs
    where both levels were run are kept. The paper's grid gives 12 + 7 = 19 pairs.

    Parameters
    ----------
    factor : {"normalization", "architecture", ...}, default "normalization"
    levels : (str, str), optional
        (reference, alternative); default from :data:`ABLATIONS`.

    Returns
    -------
    DataFrame
        Matching columns, then per metric ``<metric>_<level>``, ``<metric>_<level>_n`` for both
        levels and ``<metric>_diff`` (alternative - reference), plus ``n_scans``.
    """
    ref, alt = levels or ABLATIONS[factor]
    keys = [c for c in CONFIG_COLUMNS if c != factor] + ["test_dataset"]
    cols = list(keys)
    for m in metrics:
        cols += [f"{m}_{ref}", f"{m}_{ref}_n", f"{m}_{alt}", f"{m}_{alt}_n", f"{m}_diff"]
    cols += ["n_scans"]
    pm = compute_pair_means(
        _ablation_rows(results, factor, (ref, alt)), by=[*keys, factor], metrics=metrics
    )
    a = pm[pm[factor] == ref].set_index(keys)
    b = pm[pm[factor] == alt].set_index(keys)
    both = a.index.intersection(b.index)
    if len(both) == 0:
        return pd.DataFrame(columns=cols)
    out = pd.DataFrame(index=both)
    for m in metrics:
        out[f"{m}_{ref}"] = a.loc[both, m]
        out[f"{m}_{ref}_n"] = a.loc[both, f"{m}_n"].astype(int)
        out[f"{m}_{alt}"] = b.loc[both, m]
        out[f"{m}_{alt}_n"] = b.loc[both, f"{m}_n"].astype(int)
        out[f"{m}_diff"] = out[f"{m}_{alt}"] - out[f"{m}_{ref}"]
    out["n_scans"] = np.minimum(a.loc[both, "n_scans"], b.loc[both, "n_scans"]).astype(int)
    return out.reset_index()[cols].sort_values(keys).reset_index(drop=True)


def compute_ablation_tests(
    results: pd.DataFrame,
    *,
    factor: str = "normalization",
    levels: tuple[str, str] | None = None,
    metric: str = "dice",
    table: str | None = None,
) -> pd.DataFrame:
    """Paired Wilcoxon of ``metric``, alternative vs reference level of ``factor``, over
    matching train/test pairs (unit ``pair``: each pair's mean over its test scans, the
    paper's unit) and over the same test scans (unit ``scan``); the models of
    :func:`compute_ablation_table` (single-dataset and combination models). ``table``
    names the rows' table (default ``"ablation_<factor>"``)."""
    ref, alt = levels or ABLATIONS[factor]
    pairs = compute_ablation_table(results, factor=factor, levels=(ref, alt), metrics=[metric])
    keys = [c for c in CONFIG_COLUMNS if c != factor]
    scans = _scan_means(_ablation_rows(results, factor, (ref, alt)), [*keys, factor], metric)
    wide = scans.pivot_table(index=[*keys, *SCAN_COLUMNS], columns=factor, values=metric)
    both = ref in wide.columns and alt in wide.columns
    sa = wide[ref].to_numpy() if both else np.array([])
    sb = wide[alt].to_numpy() if both else np.array([])
    comparison = f"{metric}: {alt} - {ref}"
    name = table or f"ablation_{factor}"
    rows = [
        compute_paired_test(
            pairs[f"{metric}_{ref}"].to_numpy(),
            pairs[f"{metric}_{alt}"].to_numpy(),
            table=name,
            unit="pair",
            comparison=comparison,
        ),
        compute_paired_test(sa, sb, table=name, unit="scan", comparison=comparison),
    ]
    return make_tests_frame(rows)


# --------------------------------------------------------------------------- centers


def compute_center_table(
    results: pd.DataFrame, *, metrics: Sequence[str] = ("dice", "iou", "lesion_f1")
) -> pd.DataFrame:
    """Per-center scores of every model on every multi-center test set.

    Returns
    -------
    DataFrame
        ``model_id``, configuration columns, ``experiment, train_centers, test_dataset,
        center, seen_in_training`` (the center is in the model's ``train_centers``; NA when
        ``train_centers`` is empty), then :func:`compute_pair_means` columns.
    """
    multi = results.groupby("test_dataset")["center"].transform("nunique") > 1
    sel = results[multi]
    by = ["model_id", *CONFIG_COLUMNS, "experiment", "train_centers", "test_dataset", "center"]
    pm = compute_pair_means(sel, by=by, metrics=metrics)
    seen = [
        pd.NA if not tc else (c in split_names(tc))
        for tc, c in zip(pm["train_centers"], pm["center"], strict=True)
    ]
    pm.insert(by.index("center") + 1, "seen_in_training", pd.array(seen, dtype="boolean"))
    return pm


def compute_center_tests(results: pd.DataFrame, *, metric: str = "dice") -> pd.DataFrame:
    """Per model and multi-center test set, per-scan ``metric`` on unseen vs seen centers
    (:func:`msnb.stats.inference.compute_unpaired_test`: Mann-Whitney U, rank-biserial
    correlation, difference of means unseen - seen with a bootstrap CI). Models whose test
    set has no unseen (or no seen) center are skipped."""
    multi = results.groupby("test_dataset")["center"].transform("nunique") > 1
    rows = []
    for (model, test), g in results[multi & (results["train_centers"] != "")].groupby(
        ["model_id", "test_dataset"], sort=True
    ):
        is_seen = g["center"].isin(set(split_names(g["train_centers"].iloc[0])))
        if not is_seen.any() or is_seen.all():
            continue
        rows.append(
            compute_unpaired_test(
                g.loc[~is_seen, metric].dropna().to_numpy(),
                g.loc[is_seen, metric].dropna().to_numpy(),
                table="centers",
                unit="scan",
                comparison=f"{model} on {test}: {metric} unseen - seen centers",
                labels=("unseen-center", "seen-center"),
            )
        )
    return make_tests_frame(rows)


# --------------------------------------------------------------------------- all tables


def compute_all_tables(results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every table and test the results allow (see the module docstring for the keys).

    Parameters
    ----------
    results : DataFrame
        The results table (validated with :func:`validate_results`).

    Returns
    -------
    dict of str to DataFrame
        Tables that have nothing to show are empty (with their columns); ``tests`` stacks
        every test row, including the ``not enough data`` ones. The ``paper_<table>`` frames
        always hold every published cell (``status`` ``"not run"`` where the study has none)
        and ``findings`` every claim (verdict ``"not run"`` where the study cannot say).
    """
    df = validate_results(results)
    tables: dict[str, pd.DataFrame] = {}
    tests = []
    tables["train_test"] = compute_train_test_table(df)
    tables["train_means"] = compute_train_means(tables["train_test"])
    anova, tables["tukey_train"] = compute_train_anova(df)
    tests.append(anova)
    tables["combinations"] = compute_combination_table(df)
    tests.append(compute_combination_tests(df))
    tables["labels"] = compute_label_table(df)
    tests.append(compute_label_tests(df))
    for factor in ABLATIONS:
        tables[f"ablation_{factor}"] = compute_ablation_table(df, factor=factor)
        tests.append(compute_ablation_tests(df, factor=factor))
    for name in find_setting_ablations(df):
        if f"ablation_{name}" in tables:
            continue  # its name is taken by a table above (e.g. "normalization"): left out
        frame, levels = label_setting_ablation(df, name), ("default", name)
        tables[f"ablation_{name}"] = compute_ablation_table(frame, factor="setting", levels=levels)
        tests.append(
            compute_ablation_tests(frame, factor="setting", levels=levels, table=f"ablation_{name}")
        )
    tables["centers"] = compute_center_table(df)
    tests.append(compute_center_tests(df))
    tables["tests"] = pd.concat([t for t in tests if len(t)], ignore_index=True)
    paper = load_paper_numbers()
    for name, frame in compute_paper_comparison(tables, paper=paper).items():
        tables[f"paper_{name}"] = frame
    tables["findings"] = compute_findings(tables, paper=paper)
    return tables


def select_tests(tables: dict[str, pd.DataFrame], table: str) -> pd.DataFrame:
    """The test rows of one table (e.g. ``"labels"``), as shown in the notebook."""
    tests = tables["tests"]
    return tests[tests["table"] == table].reset_index(drop=True)
