"""What do the datasets look like? Helpers of ``notebooks/01_explore_data.ipynb``.

Tables (the paper's Table 1 for the data at hand, lesion statistics) and static figures
(one mid-brain slice per center with lesion outlines, per-center intensity histograms of
brain voxels before normalization). Functions take :class:`msnb.datasets.Scan` records.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from msnb.datasets import Scan, load_label, load_scans
from msnb.nifti import load_image, load_mask

__all__ = [
    "load_explore_scans",
    "compute_dataset_table",
    "compute_lesion_stats",
    "plot_center_slices",
    "plot_center_histograms",
]

_ROOTS = {
    "isbi2015": "isbi2015",
    "msseg2016_train": "msseg2016",
    "msseg2016_test": "msseg2016",
    "3dmrms": "3dmrms",
}


def load_explore_scans(
    data_root: str | Path, datasets: Sequence[str], *, phantom_preset: str = "tiny"
) -> list[Scan]:
    """Scans of ``datasets`` under ``data_root``; an empty ``data_root`` means the phantom.

    Parameters
    ----------
    data_root : str or Path
        Folder holding ``isbi2015/``, ``msseg2016/`` and ``3dmrms/`` in the real layouts.
        ``""``: generate (once) the ``phantom_preset`` phantom into
        ``<outputs>/phantom/<preset>`` and use it.
    datasets : sequence of str
        Adapter names (``isbi2015``, ``msseg2016_train``, ``msseg2016_test``, ``3dmrms``).
    phantom_preset : str, default "tiny"
    """
    if not str(data_root):
        from msnb.paths import outputs_root
        from msnb.phantom import generate_phantom

        root = outputs_root() / "phantom" / phantom_preset
        if not (root / "phantom.json").exists():
            generate_phantom(root, preset=phantom_preset, progress=False)
    else:
        root = Path(data_root)
    scans: list[Scan] = []
    for name in datasets:
        scans += load_scans(name, root / _ROOTS.get(name, name))
    return scans


def _brain(scan: Scan, image) -> np.ndarray:
    if scan.brain_mask is not None:
        return load_mask(scan.brain_mask, reference=image, what="brain mask").data
    return image.data > 0


def compute_dataset_table(scans: Sequence[Scan]):
    """The paper's Table 1 for the data at hand: one row per dataset and center.

    Returns
    -------
    pandas.DataFrame
        Columns ``dataset``, ``center``, ``subjects``, ``scans``, ``brain_slices`` (axial
        slices containing brain), ``voxel_mm`` (median voxel size) and ``shape``.
    """
    import pandas as pd

    rows = []
    for scan in scans:
        img = load_image(scan.flair)
        brain = _brain(scan, img)
        rows.append(
            {
                "dataset": scan.dataset,
                "center": scan.center,
                "subject": scan.subject,
                "brain_slices": int(brain.any(axis=(0, 1)).sum()),
                "voxel_mm": "x".join(f"{z:.2g}" for z in img.zooms),
                "shape": "x".join(str(s) for s in img.shape),
            }
        )
    df = pd.DataFrame(rows)
    return (
        df.groupby(["dataset", "center"], sort=False)
        .agg(
            subjects=("subject", "nunique"),
            scans=("subject", "size"),
            brain_slices=("brain_slices", "sum"),
            voxel_mm=("voxel_mm", "first"),
            shape=("shape", "first"),
        )
        .reset_index()
    )


def compute_lesion_stats(scans: Sequence[Scan], *, label: str = "consensus"):
    """Lesion count and load per scan and a per-dataset summary.

    Lesions are 26-connected components of the label (``consensus``, or ``rater1`` for
    ISBI, see :func:`msnb.datasets.label_sources`).

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        Per scan (``dataset``, ``center``, ``subject``, ``timepoint``, ``lesions``,
        ``load_ml``) and per dataset (``scans``, median and IQR of count and load).
    """
    import pandas as pd

    rows = []
    for scan in scans:
        mask = load_label(scan, label)
        _, n = ndi.label(mask.data, structure=np.ones((3, 3, 3), bool))
        rows.append(
            {
                "dataset": scan.dataset,
                "center": scan.center,
                "subject": scan.subject,
                "timepoint": scan.timepoint,
                "lesions": int(n),
                "load_ml": float(mask.data.sum() * mask.voxel_volume_ml),
            }
        )
    per_scan = pd.DataFrame(rows)
    summary = (
        per_scan.groupby("dataset", sort=False)
        .agg(
            scans=("lesions", "size"),
            lesions_median=("lesions", "median"),
            load_ml_median=("load_ml", "median"),
            load_ml_q1=("load_ml", lambda s: s.quantile(0.25)),
            load_ml_q3=("load_ml", lambda s: s.quantile(0.75)),
        )
        .reset_index()
    )
    return per_scan, summary


def _first_per_center(scans: Sequence[Scan]) -> list[Scan]:
    seen: dict[tuple[str, str], Scan] = {}
    for s in scans:
        seen.setdefault((s.dataset, s.center), s)
    return list(seen.values())


def plot_center_slices(scans: Sequence[Scan], ax=None, *, label: str = "consensus"):
    """One mid-brain axial slice per center (first scan of each) with lesion outlines.

    Parameters
    ----------
    scans : sequence of Scan
    ax : array of matplotlib Axes, optional
        One Axes per center; a new figure when omitted.
    label : str, default "consensus"

    Returns
    -------
    numpy.ndarray of matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    chosen = _first_per_center(scans)
    if ax is None:
        _, ax = plt.subplots(1, len(chosen), figsize=(3 * len(chosen), 3.4), squeeze=False)
    axes = np.ravel(ax)
    for a, scan in zip(axes, chosen, strict=False):
        img = load_image(scan.flair)
        brain = _brain(scan, img)
        les = load_label(scan, label, reference=img).data
        zs = np.flatnonzero(brain.any(axis=(0, 1)))
        z = int(zs[len(zs) // 2]) if zs.size else img.shape[2] // 2
        if les[..., zs].any():  # the brain slice with most lesion near the middle
            counts = les.sum(axis=(0, 1)).astype(float)
            counts[: zs[0]] = counts[zs[-1] + 1 :] = 0
            z = int(np.argmax(counts * np.exp(-(((np.arange(len(counts)) - z) / 15.0) ** 2))))
        sl = img.data[:, :, z].T
        vmax = np.percentile(img.data[brain], 99.5) if brain.any() else sl.max()
        a.imshow(sl, cmap="gray", origin="lower", vmin=0, vmax=vmax)
        if les[:, :, z].any():
            a.contour(les[:, :, z].T.astype(float), levels=[0.5], colors="r", linewidths=0.8)
        a.set_title(f"{scan.dataset}\ncenter {scan.center}", fontsize=9)
        a.set_axis_off()
    for a in axes[len(chosen) :]:
        a.set_axis_off()
    return axes


def plot_center_histograms(scans: Sequence[Scan], ax=None, *, bins: int = 100):
    """Per-center histograms of brain-voxel intensities before any normalization.

    Each center's voxels (all its scans pooled) are shown as a density on a log x-axis,
    which makes the differences in units, contrast and outliers visible at once.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    pooled: dict[str, list[np.ndarray]] = {}
    for scan in scans:
        img = load_image(scan.flair)
        vals = img.data[_brain(scan, img)]
        pooled.setdefault(f"{scan.dataset}:{scan.center}", []).append(vals[vals > 0])
    for name, parts in pooled.items():
        vals = np.concatenate(parts)
        edges = np.geomspace(max(vals.min(), 1e-6), vals.max(), bins + 1)
        hist, _ = np.histogram(vals, bins=edges, density=True)
        ax.step(edges[:-1], hist * edges[:-1], where="post", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("FLAIR intensity (scanner units, log scale)")
    ax.set_ylabel("density x intensity")
    ax.legend(fontsize=7)
    return ax
