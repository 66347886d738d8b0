"""The paper's claims, each checked on a study's tables: effect, test, p and a verdict.

:func:`compute_findings` gives one row per claim of Badea & Popa (2024) with this study's
effect beside the paper's, the test and its p-value beside the paper's, and a verdict:
``"reproduced"``, ``"not reproduced"`` or ``"not run"`` (the study lacks the models or
evaluations the claim needs). The rule of each claim (:data:`CLAIMS`), with the paper's own
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
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from msnb.paper import load_paper_numbers
from msnb.stats.compare import NOT_RUN, compute_default_cells, dataset_key
from msnb.stats.results import is_default

__all__ = [
    "ALPHA",
    "CENTER_TOLERANCE",
    "CLAIMS",
    "Claim",
    "COMBINED",
    "FINDING_COLUMNS",
    "NOT_REPRODUCED",
    "REPRODUCED",
    "compute_findings",
]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
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


# --------------------------------------------------------------------------- one per claim


def _similar(tables: dict, paper: dict) -> dict:
    p = paper["table2"]["dice"]
    row = _row("similar_performance", paper)
    row["paper_effect"] = p.min() / p.max()
    tt = tables["train_test"]
    cells = tt[(tt["metric"] == "dice") & tt["cross"] & tt["mean"].notna()]
    row["n"] = len(cells)
    if cells["train_datasets"].nunique() < 2:
        return row
    lo, hi = cells["mean"].min(), cells["mean"].max()
    row.update(effect=lo / hi if hi > 0 else np.nan, detail=f"cells {lo:.3f} to {hi:.3f}")
    row["verdict"] = _verdict(bool(row["effect"] >= row["paper_effect"]))
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
    effect = t["diff"] if t["A"] == "msseg2016_test" else -t["diff"]
    row.update(effect=effect, n=anova["n"], p_value=anova["p_value"])
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
    diffs = []
    combos = tables["combinations"]
    for _, g in combos.groupby(["combination", "test_dataset"], sort=True):
        comp = g.loc[g["role"] == "component", "dice"].dropna()
        combo = g.loc[g["role"] == "combination", "dice"].dropna()
        if len(comp) and len(combo):
            diffs.append(float(combo.iloc[0] - comp.max()))
    if not diffs:
        return row
    wilcoxon = _test_row(tables["tests"], "combinations", "wilcoxon")
    above = sum(d > 0 for d in diffs)
    row.update(effect=float(np.mean(diffs)), n=len(diffs))
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
    effect = -float(test["mean_diff"])  # the row's difference is alternative - reference
    row.update(effect=effect, n=test["n"], p_value=test["p_value"])
    row["detail"] = f"{int(test['n'])} pairs; {row['detail']}"
    row["verdict"] = _verdict(effect > 0 and test["p_value"] < ALPHA)
    return row


def _union(tables: dict, paper: dict) -> dict:
    means = paper["label_means"].set_index("label")["dice"]
    row = _row(
        "union_marginal",
        paper,
        paper_effect=means["union"] - max(means["rater1"], means["rater2"]),
    )
    lab = tables["labels"]
    lab = lab[lab["train_datasets"] == "isbi2015"] if len(lab) else lab
    wide = (
        lab.pivot_table(index="test_dataset", columns="label", values="dice") if len(lab) else lab
    )
    test = _test_row(tables["tests"], "labels", "rm_anova", "isbi2015:")
    needed = {"rater1", "rater2", "union"}
    if test is None or test["status"] != "ok" or not needed <= set(wide.columns):
        return row
    m = wide[sorted(needed)].dropna().mean()
    effect = m["union"] - max(m["rater1"], m["rater2"])
    row.update(effect=effect, n=test["n"], p_value=test["p_value"])
    row["detail"] = ", ".join(f"{k} {v:.3f}" for k, v in m.items())
    row["verdict"] = _verdict(bool(effect > 0 and test["p_value"] >= ALPHA))
    return row


def _combined_cell(tables: dict) -> float:
    """Dice of the paper's combined model (:data:`COMBINED`) on its test set (NaN: not run)."""
    cells = compute_default_cells(tables)
    sel = cells[
        (cells["key"] == dataset_key(COMBINED[0]))
        & (cells["test_dataset"] == COMBINED[1])
        & (cells["metric"] == "dice")
    ]
    return float(sel["mean"].iloc[0]) if len(sel) else np.nan


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
    cen = tables["centers"]
    if len(cen):
        cen = cen[is_default(cen) & (cen["test_dataset"] == COMBINED[1])]
        cen = cen[cen["train_datasets"].map(dataset_key) == dataset_key(COMBINED[0])]
        cen = cen[cen["dice"].notna()]
    whole = _combined_cell(tables)
    unseen = cen[cen["seen_in_training"].eq(False).fillna(False)] if len(cen) else cen
    if cen.empty or unseen.empty or not np.isfinite(whole):
        return row
    effect = float((cen["dice"] / whole - 1).abs().max())
    prefix = f"{cen['model_id'].iloc[0]} on {COMBINED[1]}:"
    test = _test_row(tables["tests"], "centers", "mann_whitney", prefix, unit="scan")
    row.update(effect=effect, n=int(cen["dice_n"].sum()))
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
    row.update(effect=whole - winner, n=1, detail=f"Dice {whole:.3f} on {COMBINED[1]}")
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
        ``"not run"`` by the rules of the module docstring; ``paper_effect`` and
        ``paper_p_value`` are the paper's (NaN where the paper has no such number).
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
    return pd.DataFrame(rows, columns=list(FINDING_COLUMNS))
