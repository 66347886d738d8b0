"""Lesions: generation, follow-up evolution, rasterization and statistics.

A subject's first timepoint gets confluent periventricular caps (with some probability)
and log-normal ellipsoids drawn with a periventricular preference; follow-ups change
volumes, drop and add lesions (docs/phantom.md section 2). Lesions are rasterized to a
signed distance, a partial-volume map and a per-voxel contrast z-score.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from msnb.phantom.anatomy import Subject
from msnb.phantom.config import LesionParams

__all__ = [
    "Lesion",
    "compute_lesion_stats",
    "evolve_lesions",
    "generate_lesions",
    "rasterize_lesions",
]


@dataclass
class Lesion:
    """One lesion: an ellipsoid or a periventricular cap (positions in world mm).

    Attributes
    ----------
    kind : {"ellipsoid", "cap"}
    centre : np.ndarray, shape (3,)
    size : float
        Ellipsoid: long semi-axis; cap: radius of the sphere around ``centre``.
    ratio : float
        Ellipsoid: long-to-short axis ratio; cap: thickness away from the ventricles.
    direction : np.ndarray, shape (3,)
        Ellipsoid long axis (unit vector).
    z : float
        Contrast z-score: lesion/WM ratio = center ratio + ``ratio_sd * z``.
    volume_mm3 : float
        Target volume.
    """

    kind: str
    centre: np.ndarray
    size: float
    ratio: float
    direction: np.ndarray
    z: float
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


def _centre_weights(sub: Subject, p: LesionParams) -> tuple[np.ndarray, np.ndarray]:
    """Flat centre weights: periventricular ``WM^2 exp(-d/decay)`` and juxtacortical
    ``GM WM`` (both 0 in CSF and outside the brain, x the infratentorial factor)."""
    allowed = (sub.csf < 0.5) & sub.brain & ~sub.ventricles
    zfac = np.where(sub.world(2) < p.infratentorial_z_mm, p.infratentorial_factor, 1.0)
    zfac = zfac.reshape(1, 1, -1) * allowed
    w = sub.wm**2 * np.exp(-sub.dvent / p.decay_mm) * zfac
    juxta = sub.gm * sub.wm * (sub.dvent > p.dawson_mm) * zfac
    return w.ravel().astype(np.float64), juxta.ravel().astype(np.float64)


def _long_axis(sub: Subject, ijk: np.ndarray, p: LesionParams, rng: np.random.Generator):
    """A random unit direction, or the ventricle-distance gradient near the ventricles."""
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
    return direction / np.linalg.norm(direction)


def _draw_ellipsoids(
    sub: Subject,
    p: LesionParams,
    rng: np.random.Generator,
    volumes: list[float],
    weights,
    n_sites: int | None = None,
) -> list[Lesion]:
    """Ellipsoids of the given volumes; a binomial ``juxtacortical_share`` of them centred
    with the juxtacortical weight, the rest with the periventricular one.

    Only the first ``n_sites`` (default all) get a site of their own; each further one is
    centred near the surface of an earlier one (chosen uniformly, offset by 0.6-1.3 of its
    long semi-axis in a random direction), so a
    large load grows confluent lesions instead of hundreds of separate ones.
    """
    if not volumes:
        return []
    n_own = len(volumes) if n_sites is None else min(len(volumes), n_sites)
    periventricular, juxta = weights
    if juxta.sum() <= 0:
        juxta = periventricular
    n_juxta = int(rng.binomial(n_own, p.juxtacortical_share))
    idx = np.concatenate([
        rng.choice(juxta.size, size=n_juxta, p=juxta / juxta.sum()),
        rng.choice(periventricular.size, size=n_own - n_juxta,
                   p=periventricular / periventricular.sum()),
    ])  # fmt: skip
    v = sub.voxel_mm
    out = []
    for vol, flat in zip(volumes[:n_own], idx, strict=True):
        ijk = np.array(np.unravel_index(flat, sub.shape))
        centre = sub.affine[:3, 3] + v * (ijk + rng.uniform(-0.5, 0.5, 3))
        ratio = rng.uniform(*p.axis_ratio)
        direction = _long_axis(sub, ijk, p, rng)
        size = _ellipsoid_size(vol, ratio)
        z = float(rng.standard_normal())
        out.append(Lesion("ellipsoid", centre, size, ratio, direction, z, float(vol)))
    return out + _confluent(p, rng, volumes[n_own:], out)


def _confluent(
    p: LesionParams, rng: np.random.Generator, volumes: list[float], sites: list[Lesion]
) -> list[Lesion]:
    """Ellipsoids grown onto ``sites`` (see :func:`_draw_ellipsoids`), each with its own
    contrast z-score (a confluent lesion is heterogeneous).

    The parent site is drawn uniformly, or with probability proportional to its volume
    to the power ``p.confluent_power`` when that is not 0 (confluent lesions grow where
    lesions are large).
    """
    if not volumes or not sites:
        return []
    weights = None
    if p.confluent_power != 0:
        weights = np.array([s.volume_mm3 for s in sites]) ** p.confluent_power
        weights /= weights.sum()
    out = []
    for vol in volumes:
        if weights is None:
            parent = sites[int(rng.integers(len(sites)))]
        else:
            parent = sites[int(rng.choice(len(sites), p=weights))]
        offset = rng.standard_normal(3)
        offset *= parent.size * rng.uniform(0.6, 1.3) / np.linalg.norm(offset)
        direction = rng.standard_normal(3)
        ratio = rng.uniform(*p.axis_ratio)
        out.append(Lesion("ellipsoid", parent.centre + offset, _ellipsoid_size(vol, ratio),
                          ratio, direction / np.linalg.norm(direction),
                          float(rng.standard_normal()), float(vol)))  # fmt: skip
    return out


def _draw_volume(p: LesionParams, rng: np.random.Generator) -> float:
    """One single-lesion volume (mm^3) from the truncated log-normal."""
    lo, hi = p.voxels_range
    while True:
        v = float(np.exp(rng.normal(p.log_voxels_mean, p.log_voxels_sd)))
        if lo <= v <= hi:
            return v


def _sample_volumes(p: LesionParams, rng: np.random.Generator, budget_mm3: float) -> list[float]:
    """Lesion volumes until ``budget_mm3`` is spent (the last one trimmed to fit)."""
    vols: list[float] = []
    total = 0.0
    while total < budget_mm3:
        v = _draw_volume(p, rng)
        if total + v > budget_mm3:
            v = budget_mm3 - total
            if v < p.voxels_range[0]:
                break
        vols.append(v)
        total += v
    return vols


def _cap_voxels(sub: Subject, les: Lesion) -> int:
    sl, sd = _lesion_sd(sub, les)
    return int(((sd < 0) & (sub.csf[sl] < 0.5) & sub.brain[sl]).sum())


def _make_cap(sub: Subject, p: LesionParams, rng: np.random.Generator, volume_mm3: float):
    """A cap on the ventricle wall whose radius is bisected to hold ``volume_mm3``."""
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
    are ellipsoids with log-normal volumes, centres drawn with a periventricular weight;
    beyond ``max_sites`` ellipsoids the rest grow onto earlier ones (confluent lesions).
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
    vols = _sample_volumes(p, rng, budget)
    lesions += _draw_ellipsoids(sub, p, rng, vols, weights, p.max_sites)
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
    vols = [_draw_volume(p, rng) for _ in range(n_new)]
    return out + _draw_ellipsoids(sub, p, rng, vols, _centre_weights(sub, p))


def rasterize_lesions(
    sub: Subject, lesions: list[Lesion], p: LesionParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed distance, partial volume and per-voxel ratio z-score of a lesion set.

    Returns
    -------
    sd : np.ndarray, float32, shape (X, Y, Z)
        Signed distance (mm) to the nearest lesion boundary, positive outside (50 far
        away).
    pv : np.ndarray, float32
        Partial volume ``sigmoid(-sd / pv_width_mm)``, 0 in CSF, ventricles and outside
        the brain.
    zmap : np.ndarray, float32
        Contrast z-score of the closest lesion.
    """
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


def compute_lesion_stats(truth: np.ndarray, sub: Subject, p: LesionParams) -> dict:
    """Load, lesion count and periventricular share of a lesion mask.

    Lesions are 26-connected components; a lesion is periventricular when any voxel lies
    within ``p.periventricular_mm`` of the ventricles.

    Returns
    -------
    dict
        ``load_ml``, ``n_lesions`` and ``periventricular_share`` (share of the load held
        by periventricular lesions; NaN without lesions).
    """
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
