"""The paper's claims, each checked on a study's tables: effect, test, p and a verdict.

:func:`compute_findings` gives one row per claim of Badea & Popa (2024) with this study's
effect beside the paper's, the test and its p-value beside the paper's, and a verdict:
``"reproduced"``, ``"not reproduced"``, ``"not run"`` (the study lacks the models or
evaluations the claim needs) or ``"not testable"`` (the study ran them, but none of its
models learned: its best train/test cell has a mean Dice below :data:`MIN_LEARNED_DICE`, so
ratios and differences of near-zero cells say nothing about the paper's claims). The rule of each claim (:data:`CLAIMS`), with the paper's own
numbers in brackets (from :func:`msnb.paper.load_paper_numbers`); tests are msnb's, on the
paper's unit (a train/test cell's mean Dice, ``unit == "pair"``):

``similar_performance`` (Table 2)
    Effect: worst / best cross-dataset Dice cell of the single-dataset models (0.460 / 0.698
    = 0.659). Reproduced when the study's ratio is at least the paper's: its cells are at
    least as similar as the paper's. Not run with fewer than two training sets.
``larger_heterogeneous_better`` (Tables 2 and 3)
    Effect: mean Dice of the msseg2016_test model minus that of the isbi2015 model over
    their test sets (0.630 - 0.497). Reproduced when the one-way ANOVA by training set has
    p < 0.05 (0.038) and the Tukey HSD difference msseg2016_test - isbi2015 is positive
    with p < 0.05 (0.02714).
``combinations_better`` (Table 4)
    Effect: mean of combination - best component over the (combination, test set) cells.
    Reproduced when the combination beats its best component in every cell the study ran
    (7 of 7); the Wilcoxon test is reported, the paper ran none.
``quantile_better`` (Table 6) and ``unetplusplus_better`` (Table 7)
    Effect: mean of default - ablated Dice over the matching cells of the single and
    combination models. Reproduced when it is positive and the paired Wilcoxon test has
    p < 0.05 (3.624e-5 and 0.00029, 19 pairs).
``union_marginal`` (Table 5)
    Effect: mean Dice of the ISBI 2015 union model minus that of the better single rater,
    over the test sets all three labels were tested on (0.497 - 0.476). Reproduced when it is
    positive and the repeated-measures ANOVA over the labels is not significant, p >= 0.05
    (0.1137).
``centers_consistent`` (section 5.3)
    The model trained on msseg2016_train + 3dmrms + isbi2015, on msseg2016_test. Effect: the
    largest relative deviation of a center's mean Dice from the model's mean over all the test
    scans (0.664 / 0.631 - 1 = 0.052). Reproduced when it is at most
    :data:`CENTER_TOLERANCE` and a center unseen in training has a value; not run without an
    unseen center. The Mann-Whitney test unseen vs seen centers is reported.
``above_miccai_winner`` (section 5.3)
    Effect: that model's Dice on msseg2016_test minus the MICCAI 2016 winner's 0.5914
    (0.631 - 0.5914). Reproduced when positive.

Uncertainty. Every effect comes with a 95 % interval (``effect_ci_low``, ``effect_ci_high``)
and with ``stable_seeds`` of ``n_seeds`` ("stable in k of n seeds"):

- An effect that is a mean over paired cells (``combinations_better``, ``quantile_better``,
  ``unetplusplus_better``, ``union_marginal``: one difference per train/test cell, the cells
  being seed means) gets the Student t interval of that mean over the cells, the paper's
  unit; it needs no seed replicates. ``larger_heterogeneous_better`` gets the Tukey-Kramer
  95 % interval of its difference. The effects of one cell or an extreme of cells
  (``similar_performance``, ``centers_consistent``, ``above_miccai_winner``) get the effect
  +- t(0.975, n - 1) * SD / sqrt(n) of the n per-seed effects: NaN with one seed.
- ``stable_seeds`` counts the seeds in which the finding's effect, computed from that seed's
  models alone (the ``<name>_by_seed`` tables of :func:`msnb.stats.tables.compute_seed_tables`,
  seed k of every model), lies on the same side of the rule's threshold as the seed-mean
  effect: 0 for differences, the paper's ratio for ``similar_performance``,
  :data:`CENTER_TOLERANCE` for ``centers_consistent``. It is the effect's direction that is
  counted, not the verdict: the tests are not rerun per seed. ``n_seeds`` counts the seeds
  with an effect (1 in a study with one seed, where the effect is stable in 1 of 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd

from msnb.paper import load_paper_numbers
from msnb.stats.compare import NOT_RUN, compute_default_cells, dataset_key
from msnb.stats.inference import compute_mean_ci, count_same_sign
from msnb.stats.results import is_default

__all__ = [
    "ALPHA",
    "CENTER_TOLERANCE",
    "CLAIMS",
    "COMBINED",
    "FINDING_COLUMNS",
    "MIN_LEARNED_DICE",
    "NOT_REPRODUCED",
    "NOT_TESTABLE",
    "REPRODUCED",
    "Claim",
    "compute_findings",
]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable"
#: Below this best train/test cell Dice no claim is tested (:data:`NOT_TESTABLE`).
MIN_LEARNED_DICE = 0.1
#: Largest relative deviation of a center's Dice from the whole test set's for
#: ``centers_consistent`` (the paper's largest is 5.2 %).
CENTER_TOLERANCE = 0.10
#: Significance level of the claims that rest on a test.
ALPHA = 0.05
#: The paper's combined model of section 5.3 and its test set.
COMBINED = ("msseg2016_train+3dmrms+isbi2015", "msseg2016_test")
#: Columns of :func:`compute_findings`.
FINDING_COLUMNS = (
    "claim",
    "statement",
    "table",
    "effect_name",
    "effect",
    "paper_effect",
    "test",
    "unit",
    "n",
    "p_value",
    "paper_p_value",
    "verdict",
    "rule",
    "detail",
    "effect_ci_low",
    "effect_ci_high",
    "n_seeds",
    "stable_seeds",
)


class Claim(NamedTuple):
    """A claim of the paper: how :func:`compute_findings` shows and checks it."""

    statement: str
    table: str
    effect_name: str
    test: str
    unit: str
    paper_p_value: str  # the name of the paper's p-value in the data file ("": none)
    rule: str


#: Every claim checked by :func:`compute_findings`, in the paper's order.
CLAIMS = {
    "similar_performance": Claim(
        "Models perform similarly across all train/test dataset pairs",
        "table2",
        "worst / best cell",
        "none",
        "pair",
        "",
        "worst/best cross-dataset cell >= the paper's",
    ),
    "larger_heterogeneous_better": Claim(
        "Larger and heterogeneous training sets give better models",
        "table3",
        "msseg2016_test - isbi2015",
        "anova + tukey",
        "pair",
        "anova_train",
        "ANOVA p < 0.05 and Tukey msseg2016_test > isbi2015 with p < 0.05",
    ),
    "combinations_better": Claim(
        "Combining datasets beats each dataset alone",
        "table4",
        "combination - best component",
        "wilcoxon",
        "pair",
        "",
        "combination above its best component in every cell",
    ),
    "quantile_better": Claim(
        "Quantile normalization beats linear normalization",
        "table6",
        "quantile - linear",
        "wilcoxon",
        "pair",
        "wilcoxon_normalization",
        "quantile - linear > 0 and Wilcoxon p < 0.05",
    ),
    "unetplusplus_better": Claim(
        "UNet++ beats UNet",
        "table7",
        "unetplusplus - unet",
        "wilcoxon",
        "pair",
        "wilcoxon_architecture",
        "UNet++ - UNet > 0 and Wilcoxon p < 0.05",
    ),
    "union_marginal": Claim(
        "The union of the raters is marginally better than one rater (not significant)",
        "table5",
        "union - best rater",
        "rm_anova",
        "pair",
        "rm_anova_labels",
        "union - best rater > 0 and RM-ANOVA p >= 0.05",
    ),
    "centers_consistent": Claim(
        "Per-center Dice is consistent, the unseen center included",
        "centers",
        "largest center deviation from whole set (relative)",
        "mann_whitney",
        "scan",
        "",
        f"every center within {CENTER_TOLERANCE:.0%} of the whole test set, an unseen center run",
    ),
    "above_miccai_winner": Claim(
        "The three-dataset model beats the MICCAI 2016 winner (0.5914)",
        "table4",
        "Dice - 0.5914",
        "none",
        "pair",
        "",
        "Dice on msseg2016_test > 0.5914",
    ),
}


def _row(claim: str, paper: dict, **values) -> dict:
    """One :data:`FINDING_COLUMNS` row of ``claim`` (:data:`CLAIMS`), verdict not run, with
    the paper's p-value (NaN / "" where ``values`` say nothing)."""
    c = CLAIMS[claim]
    row = dict.fromkeys(FINDING_COLUMNS, np.nan)
    row.update(claim=claim, detail="", verdict=NOT_RUN)
    row.update({k: v for k, v in c._asdict().items() if k != "paper_p_value"})
    if c.paper_p_value:
        p_values = paper["p_values"].set_index("name")["value"]
        row["paper_p_value"] = float(p_values[c.paper_p_value])
    row.update(values)
    return row


