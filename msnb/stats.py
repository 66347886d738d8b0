"""Statistics and paper tables from a study's results table.

Input is the tidy results table (one row per model x test scan, see :data:`REQUIRED_COLUMNS`),
read from ``results.csv`` with :func:`load_results`. From it alone :func:`compute_all_tables`
rebuilds the paper's tables for whatever the study ran:

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
centers            per-center scores on multi-center test sets, centers unseen in training flagged
tests              every statistical test, one tidy row each (:data:`TEST_COLUMNS`)
================== ==============================================================================

Units. Each test is run twice where the data allow, and the ``unit`` column says which:
``pair`` (one value per train/test pair: the mean over that pair's test scans, as the paper
does) and ``scan`` (one value per test scan, paired on the same scans where the test is paired).
A test that cannot run (too few pairs or groups, no variance) gives a row whose ``status``
starts with ``"not enough data: "`` instead of a number.

Missing metric values (NaN: empty truth or empty prediction) are left out of means and tests;
every cell reports ``n_scans`` (values used) and ``n_missing`` (NaN values left out).
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from msnb.metrics import ID_COLUMNS, METRIC_COLUMNS, RESULT_COLUMNS

# Single datasets without a consensus train on one rater when asked for the default label
# (as the paper does for ISBI 2015); the study records that rater as the label, and it
# counts as the default here.
from msnb.study import CONSENSUS_FALLBACK

REQUIRED_COLUMNS = tuple(RESULT_COLUMNS)
OPTIONAL_COLUMNS = ("experiment", "train_centers")
STRING_COLUMNS = (*ID_COLUMNS, *OPTIONAL_COLUMNS)
METRICS = METRIC_COLUMNS
#: The paper's default training settings.
DEFAULTS = {
    "label": "consensus",
    "normalization": "quantile",
    "architecture": "unetplusplus",
    "encoder": "resnet18",
}
#: Columns that identify a training configuration.
CONFIG_COLUMNS = ("train_datasets", "label", "normalization", "architecture", "encoder")
#: Columns that identify a test scan.
SCAN_COLUMNS = ("test_dataset", "subject", "timepoint")
#: Columns of every test row.
TEST_COLUMNS = (
    "table",
    "test",
    "unit",
    "comparison",
    "n",
    "n_groups",
    "statistic_name",
    "statistic",
    "dof",
    "p_value",
    "effect_name",
    "effect",
    "mean_diff",
    "ci_low",
    "ci_high",
    "ci_method",
    "status",
)
#: Fewest pairs for a paired test (Wilcoxon, t interval).
MIN_PAIRS = 3
NOT_ENOUGH = "not enough data: "
SEP = "+"


# --------------------------------------------------------------------------- loading


def validate_results(results: pd.DataFrame) -> pd.DataFrame:
    """Check a results table and return a cleaned copy.

    Parameters
    ----------
    results : DataFrame, shape (n_rows, >= 17)
        One row per model x test scan with the :data:`REQUIRED_COLUMNS`.

    Returns
    -------
    DataFrame
        Identifier columns as strings (``"01"`` stays ``"01"``), metric columns as floats,
        ``experiment`` and ``train_centers`` added (empty) when absent.

    Raises
    ------
    ValueError
        Missing columns, or the same model scored twice on the same scan.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results table lacks columns: {', '.join(missing)}")
    df = results.copy()
    for col in OPTIONAL_COLUMNS:
        if col not in df.columns:
            df[col] = ""
    for col in STRING_COLUMNS:
        df[col] = df[col].astype("string").fillna("").astype(str)
    for col in METRICS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    dup = df.duplicated(["model_id", *SCAN_COLUMNS])
    if dup.any():
        first = df.loc[dup, ["model_id", *SCAN_COLUMNS]].iloc[0].tolist()
        raise ValueError(
            f"results table has {int(dup.sum())} duplicate model x scan rows, e.g. {first}"
        )
    return df.reset_index(drop=True)


