"""The synthetic multi-center FLAIR phantom: msnb's embedded default data.

Implements ``PHANTOM.md``: subjects are warped copies of the MNI152 2009a tissue
templates shipped with nilearn, lesions come from a log-normal generator with a
periventricular preference, each simulated scanner ("center") applies slice thickness,
contrast, bias field, Rician noise, gamma, intensity scale and bright outliers, and
simulated raters outline the lesions. Four datasets are written in the real datasets'
layouts so that :mod:`msnb.datasets` reads them unchanged:

- ``isbi2015/training/trainingNN/{preprocessed,masks}/...`` (2 raters, longitudinal,
  skull-stripped: the FLAIR is exactly 0 outside the brain),
- ``msseg2016/{Training,Testing}/Center_CC/Patient_PP/...`` (7 raters + consensus +
  brain mask; the test set adds the unseen center 03),
- ``3dmrms/patientXX/...`` (consensus + brain mask),

plus the noiseless truth under ``<dataset>/truth/`` (lesion mask and a tissue label map
``0`` background, ``1`` CSF, ``2`` GM, ``3`` WM, ``4`` ventricles) and ``phantom.json``
(preset, seed, every parameter, per-scan statistics, msnb version).

Every number of PHANTOM.md is a default of one of the parameter dataclasses below.
Randomness is seeded per scan from ``(seed, dataset, subject, timepoint)``, so the output
does not depend on the number of worker processes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from msnb.raters import RaterParams, consensus_mask, simulate_raters, smooth_field

__all__ = [
    "AnatomyParams",
    "LesionParams",
    "CenterParams",
    "JitterParams",
    "RaterParams",
    "DatasetSpec",
    "PhantomConfig",
    "CENTERS",
    "make_config",
    "generate_phantom",
    "simulate_scan",
    "render_contrast",
    "measure_contrast",
    "register_cli",
]

PRESETS = ("tiny", "quick", "standard")


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class AnatomyParams:
    """Per-subject anatomical variation (PHANTOM.md section 0).

    Attributes
    ----------
    scale_pct : float, default 5.0
        Isotropic scale drawn uniformly in +/- this percentage.
    rotation_deg : float, default 5.0
        Rotation about each axis drawn uniformly in +/- this many degrees.
    elastic_mm : float, default 2.0
        Maximum norm of the smooth elastic displacement.
    elastic_spacing_mm : float, default 20.0
        Control-point spacing of the elastic displacement.
    ventricle_dilation_mm : tuple of float, default (0.0, 2.0)
        Range of the ventricle enlargement.
    ventricle_box_mm : tuple, default ((-35, 35), (-45, 35), (-5, 35))
        MNI box in which the ventricles are searched.
    ventricle_csf : float, default 0.5
        CSF fraction above which a voxel can be ventricle.
    n_ventricle_components : int, default 2
        Largest CSF components kept as ventricles.
    """

    scale_pct: float = 5.0
    rotation_deg: float = 5.0
    elastic_mm: float = 2.0
    elastic_spacing_mm: float = 20.0
    ventricle_dilation_mm: tuple[float, float] = (0.0, 2.0)
    ventricle_box_mm: tuple[tuple[float, float], ...] = ((-35, 35), (-45, 35), (-5, 35))
    ventricle_csf: float = 0.5
    n_ventricle_components: int = 2


@dataclass(frozen=True)
class LesionParams:
    """Lesion generator (PHANTOM.md section 2).

    Attributes
    ----------
    log_voxels_mean, log_voxels_sd : float, default 2.92, 1.61
        ``ln`` of the lesion volume in mm^3 (voxels at 1 mm) is normal with these.
    voxels_range : tuple of float, default (3, 5000)
        Truncation of single-lesion volumes (mm^3).
    load_range_ml : tuple of float, default (0.3, 55)
        Clipping of the total lesion load.
    cap_probability : float, default 0.8
        Probability that a subject has confluent periventricular caps.
    n_caps : tuple of int, default (1, 3)
        Number of caps (inclusive range).
    cap_share : tuple of float, default (0.25, 0.5)
        Share of the load held by the caps.
    cap_thickness_mm : tuple of float, default (3.0, 6.0)
        Cap thickness away from the ventricle wall.
    decay_mm : float, default 11.2
        Lesion centres are drawn with weight ``WM^2 exp(-d_vent / decay_mm)``.
    infratentorial_z_mm, infratentorial_factor : float, default -20, 0.4
        Weight factor below this MNI z.
    axis_ratio : tuple of float, default (1.5, 3.0)
        Long-to-short axis ratio of the ellipsoids.
    dawson_mm : float, default 15.0
        Within this distance of the ventricles the long axis follows ``grad d_vent``.
    boundary_amplitude_mm : tuple of float, default (0.5, 1.0)
        Amplitude range of the smooth boundary noise.
    boundary_corr_mm : float, default 3.0
        Its correlation length.
    pv_width_mm : float, default 0.5
        Partial volume ``sigmoid(-signed_distance / pv_width_mm)``.
    ratio_sd : float, default 0.068
        Per-lesion SD of the lesion/WM ratio.
    texture_sd, texture_corr_mm : float, default 0.03, 0.5
        Texture inside lesions (relative SD of the ratio, correlation length).
    new_per_interval : float, default 2.0
        Poisson mean of new lesions between two timepoints.
    volume_log_sd : float, default 0.15
        Lesion volume change ``x exp(N(0, volume_log_sd))`` between timepoints.
    vanish_probability : float, default 0.05
        Probability that a lesion vanishes between two timepoints.
    periventricular_mm : float, default 3.0
        Distance defining "periventricular" in the statistics.
    """

    log_voxels_mean: float = 2.92
    log_voxels_sd: float = 1.61
    voxels_range: tuple[float, float] = (3.0, 5000.0)
    load_range_ml: tuple[float, float] = (0.3, 55.0)
    cap_probability: float = 0.8
    n_caps: tuple[int, int] = (1, 3)
    cap_share: tuple[float, float] = (0.25, 0.5)
    cap_thickness_mm: tuple[float, float] = (3.0, 6.0)
    decay_mm: float = 11.2
    infratentorial_z_mm: float = -20.0
    infratentorial_factor: float = 0.4
    axis_ratio: tuple[float, float] = (1.5, 3.0)
    dawson_mm: float = 15.0
    boundary_amplitude_mm: tuple[float, float] = (0.5, 1.0)
    boundary_corr_mm: float = 3.0
    pv_width_mm: float = 0.5
    ratio_sd: float = 0.068
    texture_sd: float = 0.03
    texture_corr_mm: float = 0.5
    new_per_interval: float = 2.0
    volume_log_sd: float = 0.15
    vanish_probability: float = 0.05
    periventricular_mm: float = 3.0


@dataclass(frozen=True)
class CenterParams:
    """One simulated scanner (a row of PHANTOM.md section 3's table).

    Attributes
    ----------
    name : str
        Short name (``ISB``, ``M01`` ...).
    label : str
        Center label used in folder names (``"01"`` for ``Center_01``).
    scanner : str
    slice_mm : float
        Slice thickness simulated along z.
    noise_pct : float
        Rician noise SD as a percentage of the WM signal.
    inu_pct : float
        Bias field peak-to-peak over the brain, in percent.
    gamma : float
        Non-linearity ``I^gamma`` after scaling to [0, 1].
    lesion_ratio, gm_ratio, csf_ratio : float
        Contrast to white matter.
    scale : float
        Intensity units.
    outlier_fraction : float
        Fraction of brain voxels set to ``outlier_k`` x WM (0.0002 = 0.02 %).
    outlier_k : float
    """

    name: str
    label: str
    scanner: str
    slice_mm: float
    noise_pct: float
    inu_pct: float
    gamma: float
    lesion_ratio: float
    gm_ratio: float
    csf_ratio: float
    scale: float
    outlier_fraction: float
    outlier_k: float


CENTERS: dict[str, CenterParams] = {
    c.name: c
    for c in (
        CenterParams("ISB", "isbi", "Philips 3T 2D", 2.2, 3.0, 5.0, 1.00, 1.32, 1.10, 0.25, 1.0, 0.0, 0.0),
        CenterParams("M01", "01", "Siemens Verio 3T", 1.0, 1.5, 10.0, 0.90, 1.40, 1.06, 0.30, 400.0, 0.0002, 3.0),
        CenterParams("M07", "07", "Siemens Aera 1.5T", 1.25, 2.5, 10.0, 1.10, 1.25, 1.09, 0.22, 150.0, 0.0002, 3.0),
        CenterParams("M08", "08", "Philips Ingenia 3T", 1.0, 1.5, 10.0, 1.00, 1.35, 1.05, 0.35, 1500.0, 0.0002, 3.0),
        CenterParams("M03", "03", "GE 3T (unseen)", 1.0, 2.0, 15.0, 0.78, 1.50, 1.18, 0.40, 4000.0, 0.0005, 5.0),
        CenterParams("LJ", "ljubljana", "Siemens Trio 3T", 0.8, 3.0, 10.0, 1.20, 1.40, 1.10, 0.30, 800.0, 0.0003, 4.0),
    )
}  # fmt: skip


@dataclass(frozen=True)
class JitterParams:
    """Per-subject jitter of the center parameters (PHANTOM.md section 3).

    Attributes
    ----------
    gamma_log_sd : float, default 0.05
        ``gamma x exp(N(0, gamma_log_sd))``.
    ratio : float, default 0.03
        Contrast ratios +/- uniform.
    noise_rel : float, default 0.2
        Noise +/- this relative amount (uniform).
    bias_sd : float, default 0.5
        SD of the low-resolution log bias field before scaling to the INU.
    bias_grid : int, default 4
        Control points per axis of the bias field.
    """

    gamma_log_sd: float = 0.05
    ratio: float = 0.03
    noise_rel: float = 0.2
    bias_sd: float = 0.5
    bias_grid: int = 4


@dataclass(frozen=True)
class DatasetSpec:
    """One simulated dataset (PHANTOM.md section 5).

    Attributes
    ----------
    key : str
        ``isbi2015``, ``msseg2016_train``, ``msseg2016_test`` or ``3dmrms``.
    centers : tuple of (str, int)
        Center name and number of subjects.
    timepoints : tuple of int
        Timepoints per subject, cycled (only ISBI is longitudinal).
    load_median_ml, load_sigma : float
        Total lesion load ``LogNormal(ln median, sigma)``.
    raters : RaterParams
    """

    key: str
    centers: tuple[tuple[str, int], ...]
    load_median_ml: float
    load_sigma: float
    raters: RaterParams
    timepoints: tuple[int, ...] = (1,)

    @property
    def n_subjects(self) -> int:
        return sum(n for _, n in self.centers)


ISBI_RATERS = RaterParams(2, 0.5, (0.7, 0.7), 0.4, 8.0, 5.0)
MSSEG_RATERS = RaterParams(7, 0.9, (0.9, 1.0), 0.5, 8.0, 5.0)
MRMS_RATERS = RaterParams(3, 0.4, (0.6, 0.6), 0.3, 5.0, 2.0)

# The table's rater amplitudes were calibrated on 1 mm masks. On coarser phantom grids the
# same amplitudes give higher Dice (boundary voxels are larger), so the individual
# amplitudes are re-calibrated by simulation on the quick preset (1.5 mm) to hit the
# section-4 targets (MSSEG rater-consensus 0.72, rater-rater 0.61; ISBI 0.73).
RATER_CALIBRATION: dict[float, dict[str, dict]] = {
    1.5: {"isbi2015": {"a_individual": (0.65, 0.65)}, "msseg": {"a_individual": (1.15, 1.25)}},
    3.0: {"isbi2015": {"a_individual": (0.65, 0.65)}, "msseg": {"a_individual": (1.15, 1.25)}},
}


@dataclass(frozen=True)
class PhantomConfig:
    """Everything that defines a phantom (written to ``phantom.json``).

    Attributes
    ----------
    preset : str
    voxel_mm : float
        Isotropic voxel size of the phantom grid.
    datasets : tuple of DatasetSpec
    centers : dict of str to CenterParams
    anatomy, lesions, jitter : parameter dataclasses
    """

    preset: str
    voxel_mm: float
    datasets: tuple[DatasetSpec, ...]
    centers: dict[str, CenterParams] = field(default_factory=lambda: dict(CENTERS))
    anatomy: AnatomyParams = AnatomyParams()
    lesions: LesionParams = LesionParams()
    jitter: JitterParams = JitterParams()

    def dataset(self, key: str) -> DatasetSpec:
        return next(d for d in self.datasets if d.key == key)


def make_config(preset: str = "tiny") -> PhantomConfig:
    """The parameters of a preset.

    ``tiny`` (tests: 3 mm grid, 4 + 2 + 3 + 2 scans), ``quick`` (PHANTOM.md section 5:
    1.5 mm grid, 13 + 6 + 9 + 6 scans), ``standard`` (1 mm grid, 21 + 15 + 38 + 30 scans,
    the real datasets' counts). The quick preset uses 1.5 mm to generate in about a minute
    on two cores; rater amplitudes are re-calibrated for coarse grids
    (:data:`RATER_CALIBRATION`).
    """
    if preset == "tiny":
        voxel, isbi, tps = 3.0, 2, (2,)
        train = (("M01", 1), ("M08", 1))
        test = (("M01", 1), ("M07", 1), ("M03", 1))
        mrms = 2
    elif preset == "quick":
        voxel, isbi, tps = 1.5, 3, (4, 5, 4)
        train = (("M01", 2), ("M07", 2), ("M08", 2))
        test = (("M01", 2), ("M07", 2), ("M08", 2), ("M03", 3))
        mrms = 6
    elif preset == "standard":
        voxel, isbi, tps = 1.0, 5, (4, 4, 5, 4, 4)
        train = (("M01", 5), ("M07", 5), ("M08", 5))
        test = (("M01", 10), ("M07", 10), ("M08", 10), ("M03", 8))
        mrms = 30
    else:
        raise ValueError(f"unknown phantom preset {preset!r}; choose from {', '.join(PRESETS)}")
    calib = RATER_CALIBRATION.get(voxel, {})
    isbi_r = dataclasses.replace(ISBI_RATERS, **calib.get("isbi2015", {}))
    msseg_r = dataclasses.replace(MSSEG_RATERS, **calib.get("msseg", {}))
    mrms_r = dataclasses.replace(MRMS_RATERS, **calib.get("3dmrms", {}))
    return PhantomConfig(
        preset=preset,
        voxel_mm=voxel,
        datasets=(
            DatasetSpec("isbi2015", (("ISB", isbi),), 8.0, 0.9, isbi_r, tps),
            DatasetSpec("msseg2016_train", train, 10.0, 1.2, msseg_r),
            DatasetSpec("msseg2016_test", test, 10.0, 1.2, msseg_r),
            DatasetSpec("3dmrms", (("LJ", mrms),), 13.9, 2.0, mrms_r),
        ),
    )


# --------------------------------------------------------------------------- seeding


def _rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator seeded from ``seed`` and stable hashes of ``keys``."""
    words = [int(seed)] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


# --------------------------------------------------------------------------- templates


@dataclass
class _Template:
    gm: np.ndarray  # 1 mm, cropped, prefiltered for the target grid
    wm: np.ndarray
    mask: np.ndarray
    dvent: np.ndarray  # distance (mm) to the ventricles
    origin: np.ndarray  # world coordinate of voxel (0, 0, 0)
    grid_origin: np.ndarray  # phantom grid
    grid_shape: tuple[int, int, int]
    voxel_mm: float
    centre: np.ndarray

    @property
    def affine(self) -> np.ndarray:
        aff = np.diag([self.voxel_mm] * 3 + [1.0])
        aff[:3, 3] = self.grid_origin
        return aff


_TEMPLATES: dict[tuple, _Template] = {}


def _load_template(voxel_mm: float, anatomy: AnatomyParams) -> _Template:
    key = (float(voxel_mm), anatomy)
    if key in _TEMPLATES:
        return _TEMPLATES[key]
    import warnings

    from nilearn import datasets as nds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask_img = nds.load_mni152_brain_mask(resolution=1)
        gm = np.asarray(nds.load_mni152_gm_template(resolution=1).get_fdata(), np.float32)
        wm = np.asarray(nds.load_mni152_wm_template(resolution=1).get_fdata(), np.float32)
    mask = np.asarray(mask_img.get_fdata(), np.float32)
    aff = mask_img.affine
    # crop to the brain + margin
    nz = np.argwhere(mask > 0)
    lo = np.maximum(nz.min(0) - 12, 0)
    hi = np.minimum(nz.max(0) + 13, mask.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    gm, wm, mask = gm[sl], wm[sl], mask[sl]
    origin = aff[:3, 3] + lo * np.diag(aff)[:3]
    csf = np.clip(mask - gm - wm, 0, 1)
    # ventricles: largest CSF components in a central box
    world = [origin[k] + np.arange(mask.shape[k]) for k in range(3)]
    box = np.ones(mask.shape, bool)
    for k, (a, b) in enumerate(anatomy.ventricle_box_mm):
        inside = (world[k] > a) & (world[k] < b)
        box &= inside.reshape([-1 if j == k else 1 for j in range(3)])
    labels, n = ndi.label((csf > anatomy.ventricle_csf) & box)
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.argsort(sizes)[::-1][: anatomy.n_ventricle_components] + 1
    vent = np.isin(labels, keep)
    dvent = ndi.distance_transform_edt(~vent).astype(np.float32)
    # prefilter for the target grid
    sigma = np.sqrt(max(voxel_mm**2 - 1.0, 0.0)) / 2.355
    if sigma > 0.1:
        gm, wm, mask = (ndi.gaussian_filter(a, sigma) for a in (gm, wm, mask))
    bmin = origin + nz.min(0) - lo - 4
    bmax = origin + nz.max(0) - lo + 4
    shape = tuple(int(np.ceil((b - a) / voxel_mm)) + 1 for a, b in zip(bmin, bmax, strict=True))
    centre = origin + np.argwhere(mask > 0.5).mean(0)
    tpl = _Template(gm, wm, mask, dvent, origin, bmin, shape, float(voxel_mm), centre)
    _TEMPLATES[key] = tpl
    return tpl


# --------------------------------------------------------------------------- anatomy


@dataclass
class Subject:
    """A subject's anatomy on the phantom grid (fractions in [0, 1], distances in mm)."""

    wm: np.ndarray
    gm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    ventricles: np.ndarray
    dvent: np.ndarray
    affine: np.ndarray
    voxel_mm: float
    boundary_noise: np.ndarray
    texture: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.wm.shape

    def world(self, axis: int) -> np.ndarray:
        return self.affine[axis, 3] + self.voxel_mm * np.arange(self.shape[axis])


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _zoom_to(arr: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    out = ndi.zoom(arr, [s / a for s, a in zip(shape, arr.shape, strict=True)], order=order,
                   mode="nearest")  # fmt: skip
    out = out[tuple(slice(0, s) for s in shape)]
    if out.shape != tuple(shape):
        out = np.pad(out, [(0, s - o) for s, o in zip(shape, out.shape, strict=True)], mode="edge")
    return out


def _upsample_smooth(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Cubic upsampling to a quarter of ``shape``, then linear: smooth and fast."""
    mid = tuple(max(min(-(-s // 4), s), c) for s, c in zip(shape, coarse.shape, strict=True))
    return _zoom_to(_zoom_to(coarse, mid, 3), shape, 1).astype(np.float32)


def make_subject(
    tpl: _Template, anatomy: AnatomyParams, lesions: LesionParams, rng: np.random.Generator
) -> Subject:
    """Warp the templates into one subject (scale, rotation, elastic, ventricle dilation)."""
    v = tpl.voxel_mm
    shape = tpl.grid_shape
    scale = 1.0 + rng.uniform(-1, 1) * anatomy.scale_pct / 100.0
    rot = _rotation(np.deg2rad(rng.uniform(-1, 1, 3) * anatomy.rotation_deg))
    inv = np.linalg.inv(rot * scale)
    # elastic displacement on a coarse grid
    coarse = tuple(int(np.ceil(s * v / anatomy.elastic_spacing_mm)) + 2 for s in shape)
    disp = rng.standard_normal((3, *coarse))
    disp = np.stack([_upsample_smooth(d, shape) for d in disp])
    norm = np.sqrt((disp**2).sum(0)).max()
    disp *= anatomy.elastic_mm * rng.uniform(0.5, 1.0) / max(norm, 1e-6)
    dil = rng.uniform(*anatomy.ventricle_dilation_mm)
    # source coordinates in template voxels
    axes = [tpl.grid_origin[k] + v * np.arange(shape[k]) - tpl.centre[k] for k in range(3)]
    coords = np.empty((3, *shape), np.float32)
    for i in range(3):
        c = tpl.centre[i] - tpl.origin[i]
        acc = np.full(shape, c, np.float32)
        for j in range(3):
            acc += (
                (inv[i, j] * axes[j])
                .astype(np.float32)
                .reshape([-1 if k == j else 1 for k in range(3)])
            )
        coords[i] = acc + disp[i]
    del disp

    def sample(a: np.ndarray, cval: float = 0.0) -> np.ndarray:
        return ndi.map_coordinates(a, coords, order=1, cval=cval, prefilter=False).astype(
            np.float32
        )

    gm, wm, maskf = sample(tpl.gm), sample(tpl.wm), sample(tpl.mask)
    dv = sample(tpl.dvent, cval=100.0)
    brain = maskf >= 0.5
    vent_frac = np.clip(dil + 1.0 - dv, 0.0, 1.0) * brain
    gm *= 1 - vent_frac
    wm *= 1 - vent_frac
    gm *= brain
    wm *= brain
    csf = np.clip(np.where(brain, np.maximum(maskf, vent_frac) - gm - wm, 0.0), 0, 1).astype(
        np.float32
    )
    ventricles = (vent_frac >= 0.5) & brain
    dvent = np.maximum(dv - dil - 0.5, 0.0).astype(np.float32) * scale
    amp = rng.uniform(*lesions.boundary_amplitude_mm)
    bnoise = smooth_field(shape, v, lesions.boundary_corr_mm, rng) * amp
    texture = smooth_field(shape, v, lesions.texture_corr_mm, rng)
    return Subject(wm, gm, csf, brain, ventricles, dvent, tpl.affine, v, bnoise, texture)


# --------------------------------------------------------------------------- lesions


@dataclass
class Lesion:
    """One lesion: an ellipsoid or a periventricular cap (positions in world mm)."""

    kind: str  # "ellipsoid" | "cap"
    centre: np.ndarray
    size: float  # ellipsoid: long semi-axis; cap: radius R
    ratio: float  # ellipsoid: axis ratio; cap: thickness
    direction: np.ndarray
    z: float  # ratio z-score (lesion/WM = center ratio + ratio_sd * z)
    volume_mm3: float


def _box(sub: Subject, centre: np.ndarray, half: float) -> tuple[slice, ...]:
    v = sub.voxel_mm
    idx = (centre - sub.affine[:3, 3]) / v
    lo = np.maximum(np.floor(idx - half / v).astype(int), 0)
    hi = np.minimum(np.ceil(idx + half / v).astype(int) + 1, sub.shape)
    return tuple(slice(a, max(a, b)) for a, b in zip(lo, hi, strict=True))


def _box_coords(sub: Subject, sl: tuple[slice, ...], centre: np.ndarray) -> list[np.ndarray]:
    out = []
    for k in range(3):
        w = sub.affine[k, 3] + sub.voxel_mm * np.arange(sl[k].start, sl[k].stop) - centre[k]
        out.append(w.astype(np.float32).reshape([-1 if j == k else 1 for j in range(3)]))
    return out


def _lesion_sd(sub: Subject, les: Lesion, margin: float = 7.0):
    """Signed distance (mm) of one lesion in its bounding box."""
    if les.kind == "cap":
        half = les.size + les.ratio + margin
        sl = _box(sub, les.centre, half)
        x, y, z = _box_coords(sub, sl, les.centre)
        r = np.sqrt(x**2 + y**2 + z**2)
        sd = np.maximum(r - les.size, sub.dvent[sl] - les.ratio)
        return sl, sd - sub.boundary_noise[sl]
    a = les.size
    b = a / les.ratio
    e1 = les.direction
    tmp = np.array([1.0, 0, 0]) if abs(e1[0]) < 0.9 else np.array([0, 1.0, 0])
    e2 = np.cross(e1, tmp)
    e2 /= np.linalg.norm(e2)
    e3 = np.cross(e1, e2)
    sl = _box(sub, les.centre, a + margin)
    x, y, z = _box_coords(sub, sl, les.centre)
    q1 = (x * e1[0] + y * e1[1] + z * e1[2]) / a
    q2 = (x * e2[0] + y * e2[1] + z * e2[2]) / b
    q3 = (x * e3[0] + y * e3[1] + z * e3[2]) / b
    rho = np.sqrt(q1**2 + q2**2 + q3**2)
    r = np.sqrt(x**2 + y**2 + z**2)
    radial = np.where(rho > 1e-6, r / np.maximum(rho, 1e-6), b)
    sd = radial * (rho - 1.0)
    return sl, sd - sub.boundary_noise[sl]


def _ellipsoid_size(volume_mm3: float, ratio: float) -> float:
    return float((3.0 * volume_mm3 * ratio**2 / (4.0 * np.pi)) ** (1.0 / 3.0))


def _centre_weights(sub: Subject, p: LesionParams) -> np.ndarray:
    w = sub.wm**2 * np.exp(-sub.dvent / p.decay_mm) * (sub.csf < 0.5) * sub.brain
    zfac = np.where(sub.world(2) < p.infratentorial_z_mm, p.infratentorial_factor, 1.0)
    w = w * zfac.reshape(1, 1, -1)
    return w.ravel().astype(np.float64)


def _draw_ellipsoids(
    sub: Subject, p: LesionParams, rng: np.random.Generator, volumes: list[float], weights
) -> list[Lesion]:
    if not volumes:
        return []
    prob = weights / weights.sum()
    idx = rng.choice(weights.size, size=len(volumes), p=prob)
    v = sub.voxel_mm
    out = []
    for vol, flat in zip(volumes, idx, strict=True):
        ijk = np.array(np.unravel_index(flat, sub.shape))
        centre = sub.affine[:3, 3] + v * (ijk + rng.uniform(-0.5, 0.5, 3))
        ratio = rng.uniform(*p.axis_ratio)
        direction = rng.standard_normal(3)
        if sub.dvent[tuple(ijk)] < p.dawson_mm:
            lo = np.maximum(ijk - 1, 0)
            hi = np.minimum(ijk + 1, np.array(sub.shape) - 1)
            grad = np.array(
                [
                    sub.dvent[tuple(np.where(np.arange(3) == k, hi, ijk))]
                    - sub.dvent[tuple(np.where(np.arange(3) == k, lo, ijk))]
                    for k in range(3)
                ],
                float,
            )
            if np.linalg.norm(grad) > 1e-6:
                direction = grad
        direction = direction / np.linalg.norm(direction)
        out.append(
            Lesion(
                "ellipsoid",
                centre,
                _ellipsoid_size(vol, ratio),
                ratio,
                direction,
                float(rng.standard_normal()),
                float(vol),
            )
        )
    return out


def _sample_volumes(p: LesionParams, rng: np.random.Generator, budget_mm3: float) -> list[float]:
    vols: list[float] = []
    total = 0.0
    lo, hi = p.voxels_range
    while total < budget_mm3:
        v = float(np.exp(rng.normal(p.log_voxels_mean, p.log_voxels_sd)))
        if not lo <= v <= hi:
            continue
        if total + v > budget_mm3:
            v = budget_mm3 - total
            if v < lo:
                break
        vols.append(v)
        total += v
    return vols


def _cap_voxels(sub: Subject, les: Lesion) -> int:
    sl, sd = _lesion_sd(sub, les)
    return int(((sd < 0) & (sub.csf[sl] < 0.5) & sub.brain[sl]).sum())


def _make_cap(sub: Subject, p: LesionParams, rng: np.random.Generator, volume_mm3: float):
    v = sub.voxel_mm
    cand = np.flatnonzero(
        ((sub.dvent > 0) & (sub.dvent <= v) & (sub.wm > 0.3) & (sub.csf < 0.5)).ravel()
    )
    if cand.size == 0:
        return None
    ijk = np.array(np.unravel_index(rng.choice(cand), sub.shape))
    centre = sub.affine[:3, 3] + v * ijk
    thick = rng.uniform(*p.cap_thickness_mm)
    les = Lesion("cap", centre, 1.0, thick, np.zeros(3), float(rng.standard_normal()), volume_mm3)
    target = volume_mm3 / v**3
    lo, hi = 0.5, 40.0
    for _ in range(14):
        les.size = 0.5 * (lo + hi)
        if _cap_voxels(sub, les) < target:
            lo = les.size
        else:
            hi = les.size
    les.size = 0.5 * (lo + hi)
    return les


def generate_lesions(
    sub: Subject, p: LesionParams, rng: np.random.Generator, load_ml: float
) -> list[Lesion]:
    """Draw the lesions of a subject's first timepoint for a total load ``load_ml``.

    Caps (with probability ``cap_probability``) hold ``cap_share`` of the load; the rest
    are ellipsoids with log-normal volumes, centres drawn with a periventricular weight.
    """
    budget = float(np.clip(load_ml, *p.load_range_ml)) * 1000.0
    lesions: list[Lesion] = []
    if rng.random() < p.cap_probability:
        n_caps = int(rng.integers(p.n_caps[0], p.n_caps[1] + 1))
        share = rng.uniform(*p.cap_share)
        for _ in range(n_caps):
            cap = _make_cap(sub, p, rng, budget * share / n_caps)
            if cap is not None:
                lesions.append(cap)
                budget -= cap.volume_mm3
    weights = _centre_weights(sub, p)
    lesions += _draw_ellipsoids(sub, p, rng, _sample_volumes(p, rng, budget), weights)
    return lesions


def evolve_lesions(
    sub: Subject, lesions: list[Lesion], p: LesionParams, rng: np.random.Generator
) -> list[Lesion]:
    """One follow-up interval: volume changes, vanishing lesions, Poisson new lesions."""
    out = []
    for les in lesions:
        if les.kind == "ellipsoid" and rng.random() < p.vanish_probability:
            continue
        f = float(np.exp(rng.normal(0.0, p.volume_log_sd)))
        new = dataclasses.replace(les, volume_mm3=les.volume_mm3 * f)
        new.size = les.size * (f**0.5 if les.kind == "cap" else f ** (1 / 3))
        out.append(new)
    n_new = int(rng.poisson(p.new_per_interval))
    vols = []
    while len(vols) < n_new:
        v = float(np.exp(rng.normal(p.log_voxels_mean, p.log_voxels_sd)))
        if p.voxels_range[0] <= v <= p.voxels_range[1]:
            vols.append(v)
    return out + _draw_ellipsoids(sub, p, rng, vols, _centre_weights(sub, p))


def rasterize_lesions(sub: Subject, lesions: list[Lesion], p: LesionParams):
    """Signed distance (mm), partial volume and per-voxel ratio z-score of a lesion set."""
    sd = np.full(sub.shape, 50.0, np.float32)
    zmap = np.zeros(sub.shape, np.float32)
    for les in lesions:
        sl, s = _lesion_sd(sub, les)
        closer = s < sd[sl]
        sd[sl] = np.where(closer, s, sd[sl])
        zmap[sl] = np.where(closer, les.z, zmap[sl])
    pv = 1.0 / (1.0 + np.exp(np.clip(sd / p.pv_width_mm, -50, 50)))
    pv = (pv * (1.0 - sub.csf) * sub.brain * (~sub.ventricles)).astype(np.float32)
    return sd, pv, zmap


# --------------------------------------------------------------------------- center model


def render_contrast(
    sub: Subject,
    pv: np.ndarray,
    zmap: np.ndarray,
    ratios: dict[str, float],
    lesions: LesionParams,
) -> np.ndarray:
    """Step 2 of the center model: ``S = sum_k f_k mu_k`` (WM = 1), lesions on top.

    ``ratios`` holds ``lesion``, ``gm`` and ``csf`` (to WM). Lesion voxels get
    ``S (1 + (r - 1) PV)`` with ``r = lesion + ratio_sd * z`` per lesion plus texture.
    """
    s = sub.wm + ratios["gm"] * sub.gm + ratios["csf"] * sub.csf
    r = ratios["lesion"] + lesions.ratio_sd * zmap + lesions.texture_sd * sub.texture
    return (s * (1.0 + (r - 1.0) * pv)).astype(np.float32)


def measure_contrast(image: np.ndarray, sub: Subject, pv: np.ndarray) -> dict[str, float]:
    """Median lesion/WM and GM/WM ratios of an image (pure-tissue voxels).

    WM: ``wm >= 0.95`` and no lesion; GM: ``gm >= 0.9`` mixed with WM only (``csf <= 0.02``;
    the 0.5 % purest GM voxels when there are too few on a coarse grid); lesion:
    ``PV >= 0.95`` with ``wm >= 0.9``.
    """
    clean = pv < 0.01
    wm_ref = float(np.median(image[(sub.wm >= 0.95) & clean]))
    gm_sel = (sub.gm >= 0.9) & (sub.csf <= 0.02) & clean
    if gm_sel.sum() < 50:
        thr = np.quantile(sub.gm[sub.brain], 0.995)
        gm_sel = (sub.gm >= thr) & clean
    les_sel = (pv >= 0.95) & (sub.wm >= 0.9)
    out = {"gm_wm": float(np.median(image[gm_sel])) / wm_ref, "lesion_wm": float("nan")}
    if les_sel.any():
        out["lesion_wm"] = float(np.median(image[les_sel])) / wm_ref
    return out


def _slice_thickness(vol: np.ndarray, voxel_mm: float, slice_mm: float) -> np.ndarray:
    if slice_mm <= voxel_mm * 1.001:
        return vol
    sigma = np.sqrt(slice_mm**2 - voxel_mm**2) / 2.355 / voxel_mm
    blurred = ndi.gaussian_filter1d(vol, sigma, axis=2, mode="nearest")
    n = vol.shape[2]
    m = max(int(round(n * voxel_mm / slice_mm)), 2)
    zc = np.linspace(0, n - 1, m)
    down = ndi.map_coordinates(
        blurred,
        np.meshgrid(*[np.arange(s) for s in vol.shape[:2]], zc, indexing="ij"),
        order=1,
        mode="nearest",
    )
    up_idx = np.linspace(0, m - 1, n)
    return ndi.map_coordinates(
        down,
        np.meshgrid(*[np.arange(s) for s in vol.shape[:2]], up_idx, indexing="ij"),
        order=1,
        mode="nearest",
    ).astype(np.float32)


def _jitter_center(c: CenterParams, j: JitterParams, rng: np.random.Generator) -> dict:
    return {
        "gamma": c.gamma * float(np.exp(rng.normal(0.0, j.gamma_log_sd))),
        "lesion": c.lesion_ratio + rng.uniform(-j.ratio, j.ratio),
        "gm": c.gm_ratio + rng.uniform(-j.ratio, j.ratio),
        "csf": c.csf_ratio + rng.uniform(-j.ratio, j.ratio),
        "noise": c.noise_pct / 100.0 * (1.0 + rng.uniform(-j.noise_rel, j.noise_rel)),
    }


def apply_center(
    sub: Subject,
    pv: np.ndarray,
    zmap: np.ndarray,
    center: CenterParams,
    lesions: LesionParams,
    jitter: JitterParams,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict]:
    """The center model of PHANTOM.md section 3, in order (returns image and jittered values).

    1 slice thickness (on the tissue and lesion fractions), 2 contrast, 3 bias field,
    4 Rician noise, 5 gamma, 6 scale and bright outliers. The image is 0 outside the brain.
    """
    jit = _jitter_center(center, jitter, rng)
    v = sub.voxel_mm
    blurred = Subject(
        *(_slice_thickness(a, v, center.slice_mm) for a in (sub.wm, sub.gm, sub.csf)),
        sub.brain,
        sub.ventricles,
        sub.dvent,
        sub.affine,
        v,
        sub.boundary_noise,
        sub.texture,
    )
    pv_b = _slice_thickness(pv, v, center.slice_mm)
    img = render_contrast(blurred, pv_b, zmap, jit, lesions)
    # bias field
    g = jitter.bias_grid
    logb = _upsample_smooth(rng.normal(0.0, jitter.bias_sd, (g, g, g)), sub.shape)
    inside = logb[sub.brain]
    span = float(inside.max() - inside.min()) or 1.0
    p2p = center.inu_pct / 100.0
    target = np.log((1 + p2p / 2) / (1 - p2p / 2))
    img = img * np.exp((logb - inside.mean()) * target / span).astype(np.float32)
    # Rician noise
    n1 = rng.standard_normal(sub.shape, dtype=np.float32) * jit["noise"]
    n2 = rng.standard_normal(sub.shape, dtype=np.float32) * jit["noise"]
    img = np.sqrt((img + n1) ** 2 + n2**2)
    img = np.where(sub.brain, img, 0.0).astype(np.float32)
    # gamma
    img = (img / img[sub.brain].max()) ** jit["gamma"]
    # scale and outliers
    img = img * center.scale
    wm_level = float(np.median(img[(sub.wm >= 0.9) & (pv < 0.01)]))
    brain_idx = np.flatnonzero(sub.brain.ravel())
    n_out = int(round(center.outlier_fraction * brain_idx.size))
    if n_out:
        img.ravel()[rng.choice(brain_idx, size=n_out, replace=False)] = center.outlier_k * wm_level
    img = np.where(sub.brain, np.maximum(img, np.finfo(np.float32).tiny), 0.0)
    return img.astype(np.float32), jit


# --------------------------------------------------------------------------- one scan


@dataclass(frozen=True)
class ScanTask:
    """What one worker call produces: one scan, written under ``files``' keys."""

    dataset: str
    subject_index: int
    subject: str
    timepoint: int
    center: str
    load_ml: float
    files: dict[str, str]  # role -> path relative to the output folder


def _subject_lesions(cfg: PhantomConfig, seed: int, task: ScanTask, sub: Subject):
    lesions = generate_lesions(
        sub, cfg.lesions, _rng(seed, task.dataset, task.subject, "lesions"), task.load_ml
    )
    for t in range(2, task.timepoint + 1):
        lesions = evolve_lesions(
            sub, lesions, cfg.lesions, _rng(seed, task.dataset, task.subject, "evolve", t)
        )
    return lesions


def simulate_scan(cfg: PhantomConfig, seed: int, task: ScanTask) -> dict:
    """Simulate one scan in memory.

    Returns
    -------
    dict
        ``flair`` (float32), ``brain``, ``truth``, ``raters`` (list of bool arrays),
        ``consensus`` (bool or None), ``tissue`` (uint8 labels), ``subject``
        (:class:`Subject`), ``pv``, ``zmap``, ``jitter`` (the scan's center values),
        ``affine``.
    """
    tpl = _load_template(cfg.voxel_mm, cfg.anatomy)
    sub = make_subject(
        tpl, cfg.anatomy, cfg.lesions, _rng(seed, task.dataset, task.subject, "anatomy")
    )
    lesions = _subject_lesions(cfg, seed, task, sub)
    sd, pv, zmap = rasterize_lesions(sub, lesions, cfg.lesions)
    truth = pv >= 0.5
    rng = _rng(seed, task.dataset, task.subject, task.timepoint, "scan")
    center = cfg.centers[task.center]
    flair, jit = apply_center(sub, pv, zmap, center, cfg.lesions, cfg.jitter, rng)
    spec = cfg.dataset(task.dataset)
    allowed = sub.brain & ~sub.ventricles & (sub.csf < 0.5)
    fp_region = (sub.wm > 0.9) & (sd > 3.0)
    raters = simulate_raters(
        sd,
        truth,
        allowed,
        fp_region,
        sub.voxel_mm,
        spec.raters,
        _rng(seed, task.dataset, task.subject, task.timepoint, "raters"),
    )
    consensus = None
    if spec.raters.n_raters > 2:
        consensus = consensus_mask(raters, spec.raters.consensus)
    tissue = np.zeros(sub.shape, np.uint8)
    fr = np.stack([sub.csf, sub.gm, sub.wm])
    tissue[sub.brain] = (fr.argmax(0) + 1)[sub.brain]
    tissue[sub.ventricles] = 4
    return {
        "flair": flair, "brain": sub.brain, "truth": truth, "raters": raters,
        "consensus": consensus, "tissue": tissue, "subject": sub, "pv": pv, "zmap": zmap,
        "jitter": jit, "affine": sub.affine, "n_generated": len(lesions),
    }  # fmt: skip


def _lesion_stats(truth: np.ndarray, sub: Subject, p: LesionParams) -> dict:
    labels, n = ndi.label(truth, structure=np.ones((3, 3, 3), bool))
    vox_ml = sub.voxel_mm**3 / 1000.0
    if n == 0:
        return {"load_ml": 0.0, "n_lesions": 0, "periventricular_share": float("nan")}
    sizes = np.bincount(labels.ravel())[1:]
    dmin = ndi.minimum(sub.dvent, labels, np.arange(1, n + 1))
    near = np.asarray(dmin) <= p.periventricular_mm
    return {
        "load_ml": float(sizes.sum() * vox_ml),
        "n_lesions": int(n),
        "periventricular_share": float(sizes[near].sum() / sizes.sum()),
    }


def _run_task(cfg: PhantomConfig, seed: int, task: ScanTask, roots: dict[str, str]) -> dict:
    from msnb.nifti import save_nifti

    t0 = time.perf_counter()
    res = simulate_scan(cfg, seed, task)
    aff = res["affine"]
    arrays = {
        "flair": (res["flair"], np.float32),
        "brain": (res["brain"], np.uint8),
        "truth": (res["truth"], np.uint8),
        "tissue": (res["tissue"], np.uint8),
        "consensus": (res["consensus"], np.uint8),
    }
    for k, m in enumerate(res["raters"], 1):
        arrays[f"rater{k}"] = (m, np.uint8)
    root = Path(roots[task.dataset])
    for role, rel in task.files.items():
        data, dtype = arrays[role]
        save_nifti(np.asarray(data).astype(dtype), aff, root / rel, dtype=dtype)
    sub = res["subject"]
    stats = _lesion_stats(res["truth"], sub, cfg.lesions)
    contrast = measure_contrast(
        render_contrast(sub, res["pv"], res["zmap"], res["jitter"], cfg.lesions), sub, res["pv"]
    )
    return {
        "dataset": task.dataset, "subject": task.subject, "timepoint": f"{task.timepoint:02d}",
        "center": task.center, "target_load_ml": task.load_ml, **stats,
        "n_generated_lesions": res["n_generated"],
        "contrast_lesion_wm": contrast["lesion_wm"], "contrast_gm_wm": contrast["gm_wm"],
        "jitter": res["jitter"], "files": dict(task.files),
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip


# --------------------------------------------------------------------------- layouts


_FOLDER = {"isbi2015": "isbi2015", "msseg2016_train": "msseg2016", "msseg2016_test": "msseg2016",
           "3dmrms": "3dmrms"}  # fmt: skip


def _tasks(cfg: PhantomConfig, seed: int) -> list[ScanTask]:
    tasks = []
    for spec in cfg.datasets:
        # stratified load quantiles across the dataset's subjects
        from scipy.stats import norm

        rng = _rng(seed, spec.key, "loads")
        n = spec.n_subjects
        u = (rng.permutation(n) + rng.uniform(0.1, 0.9, n)) / n
        loads = np.exp(np.log(spec.load_median_ml) + spec.load_sigma * norm.ppf(u))
        loads = np.clip(loads, *cfg.lesions.load_range_ml)
        i = 0
        for cname, count in spec.centers:
            label = cfg.centers[cname].label
            for p in range(1, count + 1):
                tps = spec.timepoints[i % len(spec.timepoints)]
                for t in range(1, tps + 1):
                    tasks.append(_task(spec, i, cname, label, p, t, float(loads[i])))
                i += 1
    return tasks


def _task(spec: DatasetSpec, i: int, cname: str, label: str, p: int, t: int, load: float):
    ext = ".nii.gz"
    if spec.key == "isbi2015":
        nn = f"{i + 1:02d}"
        tt = f"{t:02d}"
        base = f"training/training{nn}"
        files = {
            "flair": f"{base}/preprocessed/training{nn}_{tt}_flair_pp{ext}",
            "rater1": f"{base}/masks/training{nn}_{tt}_mask1{ext}",
            "rater2": f"{base}/masks/training{nn}_{tt}_mask2{ext}",
            "truth": f"truth/training{nn}_{tt}_truth{ext}",
            "tissue": f"truth/training{nn}_{tt}_tissue{ext}",
        }
        return ScanTask(spec.key, i, nn, t, cname, load, files)
    if spec.key.startswith("msseg2016"):
        split = "Training" if spec.key.endswith("train") else "Testing"
        pdir = f"{split}/Center_{label}/Patient_{p:02d}"
        files = {
            "flair": f"{pdir}/Preprocessed_Data/FLAIR_preprocessed{ext}",
            "consensus": f"{pdir}/Masks/Consensus{ext}",
            "brain": f"{pdir}/Masks/Brain_Mask{ext}",
            **{f"rater{k}": f"{pdir}/Masks/ManualSegmentation_{k}{ext}"
               for k in range(1, spec.raters.n_raters + 1)},
            "truth": f"truth/{split}/Center_{label}_Patient_{p:02d}_truth{ext}",
            "tissue": f"truth/{split}/Center_{label}_Patient_{p:02d}_tissue{ext}",
        }  # fmt: skip
        return ScanTask(spec.key, i, f"{label}_{p:02d}", t, cname, load, files)
    xx = f"{i + 1:02d}"
    files = {
        "flair": f"patient{xx}/patient{xx}_FLAIR{ext}",
        "consensus": f"patient{xx}/patient{xx}_consensus_gt{ext}",
        "brain": f"patient{xx}/patient{xx}_brainmask{ext}",
        "truth": f"truth/patient{xx}_truth{ext}",
        "tissue": f"truth/patient{xx}_tissue{ext}",
    }
    return ScanTask(spec.key, i, xx, t, cname, load, files)


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# --------------------------------------------------------------------------- API


def generate_phantom(
    out_dir: str | os.PathLike,
    *,
    preset: str = "tiny",
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    config: PhantomConfig | None = None,
) -> Path:
    """Generate the synthetic multi-center phantom.

    Parameters
    ----------
    out_dir : path
        Folder that receives ``isbi2015/``, ``msseg2016/``, ``3dmrms/`` and ``phantom.json``.
        Each dataset folder is written under a temporary name and renamed when complete.
    preset : {"tiny", "quick", "standard"}, default "tiny"
    seed : int, default 0
        Same seed, same bytes (whatever ``workers``).
    workers : int, optional
        Processes (default: ``min(2, cpu count)``); 1 runs in this process.
    progress : bool, default True
        Show a tqdm progress bar.
    config : PhantomConfig, optional
        Overrides the preset's parameters (``preset`` is then only recorded).

    Returns
    -------
    Path
        ``out_dir``.
    """
    from tqdm.auto import tqdm

    import msnb
    from msnb.files import atomic_path

    cfg = config or make_config(preset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = _tasks(cfg, seed)
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    _load_template(cfg.voxel_mm, cfg.anatomy)  # load once before forking
    t0 = time.perf_counter()
    results: list[dict] = []
    with contextlib.ExitStack() as stack:
        roots = {}
        folders = {}
        for key in dict.fromkeys(_FOLDER[s.key] for s in cfg.datasets):
            folders[key] = stack.enter_context(atomic_path(out / key))
            folders[key].mkdir()
        roots = {s.key: str(folders[_FOLDER[s.key]]) for s in cfg.datasets}
        bar = tqdm(total=len(tasks), desc=f"phantom {cfg.preset}", disable=not progress)
        try:
            if workers == 1:
                for task in tasks:
                    results.append(_run_task(cfg, seed, task, roots))
                    bar.update()
            else:
                ctx = multiprocessing.get_context(
                    "fork" if "fork" in multiprocessing.get_all_start_methods() else None
                )
                with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                    futures = [pool.submit(_run_task, cfg, seed, t, roots) for t in tasks]
                    try:
                        for fut in as_completed(futures):
                            results.append(fut.result())
                            bar.update()
                    except BaseException:
                        for f in futures:
                            f.cancel()
                        raise
        finally:
            bar.close()
    elapsed = time.perf_counter() - t0
    order = {(t.dataset, t.subject, f"{t.timepoint:02d}"): i for i, t in enumerate(tasks)}
    results.sort(key=lambda r: order[(r["dataset"], r["subject"], r["timepoint"])])
    meta = {
        "msnb_version": msnb.__version__,
        "preset": cfg.preset,
        "seed": int(seed),
        "parameters": _jsonable(cfg),
        "grid": {"voxel_mm": cfg.voxel_mm, "affine": _load_template(cfg.voxel_mm, cfg.anatomy)
                 .affine.tolist(), "shape": list(_load_template(cfg.voxel_mm, cfg.anatomy)
                 .grid_shape)},
        "folders": {s.key: _FOLDER[s.key] for s in cfg.datasets},
        "scans": [{k: v for k, v in r.items() if k != "seconds"} for r in results],
    }  # fmt: skip
    with atomic_path(out / "phantom.json") as tmp:
        tmp.write_text(json.dumps(_jsonable(meta), indent=1) + "\n")
    timing = {
        "seconds": elapsed,
        "scans": len(results),
        "workers": workers,
        "scan_seconds": [r["seconds"] for r in results],
    }
    (out / ".phantom_timing.json").write_text(json.dumps(timing) + "\n")
    return out


# --------------------------------------------------------------------------- CLI


def _cli_phantom(args: argparse.Namespace) -> int:
    out = generate_phantom(args.out, preset=args.preset, seed=args.seed, workers=args.workers)
    print(f"phantom {args.preset} (seed {args.seed}) written to {out}")
    return 0


def register_cli(sub) -> None:
    """Add the ``phantom`` subcommand to an argparse subparsers object."""
    p = sub.add_parser("phantom", help="generate the synthetic multi-center FLAIR phantom")
    p.add_argument("--preset", choices=PRESETS, default="tiny", help="size of the phantom")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--workers", type=int, default=None, help="processes (default 2)")
    p.set_defaults(func=_cli_phantom)