def _test_row(
    tests: pd.DataFrame, table: str, test: str, prefix: str = "", *, unit: str = "pair"
) -> pd.Series | None:
    """The row of ``test`` on ``table`` with ``unit`` and a comparison starting with
    ``prefix``, or None."""
    sel = tests[(tests["table"] == table) & (tests["test"] == test) & (tests["unit"] == unit)]
    sel = sel[sel["comparison"].str.startswith(prefix)]
    return sel.iloc[0] if len(sel) else None


def _verdict(ok: bool) -> str:
    return REPRODUCED if ok else NOT_REPRODUCED


# --------------------------------------------------------------------------- seeds


def _seed_views(tables: dict) -> list[dict]:
    """Each seed's own tables (from the ``<name>_by_seed`` tables of
    :func:`msnb.stats.tables.compute_seed_tables`), or ``[tables]`` without them (one seed)."""
    names = [k.removesuffix("_by_seed") for k in tables if k.endswith("_by_seed")]
    if not names:
        return [tables]
    seeds = sorted(set().union(*(set(tables[f"{n}_by_seed"]["seed"]) for n in names)))
    views = []
    for k in seeds:
        view = dict(tables)
        for n in names:
            frame = tables[f"{n}_by_seed"]
            view[n] = frame[frame["seed"] == k].drop(columns="seed").reset_index(drop=True)
        views.append(view)
    return views