def load_results(path: str | Path, *, missing_ok: bool = False) -> pd.DataFrame:
    """Read and validate a ``results.csv`` (identifier columns kept as strings).

    Parameters
    ----------
    path : path-like
    missing_ok : bool, default False
        When the file does not exist, warn and return an empty table with the right columns
        (every table is then empty and every test says ``not enough data``) instead of raising.
    """
    path = Path(path)
    if not path.is_file():
        if not missing_ok:
            raise FileNotFoundError(f"{path}: results table not found")
        warnings.warn(f"{path}: results table not found; all tables will be empty", stacklevel=2)
        return validate_results(pd.DataFrame(columns=[*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS]))
    dtypes = dict.fromkeys(STRING_COLUMNS, str)
    df = pd.read_csv(
        path, dtype=dtypes, keep_default_na=False, na_values={m: [""] for m in METRICS}
    )
    return validate_results(df)


def resolve_output_path(path: str | Path) -> Path:
    """Resolve a notebook's path parameter.

    Absolute paths are kept; a relative path starting with ``outputs/`` is placed under
    :func:`msnb.paths.outputs_root` (so ``MSNB_OUTPUTS`` applies); any other relative path is
    taken from the repository root (notebooks run with their own folder as working directory).
    """
    from msnb.paths import REPO_ROOT, outputs_root

    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    if p.parts and p.parts[0] == "outputs":
        return outputs_root().joinpath(*p.parts[1:])
    return REPO_ROOT / p


def _split(value: str) -> list[str]:
    return [v for v in str(value).split(SEP) if v]


def is_default(results: pd.DataFrame, *, ignore: Sequence[str] = ()) -> pd.Series:
    """Boolean mask of rows trained with the paper's :data:`DEFAULTS` (except ``ignore``).

    The label of a single dataset in :data:`CONSENSUS_FALLBACK` (ISBI 2015's ``rater1``)
    counts as the default label.
    """
    mask = pd.Series(True, index=results.index)
    for col, value in DEFAULTS.items():
        if col in ignore:
            continue
        ok = results[col] == value
        if col == "label":
            fallback = results["train_datasets"].map(CONSENSUS_FALLBACK).fillna("")
            ok |= results[col] == fallback
        mask &= ok
    return mask


# --------------------------------------------------------------------------- test helpers


def _row(table: str, test: str, unit: str, comparison: str, **values) -> dict:
    row = dict.fromkeys(TEST_COLUMNS, np.nan)
    row.update(table=table, test=test, unit=unit, comparison=comparison, status="ok")
    row.update(values)
    return row


def _not_enough(table: str, test: str, unit: str, comparison: str, why: str, **values) -> dict:
    return _row(table, test, unit, comparison, status=NOT_ENOUGH + why, **values)


def _tests_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(TEST_COLUMNS))


