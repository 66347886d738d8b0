"""Static figures. Every ``plot_*`` takes ``ax=None`` (a new figure when None) and returns the Axes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from msnb.masks import lesion_slices

__all__ = [
    "OVERLAY_COLORS",
    "overlay_labels",
    "plot_ablation_pairs",
    "plot_bland_altman",
    "plot_center_boxes",
    "plot_curves",
    "plot_distances",
    "plot_histograms",
    "plot_learning_curves",
    "plot_metric_by_center",
    "plot_model_plane_examples",
    "plot_normalization_histograms",
    "plot_normalization_slices",
    "plot_overlay",
    "plot_prediction_examples",
    "plot_slice",
    "plot_table2_beside_paper",
    "to_display",
    "view_overlay_3d",
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


# --------------------------------------------------------------------------- study figures


def _heatmap(values, annot, *, ax, title: str, vmin: float = 0.0, vmax: float = 1.0):
    """A train x test heatmap of ``values`` (DataFrame) with text ``annot`` (same shape)."""
    image = ax.imshow(values.to_numpy(float), cmap="viridis", vmin=vmin, vmax=vmax)
    for (i, j), text in np.ndenumerate(annot.to_numpy(object)):
        v = values.iat[i, j]
        color = "black" if np.isfinite(v) and v > (vmin + vmax) / 2 else "white"
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(values.shape[1]), values.columns, rotation=30, ha="right")
    ax.set_yticks(range(values.shape[0]), values.index)
    ax.set_xlabel("test set")
    ax.set_title(title, fontsize=10)
    return image


def plot_table2_beside_paper(
    comparison, *, metric: str = "dice", titles: dict | None = None, axes=None
):
    """Table 2 as two heatmaps on one colour scale: this study's cells, the paper's beside.

    Parameters
    ----------
    comparison : pandas.DataFrame
        The paper comparison of Table 2 (:func:`msnb.stats.compute_paper_comparison`:
        ``train_datasets, test_dataset, metric, paper, study, study_sd, n_scans, status``).
        Only the cells this study ran are drawn, in both panels.
    metric : str, default "dice"
    titles : dict of str to str, optional
        Display name of each dataset (default: its name).
    axes : (Axes, Axes), optional

    Returns
    -------
    np.ndarray of Axes
    """
    t = comparison[(comparison["metric"] == metric) & (comparison["status"] == "ok")]
    t = t.replace({"train_datasets": titles or {}, "test_dataset": titles or {}})
    if axes is None:
        n = max(t["train_datasets"].nunique(), 1)
        _, axes = plt.subplots(1, 2, figsize=(10, 1.2 + 0.9 * n), constrained_layout=True)
    axes = np.atleast_1d(axes)
    if t.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no cell of Table 2 in this study", ha="center", va="center")
            ax.set_axis_off()
        return axes

    def grid(column):
        return t.pivot(index="train_datasets", columns="test_dataset", values=column)

    study, paper, sd, n = grid("study"), grid("paper"), grid("study_sd"), grid("n_scans")
    annot = study.copy().astype(object)
    for i, j in np.ndindex(study.shape):
        v, s = study.iat[i, j], sd.iat[i, j]
        text = "" if pd.isna(v) else f"{v:.2f}" + ("" if pd.isna(s) else f" ± {s:.2f}")
        annot.iat[i, j] = text + ("" if pd.isna(v) else f"\nn={int(n.iat[i, j])}")
    _heatmap(study, annot, ax=axes[0], title=f"this study: mean {metric}")
    paper_annot = paper.map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    image = _heatmap(paper, paper_annot, ax=axes[1], title=f"the paper: {metric}")
    axes[0].set_ylabel("training set")
    axes[1].figure.colorbar(image, ax=list(axes), shrink=0.8, label=metric)
    return axes


def plot_ablation_pairs(
    table,
    levels: tuple[str, str],
    *,
    metric: str = "dice",
    paper=None,
    titles: dict | None = None,
    ax=None,
    title: str | None = None,
):
    """Paired plot of an ablation: each train/test pair's cell at both levels, joined.

    Parameters
    ----------
    table : pandas.DataFrame
        An ablation table (:func:`msnb.stats.compute_ablation_table`): ``train_datasets,
        test_dataset`` and ``<metric>_<level>`` for both levels.
    levels : (str, str)
        (reference, alternative), the left and right columns.
    paper : pandas.DataFrame, optional
        The paper's cells of the same pairs (columns ``train_datasets, test_dataset`` and
        ``<metric>_<level>``), drawn grey and dashed.
    titles : dict of str to str, optional
        Display name of each dataset.

    Returns
    -------
    Axes
    """
    ax = _ax(ax, (4.2, 3.6))
    ref, alt = (f"{metric}_{level}" for level in levels)
    names = titles or {}
    if paper is not None and len(paper):
        for i, (_, row) in enumerate(paper.iterrows()):
            ax.plot([0, 1], [row[ref], row[alt]], "--", color="0.6", lw=1, marker="s", ms=3,
                    label="the paper" if i == 0 else None)  # fmt: skip
    colors = plt.get_cmap("tab10")
    for i, (_, row) in enumerate(table.iterrows()):
        pair = f"{names.get(row.train_datasets, row.train_datasets)} → "
        pair += names.get(row.test_dataset, row.test_dataset)
        ax.plot([0, 1], [row[ref], row[alt]], "o-", color=colors(i % 10), label=pair)
    ax.set_xticks([0, 1], list(levels))
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylabel(f"mean {metric} (test scans)")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title or f"{levels[0]} vs {levels[1]}", fontsize=10)
    return ax


def plot_center_boxes(
    scores, *, metric: str = "dice", labels: dict | None = None, ax=None, title=None
):
    """Per-center box plots of per-scan scores, one box per model and center; a center the
    model never saw in training is hatched and marked "unseen".

    Parameters
    ----------
    scores : pandas.DataFrame
        One row per scan: ``model_id, center, <metric>`` and ``seen_in_training`` (bool, NA
        when unknown), e.g. the results rows of one multi-center test set.
    labels : dict of str to str, optional
        Model id -> display label (the legend).

    Returns
    -------
    Axes
    """
    ax = _ax(ax, (6, 3.6))
    centers = sorted(scores["center"].astype(str).unique())
    models = list(dict.fromkeys(scores["model_id"]))
    width = 0.8 / max(len(models), 1)
    colors = plt.get_cmap("tab10")
    unseen_any = False
    for m, model in enumerate(models):
        rows = scores[scores["model_id"] == model]
        for c, center in enumerate(centers):
            sel = rows[rows["center"].astype(str) == center]
            values = sel[metric].dropna().to_numpy(float)
            if not values.size:
                continue
            x = c - 0.4 + width * (m + 0.5)
            box = ax.boxplot(values, positions=[x], widths=width * 0.9, patch_artist=True)
            unseen = bool((sel["seen_in_training"] == False).any())  # noqa: E712 - NA-safe
            box["boxes"][0].set(facecolor=colors(m % 10), alpha=0.6, hatch="//" if unseen else "")
            unseen_any |= unseen
    ticks = []
    for center in centers:
        sel = scores[scores["center"].astype(str) == center]
        unseen = bool((sel["seen_in_training"] == False).all())  # noqa: E712 - NA-safe
        ticks.append(f"{center}\n(unseen)" if unseen else center)
    ax.set_xticks(range(len(centers)), ticks)
    ax.set_xlim(-0.6, len(centers) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_xlabel("center")
    ax.set_ylabel(metric)
    handles = [Patch(color=colors(m % 10), alpha=0.6, label=(labels or {}).get(k, k))
               for m, k in enumerate(models)]  # fmt: skip
    if unseen_any:
        handles.append(Patch(facecolor="white", edgecolor="k", hatch="//", label="unseen center"))
    ax.legend(handles=handles, fontsize=7, loc="upper right")
    ax.set_title(title or f"{metric} per center", fontsize=10)
    return ax


def plot_bland_altman(true_ml, pred_ml, *, groups=None, ax=None, title: str | None = None):
    """Bland-Altman plot of predicted against true lesion volume, one point per scan.

    x: the mean of the two volumes; y: predicted - true; lines at the mean difference
    (bias) and at bias ± 1.96 SD (limits of agreement).

    Parameters
    ----------
    true_ml, pred_ml : array-like, shape (n,)
        Lesion volumes in ml.
    groups : array-like of str, shape (n,), optional
        A label per point (e.g. the model), one colour each.

    Returns
    -------
    Axes
    """
    ax = _ax(ax, (5.5, 4))
    t, p = np.asarray(true_ml, float), np.asarray(pred_ml, float)
    ok = np.isfinite(t) & np.isfinite(p)
    mean, diff = (t + p) / 2, p - t
    groups = np.asarray(groups if groups is not None else [""] * t.size, dtype=object)
    for g in dict.fromkeys(groups[ok]):
        sel = ok & (groups == g)
        ax.scatter(mean[sel], diff[sel], s=14, alpha=0.8, label=g or None)
    if ok.any():
        bias, sd = diff[ok].mean(), diff[ok].std(ddof=1) if ok.sum() > 1 else 0.0
        ax.axhline(bias, color="k", lw=1, label=f"bias {bias:+.1f} ml")
        for limit in (bias - 1.96 * sd, bias + 1.96 * sd):
            ax.axhline(limit, color="k", lw=0.8, ls="--")
        ax.plot([], [], "k--", lw=0.8, label=f"bias ± 1.96 SD ({1.96 * sd:.1f} ml)")
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set_xlabel("mean of true and predicted lesion volume (ml)")
    ax.set_ylabel("predicted - true (ml)")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title or "predicted vs true lesion volume", fontsize=10)
    return ax


def plot_learning_curves(histories: dict, *, axes=None):
    """Learning curves of several models: training loss and validation Dice per epoch.

    Parameters
    ----------
    histories : dict of str to pandas.DataFrame
        Model label -> its training history (``epoch, train_loss, val_dice``, as in a
        bundle's ``history.csv``).

    Returns
    -------
    np.ndarray of Axes
        (training loss, validation Dice).
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    axes = np.atleast_1d(axes)
    colors = plt.get_cmap("tab20")
    for i, (label, h) in enumerate(histories.items()):
        axes[0].plot(h["epoch"], h["train_loss"], "o-", ms=3, color=colors(i % 20), label=label)
        axes[1].plot(h["epoch"], h["val_dice"], "o-", ms=3, color=colors(i % 20), label=label)
    axes[0].set_ylabel("training loss (weighted BCE)")
    axes[1].set_ylabel("validation Dice")
    axes[1].set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return axes


def view_overlay_3d(
    image: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray | None = None,
    *,
    affine: np.ndarray,
    title: str = "",
    width_view: int = 560,
):
    """An interactive three-plane viewer of a scan with its truth and a prediction.

    nilearn's :func:`~nilearn.plotting.view_img`: axial, coronal and sagittal planes with
    L/R labels, clicked to move the cross; a self-contained HTML page (brainsprite.js
    inline) that needs no kernel. Colours as :func:`plot_overlay`: true positives orange,
    false positives red, false negatives blue; without ``pred`` the truth is orange.

    Parameters
    ----------
    image, truth, pred : np.ndarray, shape (X, Y, Z)
        A canonical volume and its binary masks on the same grid.
    affine : np.ndarray, shape (4, 4)
        The volume's voxel-to-world affine.

    Returns
    -------
    nilearn.plotting.html_stat_map.StatMapView
        Displays in a notebook; ``.get_iframe()`` or ``.save_as_html(path)`` elsewhere.
    """
    import nibabel as nib
    from nilearn import plotting

    truth = np.asarray(truth, bool)
    labels = overlay_labels(truth, pred) if pred is not None else truth.astype(np.uint8)
    cmap = ListedColormap(
        ["black", OVERLAY_COLORS["tp"], OVERLAY_COLORS["fp"], OVERLAY_COLORS["fn"]]
    )
    z = int(np.argmax(labels.reshape(-1, labels.shape[2]).astype(bool).sum(0)))
    ijk = np.array([*np.argwhere(labels[:, :, z])[0], z, 1] if labels.any() else [0, 0, 0, 1])
    cut = (np.asarray(affine) @ ijk)[:3] if labels.any() else None
    return plotting.view_img(
        nib.Nifti1Image(labels.astype(np.float32), affine),
        bg_img=nib.Nifti1Image(np.asarray(image, np.float32), affine),
        cut_coords=cut,
        cmap=cmap,
        symmetric_cmap=False,
        vmin=0,
        vmax=3,
        threshold=0.5,
        colorbar=False,
        black_bg=True,
        dim=0,
        resampling_interpolation="nearest",
        title=title,
        width_view=width_view,
        opacity=0.8,
    )