def _seed_effects(tables: dict, effect_of: Callable[[dict], float]) -> np.ndarray:
    """``effect_of`` computed on each seed's own tables (:func:`_seed_views`)."""
    return np.array([effect_of(view) for view in _seed_views(tables)], dtype=float)


def _stability(per_seed: np.ndarray, effect: float, threshold: float = 0.0) -> dict:
    """``n_seeds`` (seeds with an effect) and ``stable_seeds`` (those on the same side of
    ``threshold`` as ``effect``)."""
    return count_same_sign(per_seed - threshold, effect - threshold)


def _seed_ci(effect: float, per_seed: np.ndarray) -> dict:
    """``effect`` +- t(0.975, n - 1) * SD(per-seed effects) / sqrt(n) (NaN with < 2 seeds):
    the half-width of the t interval of the per-seed effects (:func:`compute_mean_ci`)."""
    _, low, high = compute_mean_ci(per_seed)
    if not (np.isfinite(low) and np.isfinite(effect)):
        return {}
    half = (high - low) / 2
    return {"effect_ci_low": effect - half, "effect_ci_high": effect + half}


def _cells_ci(diffs: np.ndarray) -> dict:
    """``effect`` (mean of the cells' differences) and its 95 % t interval over the cells."""
    if not np.isfinite(diffs).any():
        return {}
    effect, low, high = compute_mean_ci(diffs)
    return {"effect": effect, "effect_ci_low": low, "effect_ci_high": high}


def _mean(values: np.ndarray) -> float:
    """Mean of the finite ``values`` (NaN when there is none)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else np.nan


# --------------------------------------------------------------------------- effects


def _similar_effect(tables: dict) -> float:
    """Worst / best cross-dataset Dice cell (NaN with fewer than two training sets)."""
    tt = tables["train_test"]
    cells = tt[(tt["metric"] == "dice") & tt["cross"].astype(bool) & tt["mean"].notna()]
    if cells["train_datasets"].nunique() < 2:
        return np.nan
    lo, hi = cells["mean"].min(), cells["mean"].max()
    return float(lo / hi) if hi > 0 else np.nan


def _larger_effect(tables: dict) -> float:
    """Mean Dice cell of the msseg2016_test model minus the isbi2015 model's."""
    tt = tables["train_test"]
    dice = tt[(tt["metric"] == "dice") & tt["mean"].notna()]
    means = dice.groupby("train_datasets")["mean"].mean()
    return float(means.get("msseg2016_test", np.nan) - means.get("isbi2015", np.nan))