def compute_mean_ci(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    method: str = "t",
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean and confidence interval of a sample (NaN dropped).

    Parameters
    ----------
    values : array-like, shape (n,)
    confidence : float, default 0.95
    method : {"t", "bootstrap"}, default "t"
        Student t interval, or percentile bootstrap with ``n_boot`` resamples.
    seed : int, default 0
        Bootstrap seed (same seed, same interval).

    Returns
    -------
    (mean, low, high) : tuple of float
        ``low``/``high`` are NaN with fewer than two values.
    """
    from scipy import stats as sps

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if x.size < 2:
        return (mean, math.nan, math.nan)
    if method == "t":
        sem = float(x.std(ddof=1) / math.sqrt(x.size))
        if sem == 0:
            return (mean, mean, mean)
        low, high = sps.t.interval(confidence, x.size - 1, loc=mean, scale=sem)
        return (mean, float(low), float(high))
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        boots = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
        alpha = (1 - confidence) / 2
        return (mean, float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha)))
    raise ValueError(f"unknown CI method {method!r}; use 't' or 'bootstrap'")


def compute_paired_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    table: str = "",
    unit: str = "pair",
    comparison: str = "b - a",
    min_pairs: int = MIN_PAIRS,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Paired Wilcoxon signed-rank test of ``b`` against ``a`` with effect size and CIs.

    Parameters
    ----------
    a, b : array-like, shape (n,)
        Paired values (e.g. Dice of the default and of the alternative setting on the same
        train/test pairs). Pairs with a NaN on either side are dropped.
    table, unit, comparison : str
        Written into the row (``unit`` is ``"pair"`` or ``"scan"``).
    min_pairs : int, default :data:`MIN_PAIRS`
        Fewer complete pairs give a ``not enough data`` row.
    n_boot, seed : int
        Bootstrap resamples and seed for the CI of the mean difference.

    Returns
    -------
    dict
        One :data:`TEST_COLUMNS` row: ``statistic`` is Wilcoxon's W, ``effect`` the matched-pairs
        rank-biserial correlation (positive when ``b > a``), ``mean_diff`` the mean of
        ``b - a`` with its percentile-bootstrap CI (``ci_method="bootstrap"``).
    """
    import pingouin as pg

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = int(a.size)
    base = {"n": n, "n_groups": 2, "statistic_name": "W", "effect_name": "rank_biserial"}
    if n < min_pairs:
        return _not_enough(
            table, "wilcoxon", unit, comparison, f"{n} complete pairs (< {min_pairs})", **base
        )
    diff = b - a
    mean, low, high = compute_mean_ci(diff, method="bootstrap", n_boot=n_boot, seed=seed)
    base.update(mean_diff=mean, ci_low=low, ci_high=high, ci_method="bootstrap")
    if np.all(diff == 0):
        return _not_enough(table, "wilcoxon", unit, comparison, "all differences are zero", **base)
    res = pg.wilcoxon(b, a)
    return _row(
        table,
        "wilcoxon",
        unit,
        comparison,
        statistic=float(res["W_val"].iloc[0]),
        p_value=float(res["p_val"].iloc[0]),
        effect=float(res["RBC"].iloc[0]),
        **base,
    )


def compute_oneway_anova(
    data: pd.DataFrame,
    *,
    dv: str = "dice",
    between: str = "train_datasets",
    table: str = "train_test",
    unit: str = "pair",
) -> tuple[dict, pd.DataFrame]:
    """One-way ANOVA of ``dv`` by ``between`` with Tukey HSD post hoc.

    Parameters
    ----------
    data : DataFrame, shape (n_obs, ...)
        One row per observation (a train/test pair mean or a scan); NaN ``dv`` dropped.
    dv, between : str, defaults "dice", "train_datasets"
    table, unit : str
        Written into the rows.

    Returns
    -------
    anova : dict
        One :data:`TEST_COLUMNS` row: ``statistic`` F, ``dof`` ``"df1,df2"``, ``effect``
        eta-squared (SS_between / SS_total).
    tukey : DataFrame, shape (k * (k - 1) / 2, 14)
        pingouin's ``pairwise_tukey`` columns (``A, B, mean_A, mean_B, diff, se, T, p_tukey,
        hedges``) plus ``ci_low``/``ci_high`` (95 % simultaneous Tukey-Kramer interval of
        ``diff``), ``n_A``, ``n_B``, ``unit``. Empty when the ANOVA cannot run.
    """
    import pingouin as pg
    from scipy import stats as sps

    d = data[[between, dv]].dropna()
    sizes = d.groupby(between)[dv].size()
    k, n = int(sizes.size), int(sizes.sum())
    comparison = f"{dv} by {between}"
    base = {"n": n, "n_groups": k, "statistic_name": "F", "effect_name": "eta_squared"}
    empty = pd.DataFrame(
        columns=["A", "B", "mean_A", "mean_B", "diff", "se", "T", "p_tukey", "hedges"]
        + ["ci_low", "ci_high", "n_A", "n_B", "unit"]
    )
    if k < 2:
        return _not_enough(table, "anova", unit, comparison, f"{k} group(s) (< 2)", **base), empty
    if n - k < 1:
        why = f"{n} observations in {k} groups (no within-group degrees of freedom)"
        return _not_enough(table, "anova", unit, comparison, why, **base), empty
    if float(d.groupby(between)[dv].var(ddof=0).sum()) == 0.0:
        why = "no within-group variance"
        return _not_enough(table, "anova", unit, comparison, why, **base), empty
    aov = pg.anova(data=d, dv=dv, between=between, detailed=True)
    ss_between, ss_within = float(aov["SS"].iloc[0]), float(aov["SS"].iloc[1])
    row = _row(
        table,
        "anova",
        unit,
        comparison,
        statistic=float(aov["F"].iloc[0]),
        dof=f"{int(aov['DF'].iloc[0])},{int(aov['DF'].iloc[1])}",
        p_value=float(aov["p_unc"].iloc[0]),
        effect=ss_between / (ss_between + ss_within),
        **base,
    )
    tukey = pg.pairwise_tukey(data=d, dv=dv, between=between)
    q = sps.studentized_range.ppf(0.95, k, n - k)
    half = q / math.sqrt(2) * tukey["se"]
    tukey["ci_low"] = tukey["diff"] - half
    tukey["ci_high"] = tukey["diff"] + half
    tukey["n_A"] = tukey["A"].map(sizes).astype(int)
    tukey["n_B"] = tukey["B"].map(sizes).astype(int)
    tukey["unit"] = unit
    return row, tukey


def compute_rm_anova(
    data: pd.DataFrame,
    *,
    dv: str = "dice",
    within: str = "label",
    subject: str = "test_dataset",
    table: str = "labels",
    unit: str = "pair",
) -> dict:
    """Repeated-measures ANOVA of ``dv`` over the levels of ``within``.

    Only subjects (test sets, or scans) that have a value at every level are used.

    Parameters
    ----------
    data : DataFrame
        Long format: one row per subject x level.
    dv, within, subject : str

    Returns
    -------
    dict
        One :data:`TEST_COLUMNS` row: ``statistic`` F, ``dof`` ``"df1,df2"``, ``effect``
        generalized eta-squared (pingouin's ``ng2``).
    """
    import pingouin as pg

    d = data[[subject, within, dv]].dropna()
    wide = d.pivot_table(index=subject, columns=within, values=dv, aggfunc="mean").dropna()
    k, n = int(wide.shape[1]), int(wide.shape[0])
    comparison = f"{dv} over {within} ({', '.join(map(str, wide.columns))})"
    base = {"n": n, "n_groups": k, "statistic_name": "F", "effect_name": "generalized_eta_squared"}
    if k < 2:
        return _not_enough(table, "rm_anova", unit, comparison, f"{k} level(s) (< 2)", **base)
    if n < 2:
        why = f"{n} {subject} value(s) shared by all levels (< 2)"
        return _not_enough(table, "rm_anova", unit, comparison, why, **base)
    long = wide.reset_index().melt(id_vars=subject, var_name=within, value_name=dv)
    w = wide.to_numpy()
    resid = w - w.mean(axis=1, keepdims=True) - w.mean(axis=0, keepdims=True) + w.mean()
    if np.allclose(resid, 0.0):
        return _not_enough(table, "rm_anova", unit, comparison, "no residual variance", **base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        aov = pg.rm_anova(data=long, dv=dv, within=within, subject=subject, detailed=True)
    f = float(aov["F"].iloc[0])
    if not np.isfinite(f):
        return _not_enough(table, "rm_anova", unit, comparison, "no residual variance", **base)
    return _row(
        table,
        "rm_anova",
        unit,
        comparison,
        statistic=f,
        dof=f"{int(aov['DF'].iloc[0])},{int(aov['DF'].iloc[1])}",
        p_value=float(aov["p_unc"].iloc[0]),
        effect=float(aov["ng2"].iloc[0]),
        **base,
    )


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


def select_single_default(results: pd.DataFrame) -> pd.DataFrame:
    """Rows of single-dataset models trained with the paper's default settings."""
    single = ~results["train_datasets"].str.contains(SEP, regex=False)
    return results[single & is_default(results)]


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
    return _tests_frame(rows), tukey


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
        for name in [combo, *_split(combo)]:
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
    return _tests_frame(rows)


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
            _not_enough("labels", "rm_anova", "pair", metric, "no training set with >= 2 labels")
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
    return _tests_frame(rows)


# --------------------------------------------------------------------------- Tables 6 and 7


ABLATIONS = {
    "normalization": ("quantile", "linear"),
    "architecture": ("unetplusplus", "unet"),
}


def compute_ablation_table(
    results: pd.DataFrame,
    *,
    factor: str = "normalization",
    levels: tuple[str, str] | None = None,
    metrics: Sequence[str] = ("dice", "iou"),
) -> pd.DataFrame:
    """Tables 6/7: the two levels of ``factor`` on matching train/test pairs.

    Models are matched on every other configuration column (:data:`CONFIG_COLUMNS`) and the
    test set; only pairs where both levels were run are kept.

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
        results[results[factor].isin([ref, alt])], by=[*keys, factor], metrics=metrics
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
) -> pd.DataFrame:
    """Paired Wilcoxon of ``metric``, alternative vs reference level of ``factor``, over
    matching train/test pairs (unit ``pair``) and over the same test scans (unit ``scan``)."""
    ref, alt = levels or ABLATIONS[factor]
    table = compute_ablation_table(results, factor=factor, levels=(ref, alt), metrics=[metric])
    keys = [c for c in CONFIG_COLUMNS if c != factor]
    sub = results[results[factor].isin([ref, alt])]
    scans = _scan_means(sub, [*keys, factor], metric)
    wide = scans.pivot_table(index=[*keys, *SCAN_COLUMNS], columns=factor, values=metric)
    both = ref in wide.columns and alt in wide.columns
    sa = wide[ref].to_numpy() if both else np.array([])
    sb = wide[alt].to_numpy() if both else np.array([])
    comparison = f"{metric}: {alt} - {ref}"
    name = f"ablation_{factor}"
    rows = [
        compute_paired_test(
            table[f"{metric}_{ref}"].to_numpy(),
            table[f"{metric}_{alt}"].to_numpy(),
            table=name,
            unit="pair",
            comparison=comparison,
        ),
        compute_paired_test(sa, sb, table=name, unit="scan", comparison=comparison),
    ]
    return _tests_frame(rows)


# --------------------------------------------------------------------------- centers


def compute_center_table(
    results: pd.DataFrame, *, metrics: Sequence[str] = ("dice", "iou", "lesion_f1")
) -> pd.DataFrame:
    """Per-center scores of every model on every multi-center test set.

    Returns
    -------
    DataFrame
        ``model_id``, configuration columns, ``test_dataset, center, seen_in_training`` (the
        center is in the model's ``train_centers``; NA when ``train_centers`` is empty), then
        :func:`compute_pair_means` columns.
    """
    multi = results.groupby("test_dataset")["center"].transform("nunique") > 1
    sel = results[multi]
    by = ["model_id", *CONFIG_COLUMNS, "train_centers", "test_dataset", "center"]
    pm = compute_pair_means(sel, by=by, metrics=metrics)
    seen = [
        pd.NA if not tc else (c in _split(tc))
        for tc, c in zip(pm["train_centers"], pm["center"], strict=True)
    ]
    pm.insert(by.index("center") + 1, "seen_in_training", pd.array(seen, dtype="boolean"))
    return pm


def compute_center_tests(results: pd.DataFrame, *, metric: str = "dice") -> pd.DataFrame:
    """Per model and multi-center test set, per-scan ``metric`` on unseen vs seen centers:
    Mann-Whitney U, rank-biserial correlation, difference of means (unseen - seen) with a
    bootstrap CI. Models whose test set has no unseen (or no seen) center are skipped."""
    import pingouin as pg

    multi = results.groupby("test_dataset")["center"].transform("nunique") > 1
    rows = []
    for (model, test), g in results[multi & (results["train_centers"] != "")].groupby(
        ["model_id", "test_dataset"], sort=True
    ):
        seen_centers = set(_split(g["train_centers"].iloc[0]))
        is_seen = g["center"].isin(seen_centers)
        seen = g.loc[is_seen, metric].dropna().to_numpy()
        unseen = g.loc[~is_seen, metric].dropna().to_numpy()
        if not is_seen.any() or is_seen.all():
            continue
        comparison = f"{model} on {test}: {metric} unseen - seen centers"
        base = {
            "n": int(seen.size + unseen.size),
            "n_groups": 2,
            "statistic_name": "U",
            "effect_name": "rank_biserial",
        }
        if seen.size < 2 or unseen.size < 2:
            why = f"{unseen.size} unseen-center and {seen.size} seen-center scans (< 2 each)"
            rows.append(_not_enough("centers", "mann_whitney", "scan", comparison, why, **base))
            continue
        rng = np.random.default_rng(0)
        boots = [
            rng.choice(unseen, unseen.size).mean() - rng.choice(seen, seen.size).mean()
            for _ in range(2000)
        ]
        res = pg.mwu(unseen, seen)
        rows.append(
            _row(
                "centers",
                "mann_whitney",
                "scan",
                comparison,
                statistic=float(res["U_val"].iloc[0]),
                p_value=float(res["p_val"].iloc[0]),
                effect=float(res["RBC"].iloc[0]),
                mean_diff=float(unseen.mean() - seen.mean()),
                ci_low=float(np.quantile(boots, 0.025)),
                ci_high=float(np.quantile(boots, 0.975)),
                ci_method="bootstrap",
                **base,
            )
        )
    return _tests_frame(rows)


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
        every test row, including the ``not enough data`` ones.
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
    tables["centers"] = compute_center_table(df)
    tests.append(compute_center_tests(df))
    tables["tests"] = pd.concat([t for t in tests if len(t)], ignore_index=True)
    return tables


def select_tests(tables: dict[str, pd.DataFrame], table: str) -> pd.DataFrame:
    """The test rows of one table (e.g. ``"labels"``), as shown in the notebook."""
    tests = tables["tests"]
    return tests[tests["table"] == table].reset_index(drop=True)


# --------------------------------------------------------------------------- rendering


def _cell(mean: float, n: int, digits: int) -> str:
    return f"- (n={n})" if not np.isfinite(mean) else f"{mean:.{digits}f} (n={n})"


def render_train_test(train_test: pd.DataFrame, *, metric: str = "dice", digits: int = 3):
    """Train (rows) x test (columns) matrix of ``"mean (n=scans)"`` strings."""
    t = train_test[train_test["metric"] == metric]
    if t.empty:
        return pd.DataFrame()
    cells = t.assign(
        cell=[_cell(m, n, digits) for m, n in zip(t["mean"], t["n_scans"], strict=True)]
    )
    return cells.pivot(index="train_datasets", columns="test_dataset", values="cell").fillna("")


def render_tables(tables: dict[str, pd.DataFrame], *, digits: int = 3) -> dict[str, pd.DataFrame]:
    """Display versions of the paper's tables: cells are ``"mean (n=scans)"`` strings.

    Returns
    -------
    dict of str to DataFrame
        ``table2_dice``, ``table3_iou``, ``table4_combinations``, ``table5_labels``,
        ``table6_normalization``, ``table7_architecture``, ``centers`` (those with content).
    """
    out = {
        "table2_dice": render_train_test(tables["train_test"], metric="dice", digits=digits),
        "table3_iou": render_train_test(tables["train_test"], metric="iou", digits=digits),
    }
    c = tables["combinations"]
    if len(c):
        c = c.assign(
            cell=[_cell(m, n, digits) for m, n in zip(c["dice"], c["n_scans"], strict=True)]
        )
        out["table4_combinations"] = c.pivot_table(
            index=["combination", "model"], columns="test_dataset", values="cell", aggfunc="first"
        ).fillna("")
    lab = tables["labels"]
    if len(lab):
        lab = lab.assign(
            cell=[_cell(m, n, digits) for m, n in zip(lab["dice"], lab["dice_n"], strict=True)]
        )
        out["table5_labels"] = lab.pivot_table(
            index=["train_datasets", "label"],
            columns="test_dataset",
            values="cell",
            aggfunc="first",
        ).fillna("")
    for num, factor in (("6", "normalization"), ("7", "architecture")):
        t = tables[f"ablation_{factor}"]
        if len(t):
            ref, alt = ABLATIONS[factor]
            keep = ["train_datasets", "test_dataset"]
            show = t[keep].copy()
            for lvl in (ref, alt):
                show[lvl] = [
                    _cell(m, n, digits)
                    for m, n in zip(t[f"dice_{lvl}"], t[f"dice_{lvl}_n"], strict=True)
                ]
            show["diff"] = t["dice_diff"].round(digits)
            out[f"table{num}_{factor}"] = show.set_index(keep)
    cen = tables["centers"]
    if len(cen):
        cen = cen.assign(
            cell=[_cell(m, n, digits) for m, n in zip(cen["dice"], cen["dice_n"], strict=True)]
            + np.where(cen["seen_in_training"].fillna(True).astype(bool), "", " [unseen]")
        )
        out["centers"] = cen.pivot_table(
            index=["model_id", "test_dataset"], columns="center", values="cell", aggfunc="first"
        ).fillna("")
    return out


# --------------------------------------------------------------------------- writing


def _atomic_write_text(path: Path, text: str) -> Path:
    from msnb.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def summarize_tests(tables: dict[str, pd.DataFrame]) -> dict:
    """JSON-ready summary: counts and every test row (NaN as null)."""
    tests = tables.get("tests", pd.DataFrame(columns=list(TEST_COLUMNS)))
    records = json.loads(tests.to_json(orient="records"))
    tt = tables.get("train_test", pd.DataFrame())
    return {
        "n_tests": len(records),
        "n_tests_ok": int((tests["status"] == "ok").sum()) if len(tests) else 0,
        "n_train_test_cells": int((tt["metric"] == "dice").sum()) if len(tt) else 0,
        "tests": records,
    }


def write_tables(
    tables: dict[str, pd.DataFrame], out_dir: str | Path, *, digits: int = 3
) -> dict[str, Path]:
    """Write every table as CSV, the rendered tables as Markdown, and ``metrics.json``.

    Each file is written to a temporary name and renamed into place (atomic).

    Parameters
    ----------
    tables : dict of str to DataFrame
        Output of :func:`compute_all_tables`.
    out_dir : path-like
        Created if needed.

    Returns
    -------
    dict of str to Path
        ``name -> file`` for every file written (``metrics`` for ``metrics.json``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, table in tables.items():
        written[name] = _atomic_write_text(out_dir / f"{name}.csv", table.to_csv(index=False))
    for name, table in render_tables(tables, digits=digits).items():
        text = table.to_markdown() if len(table) else "(no data)\n"
        written[f"{name}_md"] = _atomic_write_text(out_dir / f"{name}.md", text + "\n")
    summary = summarize_tests(tables)
    written["metrics"] = _atomic_write_text(
        out_dir / "metrics.json", json.dumps(summary, indent=2, allow_nan=False) + "\n"
    )
    return written


# --------------------------------------------------------------------------- plots


def plot_train_test_heatmap(
    table: pd.DataFrame, ax=None, *, metric: str = "dice", vmin: float = 0.0, vmax: float = 1.0
):
    """Heatmap of the train x test table, each cell annotated with mean and scan count.

    Parameters
    ----------
    table : DataFrame
        Output of :func:`compute_train_test_table` (tidy).
    ax : matplotlib Axes, optional
    metric : str, default "dice"
    vmin, vmax : float, defaults 0 and 1

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.5))
    t = table[table["metric"] == metric]
    if t.empty:
        ax.text(0.5, 0.5, "no single-dataset results", ha="center", va="center")
        ax.set_axis_off()
        return ax
    values = t.pivot(index="train_datasets", columns="test_dataset", values="mean")
    counts = t.pivot(index="train_datasets", columns="test_dataset", values="n_scans")
    annot = values.copy().astype(object)
    for i in values.index:
        for j in values.columns:
            v, n = values.loc[i, j], counts.loc[i, j]
            annot.loc[i, j] = "" if pd.isna(n) else f"{v:.2f}\nn={int(n)}"
    sns.heatmap(
        values.astype(float),
        annot=annot.to_numpy(),
        fmt="",
        vmin=vmin,
        vmax=vmax,
        cmap="viridis",
        cbar_kws={"label": f"mean {metric}"},
        ax=ax,
    )
    ax.set_xlabel("test set")
    ax.set_ylabel("training set")
    return ax
