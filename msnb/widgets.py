"""Interactive views (ipywidgets). Each ``view_*`` shows a static figure's data with
controls; the callbacks are plain functions (``*_frame``) that tests call directly.

ipywidgets is imported inside the ``view_*`` functions only, so the frames and
:func:`plot_slice_frame` work without a widget front end.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from msnb.masks import most_lesion_slice
from msnb.nifti import load_image, load_mask
from msnb.viz import plot_histograms, plot_overlay, plot_slice, to_display

__all__ = [
    "load_slice_volumes",
    "normalization_frame",
    "overlay_frame",
    "plot_slice_frame",
    "slice_frame",
    "view_normalization",
    "view_overlay",
    "view_slices",
]


def normalization_frame(comparison, scan_id: str, z: int, method: str) -> dict:
    """What the normalization viewer shows for one choice.

    Returns
    -------
    dict
        ``plane`` (X, Y) slice under ``method``, ``values`` (brain voxels of the scan under
        ``method``), ``title``.
    """
    vol = comparison.volumes[(method, scan_id)]
    z = int(np.clip(z, 0, vol.shape[2] - 1))
    brain = comparison.brains[scan_id]
    return {
        "plane": vol[:, :, z],
        "values": vol[brain],
        "title": f"{scan_id} | z = {z} | {method}",
    }


def view_normalization(comparison):
    """Choose a scan, an axial slice and a normalization; see the slice and its histogram."""
    import ipywidgets as w

    ids = comparison.scans.scan_id.tolist()
    depth = comparison.volumes[(comparison.methods[0], ids[0])].shape[2]
    scan = w.Dropdown(options=ids, description="scan")
    z = w.IntSlider(
        value=int(comparison.scans.slice_z.iloc[0]), min=0, max=depth - 1, description="slice"
    )
    method = w.ToggleButtons(options=comparison.methods, description="method")
    out = w.Output()

    def draw(*_):
        frame = normalization_frame(comparison, scan.value, z.value, method.value)
        with out:
            out.clear_output(wait=True)
            fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
            plot_slice(frame["plane"], ax=a, title=frame["title"])
            plot_histograms({scan.value: frame["values"]}, ax=b, xlabel=method.value)
            plt.show()

    for control in (scan, z, method):
        control.observe(draw, names="value")
    draw()
    return w.VBox([w.HBox([scan, method]), z, out])


def overlay_frame(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, z: int) -> dict:
    """One axial slice of an image with its truth and prediction, plus the slice counts.

    Returns
    -------
    dict
        ``plane``, ``truth``, ``pred`` (X, Y) and ``tp``, ``fp``, ``fn`` pixel counts.
    """
    z = int(np.clip(z, 0, image.shape[2] - 1))
    t, p = np.asarray(truth[:, :, z], bool), np.asarray(pred[:, :, z], bool)
    return {
        "plane": image[:, :, z],
        "truth": t,
        "pred": p,
        "tp": int((t & p).sum()),
        "fp": int((p & ~t).sum()),
        "fn": int((t & ~p).sum()),
    }


def view_overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, *, title: str = ""):
    """Scroll the axial slices of a prediction overlay (TP orange, FP red, FN blue).

    Starts at the slice with the most truth lesion (:func:`msnb.masks.most_lesion_slice`).
    """
    import ipywidgets as w

    start = most_lesion_slice(np.asarray(truth, bool))
    z = w.IntSlider(value=start, min=0, max=image.shape[2] - 1, description="slice")
    out = w.Output()

    def draw(*_):
        f = overlay_frame(image, truth, pred, z.value)
        with out:
            out.clear_output(wait=True)
            plot_overlay(
                f["plane"],
                f["truth"],
                f["pred"],
                title=f"{title} TP {f['tp']} FP {f['fp']} FN {f['fn']}",
            )
            plt.show()

    z.observe(draw, names="value")
    draw()
    return w.VBox([z, out])


def load_slice_volumes(scan) -> dict:
    """A scan's FLAIR and every lesion mask on the canonical grid, for :func:`view_slices`.

    Returns
    -------
    dict
        ``image`` (X, Y, Z) float32 and ``masks`` {name: bool (X, Y, Z)}.
    """
    flair = load_image(scan.flair)
    masks = {n: load_mask(p, reference=flair, binarize=True).data for n, p in scan.masks.items()}
    return {"image": flair.data, "masks": masks}


def slice_frame(volumes: dict, z: int, overlay: str) -> dict:
    """What the slice browser shows: one axial slice and the outlines to draw on it.

    Parameters
    ----------
    volumes : dict
        From :func:`load_slice_volumes`.
    z : int
        Axial slice (clipped to the volume).
    overlay : str
        ``"none"``, a mask name (``"consensus"``, ``"rater3"``) or ``"all raters"``.

    Returns
    -------
    dict
        ``plane`` (X, Y), ``outlines`` {name: bool (X, Y)}, ``lesion_voxels`` {name: int}, ``z``.
    """
    image, masks = volumes["image"], volumes["masks"]
    z = int(np.clip(z, 0, image.shape[2] - 1))
    if overlay == "none":
        names = []
    elif overlay == "all raters":
        names = [n for n in masks if n.startswith("rater")]
    elif overlay in masks:
        names = [overlay]
    else:
        raise ValueError(
            f"unknown overlay {overlay!r}; choose none, all raters or {', '.join(masks)}"
        )
    outlines = {n: masks[n][:, :, z] for n in names}
    return {
        "plane": image[:, :, z],
        "outlines": outlines,
        "lesion_voxels": {n: int(m.sum()) for n, m in outlines.items()},
        "z": z,
    }


def plot_slice_frame(frame: dict, *, ax=None, title: str = ""):
    """Draw a :func:`slice_frame`: the slice with one coloured outline per mask."""

    ax = plot_slice(frame["plane"], ax=ax, title=title or f"z = {frame['z']}")
    colors = plt.get_cmap("tab10")
    for i, (name, mask) in enumerate(frame["outlines"].items()):
        if mask.any():
            ax.contour(
                to_display(mask.astype(float)),
                levels=[0.5],
                colors=[colors(i % 10)],
                linewidths=0.8,
            )
        ax.plot([], [], color=colors(i % 10), label=name)
    if frame["outlines"]:
        ax.legend(loc="lower right", fontsize=7, framealpha=0.6)
    return ax


def view_slices(scans):
    """Slice browser: choose a scan, scroll its axial slices, overlay the consensus or raters."""
    import ipywidgets as w

    cache: dict = {}
    by_id = {s.scan_id: s for s in scans}

    def volumes(scan_id):
        if scan_id not in cache:
            cache[scan_id] = load_slice_volumes(by_id[scan_id])
        return cache[scan_id]

    first = volumes(scans[0].scan_id)
    scan = w.Dropdown(options=list(by_id), description="scan")
    z = w.IntSlider(
        value=first["image"].shape[2] // 2,
        min=0,
        max=first["image"].shape[2] - 1,
        description="slice",
    )
    choices = ["none", *first["masks"], "all raters"]
    overlay = w.Dropdown(
        options=choices, value=choices[1] if len(choices) > 2 else "none", description="overlay"
    )
    out = w.Output()

    def draw(*_):
        vols = volumes(scan.value)
        z.max = vols["image"].shape[2] - 1
        names = ["none", *vols["masks"], "all raters"]
        if list(overlay.options) != names:
            overlay.options = names
        frame = slice_frame(vols, z.value, overlay.value)
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 5))
            plot_slice_frame(frame, ax=ax, title=f"{scan.value} | z = {frame['z']}")
            plt.show()

    for control in (scan, z, overlay):
        control.observe(draw, names="value")
    draw()
    return w.VBox([w.HBox([scan, overlay]), z, out])
