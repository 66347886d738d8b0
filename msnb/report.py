"""The study report: one HTML page a reader of the paper can use, from a study's folder.

``outputs/<study>/report.html`` holds, from ``results.csv`` and the training bundles: the
paper's claims as this study found them, Table 2 as a heatmap beside the paper's, a paired
plot per ablation (the paper's pairs dashed), per-center box plots (unseen centers
hatched), predicted vs true lesion volume (Bland-Altman), every model's learning curves;
then the sections a study adds (rater agreement, the Figure-2 panel, an interactive
three-plane viewer); a legend of the short model labels with their full ids; the study
file; the code version and environment (``environment.txt``); and links to every executed
notebook rendered as HTML (written beside it by :func:`render_notebooks`). Only what the
study ran has a section. No absolute path reaches the page: :func:`public_text` writes
known folders by name. nbconvert is imported by the notebook renderers only.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from msnb import stats
from msnb.bundle import library_versions
from msnb.datasets import load_label
from msnb.files import write_text
from msnb.masks import most_lesion_slice
from msnb.nifti import load_image
from msnb.paper import load_paper_numbers
from msnb.predict import predict_scan
from msnb.viz import (
    plot_ablation_pairs,
    plot_bland_altman,
    plot_center_boxes,
    plot_learning_curves,
    plot_overlay,
    plot_slice,
    plot_table2_beside_paper,
    view_overlay_3d,
)

__all__ = [
    "REPORT_NAME",
    "build_report",
    "dataset_titles",
    "figure_to_html",
    "model_labels",
    "notebook_figures_html",
    "plot_figure2_panel",
    "public_text",
    "render_notebooks",
    "scan_views_section",
    "viewer_html",
]

REPORT_NAME = "report.html"
#: The executed notebooks of a study's folder, by subfolder ("" : the folder itself).
NOTEBOOK_FOLDERS = ("", "train", "eval", "external", "agreement")


# --------------------------------------------------------------------------- text


def public_text(text: str, places: Mapping[str, str | os.PathLike]) -> str:
    """``text`` with every known folder written by its name: no absolute path for a reader.

    Parameters
    ----------
    text : str
    places : mapping of str to path
        Name -> folder, e.g. ``{"<study>": out_dir, "<msnb>": repo_root}``; the longest
        folder is replaced first, so a folder inside another keeps its own name. A path
        under one becomes ``<name>/rest``.
    """
    pairs = sorted(
        ((str(Path(p)), n) for n, p in places.items() if str(p)), key=lambda x: -len(x[0])
    )
    for folder, name in pairs:
        if folder not in ("", "/", "."):
            text = text.replace(folder, name)
    return text


def dataset_titles() -> dict[str, str]:
    """msnb's dataset names -> the paper's (``"3dmrms"`` -> ``"3D-MR-MS"``)."""
    return {ours: theirs for theirs, ours in load_paper_numbers()["datasets"].items()}


def model_labels(results: pd.DataFrame) -> dict[str, str]:
    """A short readable label per model of a results table (the report's legend gives the
    full ids): its training sets by the paper's names, then each setting that differs from
    the paper's defaults, the ablation tag of a setting the table has no column for, and the
    seed when the study trained several.

    Returns
    -------
    dict of str to str
        ``{model_id: label}``, labels unique (a repeated one gets ``#2``, ``#3``, ...).
    """
    titles = dataset_titles()
    seeded = "seed" in results.columns and results["seed"].nunique() > 1
    columns = [c for c in (*stats.CONFIG_COLUMNS, "experiment", "seed") if c in results.columns]
    models = results.drop_duplicates("model_id").set_index("model_id")[columns]
    labels: dict[str, str] = {}
    for model_id, row in models.iterrows():
        parts = [" + ".join(titles.get(d, d) for d in stats.split_names(row.train_datasets))]
        parts += [
            str(row[c])
            for c in ("normalization", "architecture", "encoder", "label")
            if str(row[c]) != stats.DEFAULTS[c] and not _fallback_label(row, c)
        ]
        if len(parts) == 1:  # default columns: a setting ablation names itself in its tag
            tags = str(row.get("experiment", "") or "").split(";")
            parts += [
                t[len(stats.ABLATION_TAG) :] for t in tags if t.startswith(stats.ABLATION_TAG)
            ]
        if seeded:
            parts.append(f"seed {int(row.seed)}")
        labels[model_id] = ", ".join(parts)
    seen: dict[str, int] = {}
    for model_id, label in labels.items():
        seen[label] = seen.get(label, 0) + 1
        labels[model_id] = label if seen[label] == 1 else f"{label} #{seen[label]}"
    return labels


def _fallback_label(row: pd.Series, column: str) -> bool:
    """A single dataset's stand-in for the default label (ISBI 2015's ``union``)."""
    if column != "label":
        return False
    one = stats.split_names(row.train_datasets)
    return len(one) == 1 and stats.is_default(row.to_frame().T).iloc[0]


# --------------------------------------------------------------------------- html parts


def figure_to_html(fig, *, alt: str = "") -> str:
    """Embed a matplotlib figure as a base64 PNG ``<img>`` (and close it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _figure(fig, alt: str, caption: str) -> str:
    """A figure with its caption; ``alt`` names it (the report's tests look for it)."""
    return f"<figure>{figure_to_html(fig, alt=alt)}<figcaption>{caption}</figcaption></figure>"


def _table(frame: pd.DataFrame, columns: Mapping[str, str], *, digits: int = 3) -> str:
    """``frame``'s ``columns`` (source -> header) as an HTML table, numbers rounded."""
    out = frame[[c for c in columns if c in frame.columns]].rename(columns=dict(columns))
    return out.to_html(
        index=False, na_rep="", float_format=lambda v: f"{v:.{digits}f}", border=0, escape=True
    )


def _section(title: str, content: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n{content}\n</section>'


# --------------------------------------------------------------------------- sections


def _findings_section(tables: dict) -> str | None:
    """The paper's claims this study could test: its effect and p beside the paper's."""
    findings = tables["findings"]
    ran = findings[findings["verdict"] != stats.NOT_RUN].copy()
    if ran.empty:
        return None
    ran["seeds"] = [
        "" if pd.isna(n) or n < 2 else f"{int(s)} of {int(n)}"
        for s, n in zip(ran["stable_seeds"], ran["n_seeds"], strict=True)
    ]
    columns = {
        "statement": "claim of the paper",
        "verdict": "verdict",
        "effect_name": "effect",
        "effect": "this study",
        "paper_effect": "paper",
        "p_value": "p",
        "paper_p_value": "paper p",
        "seeds": "same sign in seeds",
    }
    rest = findings.loc[findings["verdict"] == stats.NOT_RUN, "statement"]
    note = (
        f"<p>{len(rest)} other claims need models this study did not train: "
        + "; ".join(html.escape(s) for s in rest)
        + ".</p>"
        if len(rest)
        else ""
    )
    untestable = findings.loc[findings["verdict"] == stats.NOT_TESTABLE, "detail"]
    if len(untestable):
        why = untestable.iloc[0].split(";")[0]
        note += (
            f"<p>Not testable: {html.escape(why)} (Dice). Ratios and differences of cells that"
            " low say nothing about the paper's claims; train longer before reading them.</p>"
        )
    return _table(ran, columns) + note


def _paper_rows(frame: pd.DataFrame, titles: dict, metric: str = "dice") -> pd.DataFrame:
    """The rows of a paper comparison this study ran, dataset names as the paper's."""
    ok = frame[(frame["status"] == "ok") & (frame["metric"] == metric)]
    return ok.replace({"train_datasets": titles, "test_dataset": titles})


PAPER_COLUMNS = {
    "train_datasets": "trained on",
    "test_dataset": "tested on",
    "paper": "paper",
    "study": "this study",
    "study_sd": "seed SD",
    "difference": "difference",
    "n_scans": "scans",
}


def _table2_section(tables: dict, titles: dict) -> str | None:
    """Table 2: this study's heatmap beside the paper's, and the cells in numbers."""
    comparison = tables["paper_table2"]
    rows = _paper_rows(comparison, titles)
    if rows.empty:
        return None
    axes = plot_table2_beside_paper(comparison, titles=titles)
    caption = (
        "Mean Dice of each single-dataset model (paper defaults) on each other test set: this "
        "study (± seed SD when it trained several seeds; n test scans) beside the paper's "
        "published cell, on one colour scale."
    )
    return _figure(axes[0].figure, "Table 2 heatmap", caption) + _table(rows, PAPER_COLUMNS)


#: Ablations of the paper: the paper table holding their cells.
PAPER_ABLATIONS = {"normalization": "table6", "architecture": "table7"}


def _ablation_levels(name: str) -> tuple[str, str]:
    return stats.ABLATIONS.get(name, ("default", name))


def _paper_pairs(paper: dict, name: str, table: pd.DataFrame) -> pd.DataFrame | None:
    """The paper's cells of ``table``'s train/test pairs for an ablation of the paper."""
    if name not in PAPER_ABLATIONS:
        return None
    cells = paper[PAPER_ABLATIONS[name]].copy()
    keys = table.assign(key=table["train_datasets"].map(stats.dataset_key))
    cells["key"] = cells["train_datasets"].map(stats.dataset_key)
    merged = cells.merge(keys[["key", "test_dataset"]], on=["key", "test_dataset"])
    return merged


def _ablation_sections(tables: dict, titles: dict) -> list[tuple[str, str]]:
    """One paired plot per ablation the study ran, the paper's pairs dashed, and its test."""
    paper, out = load_paper_numbers(), []
    names = [
        k[len("ablation_") :]
        for k in tables
        if k.startswith("ablation_") and not k.endswith("_by_seed") and len(tables[k])
    ]
    for name in names:
        table, levels = tables[f"ablation_{name}"], _ablation_levels(name)
        pairs = _paper_pairs(paper, name, table)
        ax = plot_ablation_pairs(table, levels, paper=pairs, titles=titles)
        caption = (
            f"Mean Dice of each train/test pair with {levels[0]} and with {levels[1]}, all other "
            "settings equal (seed means)."
            + (" Dashed grey: the paper's cells of the same pairs." if pairs is not None else "")
        )
        shown = table.replace({"train_datasets": titles, "test_dataset": titles})
        columns = {
            "train_datasets": "trained on",
            "test_dataset": "tested on",
            f"dice_{levels[0]}": levels[0],
            f"dice_{levels[1]}": levels[1],
            "dice_diff": f"{levels[1]} - {levels[0]}",
            "n_scans": "scans",
        }
        html_ = _figure(ax.figure, f"ablation {name}", caption) + _table(shown, columns)
        out.append((f"Ablation: {name}", html_ + _tests_table(tables, f"ablation_{name}")))
    return out


def _tests_table(tables: dict, table: str) -> str:
    """The tests of one table that could run, in a few columns."""
    tests = stats.select_tests(tables, table)
    tests = tests[tests["status"] == "ok"].astype({"n": "Int64"})
    if tests.empty:
        return "<p>Too few pairs for a test.</p>"
    columns = {
        "test": "test",
        "unit": "unit",
        "comparison": "comparison",
        "n": "n",
        "p_value": "p",
        "effect_name": "effect size",
        "effect": "value",
    }
    return _table(tests, columns)


def _main_rows(results: pd.DataFrame, labels: dict) -> tuple[pd.DataFrame, dict]:
    """The rows of the models of the paper's experiments (no ablation), seeds pooled under
    their replicate id, and the labels of those replicates (without a seed)."""
    rows = results[stats.serves_main_experiment(results)]
    rows = rows.assign(model_id=stats.replicate_id(rows["model_id"]))
    pooled = {m: re.sub(r", seed \d+$", "", labels.get(m, m)) for m in rows["model_id"].unique()}
    return rows, pooled


def _centers_section(results: pd.DataFrame, labels: dict, titles: dict) -> str | None:
    """Per-center box plots of each multi-center test set; unseen centers hatched."""
    rows, pooled = _main_rows(results, labels)
    multi = [t for t, g in rows.groupby("test_dataset") if g["center"].nunique() > 1]
    if not multi:
        return None
    seen = [
        pd.NA if not tc or pd.isna(tc) else str(c) in stats.split_names(str(tc))
        for tc, c in zip(rows["train_centers"], rows["center"], strict=True)
    ]
    rows = rows.assign(seen_in_training=pd.array(seen, dtype="boolean"))
    fig, axes = plt.subplots(1, len(multi), figsize=(6.5 * len(multi), 3.8), squeeze=False)
    for ax, test in zip(axes[0], multi, strict=True):
        plot_center_boxes(
            rows[rows["test_dataset"] == test],
            labels=pooled,
            ax=ax,
            title=f"tested on {titles.get(test, test)}",
        )
    caption = (
        "Dice of each test scan per center of every multi-center test set, one box per model "
        "(seeds pooled); a center absent from the model's training data is hatched, and marked "
        "(unseen) under the axis when no model saw it."
    )
    return _figure(fig, "per-center box plots", caption)


def _volumes_section(results: pd.DataFrame, labels: dict) -> str | None:
    """Bland-Altman of predicted against true lesion volume, one point per model and scan."""
    rows, pooled = _main_rows(results, labels)
    rows = rows.dropna(subset=["true_volume_ml", "pred_volume_ml"])
    if rows.empty:
        return None
    ax = plot_bland_altman(
        rows["true_volume_ml"], rows["pred_volume_ml"], groups=rows["model_id"].map(pooled)
    )
    caption = (
        "Each test scan of each model of the paper's experiments (seeds as separate points): "
        "the difference between the predicted and the true lesion volume against their mean; "
        "solid line the mean difference (bias), dashed the limits of agreement."
    )
    return _figure(ax.figure, "Bland-Altman lesion volume", caption)


def _curves_section(out_dir: Path, labels: dict) -> str | None:
    """Every model's training loss and validation Dice per epoch (its ``history.csv``)."""
    histories = {}
    for model_id, label in labels.items():
        path = out_dir / "train" / model_id / "history.csv"
        if path.is_file():
            histories[label] = pd.read_csv(path)
    if not histories:
        return None
    axes = plot_learning_curves(histories)
    caption = "Training loss and validation Dice (pooled over the validation slices) per epoch."
    return _figure(axes[0].figure, "learning curves", caption)


def _models_section(labels: dict) -> str:
    frame = pd.DataFrame({"label": list(labels.values()), "model id": list(labels)})
    return (
        "<p>The labels used in the figures and tables, with each model's full id (its "
        "folder under <code>train/</code>).</p>"
        + _table(frame, {"label": "label", "model id": "model id"})
    )


# --------------------------------------------------------------------------- environment


def read_environment(out_dir: Path) -> tuple[dict[str, str], list[str]]:
    """The header fields and the ``name==version`` lines of ``<out_dir>/environment.txt``
    (empty when the study has none)."""
    try:
        lines = (out_dir / "environment.txt").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}, []
    header = dict(
        ln.split(": ", 1)
        for ln in lines
        if ": " in ln and not ln.startswith("#") and "==" not in ln
    )
    return header, [ln for ln in lines if "==" in ln and not ln.startswith("#")]


def code_version(out_dir: Path) -> str:
    """msnb's version and commit as the study's last run recorded them, in one line."""
    header, _ = read_environment(out_dir)
    if not header:
        return "msnb (no environment.txt: the code version of the run is unknown)"
    return f"msnb {header.get('msnb', '?')}, commit {header.get('commit', 'unknown')}"


def _environment_section(out_dir: Path, places: Mapping[str, str | os.PathLike]) -> str:
    """The recorded environment: the code version, Python, platform, every distribution."""
    header, dists = read_environment(out_dir)
    if not header:
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
            for k, v in library_versions().items()
        )
        return (
            "<p>This study's folder has no <code>environment.txt</code> (written by "
            "<code>msnb study</code> as each run starts); the libraries of the process that "
            f"wrote this page:</p><table><tr><th>library</th><th>version</th></tr>{rows}</table>"
        )
    frame = pd.DataFrame(
        {"": list(header), "value": [public_text(v, places) for v in header.values()]}
    )
    listing = html.escape("\n".join(dists))
    return (
        _table(frame, {"": "", "value": "value"})
        + f'<p>The exact installed versions: <a href="environment.txt">environment.txt</a> '
        f"({len(dists)} distributions).</p><details><summary>show them</summary>"
        f"<pre>{listing}</pre></details>"
    )


