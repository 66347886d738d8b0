"""The paper's published numbers beside a study's: paper | this study | difference.

:func:`compute_paper_comparison` matches every cell of the paper's Tables 2-7 and of its
per-center analysis (:func:`msnb.paper.load_paper_numbers`) with the same cell of a study's
tables (:func:`msnb.stats.compute_all_tables`): same training datasets (in any order), test
set, label, ablated setting or center. The study's value is, like the paper's, a mean over
the cell's test scans (with seed replicates, the mean over seeds of each seed's mean, and
``study_sd`` the SD over seeds, NaN with one seed); ``difference`` is study - paper; a cell
the study did not run has status :data:`NOT_RUN`. :func:`load_paper_results` goes the other way: the paper's own cells
as a results table, which msnb's statistics turn back into the paper's p-values
(``tests/test_paper_numbers.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from msnb.metrics import RESULT_COLUMNS
from msnb.paper import load_paper_numbers
from msnb.recipe import model_id_for
from msnb.stats.results import DEFAULTS, SEP, is_default, split_names, validate_results

__all__ = [
    "COMPARISON_COLUMNS",
    "NOT_RUN",
    "PAPER_KEYS",
    "PAPER_LABELS",
    "compute_default_cells",
    "compute_paper_comparison",
    "dataset_key",
    "load_paper_results",
]

#: Status of a paper cell the study has no model or no evaluation for.
NOT_RUN = "not run"
#: The columns that identify a cell of each paper table (then :data:`COMPARISON_COLUMNS`).
PAPER_KEYS = {
    "table2": ("train_datasets", "test_dataset"),
    "table3": ("train_datasets",),
    "table4": ("train_datasets", "test_dataset", "model"),
    "table5": ("train_datasets", "label", "test_dataset"),
    "table6": ("train_datasets", "test_dataset", "normalization"),
    "table7": ("train_datasets", "test_dataset", "architecture"),
    "centers": ("train_datasets", "test_dataset", "center"),
}
#: Columns after the keys: the metric, both values, study - paper, the study's scans behind
#: its value, ``status`` (``"ok"``, :data:`NOT_RUN`, or ``"no value"`` when every scan of
#: the cell had a NaN metric), the SD of the study's value over seed replicates (NaN with one
#: seed) and the seeds behind it (0: not run).
COMPARISON_COLUMNS = (
    "metric",
    "paper",
    "study",
    "difference",
    "n_scans",
    "status",
    "study_sd",
    "n_seeds",
)
#: The training label of the paper's single-dataset models: ISBI 2015 has no consensus, and
#: its Table 2 model is Table 5's union model (the rows are identical).
PAPER_LABELS = {"isbi2015": "union"}


def dataset_key(train_datasets: str) -> str:
    """Order-free key of a ``"+"``-joined dataset list (``"b+a"`` and ``"a+b"`` match)."""
    return SEP.join(sorted(split_names(train_datasets)))


# --------------------------------------------------------------------------- the study's cells


def compute_default_cells(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every train/test cell of the models of Tables 2 and 4 (all settings at their defaults).

    Parameters
    ----------
    tables : dict of str to DataFrame
        Output of :func:`msnb.stats.compute_all_tables` (``train_test`` and ``combinations``).

    Returns
    -------
    DataFrame
        ``key`` (:func:`dataset_key`), ``train_datasets, test_dataset, metric, mean, n_scans,
        sd_seeds, n_seeds``.
    """
    values = ["mean", "n_scans", "sd_seeds", "n_seeds"]
    cols = ["key", "train_datasets", "test_dataset", "metric", *values]
    tt = tables["train_test"]
    frames = [tt.reindex(columns=cols[1:])]
    combo = tables["combinations"]
    combo = combo[combo["role"] == "combination"]
    for metric in ("dice", "iou"):
        if metric in combo.columns:
            part = combo.reindex(
                columns=["combination", "test_dataset", metric, f"{metric}_n"]
                + [f"{metric}_sd_seeds", "n_seeds"]
            )
            part = part.set_axis(["train_datasets", "test_dataset", *values], axis=1)
            frames.append(part.assign(metric=metric))
    frames = [f for f in frames if len(f)]
    cells = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols[1:])
    cells["key"] = [dataset_key(t) for t in cells["train_datasets"]]
    return cells[cols].reset_index(drop=True)


