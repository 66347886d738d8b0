"""The scanner ("center") model: what one scanner does to a subject's noiseless anatomy.

In order (docs/phantom.md section 3): slice thickness, tissue contrast, bias field, Rician
noise, gamma, intensity scale and bright outliers. Each scan jitters its center's values.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from msnb.phantom.anatomy import Subject
from msnb.phantom.config import CenterParams, JitterParams, LesionParams
from msnb.phantom.fields import upsample_smooth

__all__ = ["apply_center", "jitter_center", "measure_contrast", "render_contrast"]


def render_contrast(
    sub: Subject,
    pv: np.ndarray,
    zmap: np.ndarray,
    ratios: dict[str, float],
    lesions: LesionParams,
    sd: np.ndarray | None = None,
) -> np.ndarray:
    """Step 2 of the center model: ``S = sum_k f_k mu_k`` (WM = 1), lesions on top.

    ``ratios`` holds ``lesion``, ``gm`` and ``csf`` (to WM) and optionally ``rim`` (the
    ependymal rim, default 1: none), ``flow`` (CSF-flow artefacts in the ventricles,
    default 0: none) and ``texture`` (SD of the multiplicative tissue texture, default 0);
    the subject's choroid plexus (if any) has the signal ``sub.choroid_ratio``.
    Lesion voxels get ``S (1 + (r - 1) h PV)`` with ``r = lesion + ratio_sd * z`` per
    lesion plus texture; with the signed distance ``sd`` the heterogeneity
    ``h = 1 - core_gain / 2 + core_gain (1 - exp(-depth / core_mm))`` makes the core
    brighter than the border (``depth`` = ``max(-sd, 0)``), otherwise ``h = 1``.
    """
    s = sub.wm + ratios["gm"] * sub.gm + ratios["csf"] * sub.csf
    if sub.rim is not None and ratios.get("rim", 1.0) != 1.0:
        s = s * (1.0 + (ratios["rim"] - 1.0) * sub.rim)
    if sub.flow is not None and ratios.get("flow", 0.0) > 0:
        s = s + np.maximum(ratios["flow"] - s, 0.0) * sub.flow
    if sub.choroid is not None:
        s = s + (sub.choroid_ratio - s) * sub.choroid
    if sub.tissue_texture is not None and ratios.get("texture", 0.0) > 0:
        s = s * (1.0 + ratios["texture"] * sub.tissue_texture)
    r = ratios["lesion"] + lesions.ratio_sd * zmap + lesions.texture_sd * sub.texture
    gain = (r - 1.0) * pv
    if sd is not None and lesions.core_gain > 0:
        core = 1.0 - np.exp(-np.maximum(-sd, 0.0) / lesions.core_mm)
        gain = gain * (1.0 - lesions.core_gain / 2 + lesions.core_gain * core)
    return (s * (1.0 + gain)).astype(np.float32)


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


def _resample_z(vol: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``vol`` at the (fractional) z indices ``z``."""
    grid = np.meshgrid(*[np.arange(s) for s in vol.shape[:2]], z, indexing="ij")
    return ndi.map_coordinates(vol, grid, order=1, mode="nearest")


def _slice_thickness(vol: np.ndarray, voxel_mm: float, slice_mm: float) -> np.ndarray:
    """Blur along z with FWHM ``sqrt(slice^2 - voxel^2)``, sample slices, interpolate back."""
    if slice_mm <= voxel_mm * 1.001:
        return vol
    sigma = np.sqrt(slice_mm**2 - voxel_mm**2) / 2.355 / voxel_mm
    blurred = ndi.gaussian_filter1d(vol, sigma, axis=2, mode="nearest")
    n = vol.shape[2]
    m = max(int(round(n * voxel_mm / slice_mm)), 2)
    down = _resample_z(blurred, np.linspace(0, n - 1, m))
    return _resample_z(down, np.linspace(0, m - 1, n)).astype(np.float32)