# --------------------------------------------------------------------------- notebooks


def notebook_figures_html(path: str | os.PathLike, *, alt: str = "") -> str:
    """The figures (PNG outputs) of an executed notebook, as ``<img>`` tags, in order."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    images = [
        out["data"]["image/png"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    return "".join(
        f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{"".join(data.split())}">'
        for data in images
    )


def executed_notebooks(out_dir: Path) -> list[Path]:
    """The executed notebooks of a study's folder, in the order of :data:`NOTEBOOK_FOLDERS`."""
    return [nb for sub in NOTEBOOK_FOLDERS for nb in sorted((out_dir / sub).glob("*.ipynb"))]


def render_notebooks(
    out_dir: str | os.PathLike, *, places: Mapping[str, str | os.PathLike] | None = None
) -> dict[Path, Path]:
    """Write every executed notebook of a study as HTML beside it (``<name>.html``).

    nbconvert's ``lab`` template, code shown, known folders written by name
    (:func:`public_text`); a page newer than its notebook is kept. Written atomically.

    Returns
    -------
    dict of Path to Path
        Notebook -> its HTML page.
    """
    import nbformat
    from nbconvert import HTMLExporter

    out_dir, pages, exporter = Path(out_dir), {}, None
    for nb in executed_notebooks(out_dir):
        page = nb.with_suffix(".html")
        if not page.exists() or page.stat().st_mtime_ns < nb.stat().st_mtime_ns:
            exporter = exporter or HTMLExporter(template_name="lab")
            body, _ = exporter.from_notebook_node(nbformat.read(str(nb), as_version=4))
            write_text(page, public_text(body, places or {}))
        pages[nb] = page
    return pages