#: What :func:`_lookup` gives for a cell the study did not run.
_NOT_RUN_CELL = {"study": np.nan, "n_scans": -1, "study_sd": np.nan, "n_seeds": 0}


def _lookup(
    frame: pd.DataFrame,
    match: dict,
    value: str,
    count: str,
    sd: str = "sd_seeds",
    seeds: str = "n_seeds",
) -> dict:
    """``study`` (column ``value``), ``n_scans`` (``count``), ``study_sd`` (``sd``, NaN when
    ``frame`` lacks it) and ``n_seeds`` (``seeds``, 1 when absent) of the first row of
    ``frame`` whose columns equal ``match``; :data:`_NOT_RUN_CELL` when there is none."""
    sel = frame
    for col, want in match.items():
        sel = sel[sel[col] == want]
    if sel.empty:
        return dict(_NOT_RUN_CELL)
    row = sel.iloc[0]
    return {
        "study": float(row[value]),
        "n_scans": int(row[count]),
        "study_sd": float(row[sd]) if sd in row.index else np.nan,
        "n_seeds": int(row[seeds]) if seeds in row.index and pd.notna(row[seeds]) else 1,
    }


def _compare(rows: list[dict], keys: Sequence[str]) -> pd.DataFrame:
    """Rows with ``paper``, ``study``, ``n_scans`` (-1: not run), ``study_sd`` and
    ``n_seeds`` completed into a comparison frame (:data:`COMPARISON_COLUMNS`)."""
    names = [*keys, "metric", "paper", "study", "n_scans", "study_sd", "n_seeds"]
    frame = pd.DataFrame(rows, columns=names)
    run = frame["n_scans"] >= 0
    frame["status"] = np.where(run, np.where(frame["study"].notna(), "ok", "no value"), NOT_RUN)
    frame["n_scans"] = frame["n_scans"].clip(lower=0).astype(int)
    frame["study_sd"] = frame["study_sd"].astype(float)
    frame["n_seeds"] = frame["n_seeds"].fillna(0).astype(int)
    frame["difference"] = frame["study"] - frame["paper"]
    return frame[[*keys, *COMPARISON_COLUMNS]]


# --------------------------------------------------------------------------- per table