def _combination_diffs(tables: dict) -> np.ndarray:
    """Combination - best component, one per (combination, test set) cell."""
    diffs = []
    for _, g in tables["combinations"].groupby(["combination", "test_dataset"], sort=True):
        comp = g.loc[g["role"] == "component", "dice"].dropna()
        combo = g.loc[g["role"] == "combination", "dice"].dropna()
        if len(comp) and len(combo):
            diffs.append(float(combo.iloc[0] - comp.max()))
    return np.array(diffs, dtype=float)


def _ablation_diffs(tables: dict, factor: str, levels: tuple[str, str]) -> np.ndarray:
    """Reference - alternative Dice, one per matching cell of ``ablation_<factor>``."""
    ab = tables[f"ablation_{factor}"]
    ref, alt = (f"dice_{level}" for level in levels)
    if ab.empty or ref not in ab.columns or alt not in ab.columns:
        return np.array([])
    return (ab[ref] - ab[alt]).dropna().to_numpy(dtype=float)


def _union_diffs(tables: dict) -> tuple[np.ndarray, pd.Series]:
    """Union - the better single rater (on their means) per ISBI 2015 test set all three
    labels were tested on, and the three labels' means."""
    lab = tables["labels"]
    needed = ["rater1", "rater2", "union"]
    lab = lab[lab["train_datasets"] == "isbi2015"] if len(lab) else lab
    if lab.empty:
        return np.array([]), pd.Series(dtype=float)
    wide = lab.pivot_table(index="test_dataset", columns="label", values="dice")
    if not set(needed) <= set(wide.columns):
        return np.array([]), pd.Series(dtype=float)
    wide = wide[needed].dropna()
    m = wide.mean()
    best = "rater1" if m["rater1"] >= m["rater2"] else "rater2"
    return (wide["union"] - wide[best]).to_numpy(dtype=float), m


def _combined_cell(tables: dict) -> float:
    """Dice of the paper's combined model (:data:`COMBINED`) on its test set (NaN: not run)."""
    cells = compute_default_cells(tables)
    sel = cells[
        (cells["key"] == dataset_key(COMBINED[0]))
        & (cells["test_dataset"] == COMBINED[1])
        & (cells["metric"] == "dice")
    ]
    return float(sel["mean"].iloc[0]) if len(sel) else np.nan


def _combined_centers(tables: dict) -> pd.DataFrame:
    """Per-center rows of the combined model (default settings) on its test set."""
    cen = tables["centers"]
    if cen.empty:
        return cen
    cen = cen[is_default(cen) & (cen["test_dataset"] == COMBINED[1])]
    cen = cen[cen["train_datasets"].map(dataset_key) == dataset_key(COMBINED[0])]
    return cen[cen["dice"].notna()]


def _centers_effect(tables: dict) -> float:
    """Largest relative deviation of a center's Dice from the combined model's whole set."""
    cen, whole = _combined_centers(tables), _combined_cell(tables)
    if cen.empty or not np.isfinite(whole):
        return np.nan
    return float((cen["dice"].astype(float) / whole - 1).abs().max())


# --------------------------------------------------------------------------- one per claim


def _similar(tables: dict, paper: dict) -> dict:
    p = paper["table2"]["dice"]
    row = _row("similar_performance", paper)
    row["paper_effect"] = p.min() / p.max()
    tt = tables["train_test"]
    cells = tt[(tt["metric"] == "dice") & tt["cross"].astype(bool) & tt["mean"].notna()]
    row["n"] = len(cells)
    if cells["train_datasets"].nunique() < 2:
        return row
    effect = _similar_effect(tables)
    lo, hi = cells["mean"].min(), cells["mean"].max()
    per_seed = _seed_effects(tables, _similar_effect)
    row.update(effect=effect, detail=f"cells {lo:.3f} to {hi:.3f}", **_seed_ci(effect, per_seed))
    row.update(_stability(per_seed, effect, row["paper_effect"]))
    row["verdict"] = _verdict(bool(effect >= row["paper_effect"]))
    return row