def _notebooks_section(out_dir: Path, pages: Mapping[Path, Path]) -> str:
    items = []
    for nb in executed_notebooks(out_dir):
        status = "ok" if nb.with_suffix(".job.json").exists() else "failed or not run"
        rel = nb.relative_to(out_dir).as_posix()
        page = pages.get(nb)
        link = page.relative_to(out_dir).as_posix() if page else rel
        items.append(
            f'<li><a href="{html.escape(link)}">{html.escape(rel[: -len(".ipynb")])}</a> '
            f'({status}; <a href="{html.escape(rel)}">.ipynb</a>)</li>'
        )
    return "<ul>" + "\n".join(items) + "</ul>" if items else "<p>No executed notebook.</p>"


# --------------------------------------------------------------------------- the page

CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}
th{background:#f3f3f3} img{max-width:100%} pre{background:#f6f6f6;padding:.8em;overflow:auto}
nav a{margin-right:1em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
figure{margin:1em 0} figcaption{font-size:.9em;color:#444;max-width:60em}
.lead{font-size:1.05em;max-width:60em} iframe{border:0}
"""


def _result_sections(out_dir: Path, results: pd.DataFrame) -> list[tuple[str, str | None]]:
    """The sections built from ``results.csv`` and the bundles (None: the study has none)."""
    titles, labels = dataset_titles(), model_labels(results)
    tables = stats.compute_all_tables(results)
    sections = [
        ("The paper's claims in this study", _findings_section(tables)),
        ("Table 2: train on one dataset, test on another", _table2_section(tables, titles)),
        *_ablation_sections(tables, titles),
        ("Per center: are unseen scanners harder?", _centers_section(results, labels, titles)),
        ("Predicted vs true lesion volume", _volumes_section(results, labels)),
        ("Learning curves", _curves_section(out_dir, labels)),
    ]
    return sections + [("__models__", _models_section(labels))]


def build_report(
    out_dir: str | os.PathLike,
    *,
    study_text: str = "",
    title: str = "msnb study report",
    description: str = "",
    extra_sections: Sequence[tuple[str, str]] = (),
    places: Mapping[str, str | os.PathLike] | None = None,
) -> Path:
    """Write ``<out_dir>/report.html`` (atomically) and return its path.

    Parameters
    ----------
    out_dir : path-like
        The study's output folder (holds ``train/``, ``eval/``, ``results.csv``).
    study_text : str
        The study file's text, shown verbatim (known folders by name).
    title, description : str
        The page's title and its first paragraph.
    extra_sections : sequence of (title, html)
        Further sections (agreement, the Figure-2 panel, the viewer), after the figures.
    places : mapping of str to path, optional
        Folders written by name on the page (:func:`public_text`); the study's folder is
        always ``<study>``.
    """
    out_dir = Path(out_dir)
    places = {"<study>": out_dir, **(places or {})}
    results_csv = out_dir / "results.csv"
    results = stats.load_results(results_csv) if results_csv.is_file() else None
    sections = _result_sections(out_dir, results) if results is not None else []
    models = [s for s in sections if s[0] == "__models__"]
    sections = [s for s in sections if s[0] != "__models__" and s[1] is not None]
    sections += list(extra_sections)
    sections += [("Models", m[1]) for m in models]
    sections.append(("Study parameters", f"<pre>{html.escape(study_text)}</pre>"))
    sections.append(("Code version and environment", _environment_section(out_dir, places)))
    pages = render_notebooks(out_dir, places=places)
    sections.append(("Executed notebooks", _notebooks_section(out_dir, pages)))
    page = _page(title, _lead(out_dir, description, results, pages), sections)
    return write_text(out_dir / REPORT_NAME, public_text(page, places))


def _lead(out_dir: Path, description: str, results, pages) -> str:
    """The first paragraph: what the study is, what it ran, the code version."""
    text = f"<p class='lead'>{html.escape(description)}</p>" if description else ""
    if results is not None and len(results):
        text += (
            f"<p>{results['model_id'].nunique()} models, {results['test_dataset'].nunique()} "
            f"test sets, {len(results)} evaluated scans.</p>"
        )
    stats_page = pages.get(out_dir / "statistics.ipynb")
    if stats_page is not None:
        link = stats_page.relative_to(out_dir).as_posix()
        text += (
            f'<p>Every table and test in full: <a href="{link}">the statistics notebook</a>.</p>'
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return text + f"<p>Code: {html.escape(code_version(out_dir))}. Page written {stamp}.</p>"


def _page(title: str, lead: str, sections: Sequence[tuple[str, str]]) -> str:
    anchors = [f"s{i}" for i in range(len(sections))]
    nav = " ".join(
        f'<a href="#{a}">{html.escape(t)}</a>' for a, (t, _) in zip(anchors, sections, strict=True)
    )
    body = "\n".join(_section(t, c, a) for a, (t, c) in zip(anchors, sections, strict=True))
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{lead}"
        f"<nav>{nav}</nav>\n{body}\n</body></html>"
    )


# --------------------------------------------------------------------------- one scan


def viewer_html(view, *, title: str, height: int = 330) -> str:
    """A nilearn viewer (:func:`msnb.viz.view_overlay_3d`) as a self-contained ``<iframe>``,
    without the page's one outside link (nilearn's favicon)."""
    page = re.sub(r"<link[^>]*rel=\"icon\"[^>]*>", "", view.html, flags=re.S)
    return (
        f'<iframe title="{html.escape(title)}" class="viewer" width="100%" '
        f'height="{height}" srcdoc="{html.escape(page, quote=True)}"></iframe>'
    )


def plot_figure2_panel(
    scan,
    bundles: Mapping[str, os.PathLike],
    *,
    label: str = "consensus",
    predictions: Mapping[str, np.ndarray] | None = None,
    axes=None,
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
    predictions : dict of str to np.ndarray, optional
        Panel title -> canonical predicted mask, for the bundles already predicted.
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
        mask = (predictions or {}).get(title)
        mask = predict_scan(scan, path).mask_canonical if mask is None else mask
        plot_overlay(
            flair.data[:, :, z],
            truth[:, :, z],
            mask[:, :, z],
            ax=ax,
            title=title,
            legend=ax is axes[-1],
        )
    return axes


def scan_views_section(
    scan, bundles: Mapping[str, os.PathLike], *, label: str = "consensus"
) -> list[tuple[str, str]]:
    """The Figure-2 panel and a three-plane viewer per model of one test scan.

    Each model predicts the scan once; the viewers (:func:`msnb.viz.view_overlay_3d`) show
    the scan with its truth, then each model's true positives, false positives and false
    negatives, in all three planes.

    Returns
    -------
    list of (title, html)
    """
    flair = load_image(scan.flair)
    truth = load_label(scan, label, reference=flair).data.astype(bool)
    masks = {title: predict_scan(scan, path).mask_canonical for title, path in bundles.items()}
    axes = plot_figure2_panel(scan, bundles, label=label, predictions=masks)
    text = (
        f"<p>{html.escape(scan.scan_id)}: the axial slice with the most {label} lesion voxels, "
        "predicted by each model. True positives orange, false positives red, false negatives "
        "blue.</p>"
    )
    panel = text + figure_to_html(axes[0].figure, alt="Figure 2 panel")
    views = {f"{scan.scan_id}: {label}": None, **masks}
    frames = [
        viewer_html(view_overlay_3d(flair.data, truth, m, affine=flair.affine, title=t), title=t)
        for t, m in views.items()
    ]
    intro = (
        "<p>The same scan in three planes (click to move the cross; L and R mark the "
        f"patient's left and right): first its {label} truth (orange), then each model's true "
        "positives (orange), false positives (red) and false negatives (blue). The viewers "
        "are nilearn's <code>view_img</code>, which run in the page without a kernel.</p>"
    )
    return [
        ("Figure 2: one test slice, every model", panel),
        ("Three planes: one scan, its truth and predictions", intro + "\n".join(frames)),
    ]
