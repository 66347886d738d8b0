"""What do the datasets look like? Helpers of ``notebooks/01_explore_data.ipynb``.

Tables (the paper's Table 1 for the data at hand, lesion statistics) and static figures
(one mid-brain slice per center with lesion outlines, per-center intensity histograms of
brain voxels before normalization). Functions take :class:`msnb.datasets.Scan` records, as
:func:`msnb.sources.load_datasets` returns them; a scan's brain is
:func:`msnb.preprocess.load_brain` (the one the models train on).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from msnb.datasets import Scan, load_label
from msnb.masks import most_lesion_slice
from msnb.metrics import label_lesions
from msnb.nifti import load_image
from msnb.preprocess import load_brain

__all__ = [
    "compute_dataset_table",
    "compute_lesion_stats",
    "phantom_centers",
    "plot_center_histograms",
    "plot_center_slices",
    "plot_phantom_centers",
]


def compute_dataset_table(scans: Sequence[Scan]):
    """The paper's Table 1 for the data at hand: one row per dataset and center.

    Returns
    -------
    pandas.DataFrame
        Columns ``dataset``, ``center``, ``subjects``, ``scans``, ``brain_slices`` (axial
        slices containing brain), ``voxel_mm`` (median voxel size) and ``shape``.
    """
    rows = []
    for scan in scans:
        img = load_image(scan.flair)
        brain = load_brain(scan, img)
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

    Lesions are 26-connected components of the label (``consensus``, the union of
    ISBI's raters, see :func:`msnb.datasets.label_sources`), all kept however small
    (:func:`msnb.metrics.label_lesions` with ``min_volume_mm3=0``).

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        Per scan (``dataset``, ``center``, ``subject``, ``timepoint``, ``lesions``,
        ``load_ml``) and per dataset (``scans``, median and IQR of count and load).
    """
    rows = []
    for scan in scans:
        mask = load_label(scan, label)
        _, n = label_lesions(mask.data, min_volume_mm3=0, connectivity=26)
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