def _larger(tables: dict, paper: dict) -> dict:
    means = paper["table3"].set_index("train_datasets")["dice"]
    row = _row(
        "larger_heterogeneous_better",
        paper,
        paper_effect=means["msseg2016_test"] - means["isbi2015"],
    )
    anova = _test_row(tables["tests"], "train_test", "anova")
    tk = tables["tukey_train"]
    both = {"msseg2016_test", "isbi2015"}
    pair = tk[(tk["unit"] == "pair") & tk["A"].isin(both) & tk["B"].isin(both)] if len(tk) else tk
    if anova is None or anova["status"] != "ok" or pair.empty:
        return row
    t = pair.iloc[0]
    sign = 1.0 if t["A"] == "msseg2016_test" else -1.0
    effect = sign * t["diff"]
    low, high = sorted((sign * t["ci_low"], sign * t["ci_high"]))
    row.update(effect=effect, effect_ci_low=low, effect_ci_high=high)
    row.update(n=anova["n"], p_value=anova["p_value"])
    row.update(_stability(_seed_effects(tables, _larger_effect), effect))
    paper_tukey = paper["p_values"].set_index("name").loc["tukey_msseg2016_test_vs_isbi2015"]
    paper_tukey = paper_tukey["value"]
    row["detail"] = f"Tukey p = {t['p_tukey']:.4g} (paper {paper_tukey:g})"
    ok = anova["p_value"] < ALPHA and effect > 0 and t["p_tukey"] < ALPHA
    row["verdict"] = _verdict(bool(ok))
    return row


def _combinations(tables: dict, paper: dict) -> dict:
    p = paper["table4"]
    best = np.array([max(v) for v in p["individual"]])
    row = _row(
        "combinations_better",
        paper,
        paper_effect=float(np.mean(p["dice"].to_numpy() - best)),
        detail=f"paper: {int((p['dice'] > best).sum())} of {len(p)} cells",
    )
    diffs = _combination_diffs(tables)
    if not diffs.size:
        return row
    wilcoxon = _test_row(tables["tests"], "combinations", "wilcoxon")
    above = int((diffs > 0).sum())
    row.update(n=len(diffs), **_cells_ci(diffs))
    row.update(
        _stability(_seed_effects(tables, lambda v: _mean(_combination_diffs(v))), row["effect"])
    )
    row["p_value"] = wilcoxon["p_value"] if wilcoxon is not None else np.nan
    row["detail"] = f"{above} of {len(diffs)} cells above the best component; {row['detail']}"
    row["verdict"] = _verdict(above == len(diffs))
    return row


def _ablation(tables: dict, paper: dict, claim: str, factor: str) -> dict:
    name = CLAIMS[claim].table
    p = paper[name]
    ref, alt = (c.removeprefix("dice_") for c in p.columns[2:4])
    row = _row(
        claim,
        paper,
        paper_effect=float((p[f"dice_{ref}"] - p[f"dice_{alt}"]).mean()),
        detail=f"paper: {len(p)} pairs",
    )
    test = _test_row(tables["tests"], f"ablation_{factor}", "wilcoxon")
    if test is None or test["status"] != "ok":
        return row
    diffs = _ablation_diffs(tables, factor, (ref, alt))
    row.update(n=test["n"], p_value=test["p_value"], **_cells_ci(diffs))
    per_seed = _seed_effects(tables, lambda v: _mean(_ablation_diffs(v, factor, (ref, alt))))
    row.update(_stability(per_seed, row["effect"]))
    row["detail"] = f"{int(test['n'])} pairs; {row['detail']}"
    row["verdict"] = _verdict(row["effect"] > 0 and test["p_value"] < ALPHA)
    return row


def _union(tables: dict, paper: dict) -> dict:
    means = paper["label_means"].set_index("label")["dice"]
    row = _row(
        "union_marginal",
        paper,
        paper_effect=means["union"] - max(means["rater1"], means["rater2"]),
    )
    test = _test_row(tables["tests"], "labels", "rm_anova", "isbi2015:")
    diffs, m = _union_diffs(tables)
    if test is None or test["status"] != "ok" or not diffs.size:
        return row
    row.update(n=test["n"], p_value=test["p_value"], **_cells_ci(diffs))
    row["effect"] = m["union"] - max(m["rater1"], m["rater2"])  # = the mean of ``diffs``
    row.update(
        _stability(_seed_effects(tables, lambda v: _mean(_union_diffs(v)[0])), row["effect"])
    )
    row["detail"] = ", ".join(f"{k} {v:.3f}" for k, v in m.items())
    row["verdict"] = _verdict(bool(row["effect"] > 0 and test["p_value"] >= ALPHA))
    return row


