"""Annotation agreement: how much do experts agree, and what does it cost a model?

For datasets with several raters this module scores, per scan,

- each rater against the consensus and every pair of raters (voxel-wise Dice and a lesion-wise
  F1), summarised as the paper does: ``mean_scan mean_i Dice(Expert_i, Consensus)`` and
  ``mean_scan mean_{i<j} Dice(Expert_i, Expert_j)``;
- consensus builders (union, majority vote, STAPLE from SimpleITK) against each rater, the
  dataset's own consensus and, on the phantom, the hidden truth.

The cost for a model is read from a study's results table: the models trained on one rater,
another rater or their union (the paper's Table 5, :func:`msnb.stats.compute_label_table`).

Lesion-wise agreement uses the MSSEG-2016 detection rule of :func:`msnb.metrics.compute_metrics`
(``lesion_rule="msseg"``, which the default ``"auto"`` means) with the first mask as
reference. A minimal rule is
kept as an option (``lesion_rule="simple"``) because its definition differs from MSSEG-2016's:
lesions are 3D connected components with 26-connectivity (not 6) of *at least*
``min_lesion_mm3`` (MSSEG-2016 drops components of that volume or less), and a lesion of one
mask counts as found when at least ``min_overlap`` of its voxels are marked in the other mask
as drawn (its small specks included), with no limit on how much of the other mask lies
outside it (MSSEG-2016's ``beta``/``gamma`` conditions). Both rules label lesions with
:func:`msnb.metrics.label_lesions` and count overlaps with :func:`msnb.metrics.overlap_table`.
Either way sensitivity is over the first mask's lesions, PPV over the second's, and F1 their
harmonic mean (:func:`msnb.masks.f1_score`), so swapping the masks swaps sensitivity and PPV.

Voxel-wise agreement is :func:`msnb.masks.dice`; consensus builders are
:func:`msnb.masks.combine_masks`.

Empty masks are recorded as such: Dice of two empty masks and F1 without lesions are NaN.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from msnb import stats
from msnb.datasets import Scan
from msnb.files import write_text
from msnb.masks import CONSENSUS_METHODS, combine_masks, dice, f1_score
from msnb.metrics import compute_metrics, label_lesions, overlap_table
from msnb.nifti import load_mask
from msnb.records import record_metrics

__all__ = [
    "KINDS",
    "LESION_RULES",
    "RECORDED_TABLES",
    "SCAN_INFO",
    "TRUTH_PATTERNS",
    "compare_consensus_builders",
    "compute_agreement_matrix",
    "compute_label_cost",
    "compute_lesion_agreement",
    "compute_rater_map",
    "compute_rater_agreement",
    "find_truth",
    "plot_agreement_matrix",
    "summarize_agreement",
    "summarize_consensus_builders",
    "write_agreement",
]

SCAN_INFO = ("scan_id", "dataset", "subject", "timepoint", "center")
KINDS = ("rater_vs_consensus", "rater_vs_rater")
#: Tables of :func:`write_agreement` that go into ``metrics.json`` too (the others only as CSV).
RECORDED_TABLES = ("summary", "consensus_summary", "label_tests")
#: Lesion-wise rules of :func:`compute_lesion_agreement` (``auto`` is ``msseg``).
LESION_RULES = ("auto", "msseg", "simple")


# --------------------------------------------------------------------------- lesion scores


def _simple_lesions(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, int]:
    """26-connected components of at least ``min_voxels`` voxels (the ``simple`` rule).

    :func:`msnb.metrics.label_lesions` keeps components of *more than* its minimal volume;
    in units of one voxel, ``min_voxels - 1`` keeps those of at least ``min_voxels``.
    """
    return label_lesions(
        mask, voxel_volume_mm3=1.0, min_volume_mm3=float(min_voxels - 1), connectivity=26
    )


def _found(labels: np.ndarray, n: int, other: np.ndarray, min_overlap: float) -> int:
    """Lesions of ``labels`` with at least ``min_overlap`` of their voxels marked in ``other``."""
    if n == 0:
        return 0
    table = overlap_table(labels, n, other.astype(np.int32), 1)[1:]
    sizes, hits = table.sum(axis=1), table[:, 1]
    return int(((hits > 0) & (hits >= min_overlap * sizes)).sum())


def _simple_agreement(
    a: np.ndarray, b: np.ndarray, *, min_voxels: int, min_overlap: float
) -> dict[str, float]:
    la, na = _simple_lesions(a, min_voxels)
    lb, nb = _simple_lesions(b, min_voxels)
    sens = _found(la, na, b, min_overlap) / na if na else math.nan
    ppv = _found(lb, nb, a, min_overlap) / nb if nb else math.nan
    return {
        "n_lesions_a": na,
        "n_lesions_b": nb,
        "sensitivity": sens,
        "ppv": ppv,
        "f1": f1_score(sens, ppv),
    }


def compute_lesion_agreement(
    a: np.ndarray,
    b: np.ndarray,
    *,
    voxel_volume_mm3: float = 1.0,
    min_lesion_mm3: float = 3.0,
    min_overlap: float = 0.1,
    lesion_rule: str = "auto",
) -> dict[str, float]:
    """Lesion-wise agreement of mask ``b`` with reference mask ``a``.

    Parameters
    ----------
    a, b : np.ndarray, shape (X, Y, Z)
        Reference and compared masks.
    voxel_volume_mm3 : float, default 1.0
    min_lesion_mm3 : float, default 3.0
        Smallest lesion volume (see the module docstring for how each rule applies it).
    min_overlap : float, default 0.1
        ``simple`` rule: fraction of a lesion's voxels the other mask must mark for it to
        count as found.
    lesion_rule : {"auto", "msseg", "simple"}, default "auto"
        ``msseg`` (and ``auto``): :func:`msnb.metrics.compute_metrics` (MSSEG-2016 evaluator
        rule, 6-connected lesions); ``simple``: the minimal rule of the module docstring.

    Returns
    -------
    dict
        ``n_lesions_a``, ``n_lesions_b``, ``sensitivity`` (found lesions of ``a`` / lesions of
        ``a``), ``ppv`` (lesions of ``b`` found in ``a`` / lesions of ``b``), ``f1``.
        Ratios with a zero denominator are NaN; F1 is NaN when either is NaN and 0 when both
        are 0.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    if lesion_rule not in LESION_RULES:
        raise ValueError(f"unknown lesion rule {lesion_rule!r}; use auto, msseg or simple")
    if lesion_rule == "simple":
        min_voxels = max(1, math.ceil(min_lesion_mm3 / voxel_volume_mm3 - 1e-9))
        return _simple_agreement(a, b, min_voxels=min_voxels, min_overlap=min_overlap)
    m = compute_metrics(
        a, b, voxel_volume_mm3=voxel_volume_mm3, min_lesion_volume_mm3=min_lesion_mm3
    )
    return {
        "n_lesions_a": m.n_true_lesions,
        "n_lesions_b": m.n_pred_lesions,
        "sensitivity": m.lesion_sensitivity,
        "ppv": m.lesion_ppv,
        "f1": m.lesion_f1,
    }


