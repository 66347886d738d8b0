"""Interactive views (ipywidgets). Each ``view_*`` shows a static figure's data with
controls; the callbacks are plain functions (``*_frame``) that tests call directly."""

from __future__ import annotations

import numpy as np


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
    import matplotlib.pyplot as plt

    from msnb.viz import plot_histograms, plot_slice

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
    """Scroll the axial slices of a prediction overlay (TP orange, FP red, FN blue)."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from msnb.viz import plot_overlay

    load = np.asarray(truth, bool).sum((0, 1))
    z = w.IntSlider(value=int(load.argmax()), min=0, max=image.shape[2] - 1, description="slice")
    out = w.Output()

    def draw(*_):
        f = overlay_frame(image, truth, pred, z.value)
        with out:
            out.clear_output(wait=True)
            ax = plot_overlay(
                f["plane"],
                f["truth"],
                f["pred"],
                title=f"{title} TP {f['tp']} FP {f['fp']} FN {f['fn']}",
            )
            plt.show()
            del ax

    z.observe(draw, names="value")
    draw()
    return w.VBox([z, out])