def _centers(tables: dict, paper: dict) -> dict:
    pc = paper["centers"]
    overall = paper["table4"].set_index("train_datasets").loc[COMBINED[0], "dice"]
    row = _row(
        "centers_consistent",
        paper,
        paper_effect=float((pc["dice"] / overall - 1).abs().max()),
        detail="paper: unseen center 03 {:.3f}, whole set {:.3f}".format(
            *pc.loc[~pc["seen_in_training"], "dice"], overall
        ),
    )
    cen, whole = _combined_centers(tables), _combined_cell(tables)
    unseen = cen[cen["seen_in_training"].eq(False).fillna(False)] if len(cen) else cen
    if cen.empty or unseen.empty or not np.isfinite(whole):
        return row
    effect = _centers_effect(tables)
    per_seed = _seed_effects(tables, _centers_effect)
    prefix = f"{cen['model_id'].iloc[0]} on {COMBINED[1]}:"
    test = _test_row(tables["tests"], "centers", "mann_whitney", prefix, unit="scan")
    row.update(effect=effect, n=int(cen["dice_n"].sum()), **_seed_ci(effect, per_seed))
    row.update(_stability(per_seed, effect, CENTER_TOLERANCE))
    row["p_value"] = test["p_value"] if test is not None else np.nan
    shown = ", ".join(f"{c} {d:.3f}" for c, d in zip(unseen["center"], unseen["dice"], strict=True))
    row["detail"] = f"unseen {shown}, whole set {whole:.3f}; {row['detail']}"
    row["verdict"] = _verdict(effect <= CENTER_TOLERANCE)
    return row


def _miccai(tables: dict, paper: dict) -> dict:
    winner = float(paper["values"]["miccai2016_winner"]["value"])
    overall = paper["table4"].set_index("train_datasets").loc[COMBINED[0], "dice"]
    row = _row("above_miccai_winner", paper, paper_effect=overall - winner)
    whole = _combined_cell(tables)
    if not np.isfinite(whole):
        return row
    effect = whole - winner
    per_seed = _seed_effects(tables, lambda v: _combined_cell(v) - winner)
    row.update(effect=effect, n=1, detail=f"Dice {whole:.3f} on {COMBINED[1]}")
    row.update(**_seed_ci(effect, per_seed), **_stability(per_seed, effect))
    row["verdict"] = _verdict(whole > winner)
    return row


def compute_findings(tables: dict[str, pd.DataFrame], *, paper: dict | None = None) -> pd.DataFrame:
    """One row per claim of the paper (:data:`CLAIMS`), checked on a study's tables.

    Parameters
    ----------
    tables : dict of str to DataFrame
        Output of :func:`msnb.stats.compute_all_tables` (its study tables and ``tests``).
    paper : dict, optional
        :func:`msnb.paper.load_paper_numbers` (read when not given).

    Returns
    -------
    DataFrame, shape (8, len(FINDING_COLUMNS))
        :data:`FINDING_COLUMNS`; ``verdict`` is ``"reproduced"``, ``"not reproduced"`` or
        ``"not run"`` by the rules of the module docstring, ``"not testable"`` where a claim
        ran but the study's best train/test cell is below :data:`MIN_LEARNED_DICE` (the
        ``detail`` says so); ``paper_effect`` and ``paper_p_value`` are the paper's (NaN
        where the paper has no such number).
    """
    paper = paper or load_paper_numbers()
    rows = [
        _similar(tables, paper),
        _larger(tables, paper),
        _combinations(tables, paper),
        _ablation(tables, paper, "quantile_better", "normalization"),
        _ablation(tables, paper, "unetplusplus_better", "architecture"),
        _union(tables, paper),
        _centers(tables, paper),
        _miccai(tables, paper),
    ]
    return _floor(pd.DataFrame(rows, columns=list(FINDING_COLUMNS)), tables)


def _floor(findings: pd.DataFrame, tables: dict) -> pd.DataFrame:
    """``findings`` with each tested claim :data:`NOT_TESTABLE` when no model of the study
    learned (best train/test cell Dice below :data:`MIN_LEARNED_DICE`)."""
    tt = tables.get("train_test", pd.DataFrame(columns=["metric", "mean"]))
    cells = tt.loc[tt["metric"] == "dice", "mean"].astype(float).dropna()
    if cells.empty or cells.max() >= MIN_LEARNED_DICE:
        return findings
    tested = findings["verdict"].isin([REPRODUCED, NOT_REPRODUCED])
    why = f"models did not learn: best cell {cells.max():.3f} < {MIN_LEARNED_DICE}"
    findings.loc[tested, "detail"] = [
        f"{why}; {d}" if d else why for d in findings.loc[tested, "detail"]
    ]
    findings.loc[tested, "verdict"] = NOT_TESTABLE
    return findings
