"""Per-scan segmentation metrics: voxel overlap, volumes and MSSEG-2016 lesion detection.

Everything is computed in 3D on one scan's voxel grid.

Lesion-wise detection follows the MSSEG-2016 challenge evaluator (Anima's
``animaSegPerfAnalyzer``, ``SegPerfCAnalyzer::getDetectionMarks``; Commowick et al. 2018,
Sci. Rep. 8:13650, section "Evaluation metrics"):

1. Lesions are 3D connected components. The evaluator uses ITK's
   ``ConnectedComponentImageFilter`` with its default ``FullyConnected = false``, i.e.
   **face connectivity (6-connectivity in 3D)**; that is our default
   (``connectivity=6``; ``26`` is available as an option).
2. Components of ``min_lesion_volume_mm3`` (3 mm^3) or less are dropped, in both the truth
   and the prediction (the evaluator keeps components of at least
   ``floor(3 / voxel_volume) + 1`` voxels). Dropped voxels count as background afterwards.
3. A true lesion is *detected* when more than ``alpha`` (10 %) of its voxels are covered by
   predicted lesions, and the predicted lesions overlapping it, taken by decreasing overlap
   until they account for ``gamma`` (65 %) of that overlap, each have at most ``beta``
   (70 %) of their voxels outside the true lesions.
4. Lesion PPV uses the same test with the roles of truth and prediction swapped.

Undefined values are NaN, never a silent 0 or 1, and every row carries a ``status``:

============== ======================== =====================================================
status         voxel metrics            lesion metrics
============== ======================== =====================================================
ok             Dice, IoU                sensitivity, PPV, F1
empty_truth    Dice = IoU = 0           sensitivity NaN (no true lesion), PPV, F1 NaN
empty_pred     Dice = IoU = 0           PPV NaN (no predicted lesion), sensitivity, F1 NaN
both_empty     Dice = IoU = NaN         all NaN
============== ======================== =====================================================

The status describes the voxel masks; lesion counts after the small-component filter are
given in ``n_true_lesions`` / ``n_pred_lesions`` (a lesion metric is NaN whenever its
denominator count is 0). F1 = 2 S P / (S + P); F1 = 0 when S = P = 0 (the evaluator
returns 0/0 there).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from msnb.masks import dice_iou, f1_score

__all__ = [
    "ALPHA",
    "BETA",
    "GAMMA",
    "ID_COLUMNS",
    "METRIC_COLUMNS",
    "MIN_LESION_VOLUME_MM3",
    "RESULT_COLUMNS",
    "STATUSES",
    "ScanMetrics",
    "compute_metrics",
    "detected_lesions",
    "label_lesions",
    "lesion_table",
    "min_lesion_voxels",
    "overlap_table",
    "result_row",
    "results_frame",
    "scan_status",
    "summarize",
]

ALPHA = 0.10  # minimal covered fraction of a lesion
BETA = 0.70  # maximal fraction of an overlapping component outside the other mask's lesions
GAMMA = 0.65  # share of the overlap that the tested components must account for
MIN_LESION_VOLUME_MM3 = 3.0
STATUSES = ("ok", "empty_truth", "empty_pred", "both_empty")


# The per-scan metric columns and the full results-table columns; later notebooks, the
# statistics and users' scripts rely on these exact names.
METRIC_COLUMNS = (
    "dice",
    "iou",
    "lesion_sensitivity",
    "lesion_ppv",
    "lesion_f1",
    "true_volume_ml",
    "pred_volume_ml",
)
# Columns that say which model was tested on which scan (the rest are METRIC_COLUMNS).
ID_COLUMNS = (
    "model_id",
    "train_datasets",
    "label",
    "normalization",
    "architecture",
    "encoder",
    "test_dataset",
    "subject",
    "timepoint",
    "center",
)
RESULT_COLUMNS = [*ID_COLUMNS, *METRIC_COLUMNS]


def _structure(connectivity: int) -> np.ndarray:
    if connectivity == 6:
        return ndimage.generate_binary_structure(3, 1)
    if connectivity == 18:
        return ndimage.generate_binary_structure(3, 2)
    if connectivity == 26:
        return ndimage.generate_binary_structure(3, 3)
    raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")


def min_lesion_voxels(
    voxel_volume_mm3: float, min_volume_mm3: float = MIN_LESION_VOLUME_MM3
) -> int:
    """Smallest kept component, in voxels: ``floor(min_volume / voxel_volume) + 1``."""
    if min_volume_mm3 <= 0:
        return 1
    return int(math.floor(min_volume_mm3 / voxel_volume_mm3 + 1e-9)) + 1


def label_lesions(
    mask: np.ndarray,
    *,
    voxel_volume_mm3: float = 1.0,
    min_volume_mm3: float = MIN_LESION_VOLUME_MM3,
    connectivity: int = 6,
) -> tuple[np.ndarray, int]:
    """Connected components of a binary mask, small ones dropped, relabelled 1..n.

    Parameters
    ----------
    mask : np.ndarray of bool, shape (X, Y, Z)
    voxel_volume_mm3 : float, default 1.0
    min_volume_mm3 : float, default 3.0
        Components of this volume or less are dropped (0 keeps everything).
    connectivity : {6, 18, 26}, default 6

    Returns
    -------
    labels : np.ndarray of int32, shape (X, Y, Z)
        0 is background; labels are ordered by first voxel in C order.
    n : int
    """
    labels, n = ndimage.label(np.asarray(mask, dtype=bool), structure=_structure(connectivity))
    if n == 0:
        return labels.astype(np.int32), 0
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_lesion_voxels(voxel_volume_mm3, min_volume_mm3)
    keep[0] = False
    new = np.zeros(n + 1, dtype=np.int32)
    new[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new[labels], int(keep.sum())


def overlap_table(
    ref_labels: np.ndarray, n_ref: int, test_labels: np.ndarray, n_test: int
) -> np.ndarray:
    """Voxel counts ``T[i, j]`` of reference label i overlapping test label j (0 = background).

    Returns
    -------
    np.ndarray of int64, shape (n_ref + 1, n_test + 1)
    """
    flat = ref_labels.ravel().astype(np.int64) * (n_test + 1) + test_labels.ravel()
    counts = np.bincount(flat, minlength=(n_ref + 1) * (n_test + 1))
    return counts.reshape(n_ref + 1, n_test + 1)


def detected_lesions(
    table: np.ndarray, *, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA
) -> np.ndarray:
    """Which reference lesions are detected by the test lesions (MSSEG-2016 rule).

    Parameters
    ----------
    table : np.ndarray, shape (n_ref + 1, n_test + 1)
        From :func:`overlap_table`; row/column 0 is background.

    Returns
    -------
    np.ndarray of bool, shape (n_ref,)
    """
    n_ref = table.shape[0] - 1
    test_sizes = table.sum(axis=0)  # voxels of each test component
    outside = table[0]  # voxels of each test component on reference background
    out = np.zeros(n_ref, dtype=bool)
    for i in range(1, n_ref + 1):
        row = table[i]
        covered = int(row[1:].sum())
        total = covered + int(row[0])
        if total == 0 or covered / total <= alpha:
            continue
        js = np.flatnonzero(row[1:]) + 1
        js = js[np.lexsort((js, -row[js]))]  # decreasing overlap, ties by label
        share = 0.0
        ok = True
        for j in js:
            if share >= gamma:
                break
            if outside[j] / test_sizes[j] > beta:
                ok = False
                break
            share += row[j] / covered
        out[i - 1] = ok
    return out


@dataclass
class ScanMetrics:
    """Metrics of one scan (see the module docstring for the empty cases)."""

    status: str
    dice: float
    iou: float
    true_volume_ml: float
    pred_volume_ml: float
    n_true_lesions: int
    n_pred_lesions: int
    n_detected_true: int
    n_detected_pred: int
    lesion_sensitivity: float
    lesion_ppv: float
    lesion_f1: float
    tp_voxels: int
    fp_voxels: int
    fn_voxels: int

    def as_dict(self) -> dict:
        return asdict(self)


def scan_status(truth: np.ndarray, pred: np.ndarray) -> str:
    """``ok``, ``empty_truth``, ``empty_pred`` or ``both_empty`` for two binary masks."""
    t, p = bool(np.any(truth)), bool(np.any(pred))
    return {(True, True): "ok", (False, True): "empty_truth", (True, False): "empty_pred"}.get(
        (t, p), "both_empty"
    )


def compute_metrics(
    truth: np.ndarray,
    pred: np.ndarray,
    *,
    voxel_volume_mm3: float = 1.0,
    min_lesion_volume_mm3: float = MIN_LESION_VOLUME_MM3,
    connectivity: int = 6,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
) -> ScanMetrics:
    """All per-scan metrics of a predicted mask against the truth.

    Parameters
    ----------
    truth, pred : np.ndarray of bool, shape (X, Y, Z)
        On the same voxel grid.
    voxel_volume_mm3 : float, default 1.0
        Volume of one voxel (e.g. ``Volume.voxel_volume_ml * 1000``).
    min_lesion_volume_mm3 : float, default 3.0
    connectivity : {6, 18, 26}, default 6
        Lesion connectivity (6: as the MSSEG-2016 evaluator).
    alpha, beta, gamma : float, default 0.10, 0.70, 0.65
        Detection thresholds (see the module docstring).

    Returns
    -------
    ScanMetrics
    """
    truth = np.asarray(truth, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if truth.shape != pred.shape:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
    status = scan_status(truth, pred)
    dice, iou = dice_iou(truth, pred)
    tp = int(np.count_nonzero(truth & pred))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(truth & ~pred))
    kw = {
        "voxel_volume_mm3": voxel_volume_mm3,
        "min_volume_mm3": min_lesion_volume_mm3,
        "connectivity": connectivity,
    }
    tl, nt = label_lesions(truth, **kw)
    pl, npred = label_lesions(pred, **kw)
    table = overlap_table(tl, nt, pl, npred)
    det_true = detected_lesions(table, alpha=alpha, beta=beta, gamma=gamma)
    det_pred = detected_lesions(table.T, alpha=alpha, beta=beta, gamma=gamma)
    sens = det_true.sum() / nt if nt else math.nan
    ppv = det_pred.sum() / npred if npred else math.nan
    ml = voxel_volume_mm3 / 1000.0
    return ScanMetrics(
        status=status,
        dice=float(dice),
        iou=float(iou),
        true_volume_ml=float(truth.sum() * ml),
        pred_volume_ml=float(pred.sum() * ml),
        n_true_lesions=int(nt),
        n_pred_lesions=int(npred),
        n_detected_true=int(det_true.sum()),
        n_detected_pred=int(det_pred.sum()),
        lesion_sensitivity=float(sens),
        lesion_ppv=float(ppv),
        lesion_f1=float(f1_score(float(sens), float(ppv))),
        tp_voxels=tp,
        fp_voxels=fp,
        fn_voxels=fn,
    )


def lesion_table(
    mask: np.ndarray,
    affine: np.ndarray,
    *,
    min_volume_mm3: float = 0.0,
    connectivity: int = 6,
):
    """One row per lesion (connected component) of a mask.

    Parameters
    ----------
    mask : np.ndarray of bool, shape (X, Y, Z)
    affine : np.ndarray, shape (4, 4)
        Voxel-to-world affine of ``mask``'s grid.
    min_volume_mm3 : float, default 0
        Drop components of this volume or less.
    connectivity : {6, 18, 26}, default 6

    Returns
    -------
    pandas.DataFrame
        Columns ``id, voxels, ml, x_mm, y_mm, z_mm`` (centroid in world coordinates),
        ordered by decreasing size.
    """
    import pandas as pd

    vox_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    labels, n = label_lesions(
        mask, voxel_volume_mm3=vox_mm3, min_volume_mm3=min_volume_mm3, connectivity=connectivity
    )
    cols = ["id", "voxels", "ml", "x_mm", "y_mm", "z_mm"]
    if n == 0:
        return pd.DataFrame(columns=cols)
    idx = np.arange(1, n + 1)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    cents = np.array(ndimage.center_of_mass(np.ones(labels.shape), labels, idx)).reshape(n, 3)
    world = (affine[:3, :3] @ cents.T).T + affine[:3, 3]
    order = np.argsort(-sizes, kind="stable")
    return pd.DataFrame(
        {
            "id": np.arange(1, n + 1),
            "voxels": sizes[order],
            "ml": sizes[order] * vox_mm3 / 1000.0,
            "x_mm": world[order, 0],
            "y_mm": world[order, 1],
            "z_mm": world[order, 2],
        }
    )[cols]


def summarize(table, *, by: str | list[str] | None = None):
    """Mean metrics per group (e.g. ``by="center"``) with the scan count and statuses.

    NaN values are left out of the means; ``n_scans`` counts all scans and ``n_ok`` the
    scans with status ``ok``.
    """
    import pandas as pd

    cols = [c for c in METRIC_COLUMNS if c in table]
    if by is None:
        out = table[cols].mean().to_frame().T
        out.insert(0, "n_scans", len(table))
        out.insert(
            1, "n_ok", int((table["status"] == "ok").sum()) if "status" in table else len(table)
        )
        return out
    g = table.groupby(by, sort=True)
    out = g[cols].mean()
    out.insert(0, "n_scans", g.size())
    if "status" in table:
        out.insert(1, "n_ok", g["status"].apply(lambda s: int((s == "ok").sum())))
    return pd.DataFrame(out).reset_index()


def result_row(ident: dict, scan, metrics: ScanMetrics, *, test_dataset, label, **extra) -> dict:
    """One scan's row of a results table: the model's ``ident`` columns, the scan, its metrics.

    ``ident`` holds the :data:`ID_COLUMNS` that name the model (``model_id`` ...
    ``encoder``); ``test_dataset`` defaults to the scan's dataset; ``extra`` columns follow
    ``scan_id`` and ``eval_label``.
    """
    return {
        **ident,
        "test_dataset": test_dataset or scan.dataset,
        "subject": scan.subject,
        "timepoint": scan.timepoint,
        "center": scan.center,
        **metrics.as_dict(),
        "scan_id": scan.scan_id,
        "eval_label": label,
        **extra,
    }


def results_frame(rows: list[dict]):
    """Rows of :func:`result_row` as a table, :data:`RESULT_COLUMNS` first."""
    import pandas as pd

    if not rows:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    table = pd.DataFrame(rows)
    return table[RESULT_COLUMNS + [c for c in table.columns if c not in RESULT_COLUMNS]]
