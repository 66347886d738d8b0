"""Smooth random fields and the resizing they share (elastic warps, bias fields, raters).

A coarse random grid is smoothed or upsampled onto the phantom grid: the subject's
elastic displacement and boundary noise (:mod:`.anatomy`), the scanner's bias field
(:mod:`.scanner`) and the raters' boundary fields (:mod:`.raters`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["smooth_field", "upsample_smooth", "zoom_to"]


def zoom_to(arr: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """Resample ``arr`` onto exactly ``shape`` with :func:`scipy.ndimage.zoom`.

    Parameters
    ----------
    arr : np.ndarray
    shape : tuple of int
        Target shape (same number of axes).
    order : int
        Spline order (1 linear, 3 cubic); edges are extended (``mode="nearest"``).

    Returns
    -------
    np.ndarray, shape ``shape``
        Rounding surplus is cropped and a shortfall padded with edge values.
    """
    out = ndi.zoom(arr, [s / a for s, a in zip(shape, arr.shape, strict=True)], order=order,
                   mode="nearest")  # fmt: skip
    out = out[tuple(slice(0, s) for s in shape)]
    if out.shape != tuple(shape):
        out = np.pad(out, [(0, s - o) for s, o in zip(shape, out.shape, strict=True)], mode="edge")
    return out


def upsample_smooth(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Cubic upsampling to a quarter of ``shape``, then linear: smooth and fast.

    Returns
    -------
    np.ndarray, float32, shape ``shape``
    """
    mid = tuple(max(min(-(-s // 4), s), c) for s, c in zip(shape, coarse.shape, strict=True))
    return zoom_to(zoom_to(coarse, mid, 3), shape, 1).astype(np.float32)


def smooth_field(
    shape: tuple[int, ...], voxel_mm: float, corr_mm: float, rng: np.random.Generator
) -> np.ndarray:
    """A smooth Gaussian random field with zero mean and unit variance.

    White noise on a grid of spacing ``max(voxel_mm, corr_mm / 2)`` is smoothed with a
    Gaussian of SD ``corr_mm`` and interpolated linearly onto ``shape``.

    Parameters
    ----------
    shape : tuple of int, (X, Y, Z)
    voxel_mm : float
        Voxel size of the output grid.
    corr_mm : float
        Correlation length (SD of the smoothing kernel) in mm.
    rng : numpy.random.Generator

    Returns
    -------
    np.ndarray, float32, shape ``shape``
    """
    step = max(voxel_mm, corr_mm / 2.0)
    coarse_shape = tuple(int(np.ceil(s * voxel_mm / step)) + 1 for s in shape)
    coarse = ndi.gaussian_filter(rng.standard_normal(coarse_shape), corr_mm / step, mode="wrap")
    field = zoom_to(coarse, shape, 1) if coarse_shape != tuple(shape) else coarse
    field = field - field.mean()
    sd = field.std()
    return (field / (sd if sd > 0 else 1.0)).astype(np.float32)
