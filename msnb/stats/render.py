"""Display and files: the paper's tables as ``"mean (n=scans)"`` cells, the paper's
published cells as paper | this study | difference, the findings, CSV, Markdown,
``metrics.json`` (through :func:`msnb.records.record_metrics`) and the train x test heatmap.

A table whose cells have more than one seed replicate shows them as ``"mean ± sd"`` (the mean
over seeds and the SD of the seed means; ``"mean (1 seed)"`` for a cell with one); a table
with one seed keeps ``"mean (n=scans)"``. The findings show each effect with its 95 %
interval, ``"+0.120 [0.050, 0.190]"``, and ``"stable in k of n seeds"``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from msnb.files import write_text
from msnb.records import record_metrics
from msnb.stats.compare import COMPARISON_COLUMNS, NOT_RUN, PAPER_KEYS
from msnb.stats.findings import FINDING_COLUMNS, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED
from msnb.stats.inference import TEST_COLUMNS
from msnb.stats.tables import ABLATIONS

__all__ = [
    "plot_train_test_heatmap",
    "render_findings",
    "render_paper_comparison",
    "render_tables",
    "render_train_test",
    "summarize_tests",
    "write_tables",
]


def _cells(means, counts, digits: int, sds=None) -> list[str]:
    """``"mean (n=count)"`` strings (``"- (n=count)"`` where the mean is NaN); with ``sds``
    (seed SDs of a table with several seeds) ``"mean ± sd"`` strings instead (``"-"`` where the
    mean is NaN, ``"mean (1 seed)"`` where the SD is)."""
    if sds is not None:
        return [_seed_cell(m, sd, digits) for m, sd in zip(means, sds, strict=True)]
    return [
        f"- (n={n})" if not np.isfinite(m) else f"{m:.{digits}f} (n={n})"
        for m, n in zip(means, counts, strict=True)
    ]


def _seed_cell(mean: float, sd: float, digits: int, sign: str = "") -> str:
    """``"mean ± sd"`` (``sign`` ``"+"`` writes the mean's sign; ``"-"``: NaN mean)."""
    if not np.isfinite(mean):
        return "-"
    if not np.isfinite(sd):
        return f"{mean:{sign}.{digits}f} (1 seed)"
    return f"{mean:{sign}.{digits}f} ± {sd:.{digits}f}"


def _seed_sds(table: pd.DataFrame, sd: str, seeds: str = "n_seeds"):
    """Column ``sd`` of ``table`` when its cells have more than one seed (column ``seeds``),
    else None (the one-seed display)."""
    if sd not in table.columns or seeds not in table.columns:
        return None
    n = pd.to_numeric(table[seeds], errors="coerce")
    return table[sd].astype(float) if n.max() > 1 else None


def _pivot_cells(table: pd.DataFrame, index: list[str], columns: str) -> pd.DataFrame:
    """The ``cell`` column of ``table`` spread to ``index`` x ``columns`` ("" where absent)."""
    return table.pivot_table(index=index, columns=columns, values="cell", aggfunc="first").fillna(
        ""
    )


def render_train_test(train_test: pd.DataFrame, *, metric: str = "dice", digits: int = 3):
    """Train (rows) x test (columns) matrix of ``"mean (n=scans)"`` strings (``"mean ± sd"``
    over seeds when the cells have several)."""
    t = train_test[train_test["metric"] == metric]
    if t.empty:
        return pd.DataFrame()
    cells = t.assign(cell=_cells(t["mean"], t["n_scans"], digits, _seed_sds(t, "sd_seeds")))
    return cells.pivot(index="train_datasets", columns="test_dataset", values="cell").fillna("")


def _render_ablation(table: pd.DataFrame, levels: tuple[str, str], digits: int) -> pd.DataFrame:
    """Table 6/7 display: Dice cells of both ``levels`` and their difference (with several
    seeds, ``"mean ± sd"`` cells and a ``"+diff ± sd"`` difference over the shared seeds)."""
    keep = ["train_datasets", "test_dataset"]
    show = table[keep].copy()
    for level in levels:
        sds = _seed_sds(table, f"dice_{level}_sd_seeds", f"n_seeds_{level}")
        show[level] = _cells(table[f"dice_{level}"], table[f"dice_{level}_n"], digits, sds)
    sds = _seed_sds(table, "dice_diff_sd_seeds")
    if sds is None:
        show["diff"] = table["dice_diff"].round(digits)
    else:
        show["diff"] = [
            _seed_cell(d, sd, digits, "+") for d, sd in zip(table["dice_diff"], sds, strict=True)
        ]
    return show.set_index(keep)


def render_paper_comparison(comparison: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """One paper table as paper | this study | difference strings.

    Parameters
    ----------
    comparison : DataFrame
        One frame of :func:`msnb.stats.compute_paper_comparison`.
    digits : int, default 3

    Returns
    -------
    DataFrame
        Indexed by the table's keys, in the paper's row order; columns ``paper``,
        ``this study`` (``"mean (n=scans)"``; ``"mean ± sd"`` over seeds when the study's cells
        have several; or ``"not run"``) and ``difference`` (study - paper), prefixed by the
        metric (``"dice: paper"``) when there are several.
    """
    keys = [c for c in comparison.columns if c not in COMPARISON_COLUMNS]
    if comparison.empty:
        return pd.DataFrame()
    sds = _seed_sds(comparison, "study_sd")
    study = np.where(
        comparison["status"] == NOT_RUN,
        NOT_RUN,
        _cells(comparison["study"], comparison["n_scans"], digits, sds),
    )
    show = comparison[[*keys, "metric"]].assign(
        paper=[f"{v:.{digits}f}" for v in comparison["paper"]],
        study=study,
        difference=[
            "" if not np.isfinite(d) else f"{d:+.{digits}f}" for d in comparison["difference"]
        ],
    )
    metrics = list(dict.fromkeys(show["metric"]))
    order = list(dict.fromkeys(map(tuple, show[keys].to_numpy())))
    parts = []
    for metric in metrics:
        part = show[show["metric"] == metric].set_index(keys)[["paper", "study", "difference"]]
        part = part.rename(columns={"study": "this study"})
        if len(metrics) > 1:
            part = part.add_prefix(f"{metric}: ")
        parts.append(part)
    if len(keys) > 1:
        index = pd.MultiIndex.from_tuples(order, names=keys)
    else:
        index = pd.Index([o[0] for o in order], name=keys[0])
    return pd.concat(parts, axis=1).reindex(index).fillna("")


def render_findings(findings: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """The findings summary for display: one row per claim, numbers as short strings.

    Parameters
    ----------
    findings : DataFrame
        Output of :func:`msnb.stats.compute_findings`.
    digits : int, default 3
        Decimals of the effects (p-values get 3 significant digits).

    Returns
    -------
    DataFrame
        Indexed by the claim's statement: ``verdict``, ``effect`` (this study's, signed, with
        its 95 % interval: ``"+0.120 [0.050, 0.190]"``), ``paper effect``, ``measure`` (what
        the effect is), ``test``, ``p``, ``paper p``, ``seeds`` (``"stable in k of n seeds"``,
        ``"1 seed"``), ``rule``, ``detail``.
    """
    if findings.empty:
        return pd.DataFrame()
    f = findings.reindex(columns=list(FINDING_COLUMNS))
    effects = [
        _effect_text(v, lo, hi, digits)
        for v, lo, hi in zip(f["effect"], f["effect_ci_low"], f["effect_ci_high"], strict=True)
    ]
    return pd.DataFrame(
        {
            "verdict": f["verdict"],
            "effect": effects,
            "paper effect": [_num(v, f"+.{digits}f") for v in f["paper_effect"]],
            "measure": f["effect_name"],
            "test": f["test"],
            "p": [_num(v, ".3g") for v in f["p_value"]],
            "paper p": [_num(v, ".4g") for v in f["paper_p_value"]],
            "seeds": [
                _stability_text(k, n) for k, n in zip(f["stable_seeds"], f["n_seeds"], strict=True)
            ],
            "rule": f["rule"],
            "detail": f["detail"],
        }
    ).set_index(f["statement"].rename("claim"))


def _num(value, fmt: str) -> str:
    """``value`` formatted (``""`` when None or NaN)."""
    return "" if value is None or not np.isfinite(value) else format(value, fmt)


def _effect_text(effect, low, high, digits: int) -> str:
    """``"+0.120 [0.050, 0.190]"`` (no interval where it is NaN, ``""`` without an effect)."""
    text = _num(effect, f"+.{digits}f")
    if text and np.isfinite(low) and np.isfinite(high):
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def _stability_text(stable, n_seeds) -> str:
    """``"stable in k of n seeds"``; ``"1 seed"`` with one; ``""`` without an effect."""
    if not np.isfinite(n_seeds) or n_seeds < 1 or not np.isfinite(stable):
        return ""
    if n_seeds == 1:
        return "1 seed"
    return f"stable in {int(stable)} of {int(n_seeds)} seeds"


def render_tables(tables: dict[str, pd.DataFrame], *, digits: int = 3) -> dict[str, pd.DataFrame]:
    """Display versions of the paper's tables: cells are ``"mean (n=scans)"`` strings
    (``"mean ± sd"`` over seeds in a table with several seeds).

    Parameters
    ----------
    tables : dict of str to DataFrame
        Output of :func:`msnb.stats.compute_all_tables`.
    digits : int, default 3

    Returns
    -------
    dict of str to DataFrame
        ``table2_dice``, ``table3_iou``, ``table4_combinations``, ``table5_labels``,
        ``table6_normalization``, ``table7_architecture``, ``ablation_<name>`` (ablations of
        a setting without a results column), ``centers`` (those with content),
        and, when ``tables`` has them, ``findings`` (:func:`render_findings`) and
        ``paper_table2`` .. ``paper_table7``, ``paper_centers``
        (:func:`render_paper_comparison`).
    """
    out = {
        "table2_dice": render_train_test(tables["train_test"], metric="dice", digits=digits),
        "table3_iou": render_train_test(tables["train_test"], metric="iou", digits=digits),
    }
    c = tables["combinations"]
    if len(c):
        c = c.assign(cell=_cells(c["dice"], c["n_scans"], digits, _seed_sds(c, "dice_sd_seeds")))
        out["table4_combinations"] = _pivot_cells(c, ["combination", "model"], "test_dataset")
    lab = tables["labels"]
    if len(lab):
        sds = _seed_sds(lab, "dice_sd_seeds")
        lab = lab.assign(cell=_cells(lab["dice"], lab["dice_n"], digits, sds))
        out["table5_labels"] = _pivot_cells(lab, ["train_datasets", "label"], "test_dataset")
    for num, factor in (("6", "normalization"), ("7", "architecture")):
        if len(tables[f"ablation_{factor}"]):
            out[f"table{num}_{factor}"] = _render_ablation(
                tables[f"ablation_{factor}"], ABLATIONS[factor], digits
            )
    for key, table in tables.items():
        name = key.removeprefix("ablation_")
        own = key.startswith("ablation_") and not key.endswith("_by_seed")
        if own and name not in ABLATIONS and len(table):
            out[key] = _render_ablation(table, ("default", name), digits)
    cen = tables["centers"]
    if len(cen):
        unseen = np.where(cen["seen_in_training"].fillna(True).astype(bool), "", " [unseen]")
        cells = _cells(cen["dice"], cen["dice_n"], digits, _seed_sds(cen, "dice_sd_seeds"))
        cen = cen.assign(cell=np.char.add(np.array(cells, dtype=str), unseen))
        out["centers"] = _pivot_cells(cen, ["model_id", "test_dataset"], "center")
    if "findings" in tables:
        out["findings"] = render_findings(tables["findings"], digits=digits)
    for name in PAPER_KEYS:
        if f"paper_{name}" in tables:
            out[f"paper_{name}"] = render_paper_comparison(tables[f"paper_{name}"], digits=digits)
    return out


def summarize_tests(tables: dict[str, pd.DataFrame]) -> dict:
    """The summary numbers of ``metrics.json``: ``n_tests``, ``n_tests_ok`` (tests that
    could run), ``n_train_test_cells`` (train x test cells of the Dice table), and the
    findings' counts ``n_claims``, ``n_claims_reproduced``, ``n_claims_not_reproduced``,
    ``n_claims_not_run``, ``n_claims_not_testable``."""
    tests = tables.get("tests", pd.DataFrame(columns=list(TEST_COLUMNS)))
    tt = tables.get("train_test", pd.DataFrame())
    verdicts = tables.get("findings", pd.DataFrame(columns=list(FINDING_COLUMNS)))["verdict"]
    return {
        "n_tests": len(tests),
        "n_tests_ok": int((tests["status"] == "ok").sum()) if len(tests) else 0,
        "n_train_test_cells": int((tt["metric"] == "dice").sum()) if len(tt) else 0,
        "n_claims": len(verdicts),
        "n_claims_reproduced": int((verdicts == REPRODUCED).sum()),
        "n_claims_not_reproduced": int((verdicts == NOT_REPRODUCED).sum()),
        "n_claims_not_run": int((verdicts == NOT_RUN).sum()),
        "n_claims_not_testable": int((verdicts == NOT_TESTABLE).sum()),
    }


def _markdown(table: pd.DataFrame) -> str:
    """A display table as Markdown: one column per index level, cells as shown (no number
    parsing: ``"+0.050"`` keeps its sign and ``"0.450"`` its digits; ``|`` escaped)."""
    multi = isinstance(table.index, pd.MultiIndex)
    table = table.reset_index() if multi else table
    table = table.map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v)
    return table.to_markdown(index=not multi, disable_numparse=True)


def write_tables(
    tables: dict[str, pd.DataFrame], out_dir: str | Path, *, digits: int = 3
) -> dict[str, Path]:
    """Write every table as CSV, the rendered tables as Markdown, and ``metrics.json``.

    Every file is written atomically. ``metrics.json`` is the record of
    :func:`msnb.records.record_metrics` (``kind="statistics"``): :func:`summarize_tests`
    under ``"metrics"``, every test row under ``tables["tests"]`` and, when ``tables`` has
    them, the findings under ``tables["findings"]``.

    Parameters
    ----------
    tables : dict of str to DataFrame
        Output of :func:`msnb.stats.compute_all_tables`.
    out_dir : path-like
        Created if needed.
    digits : int, default 3
        Decimals in the Markdown tables.

    Returns
    -------
    dict of str to Path
        ``name -> file`` for every file written (``<name>`` for ``<name>.csv``,
        ``<name>_md`` for ``<name>.md``, ``metrics`` for ``metrics.json``).
    """
    out_dir = Path(out_dir)
    written = {}
    for name, table in tables.items():
        written[name] = write_text(out_dir / f"{name}.csv", table.to_csv(index=False))
    for name, table in render_tables(tables, digits=digits).items():
        text = _markdown(table) if len(table) else "(no data)\n"
        written[f"{name}_md"] = write_text(out_dir / f"{name}.md", text + "\n")
    recorded = {"tests": tables.get("tests", pd.DataFrame(columns=list(TEST_COLUMNS)))}
    if "findings" in tables:
        recorded["findings"] = tables["findings"]
    written["metrics"] = record_metrics(
        out_dir, summarize_tests(tables), kind="statistics", tables=recorded, csv=False
    )
    return written


def plot_train_test_heatmap(
    table: pd.DataFrame, ax=None, *, metric: str = "dice", vmin: float = 0.0, vmax: float = 1.0
):
    """Heatmap of the train x test table, each cell annotated with mean and scan count (and
    the seed SD when the cells have several seeds).

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
    sds = _seed_sds(t, "sd_seeds")
    if sds is not None:
        sds = t.assign(sd=sds).pivot(index="train_datasets", columns="test_dataset", values="sd")
    annot = values.copy().astype(object)
    for i in values.index:
        for j in values.columns:
            v, n = values.loc[i, j], counts.loc[i, j]
            sd = "" if sds is None or pd.isna(sds.loc[i, j]) else f" ± {sds.loc[i, j]:.2f}"
            annot.loc[i, j] = "" if pd.isna(n) else f"{v:.2f}{sd}\nn={int(n)}"
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
