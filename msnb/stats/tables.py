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
external           methods outside msnb (a study's ``external`` masks) beside msnb's default
                   models on the same test sets; each tested against the msnb models trained on
                   the same datasets (:func:`compute_external_table`)
tests              every statistical test, one tidy row each (:data:`TEST_COLUMNS`)
paper_<table>      the paper's published cells beside the study's (``table2`` .. ``table7``,
                   ``centers``): paper | study | difference (:mod:`msnb.stats.compare`)
findings           each claim of the paper with this study's effect, test, p and verdict
                   (:mod:`msnb.stats.findings`)
<name>_by_seed     with several seeds only: each seed's own ``train_test``, ``combinations``,
                   ``labels``, ``ablation_<factor>`` and ``centers`` (:func:`compute_seed_tables`)
================== ==============================================================================

:func:`compute_all_tables` builds them all; each ``compute_*_table`` / ``compute_*_tests``
pair can also be called alone.

Seed replicates are aggregated the way the field does (:func:`compute_seed_cells`): a cell's
value is the mean over its seeds of each seed's mean over the cell's scans, with the SD of
those seed means (``sd_seeds``, ddof 1), their 95 % t interval (``ci_low``, ``ci_high``) and
``n_seeds``; with one seed the SD and interval are NaN and the mean is what it was, the mean
over the cell's scans. The paired tests pair cells on their seed means and report in
``stable_seeds`` of ``n_seeds`` how many seeds give the effect (the mean paired difference,
seed k of one model against seed k of the other) the seed-mean sign; the ANOVAs run on
seed-mean cells (unit ``pair``) or on each scan's mean over seeds (unit ``scan``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from msnb.paper import load_paper_numbers
from msnb.stats.compare import compute_paper_comparison
from msnb.stats.findings import ALPHA, compute_findings
from msnb.stats.inference import (
    compute_oneway_anova,
    compute_paired_test,
    compute_rm_anova,
    compute_seed_stability,
    compute_unpaired_test,
    count_same_sign,
    make_tests_frame,
    not_enough_row,
)
from msnb.stats.results import (
    CONFIG_COLUMNS,
    DEFAULTS,
    EXTERNAL_TAG,
    SCAN_COLUMNS,
    SEP,
    find_setting_ablations,
    has_experiment_prefix,
    is_default,
    label_setting_ablation,
    replicate_id,
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
    "compute_external_table",
    "compute_external_tests",
    "compute_label_table",
    "compute_label_tests",
    "compute_pair_means",
    "compute_seed_cells",
    "compute_seed_means",
    "compute_seed_tables",
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


def _seeds(results: pd.DataFrame) -> pd.Series:
    """The ``seed`` column of ``results`` (0 on every row of a table without one)."""
    if "seed" in results.columns:
        return results["seed"]
    return pd.Series(0, index=results.index, name="seed", dtype=int)


def compute_seed_means(
    results: pd.DataFrame, *, by: Sequence[str], metrics: Sequence[str] = ("dice", "iou")
) -> pd.DataFrame:
    """Per-seed cell means: the mean of each metric over the rows (test scans) of each group
    of ``by`` and each seed (the models of one seed in a cell pooled, as a single model).

    Returns
    -------
    DataFrame
        ``by`` columns, ``seed``, one column per metric; one row per cell x seed.
    """
    by, metrics = list(by), list(metrics)
    if results.empty:
        return pd.DataFrame(columns=[*by, "seed", *metrics])
    df = results.assign(seed=_seeds(results))
    g = df.groupby([*by, "seed"], sort=True, dropna=False)
    return g[metrics].mean().reset_index()


def _summarize_seeds(
    seed_means: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]
) -> pd.DataFrame:
    """Per cell of ``by``: mean of the seed means, their SD and 95 % t interval, ``n_seeds``."""
    by = list(by)
    cols = [*by]
    for m in metrics:
        cols += [m, f"{m}_sd_seeds", f"{m}_ci_low", f"{m}_ci_high"]
    cols += ["n_seeds"]
    if seed_means.empty:
        return pd.DataFrame(columns=cols)
    from scipy import stats as sps

    g = seed_means.groupby(by, sort=True, dropna=False)
    out = g.size().rename("n_seeds").to_frame()
    for m in metrics:
        n = g[m].count()
        mean, sd = g[m].mean(), g[m].std(ddof=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            half = sps.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
        out[m], out[f"{m}_sd_seeds"] = mean, sd
        out[f"{m}_ci_low"], out[f"{m}_ci_high"] = mean - half, mean + half
    return out.reset_index()[cols]


def compute_seed_cells(
    results: pd.DataFrame, *, by: Sequence[str], metrics: Sequence[str] = ("dice", "iou")
) -> pd.DataFrame:
    """Cells aggregated over seed replicates, as the field reports them.

    Each seed's cell mean is the mean over the scans of that seed's model(s) in the cell
    (:func:`compute_seed_means`); the cell is then summarized over its seeds.

    Parameters
    ----------
    results : DataFrame
        Rows of a results table (a table without ``seed`` is one seed).
    by : sequence of str
        Columns that identify a cell (e.g. ``train_datasets, test_dataset``).
    metrics : sequence of str, default ("dice", "iou")

    Returns
    -------
    DataFrame
        ``by`` columns, then per metric ``<metric>`` (mean of the seed means),
        ``<metric>_sd_seeds`` (their SD, ddof 1), ``<metric>_ci_low`` / ``<metric>_ci_high``
        (95 % Student t interval of the mean over seeds: mean +- t(0.975, n - 1) * sd / sqrt(n),
        n the seeds with a value); plus ``n_seeds`` (seeds with rows in the cell). SD and
        interval are NaN with one seed; with one seed the mean is the mean over the cell's rows.
    """
    return _summarize_seeds(compute_seed_means(results, by=by, metrics=metrics), by, metrics)


def compute_pair_means(
    results: pd.DataFrame,
    *,
    by: Sequence[str] = (*CONFIG_COLUMNS, "test_dataset"),
    metrics: Sequence[str] = ("dice", "iou"),
) -> pd.DataFrame:
    """Mean of each metric over test scans, per group (default: per train/test pair),
    aggregated over seed replicates (:func:`compute_seed_cells`).

    Returns
    -------
    DataFrame
        ``by`` columns, then per metric ``<metric>`` (mean of the seed means: with one seed,
        the mean over the group's scans), ``<metric>_std`` (SD over the group's scan values),
        ``<metric>_n`` (scan values used, over all seeds) and ``<metric>_missing`` (NaN
        values); plus ``n_scans`` (distinct test scans) and ``n_models``; then per metric
        ``<metric>_sd_seeds``, ``<metric>_ci_low``, ``<metric>_ci_high`` and ``n_seeds``
        (:func:`compute_seed_cells`).
    """
    by = list(by)
    cols = [*by]
    for m in metrics:
        cols += [m, f"{m}_std", f"{m}_n", f"{m}_missing"]
    cols += ["n_scans", "n_models"]
    for m in metrics:
        cols += [f"{m}_sd_seeds", f"{m}_ci_low", f"{m}_ci_high"]
    cols += ["n_seeds"]
    if results.empty:
        return pd.DataFrame(columns=cols)
    g = results.groupby(by, sort=True, dropna=False)
    out = g.size().rename("rows").to_frame()
    cells = compute_seed_cells(results, by=by, metrics=metrics).set_index(by)
    for m in metrics:
        out[m] = cells[m]
        out[f"{m}_std"] = g[m].std()
        out[f"{m}_n"] = g[m].count()
        out[f"{m}_missing"] = g[m].apply(lambda s: int(s.isna().sum()))
    scan_key = results[list(SCAN_COLUMNS)].astype(str).agg("/".join, axis=1)
    out["n_scans"] = scan_key.groupby([results[c] for c in by], sort=True, dropna=False).nunique()
    out["n_models"] = g["model_id"].nunique()
    for m in metrics:
        for stat in ("sd_seeds", "ci_low", "ci_high"):
            out[f"{m}_{stat}"] = cells[f"{m}_{stat}"]
    out["n_seeds"] = cells["n_seeds"]
    return out.reset_index()[cols]


def _scan_means(results: pd.DataFrame, keys: Sequence[str], metric: str) -> pd.DataFrame:
    """Per-scan values, averaged over models that share ``keys`` (e.g. several seeds)."""
    return results.groupby([*keys, *SCAN_COLUMNS], sort=True)[metric].mean().reset_index()


def _seed_values(results: pd.DataFrame, keys: Sequence[str], metric: str) -> pd.Series:
    """``metric`` averaged per group of ``keys`` and seed: a Series indexed by
    ``(*keys, "seed")`` (:func:`compute_seed_means`)."""
    means = compute_seed_means(results, by=keys, metrics=[metric])
    return means.set_index([*keys, "seed"])[metric].astype(float)


def _n_seeds(results: pd.DataFrame) -> int:
    """Distinct seeds in ``results``."""
    return int(_seeds(results).nunique())


def _paired_seed_test(values: pd.Series, level: str, levels: tuple[str, str], **kwargs) -> dict:
    """Paired test of ``levels[1]`` against ``levels[0]`` (the values of index level
    ``level``) on seed-mean cells, with ``n_seeds`` / ``stable_seeds``.

    Parameters
    ----------
    values : Series
        Per-seed values (:func:`_seed_values`) indexed by the pair's keys, ``level`` and
        ``seed``; each side's cell is its mean over its own seeds.
    kwargs
        ``table``, ``unit``, ``comparison`` of :func:`compute_paired_test`.
    """
    ref, alt = levels
    wide = values.unstack(level) if len(values) else pd.DataFrame()
    if wide.empty or ref not in wide.columns or alt not in wide.columns:
        return compute_paired_test([], [], **kwargs) | {"n_seeds": 0}
    keys = [n for n in wide.index.names if n != "seed"]
    means = wide[[ref, alt]].groupby(level=keys, sort=True).mean()
    row = compute_paired_test(means[ref].to_numpy(), means[alt].to_numpy(), **kwargs)
    row.update(compute_seed_stability(wide[ref], wide[alt], row["mean_diff"]))
    return row


# --------------------------------------------------------------------------- Table 2/3


def compute_train_test_table(
    results: pd.DataFrame, *, metrics: Sequence[str] = ("dice", "iou")
) -> pd.DataFrame:
    """Table 2/3: train x test mean of each metric for single-dataset default models.

    Returns
    -------
    DataFrame, shape (n_train * n_test * len(metrics), 13)
        Tidy: ``train_datasets, test_dataset, metric, mean, std, n_scans, n_missing, n_models,
        cross`` (``cross`` is False on the diagonal, where training and test set share a name),
        then ``sd_seeds, ci_low, ci_high, n_seeds`` (over seed replicates,
        :func:`compute_seed_cells`). ``mean`` is the mean of the seed means, ``std`` the SD
        over the scan values, ``n_scans`` the scan values used (over all seeds).
    """
    cols = ["train_datasets", "test_dataset", "metric", "mean", "std"]
    cols += ["n_scans", "n_missing", "n_models", "cross", "sd_seeds", "ci_low", "ci_high"]
    cols += ["n_seeds"]
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
                    "sd_seeds": r[f"{m}_sd_seeds"],
                    "ci_low": r[f"{m}_ci_low"],
                    "ci_high": r[f"{m}_ci_high"],
                    "n_seeds": int(r["n_seeds"]),
                }
            )
    return pd.DataFrame(rows, columns=cols)