# --------------------------------------------------------------------------- per scan


def _load_masks(scan: Scan, names: Sequence[str]) -> tuple[dict[str, np.ndarray], float]:
    vols = {n: load_mask(scan.masks[n], binarize=True, what=f"{n} mask") for n in names}
    shapes = {v.shape for v in vols.values()}
    if len(shapes) > 1:
        raise ValueError(f"{scan.scan_id}: masks have different shapes {sorted(shapes)}")
    voxel_ml = next(iter(vols.values())).voxel_volume_ml if vols else 0.001
    return {n: v.data for n, v in vols.items()}, voxel_ml


def _scan_info(scan: Scan) -> dict:
    return {
        "scan_id": scan.scan_id,
        "dataset": scan.dataset,
        "subject": scan.subject,
        "timepoint": scan.timepoint,
        "center": scan.center,
    }


def _rater_scans(
    scans: Sequence[Scan], extra: str
) -> Iterator[tuple[Scan, list[str], dict[str, np.ndarray], float]]:
    """Scans with two raters or more: ``(scan, raters, masks, voxel_ml)``, where ``masks``
    holds the raters' masks and the ``extra`` mask when the scan has it."""
    for scan in scans:
        raters = scan.raters
        if len(raters) < 2:
            continue
        names = [*raters, *([extra] if extra in scan.masks else [])]
        masks, voxel_ml = _load_masks(scan, names)
        yield scan, raters, masks, voxel_ml


