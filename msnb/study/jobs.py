"""The papermill jobs of a study: their notebooks and parameters, their records, one run.

A job is a :class:`JobSpec`: a source notebook, the parameters papermill passes it, where
the executed notebook goes, and its record ``<name>.job.json``, written only when the
notebook succeeded. The record holds the digest of the parameters (and of the inputs the
job reads), so a rerun skips a job whose record matches (:meth:`JobSpec.is_done`).
Every job's outcome is a :func:`job_result`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from msnb.files import write_json
from msnb.paths import notebooks_dir
from msnb.sources import find_scan
from msnb.study.grid import EvalJob, TrainJob, expand_study
from msnb.study.notebooks import execute_notebook
from msnb.study.spec import SET_ONLY_KEYS, TRAINING_DEFAULTS, Study, StudyError

__all__ = [
    "AGREEMENT_NOTEBOOK",
    "EVAL_NOTEBOOK",
    "STATS_NOTEBOOK",
    "TRAIN_NOTEBOOK",
    "JobSpec",
    "eval_job_parameters",
    "file_digest",
    "job_result",
    "job_specs",
    "notebook_job",
    "read_job_record",
    "run_job",
    "template_parameters",
    "train_job_parameters",
    "write_job_record",
]

TRAIN_NOTEBOOK = "03_train.ipynb"
EVAL_NOTEBOOK = "04_evaluate.ipynb"
STATS_NOTEBOOK = "06_statistics.ipynb"
AGREEMENT_NOTEBOOK = "05_annotation_agreement.ipynb"


@dataclass
class JobSpec:
    """One papermill run: notebook, parameters, where its record goes."""

    kind: str  # "train", "eval", "stats" or "agreement"
    name: str
    notebook: Path
    output: Path  # executed notebook
    record: Path  # job.json written after success (parameters digest)
    parameters: dict
    depends_on: str | None = None
    # What the job reads besides its parameters (e.g. the digest of results.csv): part of
    # the record's digest, so a changed input reruns the job, but not passed to papermill.
    inputs: dict = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """SHA-256 of the parameters (with the inputs, when there are any)."""
        blob = (
            {"parameters": self.parameters, "inputs": self.inputs}
            if self.inputs
            else self.parameters
        )
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()

    def is_done(self) -> bool:
        """Whether the record says this job succeeded with these parameters and inputs."""
        rec = read_job_record(self.record)
        return rec.get("digest") == self.digest and rec.get("status") == "ok"


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (an input of a :class:`JobSpec`)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_job_record(path: str | os.PathLike) -> dict:
    """A job's ``*.job.json`` record; ``{}`` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_job_record(spec: JobSpec, *, seconds: float) -> Path:
    """Write the record of a successful job (atomically): digest, status, time, parameters."""
    record = {
        "digest": spec.digest,
        "status": "ok",
        "seconds": seconds,
        "parameters": spec.parameters,
    }
    return write_json(spec.record, record)


def job_result(
    spec: JobSpec, status: str, *, seconds: float = 0.0, error: str | None = None
) -> dict:
    """The outcome of a job, as every runner reports it.

    Returns
    -------
    dict
        ``{"name", "kind", "status", "seconds", "error", "notebook"}``; ``status`` is
        ``"ok"``, ``"failed"`` or ``"skipped"`` (a training it needs failed).
    """
    return {
        "name": spec.name,
        "kind": spec.kind,
        "status": status,
        "seconds": seconds,
        "error": error,
        "notebook": str(spec.output),
    }


def run_job(spec: JobSpec, *, progress: bool = False) -> dict:
    """Execute one job with papermill; returns its :func:`job_result`.

    A failed notebook is kept at ``spec.output`` with its error (papermill writes it); the
    record ``job.json`` is written (atomically) only on success.
    """
    start = time.perf_counter()
    try:
        execute_notebook(spec.notebook, spec.output, spec.parameters, progress=progress)
    except Exception as exc:  # papermill raises PapermillExecutionError for cell errors
        first = str(exc).strip().splitlines()
        error = first[-1] if first else type(exc).__name__
        return job_result(spec, "failed", seconds=time.perf_counter() - start, error=error)
    seconds = time.perf_counter() - start
    write_job_record(spec, seconds=seconds)
    return job_result(spec, "ok", seconds=seconds)


def train_job_parameters(
    job: TrainJob, datasets: dict[str, dict], out_dir: Path, *, templates: dict | None = None
) -> dict:
    """Papermill parameters of ``03_train`` for a training job.

    Every setting of the job, except those of :data:`msnb.study.spec.SET_ONLY_KEYS` left at
    their default; with ``normalization_reference: template``, ``template`` and
    ``template_brain_mask`` are the template scan's files (not its scan id).

    Parameters
    ----------
    job : TrainJob
    datasets : dict
        Resolved datasets (or the dry run's placeholders).
    out_dir : Path
        The study's folder.
    templates : dict, optional
        ``{scan id: parameters}`` from :func:`template_parameters`; needed for a job whose
        reference is a template.
    """
    settings = job.settings
    shown = {
        k: v
        for k, v in settings.items()
        if k != "template" and (k not in SET_ONLY_KEYS or v != TRAINING_DEFAULTS[k])
    }
    if settings["normalization_reference"] == "template":
        shown.update((templates or {})[settings["template"]])
    return {
        "train_datasets": list(job.train_datasets),
        "dataset_specs": {d: datasets[d] for d in job.train_datasets},
        "model_id": job.model_id,
        "out_dir": str(out_dir / "train"),
        **shown,
    }


