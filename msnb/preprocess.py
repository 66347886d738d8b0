"""Preprocessing before normalization: brain masks and optional N4 bias-field correction."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from msnb.datasets import Scan
from msnb.nifti import NiftiError, Volume, load_image, load_mask

__all__ = [
    "SKULL_STRIPPED_BACKGROUND",
    "compute_brain_mask",
    "load_flair",
    "load_brain",
    "n4_correct",
]

SKULL_STRIPPED_BACKGROUND = 0.2  # fraction of exactly-zero voxels that marks a skull-stripped image


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    filled = ndimage.binary_fill_holes(mask)
    # Fill axial holes too (ventricles open to the border of a cropped field of view).
    for z in range(filled.shape[2]):
        filled[:, :, z] = ndimage.binary_fill_holes(filled[:, :, z])
    return filled


def compute_brain_mask(image: np.ndarray) -> np.ndarray:
    """Brain mask of a FLAIR volume, for scans that come without one.

    Method: a skull-stripped image (at least 20 % of its voxels exactly 0, as in every
    preprocessed release the study uses) gives ``image > 0``; any other image is thresholded
    with Otsu's method (SimpleITK), opened with a 1-voxel ball. Then the largest connected
    component is kept and holes are filled (in 3D, then per axial slice).

    Parameters
    ----------
    image : np.ndarray, shape (X, Y, Z)

    Returns
    -------
    np.ndarray of bool, shape (X, Y, Z)
    """
    image = np.asarray(image, dtype=np.float32)
    if np.mean(image == 0) >= SKULL_STRIPPED_BACKGROUND:
        mask = image > 0
    else:
        import SimpleITK as sitk

        otsu = sitk.OtsuThreshold(sitk.GetImageFromArray(image), 0, 1)
        mask = sitk.GetArrayFromImage(otsu).astype(bool)
        mask = ndimage.binary_opening(mask, structure=ndimage.generate_binary_structure(3, 1))
    if not mask.any():
        return mask
    return _fill_holes(_largest_component(mask))


def load_brain(scan: Scan, flair: Volume) -> np.ndarray:
    """The brain mask of ``scan`` on ``flair``'s canonical grid (bool, shape ``flair.shape``).

    Read from ``scan.brain_mask`` when the dataset ships one (checked against the FLAIR),
    computed with :func:`compute_brain_mask` otherwise.

    Raises
    ------
    NiftiError
        The brain mask (read or computed) is empty.
    """
    if scan.brain_mask is not None:
        vol = load_mask(
            scan.brain_mask, reference=flair, binarize=True, allow_empty=False, what="brain mask"
        )
        return vol.data
    brain = compute_brain_mask(flair.data)
    if not brain.any():
        raise NiftiError(flair.path, "computed brain mask is empty (image is all zero?)")
    return brain


def n4_correct(
    image: np.ndarray,
    brain: np.ndarray,
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    shrink: int = 2,
    iterations: int = 50,
) -> np.ndarray:
    """N4 bias-field correction with SimpleITK, inside the brain mask.

    Parameters
    ----------
    image : np.ndarray, shape (X, Y, Z)
    brain : np.ndarray of bool, shape (X, Y, Z)
    spacing : (float, float, float), default (1, 1, 1)
        Voxel size in mm along X, Y, Z (:attr:`msnb.nifti.Volume.zooms`): N4's B-spline
        field is fitted in physical space, so anisotropic voxels need their true spacing.
    shrink : int, default 2
        Downsampling factor for estimating the field (then applied at full resolution).
    iterations : int, default 50
        Iterations per fitting level (4 levels).

    Returns
    -------
    np.ndarray of float32, shape (X, Y, Z)
        The corrected image, 0 outside the brain.
    """
    import SimpleITK as sitk

    # SimpleITK's array order is (Z, Y, X): its spacing is the reverse of ours
    img = sitk.GetImageFromArray(np.asarray(image, dtype=np.float32))
    img.SetSpacing([float(z) for z in reversed(spacing)])
    msk = sitk.GetImageFromArray(np.asarray(brain, dtype=np.uint8))
    msk.CopyInformation(img)
    small_img = sitk.Shrink(img, [shrink] * 3)
    small_msk = sitk.Shrink(msk, [shrink] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([iterations] * 4)
    corrector.Execute(small_img, small_msk)
    log_field = corrector.GetLogBiasFieldAsImage(img)
    corrected = img / sitk.Exp(log_field)
    out = sitk.GetArrayFromImage(corrected).astype(np.float32)
    out[~np.asarray(brain, dtype=bool)] = 0
    return out


def load_flair(scan: Scan) -> tuple[Volume, np.ndarray]:
    """A scan's FLAIR (canonical) and brain mask, N4-corrected when ``scan.n4`` is set.

    The one way msnb reads a scan's image for slicing, normalization references and
    prediction, so that a dataset's preprocessing is the same in training and testing.

    Returns
    -------
    (Volume, np.ndarray of bool)
        The FLAIR (``data`` corrected in place of the stored intensities when N4 applies)
        and the brain mask (:func:`load_brain`), both on the canonical grid.
    """
    flair = load_image(scan.flair)
    brain = load_brain(scan, flair)
    if scan.n4:
        flair.data = n4_correct(flair.data, brain, spacing=flair.zooms)
    return flair, brain
