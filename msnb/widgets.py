"""Interactive views (ipywidgets). Each ``view_*`` shows a static figure's data with
controls; the callbacks are plain functions (``*_frame``) that tests call directly.

ipywidgets is imported inside the ``view_*`` functions only, so the frames and the
``plot_*`` functions work without a widget front end. Every slider redraws once it is
released (``continuous_update=False``): a drag is one redraw, not one per step, so a slow
kernel does not queue stale figures. Each view's box carries a CSS class (``msnb-threshold``,
``msnb-compare``, ``msnb-raters``, ``msnb-planes``) by which the browser test finds it.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from msnb.agreement import compute_rater_map
from msnb.masks import most_lesion_slice
from msnb.nifti import load_image, load_mask
from msnb.viz import plot_histograms, plot_overlay, plot_slice, to_display

__all__ = [
    "PLANES",
    "compare_frame",
    "load_slice_volumes",
    "normalization_frame",
    "overlay_frame",
    "plane_frame",
    "plot_compare_frame",
    "plot_plane_frame",
    "plot_rater_frame",
    "plot_slice_frame",
    "plot_three_planes",
    "rater_frame",
    "slice_frame",
    "threshold_frame",
    "view_compare",
    "view_normalization",
    "view_overlay",
    "view_planes",
    "view_raters",
    "view_slices",
    "view_threshold",
]


def _slider(w, *, value, low, high, description, step=1):
    """An ipywidgets slider (int for an int step) that redraws on release."""
    cls = w.IntSlider if isinstance(step, int) else w.FloatSlider
    return cls(
        value=value, min=low, max=high, step=step, description=description, continuous_update=False
    )


def _live_view(rows, controls, paint, *, css: str = ""):
    """A box of ``rows`` (a widget, or a list of widgets side by side) above an output that
    ``paint()`` fills with a figure, drawn now and again whenever a widget of ``controls``
    changes value; ``css`` is the box's class (by which the browser test finds it)."""
    import ipywidgets as w

    out = w.Output()

    def draw(*_):
        with out:
            out.clear_output(wait=True)
            paint()
            plt.show()

    for control in controls:
        control.observe(draw, names="value")
    draw()
    box = w.VBox([w.HBox(r) if isinstance(r, list) else r for r in rows] + [out])
    if css:
        box.add_class(css)
    return box


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
    z = _slider(
        w, value=int(comparison.scans.slice_z.iloc[0]), low=0, high=depth - 1, description="slice"
    )
    method = w.ToggleButtons(options=comparison.methods, description="method")

    def paint():
        frame = normalization_frame(comparison, scan.value, z.value, method.value)
        _, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
        plot_slice(frame["plane"], ax=a, title=frame["title"])
        plot_histograms({scan.value: frame["values"]}, ax=b, xlabel=method.value)

    return _live_view([[scan, method], z], (scan, z, method), paint)


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
    z = _slider(w, value=start, low=0, high=image.shape[2] - 1, description="slice")

    def paint():
        f = overlay_frame(image, truth, pred, z.value)
        head = f"{title} TP {f['tp']} FP {f['fp']} FN {f['fn']}"
        plot_overlay(f["plane"], f["truth"], f["pred"], title=head)

    return _live_view([z], [z], paint)


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
    depth = first["image"].shape[2]
    z = _slider(w, value=depth // 2, low=0, high=depth - 1, description="slice")
    choices = ["none", *first["masks"], "all raters"]
    overlay = w.Dropdown(
        options=choices, value=choices[1] if len(choices) > 2 else "none", description="overlay"
    )

    def paint():
        vols = volumes(scan.value)
        z.max = vols["image"].shape[2] - 1
        names = ["none", *vols["masks"], "all raters"]
        if list(overlay.options) != names:
            overlay.options = names
        frame = slice_frame(vols, z.value, overlay.value)
        _, ax = plt.subplots(figsize=(5, 5))
        plot_slice_frame(frame, ax=ax, title=f"{scan.value} | z = {frame['z']}")

    return _live_view([[scan, overlay], z], (scan, z, overlay), paint)


def threshold_frame(
    image: np.ndarray, truth: np.ndarray, probability: np.ndarray, z: int, threshold: float
) -> dict:
    """What the threshold view shows: one slice of a prediction at a probability threshold.

    Parameters
    ----------
    image, truth, probability : np.ndarray, shape (X, Y, Z)
        A canonical volume, its truth and a model's lesion probability on the same grid.
    z : int
        Axial slice (clipped to the volume).
    threshold : float
        Voxels with probability >= threshold are lesion.

    Returns
    -------
    dict
        :func:`overlay_frame`'s keys for the thresholded mask, plus ``threshold``, ``dice``
        (the whole volume's Dice at this threshold, NaN when truth and prediction are both
        empty) and ``volume_voxels`` (predicted lesion voxels in the volume).
    """
    pred = np.asarray(probability) >= threshold
    frame = overlay_frame(image, truth, pred, z)
    t = np.asarray(truth, bool)
    denom = int(t.sum() + pred.sum())
    frame.update(
        threshold=float(threshold),
        dice=2 * int((t & pred).sum()) / denom if denom else float("nan"),
        volume_voxels=int(pred.sum()),
    )
    return frame


def view_threshold(
    image: np.ndarray, truth: np.ndarray, probability: np.ndarray, *, title: str = ""
):
    """Move the probability threshold (and the slice): the overlay and Dice follow.

    Starts at threshold 0.5 on the slice with the most truth lesion.
    """
    import ipywidgets as w

    start = most_lesion_slice(np.asarray(truth, bool))
    threshold = _slider(w, value=0.5, low=0.05, high=0.95, step=0.05, description="threshold")
    z = _slider(w, value=start, low=0, high=image.shape[2] - 1, description="slice")

    def paint():
        f = threshold_frame(image, truth, probability, z.value, threshold.value)
        head = f"{title} p >= {f['threshold']:.2f}: volume Dice {f['dice']:.3f}"
        plot_overlay(f["plane"], f["truth"], f["pred"], title=head)

    return _live_view([threshold, z], (threshold, z), paint, css="msnb-threshold")


def compare_frame(image: np.ndarray, truth: np.ndarray, preds: dict, z: int) -> dict:
    """Two (or more) models on the same slice: one :func:`overlay_frame` per model.

    Returns
    -------
    dict of str to dict
        Model name -> its frame, the slice the same for all.
    """
    return {name: overlay_frame(image, truth, pred, z) for name, pred in preds.items()}


def plot_compare_frame(frames: dict, *, axes=None):
    """Draw a :func:`compare_frame`: the models side by side, with their slice counts."""
    if axes is None:
        _, axes = plt.subplots(1, len(frames), figsize=(4.2 * len(frames), 4.2))
    axes = np.atleast_1d(axes)
    for ax, (name, f) in zip(axes, frames.items(), strict=True):
        head = f"{name}\nTP {f['tp']} FP {f['fp']} FN {f['fn']}"
        plot_overlay(f["plane"], f["truth"], f["pred"], ax=ax, title=head, legend=ax is axes[-1])
    return axes


def view_compare(image: np.ndarray, truth: np.ndarray, preds: dict):
    """Two models side by side on the same scan and slice (e.g. quantile vs linear)."""
    import ipywidgets as w

    start = most_lesion_slice(np.asarray(truth, bool))
    z = _slider(w, value=start, low=0, high=image.shape[2] - 1, description="slice")

    def paint():
        plot_compare_frame(compare_frame(image, truth, preds, z.value))

    return _live_view([z], [z], paint, css="msnb-compare")


def rater_frame(image: np.ndarray, rater_map: dict, z: int) -> dict:
    """One axial slice of a :func:`msnb.agreement.compute_rater_map`: image, counts, STAPLE outline.

    Returns
    -------
    dict
        ``plane``, ``count``, ``staple`` (X, Y), ``n_raters``, ``z`` and ``agreement``:
        voxels of the slice by the number of raters who marked them, ``{k: voxels}`` for
        k = 1 .. n_raters.
    """
    z = int(np.clip(z, 0, image.shape[2] - 1))
    count = rater_map["count"][:, :, z]
    n = rater_map["n_raters"]
    return {
        "plane": image[:, :, z],
        "count": count,
        "staple": rater_map["staple"][:, :, z],
        "n_raters": n,
        "z": z,
        "agreement": {k: int((count == k).sum()) for k in range(1, n + 1)},
    }


def plot_rater_frame(frame: dict, *, ax=None, title: str = ""):
    """Draw a :func:`rater_frame`: raters per voxel in colour (1 pale to all dark), STAPLE
    outlined in cyan; returns the Axes."""
    ax = plot_slice(frame["plane"], ax=ax, title=title or f"z = {frame['z']}")
    n = frame["n_raters"]
    count = np.ma.masked_equal(to_display(frame["count"]), 0)
    image = ax.imshow(count, cmap="YlOrRd", vmin=0.5, vmax=n + 0.5, interpolation="nearest")
    bar = ax.figure.colorbar(image, ax=ax, ticks=range(1, n + 1), fraction=0.046, pad=0.04)
    bar.set_label("raters who marked the voxel")
    if frame["staple"].any():
        ax.contour(to_display(frame["staple"].astype(float)), levels=[0.5], colors=["cyan"])
    ax.plot([], [], color="cyan", label="STAPLE")
    ax.legend(loc="lower right", fontsize=7, framealpha=0.6)
    return ax


def view_raters(volumes: dict, *, title: str = ""):
    """Scroll a scan's slices: how many raters marked each voxel, and their STAPLE consensus.

    Parameters
    ----------
    volumes : dict
        From :func:`load_slice_volumes` (a scan with several raters).
    """
    import ipywidgets as w

    image, rater_map = volumes["image"], compute_rater_map(volumes["masks"])
    start = most_lesion_slice(rater_map["count"] > 0)
    z = _slider(w, value=start, low=0, high=image.shape[2] - 1, description="slice")

    def paint():
        frame = rater_frame(image, rater_map, z.value)
        _, ax = plt.subplots(figsize=(5.5, 5))
        plot_rater_frame(frame, ax=ax, title=f"{title} z = {frame['z']}")

    return _live_view([z], [z], paint, css="msnb-raters")


#: The three planes of a canonical (RAS+) volume: the fixed axis, and the patient's side at
#: the left and right edges of the displayed plane (neurological view: left on the left).
PLANES = {
    "axial": (2, ("L", "R")),
    "coronal": (1, ("L", "R")),
    "sagittal": (0, ("P", "A")),
}


def plane_frame(image: np.ndarray, plane: str, index: int, *, mask=None) -> dict:
    """One slice of a canonical volume in the axial, coronal or sagittal plane.

    Parameters
    ----------
    image : np.ndarray, shape (X, Y, Z)
        A canonical (RAS+) volume.
    plane : {"axial", "coronal", "sagittal"}
    index : int
        Slice along the plane's axis (clipped).
    mask : np.ndarray, shape (X, Y, Z), optional
        A binary mask, sliced the same way.

    Returns
    -------
    dict
        ``plane`` (2D, in :func:`msnb.viz.to_display`'s input order: the horizontal axis
        first, the vertical second, so the top of the display is anterior or superior),
        ``mask`` (same, or None), ``index``, ``depth`` (slices along the axis), ``name``,
        ``sides`` (the patient's side at the left and the right edge).
    """
    if plane not in PLANES:
        raise ValueError(f"unknown plane {plane!r}; choose {', '.join(PLANES)}")
    axis, sides = PLANES[plane]
    index = int(np.clip(index, 0, image.shape[axis] - 1))
    take = [slice(None)] * 3
    take[axis] = index
    return {
        "plane": image[tuple(take)],
        "mask": None if mask is None else np.asarray(mask, bool)[tuple(take)],
        "index": index,
        "depth": image.shape[axis],
        "name": plane,
        "sides": sides,
    }


def plot_plane_frame(frame: dict, *, ax=None, title: str = ""):
    """Draw a :func:`plane_frame` with its side labels (L/R, or P/A for sagittal) and the
    mask outlined; returns the Axes."""
    ax = plot_slice(frame["plane"], ax=ax, title=title or f"{frame['name']} {frame['index']}")
    if frame["mask"] is not None and frame["mask"].any():
        ax.contour(to_display(frame["mask"].astype(float)), levels=[0.5], colors=["#ff8c00"])
    for x, side, align in ((0.02, frame["sides"][0], "left"), (0.98, frame["sides"][1], "right")):
        ax.text(x, 0.5, side, transform=ax.transAxes, ha=align, va="center", color="yellow",
                fontsize=12, fontweight="bold")  # fmt: skip
    return ax


def plot_three_planes(image: np.ndarray, *, mask=None, point=None, axes=None):
    """The axial, coronal and sagittal slices through ``point`` (default: the mask's most
    lesioned axial slice and its centre of mass, or the volume's centre).

    Returns
    -------
    np.ndarray of Axes
    """
    if point is None:
        if mask is not None and np.asarray(mask).any():
            point = np.round(np.argwhere(mask).mean(axis=0)).astype(int)
        else:
            point = np.array(image.shape) // 2
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, PLANES, strict=True):
        plot_plane_frame(plane_frame(image, name, point[PLANES[name][0]], mask=mask), ax=ax)
    return axes


def view_planes(image: np.ndarray, *, mask=None):
    """Choose a plane (axial, coronal, sagittal) and scroll its slices; L/R marked."""
    import ipywidgets as w

    plane = w.ToggleButtons(options=list(PLANES), description="plane")
    z = _slider(w, value=image.shape[2] // 2, low=0, high=image.shape[2] - 1, description="slice")

    def on_plane(*_):  # observed before the redraw: the slider fits the new plane first
        depth = image.shape[PLANES[plane.value][0]]
        with z.hold_trait_notifications():
            z.max = depth - 1
            z.value = depth // 2

    def paint():
        frame = plane_frame(image, plane.value, z.value, mask=mask)
        _, ax = plt.subplots(figsize=(5, 5))
        plot_plane_frame(frame, ax=ax)

    plane.observe(on_plane, names="value")
    return _live_view([plane, z], (plane, z), paint, css="msnb-planes")
