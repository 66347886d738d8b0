"""Simulated raters, each outlining the true lesions with its own errors.

The rater model of docs/phantom.md section 4: rater ``i``'s mask is
``{d_T < b_i + a_s N_s + a_i N_i}`` minus the lesions they miss plus a few false positives.
``d_T`` is the signed distance to the true lesions in mm (positive outside), ``N_s`` a
smooth ambiguity field shared by all raters and ``N_i`` the rater's own (unit variance,
3 mm correlation), ``b_i ~ N(0, sigma_b)`` a rater's bias towards larger or smaller
outlines. A consensus of the raters is :func:`msnb.masks.combine_masks`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from msnb.phantom.config import RaterParams
from msnb.phantom.fields import smooth_field

__all__ = ["simulate_raters"]


def _lesion_territories(truth: np.ndarray, voxel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Label of the nearest true lesion at every voxel, and each lesion's volume (mm^3)."""
    labels, n = ndi.label(truth, structure=np.ones((3, 3, 3), bool))
    if not n:
        return labels, np.zeros(0)
    nearest = ndi.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
    volumes_mm3 = np.bincount(labels.ravel(), minlength=n + 1)[1:] * voxel_mm**3
    return labels[tuple(nearest)], volumes_mm3


def _add_false_positives(
    mask: np.ndarray,
    candidates: np.ndarray,
    n_fp: int,
    grid: np.ndarray,
    voxel_mm: float,
    params: RaterParams,
    rng: np.random.Generator,
) -> None:
    """Mark ``n_fp`` small spheres centred on random ``candidates`` (flat indices) in place."""
    shape = mask.shape
    for idx in rng.choice(candidates, size=n_fp):
        centre = np.unravel_index(idx, shape)
        radius = rng.uniform(*params.fp_radius_mm) / voxel_mm
        r = int(np.ceil(radius))
        sl = tuple(slice(max(c - r, 0), c + r + 1) for c in centre)
        d2 = sum((grid[k][sl] - centre[k]) ** 2 for k in range(3))
        mask[sl] |= d2 <= max(radius**2, 0.25)


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
    territory, volumes_mm3 = _lesion_territories(truth, voxel_mm)
    log_volumes = np.log(np.maximum(volumes_mm3, 1e-6))
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
        p_keep = 1.0 / (1.0 + np.exp(-(log_volumes - np.log(v50)) / params.keep_slope))
        missed = np.flatnonzero(rng.random(volumes_mm3.size) >= p_keep) + 1
        if missed.size:
            mask &= ~np.isin(territory, missed)
        n_fp = rng.poisson(params.fp_rate)
        if n_fp and fp_candidates.size:
            if grid is None:
                grid = np.indices(shape, dtype=np.float32)
            _add_false_positives(mask, fp_candidates, n_fp, grid, voxel_mm, params, rng)
        masks.append(mask & allowed)
    return masks
