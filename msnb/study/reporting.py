"""A study's ``report.html``: :func:`msnb.report.build_report` with the study's own sections.

Besides what :mod:`msnb.report` assembles from the outputs folder, a study report holds the
annotation-agreement notebooks that succeeded and a Figure-2-style panel (one test slice,
every single-dataset model).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from msnb.datasets import load_scans
from msnb.files import restrict_writes
from msnb.paths import inside
from msnb.study.grid import expand_study
from msnb.study.jobs import read_job_record
from msnb.study.spec import Study

__all__ = ["figure2_section", "write_study_report"]


def write_study_report(study: Study, datasets: dict[str, dict]) -> Path:
    """Write ``<out>/report.html`` for a study (see :mod:`msnb.report`) and return its path.

    Parameters
    ----------
    study : Study
    datasets : dict
        Resolved datasets ``{name: {"adapter", "root", "options"}}`` (for the Figure-2 scan).
    """
    # msnb.report imports torch (through msnb.predict) and matplotlib: imported here, at
    # the end of a study, so the runner and its Dask workers (which import msnb.study to
    # run their tasks) do not load them while notebooks train.
    from msnb.report import build_report, notebook_body_html

    extra = []
    for nb in sorted((study.out_dir / "agreement").glob("*.ipynb")):
        if read_job_record(nb.with_suffix(".job.json")).get("status") != "ok":
            continue  # a failed agreement notebook is listed under the executed notebooks
        extra.append((f"Annotation agreement: {nb.stem}", notebook_body_html(nb)))
    try:
        panel = figure2_section(study, datasets)
    except Exception as exc:  # the report must not hide the study's results
        panel = ("Figure 2", f"<p>The panel could not be drawn: {exc}</p>")
    if panel:
        extra.append(panel)
    text = study.path.read_text() if study.path else yaml.safe_dump(study.raw)
    with restrict_writes(study.out_dir):  # the report writes in the study's folder only
        return build_report(
            study.out_dir, study_text=text, title=f"msnb study {study.name}", extra_sections=extra
        )


def figure2_section(study: Study, datasets: dict[str, dict]) -> tuple[str, str] | None:
    """The Figure-2-style panel: one scan of a test set, every single-dataset model.

    Returns
    -------
    (title, html) or None
        None when no single-dataset model was trained or tested.
    """
    from msnb.report import figure_to_html, plot_figure2_panel  # torch: see write_study_report

    trains, evals = expand_study(study)
    singles = [
        t
        for t in trains
        if "single" in t.experiments and inside(study.out_dir, "train", t.model_id).is_dir()
    ]
    tested = {e.test_dataset for e in evals if e.model_id in {t.model_id for t in singles}}
    if not singles or not tested:
        return None
    test = "msseg2016_test" if "msseg2016_test" in tested else sorted(tested)[0]
    spec = datasets[test]
    scan = load_scans(spec["adapter"], spec["root"], **spec.get("options", {}))[0]
    bundles = {
        "+".join(t.train_datasets): inside(study.out_dir, "train", t.model_id)
        for t in singles
        if test not in t.train_datasets
    }
    axes = plot_figure2_panel(scan, bundles)
    text = (
        f"<p>{scan.scan_id}: the axial slice with the most consensus lesion voxels, predicted by "
        "every single-dataset model not trained on it. True positives orange, false positives "
        "red, false negatives blue.</p>"
    )
    return (
        "Figure 2: one test slice, every single-dataset model",
        text + figure_to_html(axes[0].figure),
    )
