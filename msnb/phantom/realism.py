"""How much a FLAIR scan looks like real FLAIR: the realism rows of docs/phantom.md section 9.

Each image is divided by the mode of its non-lesion brain intensities (normal white matter
on FLAIR), then measured: the lesion intensities, the non-lesion brain's 5th and 95th
percentiles, the share of lesion voxels no brighter than that 95th percentile (the overlap
of lesions with grey matter, ependyma and artefacts), the median gradient magnitude inside
the brain (texture and noise) and the lesion count and size. :data:`REAL_FLAIR` holds the
ranges measured the same way on public real 1 mm FLAIR scans of MS patients (skull-stripped,
N4-corrected; project issue 13); ``benchmarks/phantom_realism.py`` prints both.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["POOLED_TOLERANCE", "REAL_FLAIR", "ROWS", "brain_mode", "image_realism", "within_real"]

#: The measured rows, in print order, with a short description.
ROWS = {
    "lesion_median": "lesion intensity, median",
    "lesion_p10": "lesion intensity, 10th percentile",
    "lesion_p90": "lesion intensity, 90th percentile",
    "brain_p95": "non-lesion brain, 95th percentile",
    "brain_p05": "non-lesion brain, 5th percentile",
    "lesion_below_p95": "share of lesion voxels darker than the non-lesion p95",
    "gradient": "median gradient magnitude in the brain (per voxel)",
    "n_lesions": "lesions per scan (6-connected)",
    "lesion_voxels": "median lesion size (voxels)",
    "lesion_mm3": "median lesion size (mm^3)",
}

#: Ranges over the real scans (issue 13's table): (low, high) per row.
REAL_FLAIR = {
    "lesion_median": (1.31, 1.36),
    "lesion_p10": (1.11, 1.11),
    "lesion_p90": (1.64, 1.64),
    "brain_p95": (1.19, 1.29),
    "brain_p05": (0.12, 0.42),
    "lesion_below_p95": (0.22, 0.35),
    "gradient": (0.11, 0.14),
    "n_lesions": (27, 140),
    "lesion_voxels": (9, 12),
    "lesion_mm3": (9, 12),
}

#: Rows whose real value is one pooled number: a value within this (absolute) is in range.
POOLED_TOLERANCE = {"lesion_p10": 0.05, "lesion_p90": 0.05}


def brain_mode(values: np.ndarray, bins: int = 256) -> float:
    """The mode of a set of intensities: the peak of a lightly smoothed histogram.

    The histogram spans the 0.5th to 99.5th percentile (bright outliers do not widen its
    bins); it is smoothed with a Gaussian of 2 bins before taking the peak.
    """
    lo, hi = np.quantile(values, [0.005, 0.995])
    if not hi > lo:
        return float(lo)
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    peak = int(np.argmax(ndi.gaussian_filter1d(counts.astype(float), 2.0)))
    return float(0.5 * (edges[peak] + edges[peak + 1]))


def image_realism(
    flair: np.ndarray, brain: np.ndarray, lesion: np.ndarray, voxel_mm: float = 1.0
) -> dict[str, float]:
    """The realism rows of one scan (keys of :data:`ROWS`).

    Parameters
    ----------
    flair : np.ndarray, shape (X, Y, Z)
        The FLAIR in any units.
    brain : np.ndarray, bool
        Brain voxels.
    lesion : np.ndarray, bool
        Lesion voxels (the truth or a consensus).
    voxel_mm : float, default 1.0
        Isotropic voxel size (for ``lesion_mm3``).

    Returns
    -------
    dict
        Intensities are in units of the mode of the non-lesion brain; the gradient is the
        median over the eroded brain of the central-difference gradient's norm (per voxel);
        lesions are 6-connected components of ``lesion``. Lesion rows are NaN without
        lesions.
    """
    brain = np.asarray(brain, bool)
    lesion = np.asarray(lesion, bool) & brain
    normal = flair[brain & ~lesion].astype(np.float64)
    img = flair.astype(np.float32) / np.float32(brain_mode(normal))
    normal = img[brain & ~lesion]
    p05, p95 = np.quantile(normal, [0.05, 0.95])
    inner = ndi.binary_erosion(brain)
    grad = np.sqrt(sum(g[inner] ** 2 for g in np.gradient(img)))
    out = {"brain_p95": float(p95), "brain_p05": float(p05), "gradient": float(np.median(grad))}
    labels, n = ndi.label(lesion)
    nan = float("nan")
    out.update(lesion_median=nan, lesion_p10=nan, lesion_p90=nan, lesion_below_p95=nan,
               n_lesions=float(n), lesion_voxels=nan, lesion_mm3=nan)  # fmt: skip
    if n:
        vals = img[lesion]
        q10, q50, q90 = np.quantile(vals, [0.1, 0.5, 0.9])
        sizes = np.bincount(labels.ravel())[1:]
        out.update(lesion_median=float(q50), lesion_p10=float(q10), lesion_p90=float(q90),
                   lesion_below_p95=float(np.mean(vals <= p95)),
                   lesion_voxels=float(np.median(sizes)),
                   lesion_mm3=float(np.median(sizes)) * voxel_mm**3)  # fmt: skip
    return out


def within_real(row: str, value: float, slack: float = 0.0) -> bool:
    """Whether ``value`` lies in the real range of ``row``.

    The range is widened by :data:`POOLED_TOLERANCE` for pooled rows and by ``slack``
    (relative) for every row.
    """
    lo, hi = REAL_FLAIR[row]
    tol = POOLED_TOLERANCE.get(row, 0.0)
    return (lo - tol) * (1 - slack) <= value <= (hi + tol) * (1 + slack)
