"""A study's ``report.html``: :func:`msnb.report.build_report` with the study's own sections.

Besides what :mod:`msnb.report` assembles from the outputs folder, a study report holds the
annotation-agreement notebooks that succeeded, and one test scan seen by every
single-dataset model: the Figure-2 panel and three-plane viewers
(:func:`msnb.report.scan_views_section`). The page writes the study's folder, the outputs,
the cache, the data root, the repository and the home folder by name, never as a path.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from msnb.datasets import load_scans
from msnb.files import restrict_writes
from msnb.paths import REPO_ROOT, cache_root, data_root, inside, outputs_root
from msnb.study.grid import expand_study
from msnb.study.jobs import read_job_record
from msnb.study.spec import Study

__all__ = ["agreement_sections", "report_places", "scan_views", "write_study_report"]


def report_places(study: Study, datasets: dict[str, dict]) -> dict[str, Path]:
    """The folders a study's report writes by name (:func:`msnb.report.public_text`)."""
    places = {
        "<study>": study.out_dir,
        "<outputs>": outputs_root(),
        "<cache>": cache_root(),
        "<data>": data_root(),
        "<msnb>": REPO_ROOT,
        "~": Path.home(),
    }
    if study.path is not None:
        places["<study file folder>"] = study.path.parent
    for name, spec in datasets.items():
        if spec.get("root"):
            places[f"<{name}>"] = Path(spec["root"])
    return places


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
    from msnb.report import build_report

    extra = agreement_sections(study)
    try:
        extra += scan_views(study, datasets)
    except Exception as exc:  # the report must not hide the study's results
        extra.append(("Figure 2", f"<p>The panel could not be drawn: {exc}</p>"))
    text = study.path.read_text() if study.path else yaml.safe_dump(study.raw)
    with restrict_writes(study.out_dir):  # the report writes in the study's folder only
        return build_report(
            study.out_dir,
            study_text=text,
            title=f"msnb study {study.name}",
            description=str(study.raw.get("description", "")),
            extra_sections=extra,
            places=report_places(study, datasets),
        )


def agreement_sections(study: Study) -> list[tuple[str, str]]:
    """The figures of each annotation-agreement notebook that succeeded, with a link to it
    (a failed one is listed under the executed notebooks)."""
    from msnb.report import dataset_titles, notebook_figures_html  # see write_study_report

    out, titles = [], dataset_titles()
    for nb in sorted((study.out_dir / "agreement").glob("*.ipynb")):
        if read_job_record(nb.with_suffix(".job.json")).get("status") != "ok":
            continue
        name = titles.get(nb.stem, nb.stem)
        text = (
            f"<p>How much the raters of {name} agree (Dice and lesion-wise F1 of every pair of "
            "raters and of each rater against the consensus), and what each way of combining "
            f'them gives. In full: <a href="agreement/{nb.stem}.html">the agreement '
            "notebook</a>.</p>"
        )
        out.append((f"Rater agreement: {name}", text + notebook_figures_html(nb, alt="agreement")))
    return out


def scan_views(study: Study, datasets: dict[str, dict]) -> list[tuple[str, str]]:
    """The Figure-2 panel and the three-plane viewers: one scan of a test set, every
    single-dataset model not trained on it (none when no such model was trained and tested).
    """
    from msnb.report import dataset_titles, scan_views_section  # torch: see write_study_report

    trains, evals = expand_study(study)
    singles = [
        t
        for t in trains
        if "single" in t.experiments
        and t.settings.get("seed") == study.seeds[0]
        and inside(study.out_dir, "train", t.model_id).is_dir()
    ]
    tested = {e.test_dataset for e in evals if e.model_id in {t.model_id for t in singles}}
    if not singles or not tested:
        return []
    test = "msseg2016_test" if "msseg2016_test" in tested else sorted(tested)[0]
    spec = datasets[test]
    scan = load_scans(spec["adapter"], spec["root"], **spec.get("options", {}))[0]
    titles = dataset_titles()
    bundles = {
        " + ".join(titles.get(d, d) for d in t.train_datasets): inside(
            study.out_dir, "train", t.model_id
        )
        for t in singles
        if test not in t.train_datasets
    }
    return scan_views_section(scan, bundles)