def _pair_scores(a: np.ndarray, b: np.ndarray, voxel_ml: float, **lesion) -> dict:
    """Dice, lesion-wise agreement of ``b`` with reference ``a``, and both volumes in mL."""
    les = compute_lesion_agreement(a, b, voxel_volume_mm3=voxel_ml * 1000.0, **lesion)
    return {
        "dice": dice(a, b),
        "lesion_f1": les["f1"],
        "lesion_sensitivity": les["sensitivity"],
        "lesion_ppv": les["ppv"],
        "n_lesions_a": les["n_lesions_a"],
        "n_lesions_b": les["n_lesions_b"],
        "volume_a_ml": float(a.sum()) * voxel_ml,
        "volume_b_ml": float(b.sum()) * voxel_ml,
    }


def compute_rater_agreement(
    scans: Sequence[Scan],
    *,
    reference: str = "consensus",
    min_lesion_mm3: float = 3.0,
    min_overlap: float = 0.1,
    lesion_rule: str = "auto",
) -> pd.DataFrame:
    """Agreement of every rater with the reference and of every pair of raters, per scan.

    Parameters
    ----------
    scans : sequence of Scan
        Scans with at least two raters (others are skipped), e.g.
        ``msnb.datasets.load_scans("msseg2016_train", root)``.
    reference : str, default "consensus"
        Mask the raters are compared with, when the scan has it (ISBI 2015 has none: only
        rater pairs are scored).
    min_lesion_mm3, min_overlap, lesion_rule
        Lesion-wise rule, see :func:`compute_lesion_agreement`.

    Returns
    -------
    DataFrame, shape (n_scans * n_pairs, 17)
        One row per scan and pair: scan columns (``scan_id, dataset, subject, timepoint,
        center``), ``kind`` (``rater_vs_consensus`` / ``rater_vs_rater``), ``a``, ``b`` (``a``
        is the reference or the lower-numbered rater), ``dice``, ``lesion_f1``,
        ``lesion_sensitivity`` (of ``b`` w.r.t. ``a``), ``lesion_ppv``, lesion counts and
        volumes in mL.
    """
    opts = dict(min_lesion_mm3=min_lesion_mm3, min_overlap=min_overlap, lesion_rule=lesion_rule)
    rows = []
    for scan, raters, masks, voxel_ml in _rater_scans(scans, reference):
        pairs = [(reference, r, "rater_vs_consensus") for r in raters if reference in masks]
        pairs += [(*ab, "rater_vs_rater") for ab in itertools.combinations(raters, 2)]
        for a, b, kind in pairs:
            scores = _pair_scores(masks[a], masks[b], voxel_ml, **opts)
            rows.append({**_scan_info(scan), "kind": kind, "a": a, "b": b, **scores})
    cols = [*SCAN_INFO, "kind", "a", "b", "dice", "lesion_f1", "lesion_sensitivity"]
    cols += ["lesion_ppv", "n_lesions_a", "n_lesions_b", "volume_a_ml", "volume_b_ml"]
    return pd.DataFrame(rows, columns=cols)


def summarize_agreement(
    agreement: pd.DataFrame, *, metrics: Sequence[str] = ("dice", "lesion_f1")
) -> pd.DataFrame:
    """The paper's summary numbers: per scan, the mean over raters (or rater pairs); then the
    mean over scans, with a t 95 % CI.

    Parameters
    ----------
    agreement : DataFrame
        Output of :func:`compute_rater_agreement`.

    Returns
    -------
    DataFrame
        ``dataset, kind, metric, mean, std, ci_low, ci_high, n_scans, n_pairs_per_scan``;
        ``kind`` ``rater_vs_consensus`` is ``mean_scan mean_i Dice(Expert_i, Consensus)``,
        ``rater_vs_rater`` is ``mean_scan mean_{i<j} Dice(Expert_i, Expert_j)``. Scans whose
        pairs are all NaN (all masks empty) are not counted.
    """
    cols = ["dataset", "kind", "metric", "mean", "std", "ci_low", "ci_high"]
    cols += ["n_scans", "n_pairs_per_scan"]
    rows = []
    for (dataset, kind), g in agreement.groupby(["dataset", "kind"], sort=True):
        for m in metrics:
            per_scan = g.groupby("scan_id")[m].mean()  # NaN pairs left out; all-NaN scan -> NaN
            vals = per_scan.dropna().to_numpy()
            mean, low, high = stats.compute_mean_ci(vals)
            rows.append(
                {
                    "dataset": dataset,
                    "kind": kind,
                    "metric": m,
                    "mean": mean,
                    "std": float(np.std(vals, ddof=1)) if vals.size > 1 else math.nan,
                    "ci_low": low,
                    "ci_high": high,
                    "n_scans": int(vals.size),
                    "n_pairs_per_scan": float(g.groupby("scan_id").size().mean()),
                }
            )
    return pd.DataFrame(rows, columns=cols)


