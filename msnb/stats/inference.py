"""Statistical test primitives: each test gives one tidy row of :data:`TEST_COLUMNS`.

A test that cannot run (too few pairs or groups, no variance) gives a row whose ``status``
starts with :data:`NOT_ENOUGH` (``"not enough data: "``) instead of a number. The tests are
pingouin's (Wilcoxon, Mann-Whitney, ANOVA, repeated-measures ANOVA, Tukey HSD); pingouin and
scipy.stats are imported inside the functions that run a test, so that importing
:mod:`msnb.stats` stays quick (together they take about two seconds to import).

The Wilcoxon variant is fixed here, not left to the installed scipy (whose ``method="auto"``
changed in scipy 1.15): two-sided, zero differences dropped, the exact null distribution when
there are at most :data:`EXACT_MAX_PAIRS` pairs and no zero or tied difference, otherwise the
normal approximation with tie and continuity corrections (:func:`wilcoxon_method`, the rule
of R's ``wilcox.test``). From the paper's Table 7 (19 pairs, with ties) it gives the paper's
p = 0.00029 (``tests/test_paper_numbers.py``).

Seed replicates. A study may train each configuration with several seeds; the tables then
test cells on their seed means (each cell's mean over its seeds) and say, in ``n_seeds`` and
``stable_seeds`` (:func:`compute_seed_stability`), in how many seeds the effect computed from
that seed's models alone has the sign of the seed-mean effect.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "EXACT_MAX_PAIRS",
    "MIN_PAIRS",
    "NOT_ENOUGH",
    "TEST_COLUMNS",
    "compute_mean_ci",
    "compute_oneway_anova",
    "compute_paired_test",
    "compute_rm_anova",
    "compute_seed_stability",
    "compute_unpaired_test",
    "count_same_sign",
    "make_test_row",
    "make_tests_frame",
    "not_enough_row",
    "wilcoxon_method",
]

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
    "n_seeds",
    "stable_seeds",
)
#: Fewest pairs for a paired test (Wilcoxon, t interval).
MIN_PAIRS = 3
#: Most pairs for the exact Wilcoxon null distribution (scipy's limit; R's is 49).
EXACT_MAX_PAIRS = 50
NOT_ENOUGH = "not enough data: "


def make_test_row(table: str, test: str, unit: str, comparison: str, **values) -> dict:
    """One :data:`TEST_COLUMNS` row (status ``"ok"``, NaN where ``values`` say nothing)."""
    row = dict.fromkeys(TEST_COLUMNS, np.nan)
    row.update(table=table, test=test, unit=unit, comparison=comparison, status="ok")
    row.update(values)
    return row


def not_enough_row(table: str, test: str, unit: str, comparison: str, why: str, **values) -> dict:
    """A row of a test that could not run: ``status`` is :data:`NOT_ENOUGH` + ``why``."""
    return make_test_row(table, test, unit, comparison, status=NOT_ENOUGH + why, **values)


def make_tests_frame(rows: list[dict]) -> pd.DataFrame:
    """Test rows as a DataFrame with the :data:`TEST_COLUMNS` (empty: the columns only)."""
    return pd.DataFrame(rows, columns=list(TEST_COLUMNS))


def wilcoxon_method(diff: Sequence[float] | np.ndarray) -> str:
    """scipy's ``method`` for the Wilcoxon signed-rank test of the paired differences ``diff``.

    ``"exact"`` when there are at most :data:`EXACT_MAX_PAIRS` differences, none zero and no
    two with the same absolute value; otherwise the normal approximation (``"asymptotic"``,
    called ``"approx"`` before scipy 1.15), used with pingouin's tie and continuity
    corrections. The exact distribution is wrong with ties or zeros; the approximation is
    what the paper's Table 7 p-value (0.00029) was computed with.
    """
    import scipy

    d = np.asarray(diff, dtype=float)
    nonzero = d[d != 0]
    ties = np.unique(np.abs(nonzero)).size < nonzero.size
    if d.size <= EXACT_MAX_PAIRS and nonzero.size == d.size and not ties:
        return "exact"
    major, minor = (int(v) for v in scipy.__version__.split(".")[:2])
    return "asymptotic" if (major, minor) >= (1, 15) else "approx"


def _rank_test_row(
    res: pd.DataFrame, table: str, test: str, unit: str, comparison: str, **values
) -> dict:
    """Row of pingouin's Wilcoxon (``W_val``) or Mann-Whitney (``U_val``) result: the
    statistic, its p-value and the rank-biserial correlation."""
    statistic = "W_val" if "W_val" in res.columns else "U_val"
    return make_test_row(
        table,
        test,
        unit,
        comparison,
        statistic=float(res[statistic].iloc[0]),
        p_value=float(res["p_val"].iloc[0]),
        effect=float(res["RBC"].iloc[0]),
        **values,
    )


def _anova_values(aov: pd.DataFrame) -> dict:
    """``statistic`` (F), ``dof`` (``"df1,df2"``) and ``p_value`` of a pingouin ANOVA table
    (the effect's row first, the error's second)."""
    return {
        "statistic": float(aov["F"].iloc[0]),
        "dof": f"{int(aov['DF'].iloc[0])},{int(aov['DF'].iloc[1])}",
        "p_value": float(aov["p_unc"].iloc[0]),
    }


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


def compute_seed_stability(
    a: pd.Series, b: pd.Series, effect: float, *, level: str = "seed"
) -> dict:
    """In how many seeds a paired effect ``b - a`` has the sign of the seed-mean ``effect``.

    Parameters
    ----------
    a, b : Series
        Per-seed values of the two sides, indexed alike by the pair's keys and the seed (index
        level ``level``): a value of seed k of ``a`` is paired with seed k of ``b``. Pairs with a
        NaN (or missing) on either side are dropped.
    effect : float
        The seed-mean effect (e.g. a test row's ``mean_diff``).
    level : str, default "seed"

    Returns
    -------
    dict
        ``n_seeds``: seeds with at least one complete pair; ``stable_seeds``: those whose mean
        of ``b - a`` over their pairs has the sign of ``effect`` (NaN when ``effect`` is NaN).
    """
    both = pd.concat({"a": a, "b": b}, axis=1).dropna()
    if both.empty:
        return {"n_seeds": 0, "stable_seeds": math.nan}
    per_seed = (both["b"] - both["a"]).groupby(level=level).mean()
    return count_same_sign(per_seed.to_numpy(), effect)


def count_same_sign(values: Sequence[float] | np.ndarray, effect: float) -> dict:
    """``n_seeds`` (finite ``values``, one per seed) and ``stable_seeds`` (those with the sign
    of ``effect``, zero counting as its own sign; NaN when ``effect`` is NaN)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if effect is None or not np.isfinite(effect):
        return {"n_seeds": int(v.size), "stable_seeds": math.nan}
    return {"n_seeds": int(v.size), "stable_seeds": int((np.sign(v) == np.sign(effect)).sum())}


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

    Two-sided, zero differences dropped, exact or normal approximation as
    :func:`wilcoxon_method` says (see the module docstring).

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
        return not_enough_row(
            table, "wilcoxon", unit, comparison, f"{n} complete pairs (< {min_pairs})", **base
        )
    diff = b - a
    mean, low, high = compute_mean_ci(diff, method="bootstrap", n_boot=n_boot, seed=seed)
    base.update(mean_diff=mean, ci_low=low, ci_high=high, ci_method="bootstrap")
    if np.all(diff == 0):
        return not_enough_row(
            table, "wilcoxon", unit, comparison, "all differences are zero", **base
        )
    res = pg.wilcoxon(
        b,
        a,
        alternative="two-sided",
        zero_method="wilcox",
        correction=True,
        method=wilcoxon_method(diff),
    )
    return _rank_test_row(res, table, "wilcoxon", unit, comparison, **base)


def compute_unpaired_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    table: str = "",
    unit: str = "scan",
    comparison: str = "a - b",
    labels: tuple[str, str] = ("a", "b"),
    min_size: int = 2,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Mann-Whitney U test of ``a`` against ``b`` (independent samples) with effect and CI.

    Parameters
    ----------
    a, b : array-like, shape (n_a,) and (n_b,)
        The two samples; NaN values are dropped.
    table, unit, comparison : str
        Written into the row.
    labels : (str, str), default ("a", "b")
        Names of the samples in the ``not enough data`` reason.
    min_size : int, default 2
        Fewer values in either sample give a ``not enough data`` row.
    n_boot, seed : int
        Bootstrap resamples (each sample resampled on its own) and seed for the 95 % CI of
        the difference of means.

    Returns
    -------
    dict
        One :data:`TEST_COLUMNS` row: ``statistic`` is U, ``effect`` the rank-biserial
        correlation (positive when ``a > b``), ``mean_diff`` ``mean(a) - mean(b)`` with its
        percentile-bootstrap CI.
    """
    import pingouin as pg

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    base = {
        "n": int(a.size + b.size),
        "n_groups": 2,
        "statistic_name": "U",
        "effect_name": "rank_biserial",
    }
    if a.size < min_size or b.size < min_size:
        why = f"{a.size} {labels[0]} and {b.size} {labels[1]} {unit}s (< {min_size} each)"
        return not_enough_row(table, "mann_whitney", unit, comparison, why, **base)
    rng = np.random.default_rng(seed)
    boots = [rng.choice(a, a.size).mean() - rng.choice(b, b.size).mean() for _ in range(n_boot)]
    return _rank_test_row(
        pg.mwu(a, b),
        table,
        "mann_whitney",
        unit,
        comparison,
        mean_diff=float(a.mean() - b.mean()),
        ci_low=float(np.quantile(boots, 0.025)),
        ci_high=float(np.quantile(boots, 0.975)),
        ci_method="bootstrap",
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
        return not_enough_row(
            table, "anova", unit, comparison, f"{k} group(s) (< 2)", **base
        ), empty
    if n - k < 1:
        why = f"{n} observations in {k} groups (no within-group degrees of freedom)"
        return not_enough_row(table, "anova", unit, comparison, why, **base), empty
    if float(d.groupby(between)[dv].var(ddof=0).sum()) == 0.0:
        why = "no within-group variance"
        return not_enough_row(table, "anova", unit, comparison, why, **base), empty
    aov = pg.anova(data=d, dv=dv, between=between, detailed=True)
    ss_between, ss_within = float(aov["SS"].iloc[0]), float(aov["SS"].iloc[1])
    row = make_test_row(
        table,
        "anova",
        unit,
        comparison,
        **_anova_values(aov),
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
        return not_enough_row(table, "rm_anova", unit, comparison, f"{k} level(s) (< 2)", **base)
    if n < 2:
        why = f"{n} {subject} value(s) shared by all levels (< 2)"
        return not_enough_row(table, "rm_anova", unit, comparison, why, **base)
    long = wide.reset_index().melt(id_vars=subject, var_name=within, value_name=dv)
    w = wide.to_numpy()
    resid = w - w.mean(axis=1, keepdims=True) - w.mean(axis=0, keepdims=True) + w.mean()
    if np.allclose(resid, 0.0):
        return not_enough_row(table, "rm_anova", unit, comparison, "no residual variance", **base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        aov = pg.rm_anova(data=long, dv=dv, within=within, subject=subject, detailed=True)
    f = float(aov["F"].iloc[0])
    if not np.isfinite(f):
        return not_enough_row(table, "rm_anova", unit, comparison, "no residual variance", **base)
    return make_test_row(
        table,
        "rm_anova",
        unit,
        comparison,
        **_anova_values(aov),
        effect=float(aov["ng2"].iloc[0]),
        **base,
    )
