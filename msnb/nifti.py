"""NIfTI input and output with validation, canonical orientation and atomic writes.

Writes go through :func:`msnb.files.atomic_path`.

Every volume msnb works on is brought to one canonical orientation (RAS+, the closest
canonical orientation of nibabel) before slicing. :class:`Volume` keeps what is needed to
map an array back to the file's own voxel grid, so predictions land on the input's voxels
and are written with the input's affine and header.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

from msnb.files import atomic_path

__all__ = [
    "AFFINE_ATOL_MM",
    "ANISOTROPY_RATIO",
    "CANONICAL_AXCODES",
    "OBLIQUE_DEGREES",
    "GeometryWarning",
    "NiftiError",
    "OutputError",
    "Volume",
    "canonicalize",
    "check_output_dir",
    "geometry_notes",
    "load_image",
    "load_mask",
    "read_nifti",
    "save_image",
    "save_mask",
    "save_nifti",
]

CANONICAL_AXCODES = ("R", "A", "S")
AFFINE_ATOL_MM = 1e-3  # tolerance when comparing a mask's affine with its image's
#: Voxels whose largest side exceeds their smallest by this factor are called anisotropic.
ANISOTROPY_RATIO = 1.1
#: Voxel axes more than this many degrees off the world axes are called oblique.
OBLIQUE_DEGREES = 1.0


class NiftiError(ValueError):
    """A NIfTI file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = "<array>" if path is None else str(path)
        super().__init__(f"{where}: {problem}")


class OutputError(OSError):
    """An output that cannot be written (a file where a folder is, read-only, disk full).

    The message names the file or folder and the problem.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class GeometryWarning(UserWarning):
    """An input whose voxel grid msnb uses as it is although it is anisotropic or oblique."""


def check_output_dir(path: str | os.PathLike, *, what: str = "output folder") -> Path:
    """Check, before any work, that ``path`` is or can become a writable folder.

    Nothing is created: the folder itself when it exists, otherwise its closest existing
    parent, must be a folder this process may write into.

    Parameters
    ----------
    path : path-like
    what : str, default "output folder"
        Its name in messages (``"--out folder"``, ``"MSNB_OUTPUTS folder"``).

    Raises
    ------
    OutputError
        ``path`` or one of its parents is a file, or the folder is not writable.
    """
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link cannot become a folder
            raise OutputError(existing, f"{what}: a broken symbolic link, not a folder")
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(existing, f"{what} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(existing, f"{what} is not writable (read-only or no permission)")
    return path


@dataclass
class Volume:
    """A 3D volume in canonical (RAS+) orientation, with the way back to its file's grid.

    Attributes
    ----------
    data : np.ndarray, shape (X, Y, Z)
        Voxels in canonical orientation (float32 for images, bool for masks).
    affine : np.ndarray, shape (4, 4)
        Voxel-to-world affine of ``data``.
    path : Path or None
        The file it was read from.
    original_affine : np.ndarray, shape (4, 4)
        Affine of the file.
    original_shape : tuple of int
        3D shape of the file's data.
    header : nibabel.Nifti1Header or None
        The file's header (copied), used when writing arrays back in its space.
    """

    data: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    original_affine: np.ndarray | None = None
    original_shape: tuple[int, ...] | None = None
    header: nib.Nifti1Header | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.original_affine is None:
            self.original_affine = self.affine.copy()
        if self.original_shape is None:
            self.original_shape = tuple(self.data.shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel size in mm along the canonical axes."""
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def _to_original_transform(self) -> np.ndarray:
        canonical = ornt.axcodes2ornt(CANONICAL_AXCODES)
        return ornt.ornt_transform(canonical, ornt.io_orientation(self.original_affine))

    def to_original(self, array: np.ndarray) -> np.ndarray:
        """Map an array on the canonical grid (shape ``self.shape``) to the file's grid."""
        if tuple(array.shape[:3]) != self.shape:
            raise ValueError(f"array shape {array.shape} does not match volume {self.shape}")
        return np.ascontiguousarray(ornt.apply_orientation(array, self._to_original_transform()))

    def from_original(self, array: np.ndarray) -> np.ndarray:
        """Map an array on the file's grid to the canonical grid."""
        transform = ornt.ornt_transform(
            ornt.io_orientation(self.original_affine), ornt.axcodes2ornt(CANONICAL_AXCODES)
        )
        return np.ascontiguousarray(ornt.apply_orientation(array, transform))