def template_parameters(scan_id: str, datasets: dict[str, dict] | None) -> dict[str, str]:
    """``{"template", "template_brain_mask"}`` of ``03_train`` for a template scan.

    Parameters
    ----------
    scan_id : str
        ``"<dataset>/<subject>/<timepoint>"`` (see :class:`msnb.study.spec.Study`).
    datasets : dict or None
        Resolved datasets; None in a dry run, which gets ``"?<scan id>"`` placeholders.

    Returns
    -------
    dict
        The template's FLAIR file and its brain mask file (``""`` when it has none).

    Raises
    ------
    ValueError
        The dataset has no such scan (the message lists some of its subjects).
    """
    if datasets is None:
        return {"template": f"?{scan_id}", "template_brain_mask": "?"}
    dataset, subject, timepoint = scan_id.split("/")
    scan = find_scan(datasets, dataset, subject, timepoint=timepoint)
    return {"template": str(scan.flair), "template_brain_mask": str(scan.brain_mask or "")}


def eval_job_parameters(job: EvalJob, datasets: dict[str, dict], out_dir: Path) -> dict:
    """Papermill parameters of ``04_evaluate`` for an evaluation job."""
    return {
        "bundle": str(out_dir / "train" / job.model_id),
        "test_dataset": job.test_dataset,
        "dataset_specs": {job.test_dataset: datasets[job.test_dataset]},
        "out_dir": str(out_dir / "eval" / job.name),
        "experiments": list(job.experiments),
    }


def job_specs(study: Study, datasets: dict[str, dict] | None = None) -> list[JobSpec]:
    """The papermill runs of a study's grid: training first, then evaluations.

    Parameters
    ----------
    study : Study
    datasets : dict, optional
        Resolved datasets (:func:`msnb.sources.resolve_datasets`); without them the
        parameters hold ``"?"`` for each dataset's adapter and root and for the template
        scan's files (a dry run).

    Raises
    ------
    StudyError
        The template scan a training needs is not in its dataset.
    """
    trains, evals = expand_study(study)
    templates = _templates(study, trains, datasets)
    if datasets is None:
        datasets = {n: _placeholder(spec) for n, spec in study.datasets.items()}
    out = study.out_dir
    train_specs = [
        notebook_job(
            "train",
            j.model_id,
            TRAIN_NOTEBOOK,
            out / "train" / j.model_id,
            train_job_parameters(j, datasets, out, templates=templates),
        )
        for j in trains
    ]
    # An evaluation's record covers its model's training job: a model trained again with
    # other settings (same id, same bundle path) is evaluated again.
    trained = {s.name: s.digest for s in train_specs}
    return train_specs + [
        notebook_job(
            "eval",
            j.name,
            EVAL_NOTEBOOK,
            out / "eval" / j.name,
            eval_job_parameters(j, datasets, out),
            depends_on=j.model_id,
            inputs={"training": trained[j.model_id]},
        )
        for j in evals
    ]


def notebook_job(
    kind: str,
    name: str,
    notebook: str,
    path: Path,
    parameters: dict,
    *,
    depends_on: str | None = None,
    inputs: dict | None = None,
) -> JobSpec:
    """A job running a source notebook into ``<path>.ipynb``, recorded in ``<path>.job.json``.

    Parameters
    ----------
    kind, name : str
        See :class:`JobSpec`.
    notebook : str
        File name of the source notebook in :func:`msnb.paths.notebooks_dir`.
    path : Path
        The executed notebook and its record, without their suffixes.
    parameters : dict
        Papermill parameters.
    depends_on : str, optional
        Name of the training job this job needs.
    inputs : dict, optional
        Digests of what the job reads besides its parameters.
    """
    return JobSpec(
        kind,
        name,
        notebooks_dir() / notebook,
        path.parent / f"{path.name}.ipynb",
        path.parent / f"{path.name}.job.json",
        parameters,
        depends_on=depends_on,
        inputs=dict(inputs or {}),
    )


def _placeholder(spec: dict) -> dict:
    """A dry run's stand-in for a resolved dataset: ``"?"`` for its adapter and root."""
    return {"adapter": "?", "root": "?", **({"n4": True} if spec.get("n4") else {})}


def _templates(study: Study, trains: list[TrainJob], datasets: dict | None) -> dict:
    """:func:`template_parameters` of each template the trainings use, found once each.

    Raises
    ------
    StudyError
        A template scan is missing (the message names the study file).
    """
    ids = {
        t.settings["template"]
        for t in trains
        if t.settings["normalization_reference"] == "template"
    }
    try:
        return {i: template_parameters(i, datasets) for i in sorted(ids)}
    except ValueError as exc:
        raise StudyError(f"{study.path}: template: {exc}") from exc
