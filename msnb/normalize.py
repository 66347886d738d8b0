"""Intensity normalization of FLAIR volumes: quantile (the paper's), linear min-max, z-score.

All normalizers follow :class:`Normalizer`: ``normalizer(image, brain)`` returns a
float32 volume of the same shape that is 0 outside the brain, and ``normalizer.key`` is a
stable string (it names slice-store caches and model bundles).

Quantile normalization maps the brain voxels of a volume, by rank, onto a reference
intensity distribution. The reference is an array of ``n`` quantiles at the probabilities
``linspace(0, 1, n)``; a voxel of (tie-averaged) rank ``r`` among ``N`` brain voxels gets the
reference's quantile function evaluated at ``r / (N - 1)`` (linear interpolation between
reference quantiles). Equal intensities get the same output (ties averaged), the mapping is
monotone, and a volume whose intensity distribution *is* the reference is reproduced.

The reference is built with :func:`build_reference` from a template volume or from the
training volumes (the mean of their quantile functions), then rescaled linearly to
[0, 1] so that network inputs have the same range as with linear normalization. It is saved
with every model bundle and reused unchanged at inference.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import Protocol

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from msnb.nifti import NiftiError, load_image, load_mask
from msnb.preprocess import compute_brain_mask, load_flair

__all__ = [
    "IDENTITY",
    "IdentityNormalizer",
    "LinearNormalizer",
    "NORMALIZATIONS",
    "N_QUANTILES",
    "NormalizationComparison",
    "Normalizer",
    "QuantileNormalizer",
    "ZScoreNormalizer",
    "average_ranks",
    "build_reference",
    "build_template_reference",
    "compare_normalizations",
    "distribution_distance",
    "get_normalizer",
    "quantile_function",
    "reference_key",
]

N_QUANTILES = 1024
NORMALIZATIONS = ("quantile", "linear", "zscore", "identity")


class Normalizer(Protocol):
    """Maps a canonical FLAIR volume to normalized intensities (0 outside the brain)."""

    key: str

    def __call__(self, image: np.ndarray, brain: np.ndarray) -> np.ndarray: ...


class IdentityNormalizer:
    """Keeps the stored intensities inside the brain (0 outside): no normalization."""

    name = "identity"
    key = "identity"

    def __call__(self, image: np.ndarray, brain: np.ndarray) -> np.ndarray:
        return np.where(brain, image, 0).astype(np.float32)


IDENTITY: Normalizer = IdentityNormalizer()


def _brain_values(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    brain = np.asarray(brain, dtype=bool)
    if image.shape != brain.shape:
        raise ValueError(f"image {image.shape} and brain mask {brain.shape} differ in shape")
    if not brain.any():
        raise ValueError("empty brain mask: nothing to normalize")
    return image[brain].astype(np.float32, copy=False)


def quantile_function(values: np.ndarray, n_quantiles: int = N_QUANTILES) -> np.ndarray:
    """Quantiles of ``values`` at ``linspace(0, 1, n_quantiles)`` (linear interpolation).

    Returns
    -------
    np.ndarray of float64, shape (n_quantiles,)
    """
    return np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, n_quantiles))


def build_reference(
    volumes_and_brains: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    n_quantiles: int = N_QUANTILES,
    rescale: bool = True,
) -> np.ndarray:
    """Reference distribution for quantile normalization.

    Parameters
    ----------
    volumes_and_brains : iterable of (image, brain)
        Images (X, Y, Z) with their bool brain masks. One pair (a template) gives that
        volume's quantile function; several give the mean quantile function.
    n_quantiles : int, default 1024
    rescale : bool, default True
        Map the result linearly to [0, 1] (monotone, so it changes only the output scale).

    Returns
    -------
    np.ndarray of float64, shape (n_quantiles,)
        Non-decreasing.
    """
    total = np.zeros(n_quantiles)
    count = 0
    for image, brain in volumes_and_brains:
        total += quantile_function(_brain_values(image, brain), n_quantiles)
        count += 1
    if count == 0:
        raise ValueError("build_reference needs at least one (image, brain) pair")
    ref = total / count
    if rescale:
        lo, hi = ref[0], ref[-1]
        ref = (ref - lo) / (hi - lo) if hi > lo else np.zeros_like(ref)
    return np.maximum.accumulate(ref)


def build_template_reference(
    flair: str | os.PathLike,
    brain_mask: str | os.PathLike | None = None,
    *,
    n_quantiles: int = N_QUANTILES,
) -> np.ndarray:
    """The quantile reference of one template scan (the paper's fixed template).

    Every model normalized with it maps its scans onto the same distribution, whatever it
    was trained on (the authors' code uses the brain-extracted MSSEG-2016 training scan of
    center 08, patient 03).

    Parameters
    ----------
    flair : path-like
        The template FLAIR (NIfTI).
    brain_mask : path-like, optional
        Its brain mask; computed from the (skull-stripped) image when missing.
    n_quantiles : int, default 1024

    Returns
    -------
    np.ndarray of float64, shape (n_quantiles,)
    """
    image = load_image(flair)
    if brain_mask:
        brain = load_mask(brain_mask, reference=image, binarize=True, what="template brain mask")
        brain = brain.data
    else:
        brain = compute_brain_mask(image.data)
    if not brain.any():
        raise NiftiError(image.path, "template brain mask is empty")
    return build_reference([(image.data, brain)], n_quantiles=n_quantiles)


def _rank_groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Tie groups of ``values`` in increasing order.

    Returns ``(avg_rank, codes, None)`` for integer-valued inputs (counting sort: group of
    voxel i is ``codes[i]``), or ``(avg_rank, counts, order)`` otherwise (voxels
    ``order[k]`` in sorted order form consecutive groups of ``counts``).
    """
    n = values.size
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 2**22 and np.array_equal(values, np.round(values)):
        codes = (values - lo).astype(np.int64)
        counts = np.bincount(codes)
        start = np.cumsum(counts) - counts
        return start + (counts - 1) / 2.0, codes, None
    order = np.argsort(values, kind="quicksort")
    sv = values[order]
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(sv[1:], sv[:-1], out=new_group[1:])
    starts = np.flatnonzero(new_group)
    counts = np.diff(np.append(starts, n))
    return starts + (counts - 1) / 2.0, counts, order


def _expand(
    group_values: np.ndarray, index: np.ndarray, order: np.ndarray | None, dtype
) -> np.ndarray:
    if order is None:
        return group_values.astype(dtype)[index]
    out = np.empty(order.size, dtype=dtype)
    out[order] = np.repeat(group_values.astype(dtype), index)
    return out


def average_ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks of ``values`` with ties given their average rank.

    Integer-valued inputs with a range below 2**22 use a counting sort (O(n)); others one
    argsort.

    Parameters
    ----------
    values : np.ndarray, shape (n,)

    Returns
    -------
    np.ndarray of float64, shape (n,)
    """
    values = np.asarray(values).ravel()
    if values.size == 0:
        return np.zeros(0)
    avg, index, order = _rank_groups(values)
    return _expand(avg, index, order, np.float64)


def reference_key(reference: np.ndarray) -> str:
    """12-hex-digit hash of a reference array (float64 bytes)."""
    ref = np.ascontiguousarray(reference, dtype=np.float64)
    return hashlib.sha256(ref.tobytes()).hexdigest()[:12]


class QuantileNormalizer:
    """Rank-based mapping of brain voxels onto a reference distribution.

    Parameters
    ----------
    reference : np.ndarray, shape (n,)
        Non-decreasing quantiles at ``linspace(0, 1, n)`` (see :func:`build_reference`).
    """

    name = "quantile"

    def __init__(self, reference: np.ndarray):
        ref = np.asarray(reference, dtype=np.float64).ravel()
        if ref.size < 2 or not np.all(np.isfinite(ref)):
            raise ValueError("reference must hold at least 2 finite quantiles")
        if np.any(np.diff(ref) < 0):
            raise ValueError("reference quantiles must be non-decreasing")
        self.reference = ref
        self.key = f"quantile-{reference_key(ref)}"

    def __call__(self, image: np.ndarray, brain: np.ndarray) -> np.ndarray:
        brain = np.asarray(brain, dtype=bool)
        values = _brain_values(image, brain)
        n = values.size
        avg, index, order = _rank_groups(values)
        pos = avg / (n - 1) if n > 1 else np.full(avg.size, 0.5)
        grid = np.linspace(0.0, 1.0, self.reference.size)
        mapped = np.interp(pos, grid, self.reference)  # one value per tie group
        out = np.zeros(brain.shape, dtype=np.float32)
        out[brain] = _expand(mapped, index, order, np.float32)
        return out

    def __repr__(self) -> str:
        return f"QuantileNormalizer({self.reference.size} quantiles, key={self.key})"


class LinearNormalizer:
    """Linear min-max of the brain voxels to [0, 1] (the paper's ablation)."""

    name = "linear"
    key = "linear"
    reference = None

    def __call__(self, image: np.ndarray, brain: np.ndarray) -> np.ndarray:
        brain = np.asarray(brain, dtype=bool)
        values = _brain_values(image, brain)
        lo, hi = float(values.min()), float(values.max())
        out = np.zeros(brain.shape, dtype=np.float32)
        out[brain] = (values - lo) / (hi - lo) if hi > lo else 0.0
        return out

    def __repr__(self) -> str:
        return "LinearNormalizer()"


class ZScoreNormalizer:
    """Brain voxels to zero mean and unit standard deviation."""

    name = "zscore"
    key = "zscore"
    reference = None

    def __call__(self, image: np.ndarray, brain: np.ndarray) -> np.ndarray:
        brain = np.asarray(brain, dtype=bool)
        values = _brain_values(image, brain).astype(np.float64)
        sd = float(values.std())
        out = np.zeros(brain.shape, dtype=np.float32)
        out[brain] = (values - values.mean()) / sd if sd > 0 else 0.0
        return out

    def __repr__(self) -> str:
        return "ZScoreNormalizer()"


def get_normalizer(name: str, reference: np.ndarray | None = None):
    """A normalizer by name.

    Parameters
    ----------
    name : {"quantile", "linear", "zscore", "identity"}
    reference : np.ndarray, optional
        Required for ``"quantile"`` (see :func:`build_reference`).
    """
    name = name.lower()
    if name == "quantile":
        if reference is None:
            raise ValueError(
                "quantile normalization needs a reference: build one with "
                "msnb.normalize.build_reference(...) or load it from a model bundle"
            )
        return QuantileNormalizer(reference)
    if name in ("linear", "minmax"):
        return LinearNormalizer()
    if name == "zscore":
        return ZScoreNormalizer()
    if name == "identity":
        return IDENTITY
    raise ValueError(f"unknown normalization {name!r}; choose from {', '.join(NORMALIZATIONS)}")


def distribution_distance(a: np.ndarray, b: np.ndarray, *, scale: float | None = None) -> float:
    """1-D Wasserstein (earth mover's) distance between two intensity samples.

    Computed as the mean absolute difference of the two quantile functions (512 points).

    Parameters
    ----------
    a, b : np.ndarray
        Intensity samples (e.g. brain voxels after one normalization).
    scale : float, optional
        Divide by this (e.g. the pooled 1-99 percentile range) so that distances under
        normalizations with different units can be compared; default: no scaling.
    """
    d = float(np.mean(np.abs(quantile_function(a, 512) - quantile_function(b, 512))))
    return d / scale if scale else d


# --------------------------------------------------------------------------- comparisons


class NormalizationComparison:
    """Scans from several centers under several normalizations (for notebook 02).

    Attributes
    ----------
    methods : list of str
        ``"raw"`` (brain voxels as stored) and normalization names.
    scans : pandas.DataFrame
        One row per scan: scan_id, dataset, center, slice_z (a mid-brain axial slice).
    volumes : dict of (method, scan_id) to np.ndarray, shape (X, Y, Z)
        Canonical volumes, 0 outside the brain.
    brains : dict of scan_id to np.ndarray of bool
    samples : dict of (method, center) to np.ndarray
        Brain-voxel intensities pooled per center (subsampled).
    reference : np.ndarray or None
        The quantile reference used.
    """

    def __init__(self, methods, scans, volumes, brains, samples, reference):
        self.methods = list(methods)
        self.scans = scans
        self.volumes = volumes
        self.brains = brains
        self.samples = samples
        self.reference = reference

    @property
    def centers(self) -> list[str]:
        return sorted({c for _, c in self.samples})

    def slice(self, method: str, scan_id: str, z: int | None = None) -> np.ndarray:
        """Axial slice ``z`` (default: the scan's mid-brain slice) of one scan, shape (X, Y)."""
        if z is None:
            z = int(self.scans.set_index("scan_id").loc[scan_id, "slice_z"])
        return self.volumes[(method, scan_id)][:, :, int(z)]

    def distances(self):
        """Mean pairwise distance between centers' intensity distributions, per method.

        The 1-D Wasserstein distance between every two centers, divided by the method's
        pooled 1-99 percentile range so that methods with different units compare.

        Returns
        -------
        pandas.DataFrame
            Columns method, center_a, center_b, distance (one row per pair) — use
            ``.groupby("method").distance.mean()`` for the summary.
        """
        import itertools

        rows = []
        for m in self.methods:
            pooled = np.concatenate([self.samples[(m, c)] for c in self.centers])
            lo, hi = np.percentile(pooled, [1, 99])
            for a, b in itertools.combinations(self.centers, 2):
                d = distribution_distance(self.samples[(m, a)], self.samples[(m, b)], scale=hi - lo)
                rows.append({"method": m, "center_a": a, "center_b": b, "distance": d})
        return pd.DataFrame(rows)


def compare_normalizations(
    scans,
    *,
    methods: tuple[str, ...] = ("raw", "linear", "quantile"),
    reference: np.ndarray | None = None,
    per_center: int = 1,
    n_samples: int = 20000,
    slice_fraction: float = 0.55,
    seed: int = 0,
    progress: bool = False,
) -> NormalizationComparison:
    """Normalize a few scans of every center with each method.

    Parameters
    ----------
    scans : sequence of Scan
    methods : tuple of str, default ("raw", "linear", "quantile")
        ``"raw"`` is the stored intensity inside the brain.
    reference : np.ndarray, optional
        Quantile reference; default: the mean quantile function of the chosen scans.
    per_center : int, default 1
        Scans kept per center (the first ones, in order).
    n_samples : int, default 20000
        Brain voxels sampled per scan for the histograms.
    slice_fraction : float, default 0.55
        Height of the shown axial slice within the brain's z extent.
    seed : int, default 0
    """
    chosen, count = [], {}
    for s in scans:
        key = (s.dataset, s.center)
        if count.get(key, 0) < per_center:
            chosen.append(s)
            count[key] = count.get(key, 0) + 1
    rng = np.random.default_rng(seed)
    loaded = []
    for s in tqdm(chosen, desc="loading", disable=not progress):
        flair, brain = load_flair(s)
        loaded.append((s, flair.data, brain))
    if "quantile" in methods and reference is None:
        reference = build_reference([(img, br) for _, img, br in loaded])
    normalizers = {
        m: (None if m == "raw" else get_normalizer(m, reference if m == "quantile" else None))
        for m in methods
    }
    volumes, brains, samples, rows = {}, {}, {}, []
    for s, img, br in loaded:
        center = (
            f"{s.dataset}:{s.center}" if len({x.dataset for x, _, _ in loaded}) > 1 else s.center
        )
        zs = np.flatnonzero(br.any(axis=(0, 1)))
        z = int(zs[0] + slice_fraction * (zs[-1] - zs[0]))
        rows.append({"scan_id": s.scan_id, "dataset": s.dataset, "center": center, "slice_z": z})
        brains[s.scan_id] = br
        idx = np.flatnonzero(br.ravel())
        pick = rng.choice(idx, size=min(n_samples, idx.size), replace=False)
        for m, norm in normalizers.items():
            vol = np.where(br, img, 0).astype(np.float32) if norm is None else norm(img, br)
            volumes[(m, s.scan_id)] = vol
            prev = samples.get((m, center))
            vals = vol.ravel()[pick]
            samples[(m, center)] = vals if prev is None else np.concatenate([prev, vals])
    return NormalizationComparison(methods, pd.DataFrame(rows), volumes, brains, samples, reference)
