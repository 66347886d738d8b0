"""Binary lesion masks: overlap scores and the combination of several raters' masks.

The one definition of Dice, IoU and F1 and of a consensus of raters in msnb: the metrics
of a prediction (:mod:`msnb.metrics`), the agreement between raters
(:mod:`msnb.agreement`), the labels of a dataset (:func:`msnb.datasets.load_label`) and the
phantom's simulated raters all call these functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "CONSENSUS_METHODS",
    "STAPLE_THRESHOLD",
    "combine_masks",
    "dice",
    "dice_iou",
    "f1_score",
    "lesion_slices",
    "most_lesion_slice",
]

CONSENSUS_METHODS = ("union", "majority", "staple")
#: A voxel is in the STAPLE consensus when its probability exceeds this (as the majority
#: vote keeps voxels marked by *more than* half of the raters).
STAPLE_THRESHOLD = 0.5


def dice_iou(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two binary masks.

    Parameters
    ----------
    truth, pred : np.ndarray, shape (X, Y, Z)
        Masks of the same shape (non-zero is foreground).

    Returns
    -------
    (float, float)
        ``2|T & P| / (|T| + |P|)`` and ``|T & P| / |T | P|``; both NaN when both masks are
        empty.
    """
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(pred, dtype=bool)
    if t.shape != p.shape:
        raise ValueError(f"mask shapes differ: {t.shape} vs {p.shape}")
    inter = int(np.count_nonzero(t & p))
    nt, np_ = int(np.count_nonzero(t)), int(np.count_nonzero(p))
    if nt + np_ == 0:
        return math.nan, math.nan
    return 2 * inter / (nt + np_), inter / (nt + np_ - inter)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two binary masks (NaN when both are empty); see :func:`dice_iou`."""
    return dice_iou(a, b)[0]


def f1_score(sensitivity: float, ppv: float) -> float:
    """Harmonic mean of two rates; NaN when either is NaN, 0 when both are 0."""
    if math.isnan(sensitivity) or math.isnan(ppv):
        return math.nan
    if sensitivity + ppv == 0:
        return 0.0
    return 2 * sensitivity * ppv / (sensitivity + ppv)


def combine_masks(masks: Sequence[np.ndarray], *, method: str = "majority") -> np.ndarray:
    """Combine several raters' masks into one.

    Parameters
    ----------
    masks : sequence of np.ndarray, each shape (X, Y, Z)
    method : {"union", "majority", "staple"}, default "majority"
        ``union``: any rater; ``majority``: more than half of the raters; ``staple``:
        SimpleITK's STAPLE probability (Warfield et al. 2004) above
        :data:`STAPLE_THRESHOLD`.

    Returns
    -------
    np.ndarray of bool, shape (X, Y, Z)
    """
    if len(masks) == 0:
        raise ValueError("no masks to combine")
    stack = np.stack([np.asarray(m, dtype=bool) for m in masks])
    if method == "union":
        return stack.any(axis=0)
    if method == "majority":
        return stack.sum(axis=0) * 2 > len(masks)
    if method == "staple":
        if not stack.any():
            return np.zeros(stack.shape[1:], dtype=bool)
        import SimpleITK as sitk

        images = [sitk.GetImageFromArray(m.astype(np.uint8)) for m in stack]
        prob = sitk.GetArrayFromImage(sitk.STAPLE(images, 1.0))
        return np.nan_to_num(prob, nan=0.0) > STAPLE_THRESHOLD
    raise ValueError(f"unknown consensus method {method!r}; use one of {CONSENSUS_METHODS}")


def lesion_slices(mask: np.ndarray, *, n: int = 1, axis: int = 2) -> np.ndarray:
    """Indices of the ``n`` slices along ``axis`` with the most foreground, most first.

    Ties keep the lower index first; slices without foreground come last (in index
    order), so the result always has ``min(n, mask.shape[axis])`` entries.

    Parameters
    ----------
    mask : np.ndarray, shape (X, Y, Z)
        A lesion mask (bool), or counts per voxel (e.g. ``truth + pred``: a slice's load is
        the sum of its values).
    n : int, default 1
    axis : int, default 2
        2 for axial slices of a canonical (RAS+) volume.

    Returns
    -------
    np.ndarray of int, shape (min(n, mask.shape[axis]),)
    """
    mask = np.asarray(mask)
    other = tuple(a for a in range(mask.ndim) if a != axis % mask.ndim)
    load = mask.astype(np.float64).sum(axis=other)
    return np.argsort(-load, kind="stable")[:n]


def most_lesion_slice(mask: np.ndarray, *, axis: int = 2) -> int:
    """The slice along ``axis`` with the most foreground (the first one on ties)."""
    return int(lesion_slices(mask, n=1, axis=axis)[0])