def _table2(paper: dict, cells: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, p in paper["table2"].iterrows():
        for metric in ("dice", "iou"):
            match = {"key": dataset_key(p["train_datasets"]), "test_dataset": p["test_dataset"]}
            found = _lookup(cells, {**match, "metric": metric}, "mean", "n_scans")
            rows.append(
                {
                    **p[["train_datasets", "test_dataset"]],
                    "metric": metric,
                    "paper": p[metric],
                    **found,
                }
            )
    return _compare(rows, PAPER_KEYS["table2"])


def _table3(paper: dict, table2: pd.DataFrame, by_seed: pd.DataFrame | None) -> pd.DataFrame:
    """The mean of the study's Table 2 cells over the paper's test sets of each training
    set; not run unless every one of those cells has a value. ``study_sd``: the SD over
    seeds of each seed's mean over the same cells (``train_test_by_seed``)."""
    rows = []
    dice = table2[table2["metric"] == "dice"]
    for _, p in paper["table3"].iterrows():
        own = dice[dice["train_datasets"] == p["train_datasets"]]
        full = len(own) > 0 and (own["status"] == "ok").all()
        found = dict(_NOT_RUN_CELL)
        if full:
            found = {
                "study": own["study"].mean(),
                "n_scans": int(own["n_scans"].sum()),
                "study_sd": _seed_mean_sd(by_seed, p["train_datasets"], own["test_dataset"]),
                "n_seeds": int(own["n_seeds"].min()),
            }
        rows.append(
            {"train_datasets": p["train_datasets"], "metric": "dice", "paper": p["dice"], **found}
        )
    return _compare(rows, PAPER_KEYS["table3"])


def _seed_mean_sd(by_seed: pd.DataFrame | None, train: str, tests: pd.Series) -> float:
    """SD over seeds of each seed's mean Dice of ``train``'s model over the ``tests`` cells
    (:func:`msnb.stats.compute_seed_tables`' ``train_test_by_seed``); NaN with < 2 seeds."""
    if by_seed is None or by_seed.empty:
        return np.nan
    sel = by_seed[(by_seed["metric"] == "dice") & by_seed["test_dataset"].isin(set(tests))]
    sel = sel[sel["train_datasets"].map(dataset_key) == dataset_key(train)]
    per_seed = sel.groupby("seed")["mean"].mean().dropna()
    return float(per_seed.std(ddof=1)) if len(per_seed) > 1 else np.nan


def _table4(paper: dict, cells: pd.DataFrame) -> pd.DataFrame:
    """The combination's Dice and IoU, then each component's Dice on the same test set."""
    rows = []
    for _, p in paper["table4"].iterrows():
        combo, test = p["train_datasets"], p["test_dataset"]
        members = [(combo, "dice", p["dice"]), (combo, "iou", p["iou"])]
        parts = zip(split_names(combo), p["individual"], strict=True)
        members += [(name, "dice", value) for name, value in parts]
        for model, metric, value in members:
            match = {"key": dataset_key(model), "test_dataset": test, "metric": metric}
            rows.append(
                {
                    "train_datasets": combo,
                    "test_dataset": test,
                    "model": model,
                    "metric": metric,
                    "paper": value,
                    **_lookup(cells, match, "mean", "n_scans"),
                }
            )
    return _compare(rows, PAPER_KEYS["table4"])


def _table5(paper: dict, labels: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, p in paper["table5"].iterrows():
        for metric in ("dice", "iou"):
            match = {k: p[k] for k in PAPER_KEYS["table5"]}
            found = (
                _lookup(labels, match, metric, f"{metric}_n", f"{metric}_sd_seeds")
                if len(labels)
                else dict(_NOT_RUN_CELL)
            )
            rows.append({**match, "metric": metric, "paper": p[metric], **found})
    return _compare(rows, PAPER_KEYS["table5"])


def _ablation(paper: pd.DataFrame, ablation: pd.DataFrame, cells: pd.DataFrame, factor: str):
    """Table 6 or 7: the default level from the default cells, the other from the study's
    ablation table (:func:`msnb.stats.compute_ablation_table`)."""
    ref, alt = (c.removeprefix("dice_") for c in paper.columns[2:4])
    ab = ablation.assign(key=[dataset_key(t) for t in ablation["train_datasets"]])
    rows = []
    for _, p in paper.iterrows():
        key, test = dataset_key(p["train_datasets"]), p["test_dataset"]
        base = {"train_datasets": p["train_datasets"], "test_dataset": test, "metric": "dice"}
        found = _lookup(
            cells, {"key": key, "test_dataset": test, "metric": "dice"}, "mean", "n_scans"
        )
        rows.append({**base, factor: ref, "paper": p[f"dice_{ref}"], **found})
        cols = (f"dice_{alt}", f"dice_{alt}_n", f"dice_{alt}_sd_seeds", f"n_seeds_{alt}")
        found = (
            _lookup(ab, {"key": key, "test_dataset": test}, *cols)
            if len(ab)
            else dict(_NOT_RUN_CELL)
        )
        rows.append({**base, factor: alt, "paper": p[f"dice_{alt}"], **found})
    return _compare(rows, PAPER_KEYS[f"table{6 if factor == 'normalization' else 7}"])


def _centers(paper: dict, centers: pd.DataFrame) -> pd.DataFrame:
    """Per-center Dice of the paper's combined model (default settings) on its test set."""
    cen = centers[is_default(centers)] if len(centers) else centers
    cen = cen.assign(key=[dataset_key(t) for t in cen["train_datasets"]])
    rows = []
    for _, p in paper["centers"].iterrows():
        match = {
            "key": dataset_key(p["train_datasets"]),
            "test_dataset": p["test_dataset"],
            "center": p["center"],
        }
        found = (
            _lookup(cen, match, "dice", "dice_n", "dice_sd_seeds")
            if len(cen)
            else dict(_NOT_RUN_CELL)
        )
        rows.append(
            {
                **p[["train_datasets", "test_dataset", "center"]],
                "metric": "dice",
                "paper": p["dice"],
                **found,
            }
        )
    return _compare(rows, PAPER_KEYS["centers"])


def compute_paper_comparison(
    tables: dict[str, pd.DataFrame], *, paper: dict | None = None
) -> dict[str, pd.DataFrame]:
    """Each of the paper's tables as paper | this study | difference.

    Parameters
    ----------
    tables : dict of str to DataFrame
        Output of :func:`msnb.stats.compute_all_tables` (its study tables).
    paper : dict, optional
        :func:`msnb.paper.load_paper_numbers` (read when not given).

    Returns
    -------
    dict of str to DataFrame
        ``table2`` .. ``table7`` and ``centers``: one row per published value, the keys of
        :data:`PAPER_KEYS` then :data:`COMPARISON_COLUMNS`. Table 3's study value is the mean
        of the study's Table 2 cells of that training set (not run unless all are there; its
        ``study_sd`` from ``train_test_by_seed`` when ``tables`` has it);
        Table 4 has the combination's Dice and IoU and each component's Dice (``model``);
        Tables 6 and 7 have one row per level of the ablated setting.
    """
    paper = paper or load_paper_numbers()
    cells = compute_default_cells(tables)
    out = {"table2": _table2(paper, cells)}
    out["table3"] = _table3(paper, out["table2"], tables.get("train_test_by_seed"))
    out["table4"] = _table4(paper, cells)
    out["table5"] = _table5(paper, tables["labels"])
    out["table6"] = _ablation(
        paper["table6"], tables["ablation_normalization"], cells, "normalization"
    )
    out["table7"] = _ablation(
        paper["table7"], tables["ablation_architecture"], cells, "architecture"
    )
    out["centers"] = _centers(paper, tables["centers"])
    return out


# --------------------------------------------------------------------------- paper -> results


def _result_row(train: str, test: str, dice: float, iou: float, **settings) -> dict:
    """One results-table row: a paper cell as a single "scan" (its mean)."""
    label = settings.pop("label", PAPER_LABELS.get(train, DEFAULTS["label"]))
    config = {**DEFAULTS, "label": label, **settings}
    row = dict.fromkeys(RESULT_COLUMNS, np.nan)
    row.update(
        model_id=model_id_for(split_names(train), config),
        train_datasets=train,
        **{k: config[k] for k in ("label", "normalization", "architecture", "encoder")},
        test_dataset=test,
        subject="cell",
        timepoint="",
        center="",
        dice=dice,
        iou=iou,
        experiment="paper",
    )
    return row


def load_paper_results(paper: dict | None = None) -> pd.DataFrame:
    """The paper's cells as a results table (one row per published cell, its mean).

    The models of Tables 2 and 4 at the defaults (Dice and IoU), their linear-normalization
    (Table 6) and UNet (Table 7) variants (Dice only), and Table 5's rater1 and rater2
    models; Table 5's union model is Table 2's ISBI 2015 model (:data:`PAPER_LABELS`). Each
    cell is one row with ``subject`` ``"cell"``, so every statistic of
    :func:`msnb.stats.compute_all_tables` runs on the paper's unit, the cell mean.

    Parameters
    ----------
    paper : dict, optional
        :func:`msnb.paper.load_paper_numbers` (read when not given).

    Returns
    -------
    DataFrame
        Validated (:func:`msnb.stats.validate_results`); ``experiment`` is ``"paper"``.
    """
    paper = paper or load_paper_numbers()
    rows = []
    for name in ("table2", "table4"):
        for _, p in paper[name].iterrows():
            rows.append(_result_row(p["train_datasets"], p["test_dataset"], p["dice"], p["iou"]))
    for name, factor in (("table6", "normalization"), ("table7", "architecture")):
        alt = paper[name].columns[3].removeprefix("dice_")
        for _, p in paper[name].iterrows():
            train, test = p["train_datasets"], p["test_dataset"]
            rows.append(_result_row(train, test, p.iloc[3], np.nan, **{factor: alt}))
    for _, p in paper["table5"].iterrows():
        if p["label"] != PAPER_LABELS.get(p["train_datasets"]):
            rows.append(
                _result_row(
                    p["train_datasets"], p["test_dataset"], p["dice"], p["iou"], label=p["label"]
                )
            )
    return validate_results(pd.DataFrame(rows))
