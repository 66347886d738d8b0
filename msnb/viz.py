"""Static figures. Every ``plot_*`` takes ``ax=None`` (a new figure when None) and returns the Axes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from msnb.masks import lesion_slices

__all__ = [
    "OVERLAY_COLORS",
    "overlay_labels",
    "plot_curves",
    "plot_distances",
    "plot_histograms",
    "plot_metric_by_center",
    "plot_model_plane_examples",
    "plot_normalization_histograms",
    "plot_normalization_slices",
    "plot_overlay",
    "plot_prediction_examples",
    "plot_slice",
    "to_display",
]

OVERLAY_COLORS = {"tp": "#ff8c00", "fp": "#e31a1c", "fn": "#1f78b4"}  # orange, red, blue


def _ax(ax, figsize=(5, 4)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def to_display(plane: np.ndarray) -> np.ndarray:
    """A canonical axial slice as the image to show: anterior up, patient's right on the right.

    Parameters
    ----------
    plane : np.ndarray, shape (X, Y)
        An axial slice of a canonical (RAS+) volume, or of a mask on that grid.

    Returns
    -------
    np.ndarray, shape (Y, X)
        Rows run anterior to posterior, columns left to right ('neurological' view); pass
        it to ``imshow`` or ``contour``.
    """
    return np.flipud(np.asarray(plane).T)


def plot_slice(
    plane: np.ndarray, *, ax=None, title: str | None = None, vmin=None, vmax=None, cmap="gray"
):
    """One canonical axial slice (shape (X, Y)), anterior up.

    Parameters
    ----------
    plane : np.ndarray, shape (X, Y)
    vmin, vmax : float, optional
        Display range (default: 1st and 99.5th percentile of the nonzero pixels).
    """
    ax = _ax(ax)
    img = to_display(plane)
    nz = img[img != 0]
    if vmin is None or vmax is None:
        lo, hi = np.percentile(nz, [1, 99.5]) if nz.size else (0, 1)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def overlay_labels(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """0 background, 1 true positive, 2 false positive, 3 false negative (same shape)."""
    t, p = np.asarray(truth, bool), np.asarray(pred, bool)
    out = np.zeros(t.shape, dtype=np.uint8)
    out[t & p] = 1
    out[p & ~t] = 2
    out[t & ~p] = 3
    return out


def plot_overlay(
    plane: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    *,
    ax=None,
    title: str | None = None,
    alpha: float = 0.8,
    legend: bool = True,
):
    """A slice with true positives (orange), false positives (red), false negatives (blue).

    Parameters
    ----------
    plane, truth, pred : np.ndarray, shape (X, Y)
        Canonical axial slice and its two binary masks.
    """
    ax = plot_slice(plane, ax=ax, title=title)
    lab = to_display(overlay_labels(truth, pred))
    cmap = ListedColormap(
        ["none", OVERLAY_COLORS["tp"], OVERLAY_COLORS["fp"], OVERLAY_COLORS["fn"]]
    )
    ax.imshow(
        np.ma.masked_equal(lab, 0), cmap=cmap, vmin=0, vmax=3, alpha=alpha, interpolation="nearest"
    )
    if legend:
        handles = [Patch(color=OVERLAY_COLORS[k], label=k.upper()) for k in ("tp", "fp", "fn")]
        ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.6)
    return ax


def plot_histograms(
    samples: dict[str, np.ndarray],
    *,
    ax=None,
    bins: int = 80,
    title: str | None = None,
    xlabel: str = "intensity",
    clip: tuple[float, float] = (0.5, 99.5),
):
    """Density histograms (step lines) of several intensity samples, one per label.

    Parameters
    ----------
    samples : dict of str to np.ndarray
        E.g. center -> brain-voxel intensities.
    clip : (float, float), default (0.5, 99.5)
        Percentiles of the pooled values that bound the x axis.
    """
    ax = _ax(ax)
    pooled = np.concatenate([np.asarray(v, float) for v in samples.values()])
    lo, hi = np.percentile(pooled, clip)
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    for name, values in samples.items():
        ax.hist(
            np.clip(values, lo, hi),
            bins=edges,
            density=True,
            histtype="step",
            lw=1.4,
            label=str(name),
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_curves(history, *, ax=None, title: str | None = "training curves"):
    """Training/validation loss (left axis) and validation Dice (right axis) per epoch.

    Parameters
    ----------
    history : pandas.DataFrame
        Columns epoch, train_loss, val_loss, val_dice (:attr:`msnb.train.TrainResult.history`).
    """
    ax = _ax(ax, (6, 3.5))
    ax.plot(history.epoch, history.train_loss, "o-", label="train loss")
    ax.plot(history.epoch, history.val_loss, "s--", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted BCE")
    ax2 = ax.twinx()
    ax2.plot(history.epoch, history.val_dice, "^-", color="tab:green", label="validation Dice")
    ax2.set_ylabel("validation Dice")
    ax2.set_ylim(0, 1)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="center right")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_distances(distances, *, ax=None, title: str | None = "distance between centers"):
    """Mean pairwise distance between centers' distributions per normalization (bars).

    Parameters
    ----------
    distances : pandas.DataFrame
        From :meth:`msnb.normalize.NormalizationComparison.distances`.
    """
    ax = _ax(ax, (4, 3))
    mean = distances.groupby("method", sort=False).distance.mean()
    ax.bar(mean.index, mean.values, color="tab:gray")
    ax.scatter(
        distances.method, distances.distance, color="k", s=10, zorder=3, label="center pairs"
    )
    ax.set_ylabel("Wasserstein distance / pooled 1-99 % range")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_metric_by_center(table, *, metric: str = "dice", ax=None, title: str | None = None):
    """Per-scan values of a metric (points) and their mean (bar) per center."""
    ax = _ax(ax, (5, 3))
    g = table.groupby("center")[metric]
    centers = list(g.groups)
    ax.bar(range(len(centers)), g.mean().reindex(centers).values, color="lightgray")
    for i, c in enumerate(centers):
        vals = table.loc[table.center == c, metric].to_numpy(float)
        ax.scatter(np.full(vals.size, i), vals, color="k", s=12, zorder=3)
    ax.set_xticks(range(len(centers)), centers)
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1)
    ax.set_title(title or f"{metric} per center", fontsize=10)
    return ax


def plot_prediction_examples(image, truth, pred, *, slices=None, n: int = 3, axes=None):
    """Overlays of the ``n`` axial slices with the most lesion (truth or prediction).

    Parameters
    ----------
    image, truth, pred : np.ndarray, shape (X, Y, Z)
    slices : sequence of int, optional
        Axial slices to show; default: the ``n`` slices with the largest combined load of
        truth and prediction (:func:`msnb.masks.lesion_slices`), in index order.
    n : int, default 3
    axes : sequence of Axes, optional
        One per slice; a new figure when omitted.

    Returns
    -------
    np.ndarray of Axes
    """
    if slices is None:
        load = np.asarray(truth, bool).astype(int) + np.asarray(pred, bool)
        slices = np.sort(lesion_slices(load, n=n))
    if axes is None:
        _, axes = plt.subplots(1, len(slices), figsize=(3.2 * len(slices), 3.4))
    axes = np.atleast_1d(axes)
    for ax, z in zip(axes, slices, strict=False):
        plot_overlay(
            image[:, :, z],
            truth[:, :, z],
            pred[:, :, z],
            ax=ax,
            title=f"z = {z}",
            legend=ax is axes[-1],
        )
    return axes


def plot_model_plane_examples(images, truths, preds, *, axes=None):
    """Overlays of model-plane slices (shape (n, S, S) each): TP orange, FP red, FN blue.

    Returns
    -------
    np.ndarray of Axes
    """
    n = max(len(images), 1)
    if axes is None:
        _, axes = plt.subplots(1, n, figsize=(3 * n, 3.2), squeeze=False)
    axes = np.ravel(axes)
    for i, (img, t, p) in enumerate(zip(images, truths, preds, strict=True)):
        plot_overlay(img, t, p, ax=axes[i], legend=i == len(images) - 1)
    return axes


def plot_normalization_histograms(comparison, *, axes=None):
    """Per-center brain-voxel histograms, one panel per normalization of a
    :class:`msnb.normalize.NormalizationComparison`.

    Returns
    -------
    np.ndarray of Axes
    """
    methods = comparison.methods
    if axes is None:
        _, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.8), squeeze=False)
    axes = np.ravel(axes)
    for ax, m in zip(axes, methods, strict=False):
        samples = {c: comparison.samples[(m, c)] for c in comparison.centers}
        plot_histograms(samples, ax=ax, title=m, xlabel=f"{m} intensity")
    return axes


def plot_normalization_slices(comparison, *, axes=None):
    """The mid-brain axial slice of every scan (columns) under every normalization (rows).

    Each row shares one display range (1-99.5 percentile of that method's pooled brain
    voxels), so brightness differences between columns are real.

    Returns
    -------
    np.ndarray of Axes, shape (methods, scans)
    """
    ids = comparison.scans.scan_id.tolist()
    methods = comparison.methods
    if axes is None:
        size = (2.6 * len(ids), 2.7 * len(methods))
        _, axes = plt.subplots(len(methods), len(ids), figsize=size, squeeze=False)
    for r, m in enumerate(methods):
        pooled = np.concatenate([comparison.samples[(m, c)] for c in comparison.centers])
        lo, hi = np.percentile(pooled, [1, 99.5])
        for c, sid in enumerate(ids):
            plot_slice(
                comparison.slice(m, sid), ax=axes[r, c], vmin=lo, vmax=hi, title=f"{m}: {sid}"
            )
    return axes
