"""Simulated raters for the phantom (PHANTOM.md section 4).

Rater ``i``'s mask is ``{d_T < b_i + a_s N_s + a_i N_i}`` minus the lesions they miss plus
a few false positives. ``d_T`` is the signed distance to the true lesions in mm (positive
outside), ``N_s`` a smooth ambiguity field shared by all raters and ``N_i`` the rater's own
(unit variance, 3 mm correlation), ``b_i ~ N(0, sigma_b)`` a rater's bias towards larger or
smaller outlines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["RaterParams", "smooth_field", "simulate_raters", "consensus_mask", "dice"]


@dataclass(frozen=True)
class RaterParams:
    """Rater model of one simulated dataset (PHANTOM.md section 4 table).

    Attributes
    ----------
    n_raters : int
        Number of simulated raters.
    a_shared : float
        Amplitude (mm) of the ambiguity field shared by all raters.
    a_individual : tuple of float
        Range (mm) from which each rater's own field amplitude is drawn uniformly.
    sigma_b : float
        SD (mm) of each rater's global boundary offset.
    v50_voxels : float
        Lesion volume (mm^3, i.e. voxels at 1 mm) a rater detects with probability 0.5.
    v50_log_sd : float, default 0.5
        SD of ``ln v50_i`` around ``ln v50`` between raters.
    keep_slope : float, default 0.6
        Width of the logistic detection curve in ``ln v``.
    fp_rate : float
        Poisson mean of false-positive spheres per rater and scan.
    fp_radius_mm : tuple of float, default (0.8, 1.8)
        Radius range of false-positive spheres.
    corr_mm : float, default 3.0
        Correlation length of the boundary fields.
    consensus : {"majority", "staple"}, default "majority"
        How the consensus is built from the raters: a strict majority vote (default: fast
        and exact), or SimpleITK's STAPLE thresholded at 0.5.
    """

    n_raters: int
    a_shared: float
    a_individual: tuple[float, float]
    sigma_b: float
    v50_voxels: float
    fp_rate: float
    v50_log_sd: float = 0.5
    keep_slope: float = 0.6
    fp_radius_mm: tuple[float, float] = (0.8, 1.8)
    corr_mm: float = 3.0
    consensus: str = "majority"


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
    if coarse_shape != tuple(shape):
        factors = [s / c for s, c in zip(shape, coarse_shape, strict=True)]
        field = ndi.zoom(coarse, factors, order=1, mode="nearest")
        field = field[tuple(slice(0, s) for s in shape)]
        if field.shape != tuple(shape):  # rounding: pad by edge values
            pad = [(0, s - f) for s, f in zip(shape, field.shape, strict=True)]
            field = np.pad(field, pad, mode="edge")
    else:
        field = coarse
    field = field - field.mean()
    sd = field.std()
    return (field / (sd if sd > 0 else 1.0)).astype(np.float32)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (NaN when both are empty)."""
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    denom = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / denom) if denom else float("nan")


def simulate_raters(
    signed_distance: np.ndarray,
    truth: np.ndarray,
    allowed: np.ndarray,
    fp_region: np.ndarray,
    voxel_mm: float,
    params: RaterParams,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Simulate the raters' masks of one scan.

    Parameters
    ----------
    signed_distance : np.ndarray, float, shape (X, Y, Z)
        Signed distance (mm) to the true lesion boundary, positive outside.
    truth : np.ndarray, bool, shape (X, Y, Z)
        The noiseless lesion mask.
    allowed : np.ndarray, bool
        Voxels a rater may mark (brain, not ventricle).
    fp_region : np.ndarray, bool
        Where false positives are placed (white matter far from lesions).
    voxel_mm : float
        Isotropic voxel size.
    params : RaterParams
    rng : numpy.random.Generator

    Returns
    -------
    list of np.ndarray, bool
        One mask per rater.
    """
    shape = truth.shape
    labels, n = ndi.label(truth, structure=np.ones((3, 3, 3), bool))
    if n:
        territory = labels[
            tuple(
                ndi.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
            )
        ]
        volumes_mm3 = np.bincount(labels.ravel(), minlength=n + 1)[1:] * voxel_mm**3
    else:
        territory = labels
        volumes_mm3 = np.zeros(0)
    shared = smooth_field(shape, voxel_mm, params.corr_mm, rng)
    fp_candidates = np.flatnonzero(fp_region)
    grid = None
    masks = []
    for _ in range(params.n_raters):
        b = rng.normal(0.0, params.sigma_b)
        a_i = rng.uniform(*params.a_individual)
        own = smooth_field(shape, voxel_mm, params.corr_mm, rng)
        mask = signed_distance < (b + params.a_shared * shared + a_i * own)
        v50 = params.v50_voxels * np.exp(rng.normal(0.0, params.v50_log_sd))
        p_keep = 1.0 / (
            1.0 + np.exp(-(np.log(np.maximum(volumes_mm3, 1e-6)) - np.log(v50)) / params.keep_slope)
        )
        missed = np.flatnonzero(rng.random(n) >= p_keep) + 1
        if missed.size:
            mask &= ~np.isin(territory, missed)
        n_fp = rng.poisson(params.fp_rate)
        if n_fp and fp_candidates.size:
            if grid is None:
                grid = np.indices(shape, dtype=np.float32)
            for idx in rng.choice(fp_candidates, size=n_fp):
                centre = np.unravel_index(idx, shape)
                radius = rng.uniform(*params.fp_radius_mm) / voxel_mm
                r = int(np.ceil(radius))
                sl = tuple(slice(max(c - r, 0), c + r + 1) for c in centre)
                d2 = sum((grid[k][sl] - centre[k]) ** 2 for k in range(3))
                sphere = d2 <= max(radius**2, 0.25)
                mask[sl] |= sphere
        masks.append(mask & allowed)
    return masks


def consensus_mask(masks: list[np.ndarray], method: str = "majority") -> np.ndarray:
    """Consensus of several raters' masks.

    Parameters
    ----------
    masks : list of np.ndarray, bool
    method : {"majority", "staple"}, default "majority"
        Strict majority vote, or SimpleITK's STAPLE probability thresholded at 0.5.
    """
    stack = np.stack([np.asarray(m, bool) for m in masks])
    if method == "majority":
        return stack.sum(0) * 2 > len(masks)
    if method == "staple":
        import SimpleITK as sitk

        if not stack.any():
            return np.zeros(stack.shape[1:], bool)
        images = [sitk.GetImageFromArray(m.astype(np.uint8)) for m in stack]
        prob = sitk.GetArrayFromImage(sitk.STAPLE(images, 1.0))
        return prob > 0.5
    raise ValueError(f"unknown consensus method {method!r}; use 'majority' or 'staple'")
