"""The slice store: axial brain slices of many scans in one memory-mapped array.

Each scan is loaded in canonical (RAS+) orientation, its brain mask read or computed,
its FLAIR normalized, then every axial slice ``data[:, :, z]`` that holds enough brain is
cropped to the scan's brain bounding box (plus a margin), padded to a square and resized to
``size x size``:

- images: linear interpolation (``scipy.ndimage.zoom``, order 1, pixel-area aligned grid);
- masks: the same linear interpolation of the 0/1 mask, then thresholded at 0.5.

The same :class:`Geometry` maps predictions back to the scan's grid
(:func:`from_model_plane`). A store is built once per (scans, label, normalization, size,
code version) and reused; a changed input file (size or modification time) gives a new key
and a rebuild. Stores are written into a temporary folder and renamed when complete.

A store records the SHA-256 digest of each of its files (``meta.json``). Opening one checks
the manifest's length and the arrays' byte sizes against its metadata, and every digest;
:func:`build_slice_store` rebuilds a store that fails these checks (truncated, edited,
incomplete, or written by an msnb that did not record digests), with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from msnb import __version__
from msnb.datasets import Scan, load_label
from msnb.files import atomic_path
from msnb.normalize import IDENTITY, Normalizer
from msnb.paths import cache_root
from msnb.preprocess import load_flair
from msnb.recipe import SLICE_CROPS

__all__ = [
    "Geometry",
    "PreparedScan",
    "SLICE_CROPS",
    "STORE_FORMAT",
    "SliceDataset",  # noqa: F822 (made on first use by __getattr__, without importing torch)
    "SliceStore",
    "SliceStoreError",
    "brain_slices",
    "build_slice_store",
    "compute_geometry",
    "from_model_plane",
    "prepare_scan",
    "split_by_patient",
    "store_key",
    "to_model_plane",
]

STORE_FORMAT = 2  # bump when the store's layout, slicing or labels change (2: ISBI union)
#: The array files of a store, with their element type.
_ARRAYS = {"images.f32": np.float32, "masks.u8": np.uint8}


class SliceStoreError(ValueError):
    """A slice store on disk that is incomplete or damaged; the message names the file."""


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class Geometry:
    """How a scan's axial plane maps to the model's ``size x size`` plane.

    ``[x0:x1, y0:y1]`` is the brain bounding box (with margin) in canonical voxel indices,
    padded (centred) to a ``side x side`` square, then resized to ``size x size``.
    """

    x0: int
    x1: int
    y0: int
    y1: int
    side: int
    size: int

    @property
    def pad(self) -> tuple[int, int]:
        return (self.side - (self.x1 - self.x0)) // 2, (self.side - (self.y1 - self.y0)) // 2


def compute_geometry(
    brain: np.ndarray, size: int, *, margin: int = 4, crop: str = "brain"
) -> Geometry:
    """Geometry of a scan from its brain mask.

    Parameters
    ----------
    brain : np.ndarray of bool, shape (X, Y, Z)
    size : int
        Side of the model's input plane, S.
    margin : int, default 4
        Voxels added around the brain bounding box (clipped to the volume).
    crop : {"brain", "none"}, default "brain"
        ``"brain"``: the axial plane is cropped to the brain's bounding box (plus
        ``margin``) before it is padded square and resized to S; ``"none"``: the whole
        axial plane is padded square and resized (the paper's whole-slice resize).
    """
    if not brain.any():
        raise ValueError("empty brain mask: cannot place slices")
    if crop == "none":
        nx, ny = brain.shape[:2]
        return Geometry(0, nx, 0, ny, max(nx, ny), int(size))
    if crop != "brain":
        raise ValueError(f"slice crop must be one of {', '.join(SLICE_CROPS)}, got {crop!r}")
    xs = np.flatnonzero(brain.any(axis=(1, 2)))
    ys = np.flatnonzero(brain.any(axis=(0, 2)))
    x0, x1 = max(int(xs[0]) - margin, 0), min(int(xs[-1]) + 1 + margin, brain.shape[0])
    y0, y1 = max(int(ys[0]) - margin, 0), min(int(ys[-1]) + 1 + margin, brain.shape[1])
    return Geometry(x0, x1, y0, y1, max(x1 - x0, y1 - y0), int(size))


def _zoom_plane(arr: np.ndarray, factor: float, order: int) -> np.ndarray:
    zoom = (factor, factor) + (1.0,) * (arr.ndim - 2)
    return ndimage.zoom(
        arr, zoom, order=order, mode="grid-constant", grid_mode=True, prefilter=False
    )


def to_model_plane(arr: np.ndarray, geom: Geometry, *, order: int = 1) -> np.ndarray:
    """Crop, pad and resize axial plane(s) to the model's plane.

    Parameters
    ----------
    arr : np.ndarray, shape (X, Y) or (X, Y, Z)
    geom : Geometry
    order : int, default 1
        Spline order (1: linear; 0: nearest).

    Returns
    -------
    np.ndarray of float32, shape (S, S) or (S, S, Z)
    """
    crop = np.asarray(arr, dtype=np.float32)[geom.x0 : geom.x1, geom.y0 : geom.y1]
    px, py = geom.pad
    square = np.zeros((geom.side, geom.side) + crop.shape[2:], dtype=np.float32)
    square[px : px + crop.shape[0], py : py + crop.shape[1]] = crop
    out = _zoom_plane(square, geom.size / geom.side, order)
    return out.astype(np.float32, copy=False)


def from_model_plane(arr: np.ndarray, geom: Geometry, shape_xy: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`to_model_plane` (linear interpolation); 0 outside the bounding box.

    Parameters
    ----------
    arr : np.ndarray, shape (S, S) or (S, S, Z)
    geom : Geometry
    shape_xy : (int, int)
        The scan's canonical (X, Y).

    Returns
    -------
    np.ndarray of float32, shape (X, Y) or (X, Y, Z)
    """
    square = _zoom_plane(np.asarray(arr, dtype=np.float32), geom.side / geom.size, 1)
    px, py = geom.pad
    w, h = geom.x1 - geom.x0, geom.y1 - geom.y0
    out = np.zeros(tuple(shape_xy) + square.shape[2:], dtype=np.float32)
    out[geom.x0 : geom.x1, geom.y0 : geom.y1] = square[px : px + w, py : py + h]
    return out


def brain_slices(brain: np.ndarray, *, min_brain_fraction: float = 0.05) -> np.ndarray:
    """Axial slices that contain brain.

    A slice is kept when its brain area is at least ``min_brain_fraction`` of the largest
    axial brain area of the scan.

    Returns
    -------
    np.ndarray of int
        Sorted z indices.
    """
    area = brain.sum(axis=(0, 1))
    if area.max() == 0:
        return np.zeros(0, dtype=int)
    return np.flatnonzero(area >= max(min_brain_fraction * area.max(), 1))


@dataclass
class PreparedScan:
    """A scan loaded for slicing: normalized image, brain and label on the canonical grid."""

    scan: Scan
    flair: object  # msnb.nifti.Volume
    brain: np.ndarray
    image: np.ndarray
    label: np.ndarray | None


def prepare_scan(
    scan: Scan, *, normalizer: Normalizer = IDENTITY, label: str | None = "consensus"
) -> PreparedScan:
    """Load a scan's FLAIR, brain mask and label, and normalize the FLAIR.

    Parameters
    ----------
    scan : Scan
    normalizer : Normalizer, default IDENTITY
    label : str or None, default "consensus"
        Label to load (see :func:`msnb.datasets.label_sources`); None for no label.
    """
    flair, brain = load_flair(scan)
    lab = None if label is None else load_label(scan, label, reference=flair).data
    image = normalizer(flair.data, brain).astype(np.float32, copy=False)
    return PreparedScan(scan, flair, brain, image, lab)


def _file_identity(path: Path | None) -> list:
    if path is None:
        return [None]
    st = os.stat(path)
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def store_key(
    scans: Sequence[Scan],
    *,
    label: str,
    size: int,
    normalizer: Normalizer,
    min_brain_fraction: float,
    crop: str = "brain",
) -> str:
    """Cache key of a slice store: inputs (path, size, mtime), label, normalization, size, code.

    Settings at their defaults (crop ``"brain"``, no N4) leave the key as it was before
    they existed, so caches stay valid.
    """
    spec = {
        "format": STORE_FORMAT,
        "msnb": __version__,
        "label": label,
        "size": int(size),
        "normalizer": normalizer.key,
        "min_brain_fraction": min_brain_fraction,
        "scans": [
            [s.scan_id, s.center, _file_identity(s.flair), _file_identity(s.brain_mask)]
            + [[n, _file_identity(p)] for n, p in sorted(s.masks.items())]
            + (["n4"] if s.n4 else [])
            for s in scans
        ],
    }
    if crop != "brain":
        spec["crop"] = crop
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


class SliceStore:
    """A built slice store on disk.

    Attributes
    ----------
    images : np.memmap, shape (N, S, S), float32
    masks : np.memmap, shape (N, S, S), uint8
    manifest : pandas.DataFrame
        One row per slice: scan_id, dataset, subject, patient_key, timepoint, center, z,
        lesion_voxels (in the S x S plane), brain_voxels (in the scan's own plane).
    geometries : dict of str to Geometry
        Per scan_id.
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = True):
        """Open the store at ``path``.

        Parameters
        ----------
        path : path-like
        verify : bool, default True
            Also compare every file's SHA-256 digest with the one recorded at build time
            (reads the arrays once; sizes and the manifest are always checked).

        Raises
        ------
        SliceStoreError
            A file is missing, unreadable, of the wrong size, or differs from its digest.
        """
        self.path = Path(path)
        meta = self._read_meta()
        self.key: str = meta["key"]
        self.size: int = meta["size"]
        self.label: str = meta["label"]
        self.normalizer_key: str = meta["normalizer"]
        self.geometries = {k: Geometry(**v) for k, v in meta["geometries"].items()}
        self._check_files(meta, verify=verify)
        try:
            self.manifest = pd.read_csv(
                self.path / "manifest.csv", dtype={"subject": str, "timepoint": str, "center": str}
            )
        except (OSError, ValueError) as exc:
            raise SliceStoreError(f"{self.path / 'manifest.csv'}: cannot read: {exc}") from exc
        n = len(self.manifest)
        if n != meta["n_slices"]:
            raise SliceStoreError(
                f"{self.path / 'manifest.csv'}: {n} slices listed, {meta['n_slices']} stored"
            )
        shape = (n, self.size, self.size)
        self.images = np.memmap(self.path / "images.f32", dtype=np.float32, mode="r", shape=shape)
        self.masks = np.memmap(self.path / "masks.u8", dtype=np.uint8, mode="r", shape=shape)

    def _read_meta(self) -> dict:
        file = self.path / "meta.json"
        try:
            meta = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise SliceStoreError(f"{file}: cannot read the store's metadata: {exc}") from exc
        keys = ("key", "size", "label", "normalizer", "geometries", "n_slices", "digests")
        missing = [k for k in keys if not isinstance(meta, dict) or k not in meta]
        if missing:
            raise SliceStoreError(
                f"{file}: no {', '.join(missing)} (incomplete, or built by an older msnb)"
            )
        return meta

    def _check_files(self, meta: dict, *, verify: bool) -> None:
        """Sizes of the arrays, then (``verify``) every file's digest."""
        plane = int(meta["n_slices"]) * int(meta["size"]) ** 2
        for name in [*_ARRAYS, "manifest.csv"]:
            file = self.path / name
            if not file.is_file():
                raise SliceStoreError(f"{file}: missing")
            if name in _ARRAYS:
                expected = plane * np.dtype(_ARRAYS[name]).itemsize
                if file.stat().st_size != expected:
                    raise SliceStoreError(
                        f"{file}: {file.stat().st_size} bytes, {expected} expected (truncated?)"
                    )
            if verify and _file_digest(file) != meta["digests"].get(name):
                raise SliceStoreError(f"{file}: content differs from its recorded digest")

    def __len__(self) -> int:
        return len(self.manifest)

    def indices_for(self, patient_keys: Sequence[str]) -> np.ndarray:
        """Row indices of all slices of the given patients (``dataset/subject``)."""
        return np.flatnonzero(self.manifest["patient_key"].isin(list(patient_keys)).to_numpy())

    def sample_planes(self, patient_keys: Sequence[str], n: int) -> np.ndarray:
        """``n`` of the patients' stored planes, e.g. to calibrate an int8 model's activation
        ranges: half evenly spaced over their slices with lesion, the rest over all their
        slices (fewer when they have fewer, or when the two picks share planes).

        Returns
        -------
        np.ndarray of float32, shape (<= n, S, S)
        """
        idx = self.indices_for(patient_keys)
        lesion = idx[self.manifest["lesion_voxels"].to_numpy()[idx] > 0]

        def spaced(a: np.ndarray, k: int) -> np.ndarray:
            return a[np.linspace(0, len(a) - 1, k).round().astype(int)] if len(a) else a

        k = min(n // 2, len(lesion))
        pick = np.unique(np.concatenate([spaced(lesion, k), spaced(idx, n - k)]))
        return np.asarray(self.images[pick], dtype=np.float32)

    def __repr__(self) -> str:
        return f"SliceStore({len(self)} slices of {self.manifest.scan_id.nunique()} scans, {self.size}px, {self.path})"


def _manifest_rows(scan: Scan, zs: np.ndarray, lesion: np.ndarray, brain: np.ndarray) -> list:
    """One manifest row per stored slice of ``scan`` (``brain``: its kept planes)."""
    brain_vox = brain.sum(axis=(0, 1))
    return [
        {
            "scan_id": scan.scan_id,
            "dataset": scan.dataset,
            "subject": scan.subject,
            "patient_key": scan.patient_key,
            "timepoint": scan.timepoint,
            "center": scan.center,
            "z": int(z),
            "lesion_voxels": int(lesion[i]),
            "brain_voxels": int(brain_vox[i]),
        }
        for i, z in enumerate(zs)
    ]


def build_slice_store(
    scans: Sequence[Scan],
    *,
    label: str = "consensus",
    size: int = 128,
    normalizer: Normalizer = IDENTITY,
    cache_dir: str | os.PathLike | None = None,
    min_brain_fraction: float = 0.05,
    crop: str = "brain",
    progress: bool = True,
) -> SliceStore:
    """Build (or reuse) the slice store of ``scans``.

    A store already built for the same key is reused after :class:`SliceStore`'s checks
    (sizes, manifest, digests); a damaged one is rebuilt, with a warning.

    Parameters
    ----------
    scans : sequence of Scan
    label : str, default "consensus"
        Which mask is the target (see :func:`msnb.datasets.label_sources`).
    size : int, default 128
        Side S of the stored slices (the paper uses 224).
    normalizer : Normalizer, default IDENTITY
    cache_dir : path, optional
        Folder holding stores (default :func:`msnb.paths.cache_root` / ``slices``).
    min_brain_fraction : float, default 0.05
        See :func:`brain_slices`.
    crop : {"brain", "none"}, default "brain"
        See :func:`compute_geometry`.
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    SliceStore
    """
    if not scans:
        raise ValueError("no scans to slice")
    key = store_key(
        scans,
        label=label,
        size=size,
        normalizer=normalizer,
        min_brain_fraction=min_brain_fraction,
        crop=crop,
    )
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "slices"
    final = root / key
    if final.exists():
        try:
            store = SliceStore(final)
            if store.key == key:
                return store
            problem = f"{final / 'meta.json'}: key {store.key} is not the folder's"
        except SliceStoreError as exc:
            problem = str(exc)
        warnings.warn(
            f"slice store {final} cannot be reused ({problem}); rebuilding it", stacklevel=2
        )
    _write_store(
        final,
        scans,
        key=key,
        label=label,
        size=size,
        normalizer=normalizer,
        min_brain_fraction=min_brain_fraction,
        crop=crop,
        progress=progress,
    )
    return SliceStore(final, verify=False)


def _write_store(
    final: Path,
    scans: Sequence[Scan],
    *,
    key: str,
    label: str,
    size: int,
    normalizer: Normalizer,
    min_brain_fraction: float,
    crop: str,
    progress: bool,
) -> None:
    """Slice ``scans`` into a new store at ``final`` (atomically), with its digests."""
    from tqdm.auto import tqdm

    rows, geoms = [], {}
    digests = {name: hashlib.sha256() for name in _ARRAYS}
    with atomic_path(final) as tmp:
        tmp.mkdir(parents=True)
        with open(tmp / "images.f32", "wb") as fimg, open(tmp / "masks.u8", "wb") as fmsk:
            for scan in tqdm(scans, desc=f"slicing {len(scans)} scans", disable=not progress):
                prep = prepare_scan(scan, normalizer=normalizer, label=label)
                geom = compute_geometry(prep.brain, size, crop=crop)
                zs = brain_slices(prep.brain, min_brain_fraction=min_brain_fraction)
                img = to_model_plane(prep.image[:, :, zs], geom)
                msk = to_model_plane(prep.label[:, :, zs].astype(np.float32), geom) >= 0.5
                for f, name, arr, dtype in (
                    (fimg, "images.f32", img, np.float32),
                    (fmsk, "masks.u8", msk, np.uint8),
                ):
                    data = np.ascontiguousarray(np.moveaxis(arr, 2, 0), dtype=dtype).tobytes()
                    f.write(data)
                    digests[name].update(data)
                geoms[scan.scan_id] = asdict(geom)
                rows += _manifest_rows(scan, zs, msk.sum(axis=(0, 1)), prep.brain[:, :, zs])
        pd.DataFrame(rows).to_csv(tmp / "manifest.csv", index=False)
        meta = {
            "key": key,
            "size": int(size),
            "label": label,
            "normalizer": normalizer.key,
            "format": STORE_FORMAT,
            "msnb": __version__,
            "scans": [s.scan_id for s in scans],
            "n_slices": len(rows),
            "digests": {
                **{name: h.hexdigest() for name, h in digests.items()},
                "manifest.csv": _file_digest(tmp / "manifest.csv"),
            },
            "geometries": geoms,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))


def split_by_patient(
    patient_keys: Sequence[str], *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split patients (not slices, not scans) into training and validation sets.

    Parameters
    ----------
    patient_keys : sequence of str
        Patient identifiers (``dataset/subject``); duplicates are collapsed, so all
        timepoints and slices of a patient fall on one side.
    val_fraction : float, default 0.2
        Share of patients for validation (rounded, at least one of each side when there
        are two patients or more).
    seed : int, default 0

    Returns
    -------
    (train, val) : lists of str, sorted
    """
    unique = sorted(set(patient_keys))
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(len(unique) * val_fraction))
    if val_fraction > 0 and len(unique) >= 2:
        n_val = min(max(n_val, 1), len(unique) - 1)
    order = np.random.default_rng(seed).permutation(len(unique))
    val = sorted(unique[i] for i in order[:n_val])
    train = sorted(unique[i] for i in order[n_val:])
    return train, val


def _slice_dataset_class():
    """:class:`SliceDataset`, built on first use: importing this module does not import torch
    (``msnb segment`` on ONNX Runtime slices scans without it)."""
    import torch
    from torch.utils.data import Dataset

    class SliceDataset(Dataset):
        """A torch Dataset over rows of a :class:`SliceStore` (no file decoding per item).

        Items are ``(image, mask)``, float32 tensors of shape (1, S, S).
        """

        def __init__(self, store: SliceStore, indices: Sequence[int] | None = None):
            self.store = store
            self.indices = (
                np.arange(len(store)) if indices is None else np.asarray(indices, dtype=int)
            )

        def __len__(self) -> int:
            return len(self.indices)

        def __getitem__(self, i: int):
            j = int(self.indices[i])
            image = torch.from_numpy(np.array(self.store.images[j], dtype=np.float32))[None]
            mask = torch.from_numpy(np.array(self.store.masks[j], dtype=np.float32))[None]
            return image, mask

    SliceDataset.__module__, SliceDataset.__qualname__ = __name__, "SliceDataset"
    return SliceDataset


def __getattr__(name: str):
    if name == "SliceDataset":
        cls = globals()["SliceDataset"] = _slice_dataset_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
