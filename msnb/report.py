"""The study report: one HTML page with the tables, figures, parameters and every notebook.

``outputs/<study>/report.html`` is assembled from the executed statistics notebook
(converted with nbconvert, code hidden), the rater-agreement figures of the study's
multi-rater datasets, a Figure-2-style panel (one test slice with the prediction of every
single-dataset model: true positives orange, false positives red, false negatives blue), the
study file, the library versions, and links to every executed notebook. nbconvert is
imported by :func:`notebook_body_html` only (heavy, and needed nowhere else).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from msnb.bundle import library_versions
from msnb.datasets import load_label
from msnb.files import write_text
from msnb.masks import most_lesion_slice
from msnb.nifti import load_image
from msnb.predict import predict_scan
from msnb.viz import plot_overlay, plot_slice

__all__ = [
    "REPORT_NAME",
    "build_report",
    "figure_to_html",
    "notebook_body_html",
    "plot_figure2_panel",
]

REPORT_NAME = "report.html"


def figure_to_html(fig, *, alt: str = "") -> str:
    """Embed a matplotlib figure as a base64 PNG ``<img>`` (and close it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def notebook_body_html(path: str | os.PathLike) -> str:
    """An executed notebook as an HTML fragment, code cells hidden."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="basic", exclude_input=True, exclude_input_prompt=True)
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nbformat.read(str(path), as_version=4))
    return body


def _section(title: str, content: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n{content}\n</section>'


def _links(out_dir: Path) -> str:
    items = []
    notebooks = [
        nb
        for sub in ("train", "eval", "external", "agreement")
        for nb in sorted((out_dir / sub).glob("*.ipynb"))
    ]
    for nb in notebooks + sorted(out_dir.glob("*.ipynb")):
        rec = nb.with_suffix(".job.json")
        status = "ok" if rec.exists() else "failed or not run"
        rel = nb.relative_to(out_dir).as_posix()
        items.append(f'<li><a href="{html.escape(rel)}">{html.escape(rel)}</a> ({status})</li>')
    return "<ul>" + "\n".join(items) + "</ul>" if items else "<p>No executed notebook.</p>"


def _versions_table() -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in library_versions().items()
    )
    return f"<table><tr><th>library</th><th>version</th></tr>{rows}</table>"


CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th{background:#f3f3f3} img{max-width:100%} pre{background:#f6f6f6;padding:.8em;overflow:auto}
nav a{margin-right:1em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
"""


def build_report(
    out_dir: str | os.PathLike,
    *,
    study_text: str = "",
    title: str = "msnb study report",
    statistics_notebook: str | os.PathLike | None = None,
    extra_sections: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write ``<out_dir>/report.html`` (atomically) and return its path.

    Parameters
    ----------
    out_dir : path-like
        The study's output folder (holds ``train/``, ``eval/``, ``results.csv``).
    study_text : str
        The study file's text, shown verbatim.
    title : str
    statistics_notebook : path-like, optional
        The executed ``06_statistics`` notebook (default ``<out_dir>/statistics.ipynb``).
    extra_sections : sequence of (title, html)
        Further sections (agreement figures, the Figure-2 panel), in order.
    """
    out_dir = Path(out_dir)
    stats_nb = Path(statistics_notebook) if statistics_notebook else out_dir / "statistics.ipynb"
    sections = []
    if stats_nb.exists():
        sections.append(("Statistics: the paper's tables", notebook_body_html(stats_nb)))
    else:
        sections.append(
            ("Statistics: the paper's tables", "<p>The statistics notebook did not run.</p>")
        )
    sections.extend(extra_sections)
    sections.append(("Study parameters", f"<pre>{html.escape(study_text)}</pre>"))
    sections.append(("Library versions", _versions_table()))
    sections.append(("Executed notebooks", _links(out_dir)))
    anchors = [f"s{i}" for i in range(len(sections))]
    nav = " ".join(
        f'<a href="#{a}">{html.escape(t)}</a>' for a, (t, _) in zip(anchors, sections, strict=True)
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(_section(t, c, a) for a, (t, c) in zip(anchors, sections, strict=True))
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>Generated {stamp} by msnb.</p><nav>{nav}</nav>\n{body}\n</body></html>"
    )
    return write_text(out_dir / REPORT_NAME, page)


def plot_figure2_panel(
    scan, bundles: dict[str, os.PathLike], *, label: str = "consensus", axes=None
):
    """One test slice with the prediction of every model (the paper's Figure 2).

    The slice is the scan's axial slice with the most lesion voxels in ``label``
    (:func:`msnb.masks.most_lesion_slice`); true positives orange, false positives red,
    false negatives blue.

    Parameters
    ----------
    scan : msnb.datasets.Scan
    bundles : dict of str to path
        Panel title (e.g. the training datasets) -> model bundle folder.
    label : str, default "consensus"
    axes : sequence of Axes, optional
        One per bundle plus one for the image with its truth.

    Returns
    -------
    numpy array of Axes
    """
    flair = load_image(scan.flair)
    truth = load_label(scan, label, reference=flair).data
    z = most_lesion_slice(truth)
    if axes is None:
        _, axes = plt.subplots(1, len(bundles) + 1, figsize=(3.2 * (len(bundles) + 1), 3.6))
    axes = np.atleast_1d(axes)
    plot_slice(flair.data[:, :, z], ax=axes[0], title=f"{scan.scan_id}\nz = {z}")
    for ax, (title, path) in zip(axes[1:], bundles.items(), strict=True):
        pred = predict_scan(scan, path)
        plot_overlay(
            flair.data[:, :, z],
            truth[:, :, z],
            pred.mask_canonical[:, :, z],
            ax=ax,
            title=title,
            legend=ax is axes[-1],
        )
    return axes