def _center_slice(brain: np.ndarray, lesions: np.ndarray, *, width: float = 15.0) -> int:
    """The axial slice :func:`plot_center_slices` shows: mid-brain, moved to nearby lesion.

    The brain slice with the most lesion (:func:`msnb.masks.most_lesion_slice`) once each
    slice's lesion voxels are weighted by ``exp(-((z - mid) / width) ** 2)``, ``mid`` being
    the middle brain slice; the middle brain slice itself when no brain slice has lesion.

    Parameters
    ----------
    brain, lesions : np.ndarray of bool, shape (X, Y, Z)
    width : float, default 15.0
        How far (in slices) from the middle a lesion still counts.

    Returns
    -------
    int
    """
    zs = np.flatnonzero(np.asarray(brain, bool).any(axis=(0, 1)))
    z = int(zs[len(zs) // 2]) if zs.size else brain.shape[2] // 2
    if not lesions[..., zs].any():
        return z
    weights = np.exp(-(((np.arange(brain.shape[2]) - z) / width) ** 2))
    weights[: zs[0]] = weights[zs[-1] + 1 :] = 0
    return most_lesion_slice(np.asarray(lesions, bool) * weights)


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
        brain = load_brain(scan, img)
        les = load_label(scan, label, reference=img).data
        z = _center_slice(brain, les)
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
        vals = img.data[load_brain(scan, img)]
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


def phantom_centers(preset: str = "tiny", seed: int = 0, *, dataset: str = "msseg2016_train"):
    """One phantom subject seen by every simulated center (the phantom's scanner model).

    The first subject of ``dataset`` in the phantom ``preset`` / ``seed``: its anatomy and
    lesions, rendered without any scanner (the center's table contrast only), then through
    each center of :data:`msnb.phantom.CENTERS` (slice thickness, texture, bias, noise,
    gamma, units, outliers; docs/phantom.md section 3). Nothing is written.

    Returns
    -------
    dict
        ``images`` (name -> float32 volume: ``"phantom"`` first, then each center),
        ``brain``, ``truth`` (bool), ``tissue`` (uint8 labels of
        :data:`msnb.phantom.TISSUE_LABELS`).
    """
    from msnb import phantom as ph
    from msnb.phantom.simulate import subject_lesions, tissue_labels

    cfg = ph.make_config(preset)
    task = next(t for t in ph.scan_tasks(cfg, seed) if t.dataset == dataset)
    tpl = ph.load_template(cfg.voxel_mm, cfg.anatomy)
    rng = ph.seeded_rng(seed, task.dataset, task.subject, "anatomy")
    sub = ph.make_subject(tpl, cfg.anatomy, cfg.lesions, rng)
    sd, pv, zmap = ph.rasterize_lesions(sub, subject_lesions(cfg, seed, task, sub), cfg.lesions)
    c = cfg.centers[task.center]
    table = {"lesion": c.lesion_ratio, "gm": c.gm_ratio, "csf": c.csf_ratio}
    images = {"phantom": ph.render_contrast(sub, pv, zmap, table, cfg.lesions, sd)}
    for name, center in cfg.centers.items():
        rng = ph.seeded_rng(seed, "centers figure", name)
        images[name] = ph.apply_center(sub, pv, zmap, center, cfg.lesions, cfg.jitter, rng, sd)[0]
    return {"images": images, "brain": sub.brain, "truth": pv >= 0.5, "tissue": tissue_labels(sub)}


def plot_phantom_centers(sim: dict, *, center: str = "M01", bins: int = 120):
    """The same axial slice of the phantom and of each center, and one center's histogram.

    Top row: the slice (the brain's middle, moved towards lesions) of every image of
    ``sim`` (:func:`phantom_centers`), each on its own grey scale (0 to its brain's 99.5th
    percentile), lesion outlines in red on the first. Bottom: ``center``'s intensities in
    units of the mode of its non-lesion brain (:func:`msnb.phantom.realism.brain_mode`),
    as densities of GM, WM and lesion voxels, with the non-lesion brain's 95th percentile:
    the lesion voxels left of it are no brighter than normal grey matter.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from msnb.phantom.realism import brain_mode

    images, brain, truth, tissue = sim["images"], sim["brain"], sim["truth"], sim["tissue"]
    fig = plt.figure(figsize=(2.4 * len(images), 6.2))
    grid = fig.add_gridspec(2, len(images), height_ratios=(1.1, 1))
    z = _center_slice(brain, truth)
    for k, (name, img) in enumerate(images.items()):
        a = fig.add_subplot(grid[0, k])
        a.imshow(img[:, :, z].T, cmap="gray", origin="lower", vmin=0,
                 vmax=np.percentile(img[brain], 99.5))  # fmt: skip
        if k == 0 and truth[:, :, z].any():
            a.contour(truth[:, :, z].T.astype(float), levels=[0.5], colors="r", linewidths=0.6)
        a.set_title(name if k else "phantom (no scanner)", fontsize=9)
        a.set_axis_off()
    img = images[center] / brain_mode(images[center][brain & ~truth])
    ax = fig.add_subplot(grid[1, :])
    edges = np.linspace(0, 2.2, bins + 1)
    for label, sel in (("WM", tissue == 3), ("GM", tissue == 2), ("lesion", truth)):
        ax.hist(img[sel & brain & (sel if label == "lesion" else ~truth)], bins=edges,
                density=True, histtype="step", label=label)  # fmt: skip
    p95 = np.quantile(img[brain & ~truth], 0.95)
    ax.axvline(p95, color="k", ls="--", lw=0.8, label="non-lesion brain p95")
    share = np.mean(img[truth] <= p95) if truth.any() else float("nan")
    ax.set_title(f"center {center}: {share:.0%} of lesion voxels are no brighter than the "
                 "non-lesion brain's 95th percentile", fontsize=9)  # fmt: skip
    ax.set_xlabel("FLAIR / mode of the non-lesion brain")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