def compute_train_means(
    train_test: pd.DataFrame, *, metric: str = "dice", by_seed: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Mean of the train/test cell means per training dataset (the paper's "mean Dice").

    Parameters
    ----------
    train_test : DataFrame
        Output of :func:`compute_train_test_table`.
    metric : str, default "dice"
    by_seed : DataFrame, optional
        ``train_test_by_seed`` (:func:`compute_seed_tables`), for the seed SD.

    Returns
    -------
    DataFrame
        ``train_datasets, mean, n_test_sets, mean_cross, n_cross_test_sets, n_scans``
        (``mean_cross`` leaves out the test set with the training set's own name), then
        ``sd_seeds`` (SD over seeds of each seed's mean over its cells; NaN without
        ``by_seed`` or with one seed) and ``n_seeds``.
    """
    cols = ["train_datasets", "mean", "n_test_sets", "mean_cross", "n_cross_test_sets", "n_scans"]
    cols += ["sd_seeds", "n_seeds"]
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
                "sd_seeds": _seed_sd(by_seed, train, metric),
                "n_seeds": int(g["n_seeds"].max()) if "n_seeds" in g else 1,
            }
        )
    return pd.DataFrame(rows, columns=cols)


def _seed_sd(by_seed: pd.DataFrame | None, train: str, metric: str) -> float:
    """SD over seeds of the mean of ``train``'s cells in ``by_seed`` (NaN: < 2 seeds)."""
    if by_seed is None or by_seed.empty:
        return np.nan
    sel = by_seed[(by_seed["train_datasets"] == train) & (by_seed["metric"] == metric)]
    per_seed = sel.groupby("seed")["mean"].mean().dropna()
    return float(per_seed.std(ddof=1)) if len(per_seed) > 1 else np.nan


def compute_train_anova(
    results: pd.DataFrame, *, metric: str = "dice"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One-way ANOVA of ``metric`` by training dataset (single-dataset default models),
    with Tukey HSD; once on train/test pair means (the paper's unit; seed-mean cells) and
    once per scan (each scan's mean over seeds). ``n_seeds`` is the seeds in the data,
    ``stable_seeds`` those whose own ANOVA reaches the same decision (:func:`_anova_stability`).

    Returns
    -------
    tests : DataFrame, shape (2, len(TEST_COLUMNS))
    tukey : DataFrame
        Both units stacked (column ``unit``).
    """
    sel = select_single_default(results)
    rows, tukeys = [], []
    for unit in ("pair", "scan"):
        row, tk = compute_oneway_anova(_anova_data(sel, unit, metric), dv=metric, unit=unit)
        rows.append(row | _anova_stability(sel, unit, metric, row["p_value"]))
        tukeys.append(tk)
    tukey = (
        pd.concat([t for t in tukeys if len(t)], ignore_index=True)
        if any(len(t) for t in tukeys)
        else tukeys[0]
    )
    return make_tests_frame(rows), tukey


def _anova_data(sel: pd.DataFrame, unit: str, metric: str) -> pd.DataFrame:
    """The ANOVA's observations: train/test pair means (``unit="pair"``, seed-mean cells) or
    each scan's mean over seeds (``"scan"``)."""
    if unit == "pair":
        return compute_pair_means(sel, by=["train_datasets", "test_dataset"], metrics=[metric])
    return _scan_means(sel, ["train_datasets"], metric)


def _anova_stability(sel: pd.DataFrame, unit: str, metric: str, p_value: float) -> dict:
    """``n_seeds`` and ``stable_seeds``: the seeds whose own ANOVA (that seed's models only)
    reaches the same decision at ``ALPHA`` as the ANOVA on seed-mean data (p on the same side
    of ALPHA; a seed whose ANOVA cannot run counts as unstable); NaN ``stable_seeds`` with one
    seed or no pooled p value."""
    seeds = _seeds(sel)
    if seeds.nunique() < 2:
        return {"n_seeds": _n_seeds(sel), "stable_seeds": np.nan}
    per_seed = [
        compute_oneway_anova(_anova_data(sel[seeds == k], unit, metric), dv=metric)[0]["p_value"]
        for k in sorted(seeds.unique())
    ]
    stable = count_same_sign(np.asarray(per_seed, dtype=float) - ALPHA, p_value - ALPHA)
    return {"n_seeds": _n_seeds(sel), "stable_seeds": stable["stable_seeds"]}


# --------------------------------------------------------------------------- Table 4


def compute_combination_table(
    results: pd.DataFrame, *, metrics: Sequence[str] = ("dice", "iou")
) -> pd.DataFrame:
    """Table 4: each combination model next to the single-dataset models it combines.

    Only default settings; scores are means over the same test set (seed-mean cells).

    Returns
    -------
    DataFrame
        ``combination, test_dataset, model, role`` (``"combination"`` or ``"component"``),
        then per metric the mean and its ``_n`` (scans), plus ``n_scans`` and
        ``diff_vs_best_component`` / ``diff_vs_mean_component`` (on the combination's rows);
        then per metric ``<metric>_sd_seeds``, ``<metric>_ci_low``, ``<metric>_ci_high`` and
        ``n_seeds`` (:func:`compute_seed_cells`). A component without results on that test set
        has NaN scores and ``n_scans`` and ``n_seeds`` 0.
    """
    seed_cols = [f"{m}_{s}" for m in metrics for s in ("sd_seeds", "ci_low", "ci_high")]
    cols = ["combination", "test_dataset", "model", "role"]
    for m in metrics:
        cols += [m, f"{m}_n"]
    cols += ["n_scans", "diff_vs_best_component", "diff_vs_mean_component", *seed_cols, "n_seeds"]
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
            ran = (name, test) in index.index
            r = index.loc[(name, test)] if ran else None
            for m in metrics:
                row[m], row[f"{m}_n"] = (r[m], int(r[f"{m}_n"])) if ran else (np.nan, 0)
            for col in seed_cols:
                row[col] = r[col] if ran else np.nan
            row["n_scans"] = int(r["n_scans"]) if ran else 0
            row["n_seeds"] = int(r["n_seeds"]) if ran else 0
            members.append(row)
        comp = [r[metrics[0]] for r in members[1:] if np.isfinite(r[metrics[0]])]
        if comp:
            members[0]["diff_vs_best_component"] = members[0][metrics[0]] - max(comp)
            members[0]["diff_vs_mean_component"] = members[0][metrics[0]] - float(np.mean(comp))
        rows += members
    return pd.DataFrame(rows, columns=cols)


def compute_combination_tests(results: pd.DataFrame, *, metric: str = "dice") -> pd.DataFrame:
    """Paired Wilcoxon: combination vs its best component (best on each test set, on the
    seed-mean cells).

    Unit ``pair``: one pair per (combination, test set) with its best component's mean.
    Unit ``scan``: the same best component, paired on the scans both models were tested on.
    ``stable_seeds``: seeds whose own cells (seed k of the combination against seed k of
    that best component) give a mean difference of the same sign.
    """
    table = compute_combination_table(results, metrics=[metric])
    dflt = results[is_default(results)]
    parts = []
    for (combo, test), g in table.groupby(["combination", "test_dataset"], sort=True):
        comp = g[(g["role"] == "component") & g[metric].notna()]
        if comp.empty:
            continue
        best = comp.loc[comp[metric].idxmax(), "model"]
        on_test = dflt[dflt["test_dataset"] == test]
        for model, side in ((best, "best"), (combo, "combination")):
            rows = on_test[on_test["train_datasets"] == model]
            parts.append(rows.assign(combination=combo, side=side))
    empty = dflt.iloc[:0].assign(combination="", side="")
    pairs = pd.concat(parts, ignore_index=True) if parts else empty
    comparison = f"{metric}: combination - best component"
    out = []
    units = (("pair", ["combination", "test_dataset"]), ("scan", ["combination", *SCAN_COLUMNS]))
    for unit, keys in units:
        values = _seed_values(pairs, [*keys, "side"], metric)
        out.append(
            _paired_seed_test(
                values,
                "side",
                ("best", "combination"),
                table="combinations",
                unit=unit,
                comparison=comparison,
            )
        )
    return make_tests_frame(out)


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
    test sets (unit ``pair``, seed-mean cells) or test scans (unit ``scan``, each scan's mean
    over seeds) shared by all labels; plus a paired Wilcoxon for every pair of labels, with
    ``n_seeds`` / ``stable_seeds`` (seed k of one label's model against seed k of the other's).
    """
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
        d = d.assign(scan=d[list(SCAN_COLUMNS)].astype(str).agg("/".join, axis=1))
        for unit, subject in (("pair", "test_dataset"), ("scan", "scan")):
            values = _seed_values(d, [subject, "label"], metric)
            data = values.groupby(level=[subject, "label"]).mean().reset_index()
            row = compute_rm_anova(data, dv=metric, within="label", subject=subject, unit=unit)
            row.update(comparison=f"{train}: {row['comparison']}", n_seeds=_n_seeds(d))
            rows.append(row)
            shown = data.dropna(subset=[metric])["label"].unique()
            for la, lb in itertools.combinations(sorted(shown), 2):
                rows.append(
                    _paired_seed_test(
                        values,
                        "label",
                        (la, lb),
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
        levels and ``<metric>_diff`` (alternative - reference, of the seed-mean cells), plus
        ``n_scans``; then the seed columns (:func:`_ablation_seed_columns`).
    """
    ref, alt = levels or ABLATIONS[factor]
    keys = [c for c in CONFIG_COLUMNS if c != factor] + ["test_dataset"]
    cols = list(keys)
    for m in metrics:
        cols += [f"{m}_{ref}", f"{m}_{ref}_n", f"{m}_{alt}", f"{m}_{alt}_n", f"{m}_diff"]
    cols += ["n_scans"]
    rows = _ablation_rows(results, factor, (ref, alt))
    pm = compute_pair_means(rows, by=[*keys, factor], metrics=metrics)
    a = pm[pm[factor] == ref].set_index(keys)
    b = pm[pm[factor] == alt].set_index(keys)
    both = a.index.intersection(b.index)
    seed_cols = _ablation_seed_columns(rows, factor, (ref, alt), keys, metrics, both)
    if len(both) == 0:
        return pd.DataFrame(columns=[*cols, *seed_cols.columns])
    out = pd.DataFrame(index=both)
    for m in metrics:
        out[f"{m}_{ref}"] = a.loc[both, m]
        out[f"{m}_{ref}_n"] = a.loc[both, f"{m}_n"].astype(int)
        out[f"{m}_{alt}"] = b.loc[both, m]
        out[f"{m}_{alt}_n"] = b.loc[both, f"{m}_n"].astype(int)
        out[f"{m}_diff"] = out[f"{m}_{alt}"] - out[f"{m}_{ref}"]
    out["n_scans"] = np.minimum(a.loc[both, "n_scans"], b.loc[both, "n_scans"]).astype(int)
    out = out.reset_index()[cols].join(seed_cols.reset_index(drop=True))
    return out.sort_values(keys).reset_index(drop=True)


def _ablation_seed_columns(
    rows: pd.DataFrame,
    factor: str,
    levels: tuple[str, str],
    keys: list[str],
    metrics: Sequence[str],
    both: pd.Index,
) -> pd.DataFrame:
    """The seed columns of :func:`compute_ablation_table`, one row per pair of ``both``.

    Per metric and level ``<metric>_<level>_sd_seeds``, ``_ci_low``, ``_ci_high`` (each
    level's cell over its seeds), then ``<metric>_diff_sd_seeds``, ``_ci_low``, ``_ci_high``
    (over the seeds both levels have, seed k against seed k), then ``n_seeds_<level>`` for both
    levels and ``n_seeds`` (seeds both levels have).
    """
    stats_ = ("sd_seeds", "ci_low", "ci_high")
    cols = [f"{m}_{x}_{s}" for m in metrics for x in (*levels, "diff") for s in stats_]
    cols += [f"n_seeds_{x}" for x in levels] + ["n_seeds"]
    if len(both) == 0:
        return pd.DataFrame(columns=cols)
    seed_means = compute_seed_means(rows, by=[*keys, factor], metrics=metrics)
    out = pd.DataFrame(index=both)
    wide = seed_means.set_index([*keys, "seed", factor])[list(metrics)].unstack(factor)
    for level in levels:
        one = _summarize_seeds(seed_means[seed_means[factor] == level], keys, metrics)
        one = one.set_index(keys).reindex(both)
        for m in metrics:
            for s in stats_:
                out[f"{m}_{level}_{s}"] = one[f"{m}_{s}"]
        out[f"n_seeds_{level}"] = one["n_seeds"].fillna(0).astype(int)
    diffs = pd.DataFrame({m: wide[(m, levels[1])] - wide[(m, levels[0])] for m in metrics})
    present = wide.xs(levels[0], axis=1, level=factor).notna().any(axis=1)
    present &= wide.xs(levels[1], axis=1, level=factor).notna().any(axis=1)
    diff = _summarize_seeds(diffs[present].reset_index(), keys, metrics)
    diff = diff.set_index(keys).reindex(both)
    for m in metrics:
        for s in stats_:
            out[f"{m}_diff_{s}"] = diff[f"{m}_{s}"]
    out["n_seeds"] = diff["n_seeds"].fillna(0).astype(int)
    return out[cols]


def compute_ablation_tests(
    results: pd.DataFrame,
    *,
    factor: str = "normalization",
    levels: tuple[str, str] | None = None,
    metric: str = "dice",
    table: str | None = None,
) -> pd.DataFrame:
    """Paired Wilcoxon of ``metric``, alternative vs reference level of ``factor``, over
    matching train/test pairs (unit ``pair``: each pair's seed-mean cells, the paper's unit)
    and over the same test scans (unit ``scan``: each scan's mean over seeds); the models of
    :func:`compute_ablation_table` (single-dataset and combination models). ``stable_seeds``
    counts the seeds whose own pairs (seed k of both levels) give a mean difference of the
    seed-mean sign. ``table`` names the rows' table (default ``"ablation_<factor>"``)."""
    ref, alt = levels or ABLATIONS[factor]
    keys = [c for c in CONFIG_COLUMNS if c != factor]
    rows = _ablation_rows(results, factor, (ref, alt))
    comparison = f"{metric}: {alt} - {ref}"
    name = table or f"ablation_{factor}"
    out = []
    for unit, unit_keys in (("pair", ["test_dataset"]), ("scan", list(SCAN_COLUMNS))):
        values = _seed_values(rows, [*keys, *unit_keys, factor], metric)
        out.append(
            _paired_seed_test(
                values, factor, (ref, alt), table=name, unit=unit, comparison=comparison
            )
        )
    return make_tests_frame(out)


# --------------------------------------------------------------------------- centers


def compute_center_table(
    results: pd.DataFrame, *, metrics: Sequence[str] = ("dice", "iou", "lesion_f1")
) -> pd.DataFrame:
    """Per-center scores of every model on every multi-center test set.

    A model's seed replicates are one row: ``model_id`` is their shared id
    (:func:`msnb.stats.results.replicate_id`, the first seed's id) and the scores are over
    seeds (:func:`compute_pair_means`).

    Returns
    -------
    DataFrame
        ``model_id``, configuration columns, ``experiment, train_centers, test_dataset,
        center, seen_in_training`` (the center is in the model's ``train_centers``; NA when
        ``train_centers`` is empty), then :func:`compute_pair_means` columns.
    """
    multi = results.groupby("test_dataset")["center"].transform("nunique") > 1
    sel = results[multi]
    sel = sel.assign(replicate=replicate_id(sel["model_id"]))
    by = ["replicate", *CONFIG_COLUMNS, "experiment", "train_centers", "test_dataset", "center"]
    pm = compute_pair_means(sel, by=by, metrics=metrics).rename(columns={"replicate": "model_id"})
    seen = [
        pd.NA if not tc else (c in split_names(tc))
        for tc, c in zip(pm["train_centers"], pm["center"], strict=True)
    ]
    pm.insert(by.index("center") + 1, "seen_in_training", pd.array(seen, dtype="boolean"))
    return pm


def compute_center_tests(results: pd.DataFrame, *, metric: str = "dice") -> pd.DataFrame:
    """Per model and multi-center test set, per-scan ``metric`` on unseen vs seen centers
    (:func:`msnb.stats.inference.compute_unpaired_test`: Mann-Whitney U, rank-biserial
    correlation, difference of means unseen - seen with a bootstrap CI). A model's seed
    replicates are one test on each scan's mean over seeds; ``stable_seeds`` counts the seeds
    whose own difference of means has the same sign. Models whose test set has no unseen (or
    no seen) center are skipped."""
    multi = results.groupby("test_dataset")["center"].transform("nunique") > 1
    sel = results[multi & (results["train_centers"] != "")]
    sel = sel.assign(replicate=replicate_id(sel["model_id"]), seed=_seeds(sel))
    rows = []
    for (model, test), g in sel.groupby(["replicate", "test_dataset"], sort=True):
        g = g.assign(seen=g["center"].isin(set(split_names(g["train_centers"].iloc[0]))))
        if not g["seen"].any() or g["seen"].all():
            continue
        scans = g.groupby([*SCAN_COLUMNS, "seen"], sort=False)[metric].mean().reset_index()
        row = compute_unpaired_test(
            scans.loc[~scans["seen"], metric].dropna().to_numpy(),
            scans.loc[scans["seen"], metric].dropna().to_numpy(),
            table="centers",
            unit="scan",
            comparison=f"{model} on {test}: {metric} unseen - seen centers",
            labels=("unseen-center", "seen-center"),
        )
        by_seed = g.groupby(["seed", "seen"])[metric].mean().unstack("seen")
        per_seed = by_seed.get(False, np.nan) - by_seed.get(True, np.nan)
        rows.append(row | count_same_sign(per_seed, row["mean_diff"]))
    return make_tests_frame(rows)


# --------------------------------------------------------------------------- external methods


def _external_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of external methods and of msnb's default models on their test sets, with
    ``method`` (an external method's name, a model's replicate id) and ``source``."""
    external = has_experiment_prefix(results, EXTERNAL_TAG)
    tests = set(results.loc[external, "test_dataset"])
    msnb_rows = is_default(results) & ~external & results["test_dataset"].isin(tests)
    sel = results[external | msnb_rows]
    return sel.assign(
        method=replicate_id(sel["model_id"]),
        source=np.where(external[external | msnb_rows], "external", "msnb"),
    )


def compute_external_table(
    results: pd.DataFrame, *, metrics: Sequence[str] = ("dice", "iou", "lesion_f1")
) -> pd.DataFrame:
    """Methods outside msnb beside msnb's models, on the test sets the methods were scored on.

    The rows of external methods (``experiment`` ``external:<method>``, from a study's
    ``external`` entry or ``msnb evaluate``) and of msnb's models trained with the paper's
    defaults (:func:`msnb.stats.results.is_default`), each a row per test set.

    Returns
    -------
    DataFrame
        ``source`` (``external`` or ``msnb``), ``method`` (the method's name; a model's id,
        its replicates as one), ``train_datasets``, ``test_dataset``, then the
        :func:`compute_pair_means` columns; empty without external rows.
    """
    by = ["source", "method", "train_datasets", "test_dataset"]
    return compute_pair_means(_external_rows(results), by=by, metrics=metrics)


def compute_external_tests(results: pd.DataFrame, *, metric: str = "dice") -> pd.DataFrame:
    """Each external method against each msnb default model trained on the same datasets:
    paired Wilcoxon of ``metric`` (method - model) over their shared test scans (unit
    ``scan``; a model's seeds averaged per scan, ``stable_seeds`` counting the seeds that
    agree) and over their shared test sets (unit ``pair``). A method that names no training
    datasets is compared with none."""
    sel = _external_rows(results)
    rows = []
    for method, ext in sel[sel["source"] == "external"].groupby("method", sort=True):
        train = ext["train_datasets"].iloc[0]
        models = sel[(sel["source"] == "msnb") & (sel["train_datasets"] == train)]
        for model in sorted(set(models["method"])) if train else []:
            pair = sel[sel["method"].isin([method, model])]
            comparison = f"{metric}: {method} - {model}"
            for unit, keys in (("scan", list(SCAN_COLUMNS)), ("pair", ["test_dataset"])):
                values = _seed_values(pair, [*keys, "method"], metric)
                rows.append(
                    _paired_seed_test(
                        values,
                        "method",
                        (model, method),
                        table="external",
                        unit=unit,
                        comparison=comparison,
                    )
                )
    return make_tests_frame(rows)


# --------------------------------------------------------------------------- per seed


def compute_seed_tables(results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each seed's own cell tables, for a study with seed replicates.

    Parameters
    ----------
    results : DataFrame
        The results table (validated).

    Returns
    -------
    dict of str to DataFrame
        Empty with fewer than two seeds; otherwise ``<name>_by_seed`` for ``train_test``,
        ``combinations``, ``labels``, ``ablation_<factor>`` (:data:`ABLATIONS`) and
        ``centers``: the table computed on one seed's rows alone (seed k of every model), a
        ``seed`` column first, the seeds stacked.
    """
    seeds = sorted(_seeds(results).unique())
    if len(seeds) < 2:
        return {}
    builders = {
        "train_test": compute_train_test_table,
        "combinations": compute_combination_table,
        "labels": compute_label_table,
        **{f"ablation_{f}": functools.partial(compute_ablation_table, factor=f) for f in ABLATIONS},
        "centers": compute_center_table,
    }
    out = {}
    for name, build in builders.items():
        frames = [build(results[_seeds(results) == k]).assign(seed=k) for k in seeds]
        frame = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
        out[f"{name}_by_seed"] = frame[["seed", *frame.columns.drop("seed")]]
    return out


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
        every test row, including the ``not enough data`` ones. With several seeds, the
        ``<name>_by_seed`` tables of :func:`compute_seed_tables` too (each seed's own cells,
        from which the findings count the seeds that agree). The ``paper_<table>`` frames
        always hold every published cell (``status`` ``"not run"`` where the study has none)
        and ``findings`` every claim (verdict ``"not run"`` where the study cannot say).
    """
    df = validate_results(results)
    tables: dict[str, pd.DataFrame] = {}
    tests = []
    by_seed = compute_seed_tables(df)
    tables["train_test"] = compute_train_test_table(df)
    tables["train_means"] = compute_train_means(
        tables["train_test"], by_seed=by_seed.get("train_test_by_seed")
    )
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
    tables["external"] = compute_external_table(df)
    tests.append(compute_external_tests(df))
    tables["tests"] = pd.concat([t for t in tests if len(t)], ignore_index=True)
    tables.update(by_seed)
    paper = load_paper_numbers()
    for name, frame in compute_paper_comparison(tables, paper=paper).items():
        tables[f"paper_{name}"] = frame
    tables["findings"] = compute_findings(tables, paper=paper)
    return tables


def select_tests(tables: dict[str, pd.DataFrame], table: str) -> pd.DataFrame:
    """The test rows of one table (e.g. ``"labels"``), as shown in the notebook."""
    tests = tables["tests"]
    return tests[tests["table"] == table].reset_index(drop=True)