def jitter_center(c: CenterParams, j: JitterParams, rng: np.random.Generator) -> dict:
    """One scan's values of its center: ``gamma``, ``lesion``, ``gm``, ``csf``, ``noise``,
    ``rim``, ``texture``, ``flow``.

    ``noise`` is the Rician SD and ``texture`` the tissue texture SD as fractions of the WM
    signal; ``rim`` is jittered like the other ratios; ``flow`` is the center's.
    """
    return {
        "gamma": c.gamma * float(np.exp(rng.normal(0.0, j.gamma_log_sd))),
        "lesion": c.lesion_ratio + rng.uniform(-j.ratio, j.ratio),
        "gm": c.gm_ratio + rng.uniform(-j.ratio, j.ratio),
        "csf": c.csf_ratio + rng.uniform(-j.ratio, j.ratio),
        "noise": c.noise_pct / 100.0 * (1.0 + rng.uniform(-j.noise_rel, j.noise_rel)),
        "rim": c.rim_ratio + rng.uniform(-j.ratio, j.ratio),
        "texture": c.texture_pct / 100.0,
        "flow": c.flow_ratio,
    }


def _bias_field(
    sub: Subject, center: CenterParams, jitter: JitterParams, rng: np.random.Generator
) -> np.ndarray:
    """Multiplicative bias: a smooth log field scaled to the center's INU peak-to-peak."""
    g = jitter.bias_grid
    logb = upsample_smooth(rng.normal(0.0, jitter.bias_sd, (g, g, g)), sub.shape)
    inside = logb[sub.brain]
    span = float(inside.max() - inside.min()) or 1.0
    p2p = center.inu_pct / 100.0
    target = np.log((1 + p2p / 2) / (1 - p2p / 2))
    return np.exp((logb - inside.mean()) * target / span).astype(np.float32)


def _scale_and_outliers(
    img: np.ndarray, sub: Subject, pv: np.ndarray, center: CenterParams, rng
) -> np.ndarray:
    """Multiply by the center's units and set a fraction of brain voxels to k x WM."""
    img = img * center.scale
    wm_level = float(np.median(img[(sub.wm >= 0.9) & (pv < 0.01)]))
    brain_idx = np.flatnonzero(sub.brain.ravel())
    n_out = int(round(center.outlier_fraction * brain_idx.size))
    if n_out:
        img.ravel()[rng.choice(brain_idx, size=n_out, replace=False)] = center.outlier_k * wm_level
    return img


def apply_center(
    sub: Subject,
    pv: np.ndarray,
    zmap: np.ndarray,
    center: CenterParams,
    lesions: LesionParams,
    jitter: JitterParams,
    rng: np.random.Generator,
    sd: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """The center model of docs/phantom.md section 3, in order.

    1 contrast (:func:`render_contrast`: tissue, ependymal rim, CSF-flow artefacts, tissue
    texture, lesions), 2 slice thickness (on the rendered image), 3 bias field, 4 Rician
    noise, 5 gamma, 6 scale and bright outliers. The image is 0 outside the brain and at
    least the smallest positive float32 inside. ``sd`` is the lesions' signed distance
    (:func:`~msnb.phantom.lesions.rasterize_lesions`), for their brighter cores.

    Returns
    -------
    image : np.ndarray, float32, shape (X, Y, Z)
    jitter : dict
        The scan's center values (:func:`jitter_center`).
    """
    jit = jitter_center(center, jitter, rng)
    img = render_contrast(sub, pv, zmap, jit, lesions, sd)
    img = _slice_thickness(img, sub.voxel_mm, center.slice_mm)
    img = img * _bias_field(sub, center, jitter, rng)
    # Rician noise
    n1 = rng.standard_normal(sub.shape, dtype=np.float32) * jit["noise"]
    n2 = rng.standard_normal(sub.shape, dtype=np.float32) * jit["noise"]
    img = np.sqrt((img + n1) ** 2 + n2**2)
    img = np.where(sub.brain, img, 0.0).astype(np.float32)
    img = (img / img[sub.brain].max()) ** jit["gamma"]
    img = _scale_and_outliers(img, sub, pv, center, rng)
    img = np.where(sub.brain, np.maximum(img, np.finfo(np.float32).tiny), 0.0)
    return img.astype(np.float32), jit