def canonicalize(data: np.ndarray, affine: np.ndarray, **kwargs) -> Volume:
    """Reorient an array with its affine to the canonical orientation.

    Parameters
    ----------
    data : np.ndarray, shape (X, Y, Z)
    affine : np.ndarray, shape (4, 4)
    **kwargs
        Passed to :class:`Volume` (``path``, ``header``).
    """
    transform = ornt.ornt_transform(
        ornt.io_orientation(affine), ornt.axcodes2ornt(CANONICAL_AXCODES)
    )
    canon = np.ascontiguousarray(ornt.apply_orientation(data, transform))
    canon_affine = affine @ ornt.inv_ornt_aff(transform, data.shape)
    return Volume(
        data=canon,
        affine=canon_affine,
        original_affine=np.asarray(affine, dtype=float).copy(),
        original_shape=tuple(data.shape),
        **kwargs,
    )


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """The data (3D, as stored), affine and header of a NIfTI file, with clear errors.

    Raises
    ------
    NiftiError
        Missing, unreadable or truncated file; not 3D (a 4D file with one volume is
        squeezed).
    """
    return _read(Path(path))


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    if not path.exists():
        raise NiftiError(path, "file does not exist")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for broken files
        raise NiftiError(path, f"cannot read NIfTI file (unreadable or truncated): {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    elif data.ndim == 4:
        raise NiftiError(path, f"expected a 3D volume, got 4D with {data.shape[3]} volumes")
    elif data.ndim != 3:
        raise NiftiError(path, f"expected a 3D volume, got {data.ndim}D of shape {data.shape}")
    header = img.header.copy()
    return data, np.asarray(img.affine, dtype=float), header


def _check_finite(path: Path, data: np.ndarray) -> None:
    if np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        if bad.any():
            raise NiftiError(path, f"{int(bad.sum())} voxels are NaN or infinite")


def geometry_notes(affine: np.ndarray, path: str | os.PathLike | None = None) -> list[str]:
    """What msnb does with a grid whose voxels are anisotropic or whose axes are oblique.

    msnb never resamples: it reorients to RAS+ by permuting and flipping voxel axes
    (nibabel's closest canonical orientation), then treats each axial plane
    ``data[:, :, z]`` as an image whose pixels are square; volumes and lesion tables use
    the true voxel size.

    Parameters
    ----------
    affine : np.ndarray, shape (4, 4)
        The file's affine.
    path : path-like, optional
        Named at the start of each note.

    Returns
    -------
    list of str
        One note per property found (anisotropic: largest voxel side over smallest above
        :data:`ANISOTROPY_RATIO`; oblique: an axis more than :data:`OBLIQUE_DEGREES` off
        the world axes); empty for an isotropic, axis-aligned grid.
    """
    where = "<array>" if path is None else str(path)
    m = np.asarray(affine, dtype=float)[:3, :3]
    zooms = np.sqrt((m**2).sum(axis=0))
    notes = []
    if zooms.min() > 0 and zooms.max() / zooms.min() > ANISOTROPY_RATIO:
        canon = np.empty(3)
        canon[ornt.io_orientation(affine)[:, 0].astype(int)] = zooms
        x, y, z = (f"{v:.3g}" for v in canon)
        note = (
            f"{where}: anisotropic voxels ({x} x {y} x {z} mm in RAS+ order); they are not "
            "resampled: msnb reorients the voxel grid to RAS+ and slices it axially"
        )
        if max(canon[:2]) / min(canon[:2]) > ANISOTROPY_RATIO:
            note += (
                f", and resizes each axial slice to the model's square plane as if its "
                f"{x} x {y} mm pixels were square (shapes are stretched)"
            )
        else:
            note += f", so the model sees axial slices {z} mm apart, each on its own"
        notes.append(note + "; volumes and lesion tables use the true voxel size")
    if zooms.min() > 0:
        cosines = np.abs(m / zooms).max(axis=0).clip(0, 1)
        angle = float(np.degrees(np.arccos(cosines.min())))
        if angle > OBLIQUE_DEGREES:
            notes.append(
                f"{where}: oblique voxel axes (up to {angle:.1f} degrees off the scanner "
                "axes); they are not resampled: msnb's axial slices follow the voxel axis "
                "closest to inferior-superior, tilted by that angle, and outputs keep the "
                "input's affine"
            )
    return notes


def load_image(path: str | os.PathLike) -> Volume:
    """Read an image (e.g. FLAIR) as float32 in canonical orientation.

    Warns (:class:`GeometryWarning`, see :func:`geometry_notes`) when its voxels are
    anisotropic or its axes oblique.

    Raises
    ------
    NiftiError
        Missing, unreadable or truncated file; not 3D (a 4D file with one volume is
        squeezed); NaN or infinite voxels.
    """
    path = Path(path)
    data, affine, header = _read(path)
    data = data.astype(np.float32)
    _check_finite(path, data)
    for note in geometry_notes(affine, path):
        warnings.warn(note, GeometryWarning, stacklevel=2)
    return canonicalize(data, affine, path=path, header=header)


def _binarize(path: Path, data: np.ndarray, binarize: bool) -> np.ndarray:
    values = np.unique(data)
    if np.isin(values, (0, 1)).all():
        return data.astype(bool)
    if not binarize:
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (" ..." if values.size > 6 else "")
        raise NiftiError(
            path,
            f"mask is not binary (values {shown}); pass binarize=True to threshold it "
            "(values in [0, 1] at 0.5, otherwise > 0)",
        )
    if values.min() >= 0 and values.max() <= 1:
        return data >= 0.5
    return data > 0


def load_mask(
    path: str | os.PathLike,
    *,
    reference: Volume | None = None,
    binarize: bool = False,
    allow_empty: bool = True,
    what: str = "mask",
) -> Volume:
    """Read a binary mask in canonical orientation (``data`` is bool).

    Parameters
    ----------
    path : path-like
    reference : Volume, optional
        The image the mask belongs to; its file's shape and affine must match the mask's
        (affine within ``AFFINE_ATOL_MM``).
    binarize : bool, default False
        Threshold a probabilistic (values in [0, 1], at 0.5) or 0/255-style mask (> 0)
        instead of raising.
    allow_empty : bool, default True
        Raise on a mask without any foreground voxel (used for brain masks).
    what : str, default "mask"
        Word used in error messages ("brain mask", "consensus mask").
    """
    path = Path(path)
    data, affine, header = _read(path)
    _check_finite(path, data)
    if reference is not None:
        if tuple(data.shape) != tuple(reference.original_shape):
            raise NiftiError(
                path,
                f"{what} shape {tuple(data.shape)} does not match image shape "
                f"{tuple(reference.original_shape)} of {reference.path}",
            )
        if not np.allclose(affine, reference.original_affine, atol=AFFINE_ATOL_MM):
            diff = float(np.abs(affine - reference.original_affine).max())
            raise NiftiError(
                path,
                f"{what} affine differs from the image affine of {reference.path} "
                f"(max difference {diff:.4g} > {AFFINE_ATOL_MM})",
            )
    mask = _binarize(path, data, binarize)
    if not allow_empty and not mask.any():
        raise NiftiError(path, f"{what} is empty (no foreground voxel)")
    return canonicalize(mask, affine, path=path, header=header)


def save_nifti(
    data: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike,
    *,
    header: nib.Nifti1Header | None = None,
    dtype: np.dtype | type | None = None,
) -> Path:
    """Write an array as NIfTI atomically (temporary name, then rename).

    Parameters
    ----------
    data : np.ndarray, shape (X, Y, Z)
    affine : np.ndarray, shape (4, 4)
    header : nibabel header, optional
        Copied; dtype, dimensions and scaling are updated for ``data``.
    dtype : numpy dtype, optional
        On-disk type (default: ``data.dtype``).
    """
    dtype = np.dtype(dtype or data.dtype)
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine, header=hdr)
    img.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0, 0.0) if dtype.kind in "iub" else None
    if hdr is not None:
        img.set_qform(affine, code=int(hdr["qform_code"]) or 1)
        img.set_sform(affine, code=int(hdr["sform_code"]) or 1)
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def save_mask(
    mask: np.ndarray, like: Volume, path: str | os.PathLike, *, canonical: bool = True
) -> Path:
    """Write a binary mask as uint8 on the grid, affine and header of ``like``'s file.

    Parameters
    ----------
    mask : np.ndarray, shape ``like.shape`` (canonical) or ``like.original_shape``
    like : Volume
        The image the mask belongs to.
    canonical : bool, default True
        ``mask`` is on the canonical grid and is mapped back to the file's orientation.
    """
    arr = like.to_original(np.asarray(mask)) if canonical else np.asarray(mask)
    return save_nifti(
        (arr > 0).astype(np.uint8), like.original_affine, path, header=like.header, dtype=np.uint8
    )


def save_image(
    image: np.ndarray, like: Volume, path: str | os.PathLike, *, canonical: bool = True
) -> Path:
    """Write a float image (e.g. probabilities) as float32 on ``like``'s file grid."""
    arr = like.to_original(np.asarray(image)) if canonical else np.asarray(image)
    return save_nifti(
        arr.astype(np.float32), like.original_affine, path, header=like.header, dtype=np.float32
    )
