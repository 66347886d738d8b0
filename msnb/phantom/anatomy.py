"""Anatomy: the MNI152 tissue templates and each subject's warped copy of them.

The templates are the ICBM152 2009a brain mask and GM/WM probability maps that nilearn
ships (1 mm); CSF is what the brain mask holds beyond GM and WM, the ventricles are the
largest CSF components in a central box (docs/phantom.md section 1). A subject is the
templates under a random scale, rotation, smooth elastic displacement and ventricle
enlargement, resampled onto the phantom grid.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from msnb.phantom.config import AnatomyParams, LesionParams
from msnb.phantom.fields import smooth_field, upsample_smooth

__all__ = ["Subject", "Template", "load_template", "make_subject"]

#: Voxels of margin kept around the brain when cropping the 1 mm templates.
_CROP_MARGIN = 12


@dataclass
class Template:
    """The cropped 1 mm templates and the phantom grid they are resampled onto.

    Attributes
    ----------
    gm, wm, mask : np.ndarray, float32
        Tissue fractions and brain mask at 1 mm, cropped, prefiltered for the target grid.
    dvent : np.ndarray, float32
        Distance (mm) to the ventricles at 1 mm.
    origin : np.ndarray, shape (3,)
        World coordinate (mm) of the 1 mm voxel (0, 0, 0).
    grid_origin : np.ndarray, shape (3,)
        World coordinate of the phantom grid's voxel (0, 0, 0).
    grid_shape : tuple of int
        Shape of the phantom grid (the brain's bounding box plus 4 mm).
    voxel_mm : float
        Isotropic voxel size of the phantom grid.
    centre : np.ndarray, shape (3,)
        World coordinate of the brain's centre of mass (the centre of rotation).
    """

    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray
    dvent: np.ndarray
    origin: np.ndarray
    grid_origin: np.ndarray
    grid_shape: tuple[int, int, int]
    voxel_mm: float
    centre: np.ndarray

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-world affine of the phantom grid (RAS, axis-aligned)."""
        aff = np.diag([self.voxel_mm] * 3 + [1.0])
        aff[:3, 3] = self.grid_origin
        return aff


def _load_mni152():
    """nilearn's 1 mm brain mask, GM and WM templates (float32) and the mask's affine."""
    from nilearn import datasets as nds  # heavy import, only when a template is built

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask_img = nds.load_mni152_brain_mask(resolution=1)
        gm = np.asarray(nds.load_mni152_gm_template(resolution=1).get_fdata(), np.float32)
        wm = np.asarray(nds.load_mni152_wm_template(resolution=1).get_fdata(), np.float32)
    mask = np.asarray(mask_img.get_fdata(), np.float32)
    return mask, gm, wm, mask_img.affine


def _ventricle_distance(csf: np.ndarray, origin: np.ndarray, anatomy: AnatomyParams) -> np.ndarray:
    """Distance (mm, 1 mm grid) to the largest CSF components inside the ventricle box."""
    world = [origin[k] + np.arange(csf.shape[k]) for k in range(3)]
    box = np.ones(csf.shape, bool)
    for k, (a, b) in enumerate(anatomy.ventricle_box_mm):
        inside = (world[k] > a) & (world[k] < b)
        box &= inside.reshape([-1 if j == k else 1 for j in range(3)])
    labels, _ = ndi.label((csf > anatomy.ventricle_csf) & box)
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.argsort(sizes)[::-1][: anatomy.n_ventricle_components] + 1
    return ndi.distance_transform_edt(~np.isin(labels, keep)).astype(np.float32)


def _sharpen(gm: np.ndarray, wm: np.ndarray, mask: np.ndarray, power: float):
    """GM and WM after raising the CSF, GM, WM fractions to ``power`` and renormalizing.

    The population-average maps blur the cortical ribbon and the deep grey nuclei into
    WM; the power sharpens each voxel towards its dominant tissue (the brain share of a
    voxel, ``mask``, is kept).
    """
    if power == 1.0:
        return gm, wm
    csf = np.clip(mask - gm - wm, 0, 1)
    fr = np.stack([csf, gm, wm]) ** power
    total = fr.sum(0)
    scale = np.divide(np.clip(mask, 0, 1), total, out=np.zeros_like(total), where=total > 0)
    return (fr[1] * scale).astype(np.float32), (fr[2] * scale).astype(np.float32)


@functools.cache
def load_template(voxel_mm: float, anatomy: AnatomyParams) -> Template:
    """The templates prepared for a phantom grid of ``voxel_mm`` (cached per process).

    Parameters
    ----------
    voxel_mm : float
        Isotropic voxel size of the phantom grid; the 1 mm templates are smoothed with a
        Gaussian of FWHM ``sqrt(voxel_mm^2 - 1)`` before resampling.
    anatomy : AnatomyParams
        Defines the ventricle search.
    """
    mask, gm, wm, aff = _load_mni152()
    nz = np.argwhere(mask > 0)
    lo = np.maximum(nz.min(0) - _CROP_MARGIN, 0)
    hi = np.minimum(nz.max(0) + _CROP_MARGIN + 1, mask.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    gm, wm, mask = gm[sl], wm[sl], mask[sl]
    origin = aff[:3, 3] + lo * np.diag(aff)[:3]
    dvent = _ventricle_distance(np.clip(mask - gm - wm, 0, 1), origin, anatomy)
    gm, wm = _sharpen(gm, wm, mask, anatomy.sharpen_power)
    sigma = np.sqrt(max(voxel_mm**2 - 1.0, 0.0)) / 2.355
    if sigma > 0.1:
        gm, wm, mask = (ndi.gaussian_filter(a, sigma) for a in (gm, wm, mask))
    bmin = origin + nz.min(0) - lo - 4
    bmax = origin + nz.max(0) - lo + 4
    shape = tuple(int(np.ceil((b - a) / voxel_mm)) + 1 for a, b in zip(bmin, bmax, strict=True))
    centre = origin + np.argwhere(mask > 0.5).mean(0)
    return Template(gm, wm, mask, dvent, origin, bmin, shape, float(voxel_mm), centre)


@dataclass
class Subject:
    """A subject's anatomy on the phantom grid (fractions in [0, 1], distances in mm).

    Attributes
    ----------
    wm, gm, csf : np.ndarray, float32, shape (X, Y, Z)
        Tissue fractions (0 outside the brain).
    brain, ventricles : np.ndarray, bool
    dvent : np.ndarray, float32
        Distance (mm) to the ventricles.
    affine : np.ndarray, shape (4, 4)
    voxel_mm : float
    boundary_noise : np.ndarray, float32
        Smooth field (mm) added to the lesions' signed distance.
    texture : np.ndarray, float32
        Unit-variance field modulating the lesion intensity.
    rim : np.ndarray, float32, optional
        Ependymal rim fraction (1 on the ventricle wall, 0 beyond ``rim_mm``).
    tissue_texture : np.ndarray, float32, optional
        Unit-variance fine texture of all tissue (``texture_corr_mm``).
    flow : np.ndarray, float32, optional
        Where the ventricles' CSF-flow artefacts are (0-1, 0 outside the ventricles).
    choroid : np.ndarray, float32, optional
        Choroid plexus fraction (0-1, inside the ventricles); its signal is
        ``choroid_ratio``.
    choroid_ratio : float, default 1.0
    """

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
    rim: np.ndarray | None = None
    tissue_texture: np.ndarray | None = None
    flow: np.ndarray | None = None
    choroid: np.ndarray | None = None
    choroid_ratio: float = 1.0

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape."""
        return self.wm.shape

    def world(self, axis: int) -> np.ndarray:
        """World coordinates (mm) of the voxel centres along ``axis``."""
        return self.affine[axis, 3] + self.voxel_mm * np.arange(self.shape[axis])


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _source_coords(
    tpl: Template, anatomy: AnatomyParams, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Template voxel coordinates of every grid voxel under a random warp, and its scale."""
    v = tpl.voxel_mm
    shape = tpl.grid_shape
    scale = 1.0 + rng.uniform(-1, 1) * anatomy.scale_pct / 100.0
    rot = _rotation(np.deg2rad(rng.uniform(-1, 1, 3) * anatomy.rotation_deg))
    inv = np.linalg.inv(rot * scale)
    # elastic displacement on a coarse grid
    coarse = tuple(int(np.ceil(s * v / anatomy.elastic_spacing_mm)) + 2 for s in shape)
    disp = rng.standard_normal((3, *coarse))
    disp = np.stack([upsample_smooth(d, shape) for d in disp])
    norm = np.sqrt((disp**2).sum(0)).max()
    disp *= anatomy.elastic_mm * rng.uniform(0.5, 1.0) / max(norm, 1e-6)
    axes = [tpl.grid_origin[k] + v * np.arange(shape[k]) - tpl.centre[k] for k in range(3)]
    coords = np.empty((3, *shape), np.float32)
    for i in range(3):
        acc = np.full(shape, tpl.centre[i] - tpl.origin[i], np.float32)
        for j in range(3):
            acc += (
                (inv[i, j] * axes[j])
                .astype(np.float32)
                .reshape([-1 if k == j else 1 for k in range(3)])
            )
        coords[i] = acc + disp[i]
    return coords, scale


def make_subject(
    tpl: Template, anatomy: AnatomyParams, lesions: LesionParams, rng: np.random.Generator
) -> Subject:
    """Warp the templates into one subject (scale, rotation, elastic, ventricle dilation).

    Parameters
    ----------
    tpl : Template
        From :func:`load_template`.
    anatomy : AnatomyParams
    lesions : LesionParams
        Amplitude and correlation of the subject's lesion boundary noise and texture.
    rng : numpy.random.Generator
    """
    coords, scale = _source_coords(tpl, anatomy, rng)
    dil = rng.uniform(*anatomy.ventricle_dilation_mm)

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
    shape, v = tpl.grid_shape, tpl.voxel_mm
    if anatomy.fold_corr_mm > 0:
        gm, wm, csf = _fold_cortex(gm, wm, csf, brain, ventricles, v, anatomy, rng)
    amp = rng.uniform(*lesions.boundary_amplitude_mm)
    bnoise = smooth_field(shape, v, lesions.boundary_corr_mm, rng) * amp
    texture = smooth_field(shape, v, lesions.texture_corr_mm, rng)
    rim = (np.clip(1.0 - dvent / anatomy.rim_mm, 0.0, 1.0) * (brain & ~ventricles)).astype(
        np.float32
    )
    tissue_texture = smooth_field(shape, v, anatomy.texture_corr_mm, rng)
    flow = _flow_map(ventricles, v, anatomy, rng)
    sub = Subject(
        wm, gm, csf, brain, ventricles, dvent, tpl.affine, v, bnoise, texture, rim,
        tissue_texture, flow,
    )  # fmt: skip
    if anatomy.choroid_ml > 0:  # drawn last: the other fields keep their bytes
        sub.choroid = _choroid_map(sub, anatomy, rng)
        sub.choroid_ratio = anatomy.choroid_ratio
    return sub


def _choroid_map(sub: Subject, anatomy: AnatomyParams, rng: np.random.Generator) -> np.ndarray:
    """A tuft of ``choroid_ml`` in each lateral ventricle, grown from the ventricle voxel
    nearest to ``choroid_mm`` (x mirrored on the left): the ventricle voxels closest to that
    seed, their distance perturbed by a smooth 2 mm field; partial volume at the edge."""
    v = sub.voxel_mm
    lump = smooth_field(sub.shape, v, 2.0, rng) * 2.0
    idx = np.nonzero(sub.ventricles)
    pts = np.stack([sub.world(a)[idx[a]] for a in range(3)], axis=1)
    n = max(1, int(round(anatomy.choroid_ml * 1000.0 / v**3)))
    out = np.zeros(sub.shape, np.float32)
    target = np.asarray(anatomy.choroid_mm, float)
    for side in (1.0, -1.0):
        half = np.flatnonzero(pts[:, 0] * side > 0)
        if half.size == 0:
            continue
        p = pts[half]
        seed = p[np.argmin(((p - target * [side, 1, 1]) ** 2).sum(1))]
        d = np.sqrt(((p - seed) ** 2).sum(1)) + lump[tuple(i[half] for i in idx)]
        keep = half[np.argsort(d)[:n]]
        out[tuple(i[keep] for i in idx)] = 1.0
    out = ndi.gaussian_filter(out, 0.5 / v) * sub.ventricles
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _flow_map(
    ventricles: np.ndarray, voxel_mm: float, anatomy: AnatomyParams, rng: np.random.Generator
) -> np.ndarray:
    """Patches covering ``flow_fraction`` of the ventricles (0-1, soft edges)."""
    field = smooth_field(ventricles.shape, voxel_mm, anatomy.flow_corr_mm, rng)
    if not ventricles.any():
        return np.zeros(ventricles.shape, np.float32)
    thr = np.quantile(field[ventricles], 1.0 - anatomy.flow_fraction)
    return (np.clip((field - thr) / 0.5 + 0.5, 0.0, 1.0) * ventricles).astype(np.float32)


def _sulcus_distance(
    depth: np.ndarray, voxel_mm: float, corr_mm: float, rng: np.random.Generator
) -> np.ndarray:
    """Distance (mm) to the nearest sulcus: radial sheets under the zero lines of a field.

    A smooth field is sampled at each voxel's projection onto the brain surface (the voxel
    moved by its depth against the gradient of the smoothed depth map), so it is constant
    along the surface normal; the distance to its zero level is ``|F| / |grad F|``.
    """
    v = voxel_mm
    field = smooth_field(depth.shape, v, corr_mm, rng)
    smooth = ndi.gaussian_filter(depth, 1.5 / v)
    grads = np.gradient(smooth)
    norm = np.sqrt(sum(g**2 for g in grads)) + 1e-6
    steps = depth / v / norm
    coords = [np.arange(n, dtype=np.float32).reshape([-1 if j == k else 1 for j in range(3)])
              - steps * grads[k] for k, n in enumerate(depth.shape)]  # fmt: skip
    projected = ndi.map_coordinates(field, coords, order=1, mode="nearest").astype(np.float32)
    del coords
    slope = np.sqrt(sum(g**2 for g in np.gradient(projected, v)))
    return np.abs(projected) / np.maximum(slope, 0.05)


def _fold_cortex(gm, wm, csf, brain, ventricles, voxel_mm, anatomy: AnatomyParams, rng):
    """Sulci and a grey-matter ribbon in the outer ``sulcus_depth_mm`` of the brain.

    The sulci are radial sheets: the zero lines of a smooth field on the brain surface,
    carried inward along the surface normal (each voxel takes the field of its nearest
    surface point) down to a depth that varies around ``sulcus_depth_mm``. Each sheet holds
    CSF ``sulcus_width_mm`` wide, lined by ``cortex_mm`` of GM; the surface carries the same
    GM ribbon; the rest of that outer layer is WM (the gyri's cores). The template's
    fractions fade back in over 2 mm below the deepest sulci. Fractions are partial volumes
    of the grid voxel.

    Returns
    -------
    gm, wm, csf : np.ndarray, float32
    """
    v = voxel_mm
    shape = gm.shape
    depth = ndi.distance_transform_edt(brain, sampling=v).astype(np.float32)
    d_sulcus = _sulcus_distance(depth, v, anatomy.fold_corr_mm, rng)
    max_depth = anatomy.sulcus_depth_mm * (1.0 + 0.3 * smooth_field(shape, v, 10.0, rng))

    def ramp(edge: np.ndarray) -> np.ndarray:  # fraction of a voxel inside ``distance < edge``
        return np.clip(edge / v + 0.5, 0.0, 1.0)

    half = anatomy.sulcus_width_mm / 2
    sulcal = ramp(half - d_sulcus) * ramp(max_depth - depth)
    ribbon = np.maximum(ramp(half + anatomy.cortex_mm - d_sulcus) * ramp(
        max_depth + anatomy.cortex_mm - depth), ramp(anatomy.cortex_mm - depth))  # fmt: skip
    outer = np.clip((max_depth + anatomy.cortex_mm + 2.0 - depth) / 2.0, 0.0, 1.0)
    outer *= brain & ~ventricles
    brain_share = gm + wm + csf
    f_csf = np.maximum(sulcal, csf * (depth <= v)) * brain_share
    f_gm = (brain_share - f_csf) * ribbon
    f_wm = brain_share - f_csf - f_gm
    mix = [(outer * new + (1 - outer) * old).astype(np.float32)
           for new, old in ((f_gm, gm), (f_wm, wm), (f_csf, csf))]  # fmt: skip
    return mix[0], mix[1], mix[2]
