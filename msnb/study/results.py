"""A study's results: ``results.csv`` from its evaluations, and the analyses run on it.

:func:`gather_results` concatenates the per-scan rows of every finished evaluation;
:func:`analysis_specs` lists the notebooks that read them (``06_statistics``, and
``05_annotation_agreement`` for each dataset with several raters).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from msnb.datasets import load_scans
from msnb.files import atomic_path
from msnb.paths import inside, notebooks_dir
from msnb.recipe import precision_of
from msnb.records import read_table
from msnb.study.jobs import (
    AGREEMENT_NOTEBOOK,
    STATS_NOTEBOOK,
    JobSpec,
    dataset_identity,
    file_digest,
    job_roots,
    job_specs,
    notebook_job,
)
from msnb.study.spec import Study

__all__ = [
    "SCAN_DTYPES",
    "analysis_specs",
    "estimate",
    "gather_results",
    "rater_datasets",
    "replicate",
    "train_centers",
]

#: Column types of the evaluations' ``scans`` table that pandas would otherwise guess.
SCAN_DTYPES = {"subject": str, "timepoint": str, "center": str}


def gather_results(
    study: Study,
    datasets: dict[str, dict] | None = None,
    *,
    specs: list[JobSpec] | None = None,
) -> Path | None:
    """Concatenate every evaluation's per-scan metrics into ``<out>/results.csv`` (atomic).

    Only evaluations whose job record is complete are included, so no partial row appears;
    given ``datasets``, only those whose record is up to date (:meth:`JobSpec.is_done`).
    Adds ``experiment`` (the study experiments the row serves), ``train_centers`` (the
    centers of the model's training scans, to flag unseen centers), and from the model's
    bundle its ``seed`` and the ``precision`` it was trained and evaluated in (``none``:
    float32). The evaluations of external methods' masks add their rows too
    (``experiment`` ``external:<method>``, seed 0, no precision, the centers of every scan
    of the datasets the method names as its training data).

    Parameters
    ----------
    study : Study
    datasets : dict, optional
        Resolved datasets, to find the training scans' centers (else ``train_centers`` is
        empty).
    specs : list of JobSpec, optional
        The study's jobs, as :func:`msnb.study.jobs.job_specs` gives them for ``datasets``
        (a run passes the ones it built, so the datasets' identities are not read again).

    Returns
    -------
    Path or None
        ``results.csv``, or None when no evaluation has finished.
    """
    import pandas as pd  # heavy, only when gathering

    frames = []
    cache: dict = {}
    for spec in specs if specs is not None else job_specs(study, datasets):
        if spec.kind not in ("eval", "external"):
            continue
        # with the datasets, only evaluations whose record matches what they would run now
        # (a model retrained after a failed retraining keeps no stale rows)
        if not (spec.is_done() if datasets is not None else spec.record.exists()):
            continue
        rows = read_table(spec.parameters["out_dir"], "scans", dtype=SCAN_DTYPES)
        if rows is None:
            continue
        if spec.kind == "external":
            # an external method: no bundle; its training centers are those of the datasets
            # it names, all their scans (the study knows no more of its training)
            info = {"train_datasets": spec.parameters["train_datasets"], "all_scans": True}
            extra = {"seed": 0, "precision": ""}
        else:
            info = _bundle_info(Path(spec.parameters["bundle"]))
            extra = replicate(info)
        centers = train_centers(info, datasets or {}, cache=cache)
        experiments = ";".join(spec.parameters["experiments"])
        frames.append(rows.assign(experiment=experiments, train_centers=centers, **extra))
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    path = inside(study.out_dir, "results.csv")
    with atomic_path(path, root=study.out_dir) as tmp:
        table.to_csv(tmp, index=False)
    return path


def _bundle_info(bundle_dir: Path) -> dict:
    """A bundle's ``bundle.json`` (``{}`` when missing or unreadable)."""
    try:
        return json.loads((bundle_dir / "bundle.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def replicate(info: dict) -> dict:
    """``{"seed", "precision"}`` of a bundle (its ``bundle.json`` content): its training seed
    and the precision it was trained in (``"none"``: float32), as :func:`gather_results` adds
    them to its rows."""
    return {
        "seed": int((info.get("config") or {}).get("seed", 0)),
        "precision": precision_of(info),
    }


def train_centers(info: dict, datasets: dict[str, dict], *, cache: dict | None = None) -> str:
    """Centers of the scans a bundle was trained on, joined with ``+`` ("" when unknown).

    Parameters
    ----------
    info : dict
        A model bundle's ``bundle.json`` content (it lists ``train_datasets`` and
        ``train_scans``; ``{}`` for a bundle that could not be read); with ``"all_scans":
        True``, every scan of its ``train_datasets`` counts (an external method).
    datasets : dict
        Resolved datasets ``{name: {"adapter", "root", "options"}}``.
    cache : dict, optional
        ``{dataset: {scan_id: center}}``, filled as datasets are read.
    """
    cache = {} if cache is None else cache
    centers = set()
    for name in info.get("train_datasets", []):
        if name not in datasets or datasets[name].get("adapter") in (None, "?"):
            return ""
        if name not in cache:
            spec = datasets[name]
            scans = load_scans(spec["adapter"], spec["root"], **spec.get("options", {}))
            cache[name] = {s.scan_id: s.center for s in scans}
        if info.get("all_scans"):
            centers |= set(cache[name].values())
            continue
        centers |= {cache[name][sid] for sid in info.get("train_scans", []) if sid in cache[name]}
    return "+".join(sorted(centers))


def rater_datasets(datasets: dict[str, dict]) -> list[str]:
    """Study datasets whose scans carry two raters or more (annotation agreement applies)."""
    out = []
    for name, spec in datasets.items():
        if spec.get("options"):
            continue  # 05_annotation_agreement reads a dataset by adapter and folder only
        scans = load_scans(spec["adapter"], spec["root"])
        if any(sum(k.startswith("rater") for k in s.masks) >= 2 for s in scans):
            out.append(name)
    return out


def analysis_specs(study: Study, datasets: dict[str, dict], results_csv: Path) -> list[JobSpec]:
    """Notebooks run on the grid's results: ``06_statistics`` and ``05_annotation_agreement``.

    Statistics read ``results.csv``; agreement runs once per dataset with several raters
    (reading ``results.csv`` for Table 5 on the ``labels`` experiment's dataset). Each job's
    digest includes that of ``results.csv`` where it reads it and an agreement job's that of
    its dataset (:func:`msnb.study.jobs.dataset_identity`), with paths relative to the study's
    folder and the dataset's root, so an unchanged (or moved) study does not rerun them.
    Missing notebooks are left out.

    Raises
    ------
    msnb.paths.PathEscapeError
        A dataset's name would put its agreement notebook outside the study's folder.
    """
    out = study.out_dir
    csv_digest = {"results_csv": file_digest(results_csv)}
    specs = []
    if (notebooks_dir() / STATS_NOTEBOOK).exists():
        folder = inside(out, "statistics")
        parameters = {"results_csv": str(results_csv), "out_dir": str(folder)}
        specs.append(
            notebook_job(
                "stats",
                "statistics",
                STATS_NOTEBOOK,
                folder,
                parameters,
                inputs=csv_digest,
                roots=job_roots(study),
            )
        )
    if not (notebooks_dir() / AGREEMENT_NOTEBOOK).exists():
        return specs
    labels_dataset = (study.experiments.get("labels") or {}).get("dataset")
    for name in rater_datasets(datasets):
        uses_results = name == labels_dataset
        folder = inside(out, "agreement", name)
        parameters = {
            "data_root": datasets[name]["root"],
            "dataset": datasets[name]["adapter"],
            "results_csv": str(results_csv) if uses_results else "",
            "out_dir": str(folder),
        }
        specs.append(
            notebook_job(
                "agreement",
                f"agreement-{name}",
                AGREEMENT_NOTEBOOK,
                folder,
                parameters,
                inputs={
                    "data": dataset_identity(datasets[name]),
                    **(csv_digest if uses_results else {}),
                },
                roots=job_roots(study, datasets, [name]),
            )
        )
    return specs


def estimate(study: Study, specs: Sequence[JobSpec]) -> str:
    """A rough estimate of the work of ``specs`` (for ``--dry-run``: the jobs not done)."""
    n_train = sum(s.kind == "train" for s in specs)
    n_eval = len(specs) - n_train
    epochs = sum(s.parameters.get("epochs", 0) for s in specs if s.kind == "train")
    return (
        f"{n_train} trainings ({epochs} epochs in all), {n_eval} evaluations, "
        f"{len(specs)} notebooks (papermill adds about 8 s each)"
    )