def _name_order(name: str) -> tuple[int, int, str]:
    m = re.fullmatch(r"rater(\d+)", name)
    return (1, int(m.group(1)), name) if m else (0, 0, name)


def compute_agreement_matrix(
    agreement: pd.DataFrame, *, metric: str = "dice", dataset: str | None = None
) -> pd.DataFrame:
    """Symmetric matrix of the mean (over scans) ``metric`` of every pair of annotations.

    Parameters
    ----------
    agreement : DataFrame
        Output of :func:`compute_rater_agreement`.
    metric : str, default "dice"
    dataset : str, optional
        Restrict to one dataset (default: all rows).

    Returns
    -------
    DataFrame, shape (n_names, n_names)
        Index and columns ``consensus, rater1, ... raterK``; diagonal 1.
    """
    d = agreement if dataset is None else agreement[agreement["dataset"] == dataset]
    means = d.groupby(["a", "b"])[metric].mean()
    names = sorted(set(d["a"]) | set(d["b"]), key=_name_order)
    mat = pd.DataFrame(np.nan, index=names, columns=names)
    for (a, b), v in means.items():
        mat.loc[a, b] = mat.loc[b, a] = v
    for n in names:
        mat.loc[n, n] = 1.0
    return mat


def plot_agreement_matrix(matrix: pd.DataFrame, ax=None, *, vmin: float = 0.0, vmax: float = 1.0):
    """Heatmap of an agreement matrix (see :func:`compute_agreement_matrix`).

    Parameters
    ----------
    matrix : DataFrame, shape (n, n)
    ax : matplotlib Axes, optional
    vmin, vmax : float, defaults 0 and 1

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        side = 1.0 + 0.6 * max(len(matrix), 2)
        _, ax = plt.subplots(figsize=(side + 1.2, side))
    if matrix.empty:
        ax.text(0.5, 0.5, "no rater pairs", ha="center", va="center")
        ax.set_axis_off()
        return ax
    sns.heatmap(
        matrix.astype(float),
        annot=True,
        fmt=".2f",
        vmin=vmin,
        vmax=vmax,
        cmap="magma",
        square=True,
        cbar_kws={"label": "mean over scans"},
        ax=ax,
    )
    ax.set_xlabel("")
    ax.set_ylabel("")
    return ax


# --------------------------------------------------------------------------- consensus builders


#: Where the phantom writes each scan's noiseless truth, relative to ``<dataset>/truth/``
#: (``msnb.phantom``); fields are the scan's ``subject``, ``timepoint``, ``center``, ``dataset``
#: and ``patient`` (the subject without its ``CC_`` center prefix).
TRUTH_PATTERNS = {
    "isbi2015": "training{subject}_{timepoint}_truth.nii*",
    "msseg2016_train": "Training/Center_{center}_Patient_{patient}_truth.nii*",
    "msseg2016_test": "Testing/Center_{center}_Patient_{patient}_truth.nii*",
    "3dmrms": "patient{subject}_truth.nii*",
}


def find_truth(
    scans: Sequence[Scan], truth_dir: str | Path, *, pattern: str = ""
) -> dict[str, Path]:
    """Map scans to hidden-truth masks in ``truth_dir`` (phantom datasets).

    Parameters
    ----------
    scans : sequence of Scan
    truth_dir : path-like
        Folder of truth masks (``""`` or a missing folder: no truth).
    pattern : str, default ""
        Glob relative to ``truth_dir`` formatted with the scan's ``subject``, ``timepoint``,
        ``center``, ``dataset`` and ``patient``; ``""`` uses the phantom's layout for the scan's
        dataset (:data:`TRUTH_PATTERNS`, else ``"{subject}_{timepoint}*truth.nii*"``).
        Scans without exactly one match are left out.

    Returns
    -------
    dict of str to Path
        ``scan_id -> truth mask``.
    """
    if not str(truth_dir) or not Path(truth_dir).is_dir():
        return {}
    root = Path(truth_dir)
    out = {}
    for s in scans:
        pat = pattern or TRUTH_PATTERNS.get(s.dataset, "{subject}_{timepoint}*truth.nii*")
        glob = pat.format(
            subject=s.subject,
            timepoint=s.timepoint,
            center=s.center,
            dataset=s.dataset,
            patient=s.subject.split("_", 1)[-1],
        )
        hits = [p for p in root.glob(glob) if re.search(r"\.nii(\.gz)?$", p.name)]
        if len(hits) == 1:
            out[s.scan_id] = hits[0]
    return out


def compare_consensus_builders(
    scans: Sequence[Scan],
    truth: Mapping[str, str | Path] | None = None,
    *,
    methods: Sequence[str] = CONSENSUS_METHODS,
    min_lesion_mm3: float = 3.0,
    min_overlap: float = 0.1,
    lesion_rule: str = "auto",
) -> pd.DataFrame:
    """Build each consensus from the raters and score it against every reference.

    Parameters
    ----------
    scans : sequence of Scan
        Scans with at least two raters (others are skipped).
    truth : mapping of scan_id to path, optional
        Hidden truth masks (the phantom's ``truth/`` files, see :func:`find_truth`).
    methods : sequence of str, default ("union", "majority", "staple")
    min_lesion_mm3, min_overlap, lesion_rule
        Lesion-wise rule, see :func:`compute_lesion_agreement`.

    Returns
    -------
    DataFrame
        One row per scan x method x reference: scan columns, ``method``, ``reference``
        (``raterK``, ``consensus`` when the dataset ships one, ``truth`` when given),
        ``reference_kind`` (``rater`` / ``consensus`` / ``truth``), ``dice``, ``lesion_f1``,
        ``volume_ml`` (built consensus), ``reference_volume_ml``.
    """
    truth = dict(truth or {})
    opts = dict(min_lesion_mm3=min_lesion_mm3, min_overlap=min_overlap, lesion_rule=lesion_rule)
    rows = []
    for scan, raters, refs, voxel_ml in _rater_scans(scans, "consensus"):
        if scan.scan_id in truth:
            refs["truth"] = load_mask(truth[scan.scan_id], binarize=True, what="truth mask").data
        for method in methods:
            built = combine_masks([refs[r] for r in raters], method=method)
            for ref_name, ref in refs.items():
                if ref.shape != built.shape:
                    raise ValueError(
                        f"{scan.scan_id}: {ref_name} shape {ref.shape} != raters' {built.shape}"
                    )
                scores = _pair_scores(ref, built, voxel_ml, **opts)
                rows.append(
                    {
                        **_scan_info(scan),
                        "method": method,
                        "reference": ref_name,
                        "reference_kind": "rater" if ref_name in raters else ref_name,
                        "dice": scores["dice"],
                        "lesion_f1": scores["lesion_f1"],
                        "volume_ml": scores["volume_b_ml"],
                        "reference_volume_ml": scores["volume_a_ml"],
                    }
                )
    cols = [*SCAN_INFO, "method", "reference", "reference_kind", "dice", "lesion_f1"]
    cols += ["volume_ml", "reference_volume_ml"]
    return pd.DataFrame(rows, columns=cols)


def summarize_consensus_builders(comparison: pd.DataFrame) -> pd.DataFrame:
    """Mean over scans (of the per-scan mean over raters) per method and reference kind.

    Returns
    -------
    DataFrame
        ``method, reference_kind, dice, lesion_f1, volume_ml, n_scans``.
    """
    cols = ["method", "reference_kind", "dice", "lesion_f1", "volume_ml", "n_scans"]
    if comparison.empty:
        return pd.DataFrame(columns=cols)
    per_scan = (
        comparison.groupby(["method", "reference_kind", "scan_id"])[
            ["dice", "lesion_f1", "volume_ml"]
        ]
        .mean()
        .reset_index()
    )
    g = per_scan.groupby(["method", "reference_kind"], sort=True)
    out = g[["dice", "lesion_f1", "volume_ml"]].mean()
    out["n_scans"] = g["dice"].count()
    return out.reset_index()[cols]


# --------------------------------------------------------------------------- model cost


def compute_label_cost(
    results: pd.DataFrame | str | Path,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What training on one rater (or their union) costs a model: the paper's Table 5.

    Parameters
    ----------
    results : DataFrame or path-like
        A study's results table, or the path of its ``results.csv`` (resolved with
        :func:`msnb.stats.resolve_output_path`; ``""`` means no study: both frames are empty
        and the test row says ``not enough data``). Models that differ only in their label
        are used.

    Returns
    -------
    table : DataFrame
        :func:`msnb.stats.compute_label_table`.
    tests : DataFrame
        :func:`msnb.stats.compute_label_tests` (repeated-measures ANOVA and pairwise
        Wilcoxon, on train/test pairs and on scans).
    """
    if isinstance(results, pd.DataFrame):
        df = stats.validate_results(results)
    elif str(results) == "":
        df = stats.validate_results(pd.DataFrame(columns=list(stats.REQUIRED_COLUMNS)))
    else:
        df = stats.load_results(stats.resolve_output_path(results))
    return stats.compute_label_table(df), stats.compute_label_tests(df)


# --------------------------------------------------------------------------- writing


def write_agreement(
    tables: Mapping[str, pd.DataFrame], out_dir: str | Path, *, summary: Mapping | None = None
) -> dict[str, Path]:
    """Write each table as CSV and ``metrics.json`` (atomically).

    ``metrics.json`` is the record of :func:`msnb.records.record_metrics`
    (``kind="agreement"``): ``summary`` under ``"metrics"`` and the small tables
    (:data:`RECORDED_TABLES`, those given) under ``"tables"``.

    Parameters
    ----------
    tables : mapping of str to DataFrame
        E.g. ``{"agreement": ..., "summary": ..., "consensus": ...}``; each is written as
        ``<name>.csv``.
    out_dir : path-like
    summary : mapping, optional
        JSON-ready summary values (e.g. ``{"dataset": ..., "n_scans": ...}``).

    Returns
    -------
    dict of str to Path
        ``name -> <name>.csv`` for each table and ``metrics`` for ``metrics.json``.
    """
    out_dir = Path(out_dir)
    written = {}
    for name, table in tables.items():
        written[name] = write_text(out_dir / f"{name}.csv", table.to_csv(index=False))
    recorded = {name: t for name, t in tables.items() if name in RECORDED_TABLES}
    written["metrics"] = record_metrics(
        out_dir, summary or {}, kind="agreement", tables=recorded, csv=False
    )
    return written


def compute_rater_map(masks: dict) -> dict:
    """How many raters marked each voxel, and SimpleITK's STAPLE consensus of them.

    Parameters
    ----------
    masks : dict of str to np.ndarray
        Mask name -> bool (X, Y, Z), e.g. :func:`msnb.widgets.load_slice_volumes`'s ``masks``; the raters
        are the names starting with ``rater``.

    Returns
    -------
    dict
        ``count`` (int (X, Y, Z), 0 to the number of raters), ``staple`` (bool (X, Y, Z),
        :func:`msnb.masks.combine_masks` with ``method="staple"``), ``n_raters``.

    Raises
    ------
    ValueError
        When there is no rater mask (a single-rater dataset has nothing to disagree on).
    """
    raters = [m for n, m in masks.items() if n.startswith("rater")]
    if not raters:
        raise ValueError(f"no rater masks among {', '.join(masks) or 'none'}: nothing to compare")
    stack = np.stack([np.asarray(m, bool) for m in raters])
    return {
        "count": stack.sum(axis=0),
        "staple": combine_masks(list(stack), method="staple"),
        "n_raters": len(raters),
    }
