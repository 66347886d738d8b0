"""The papermill jobs of a study: their notebooks and parameters, their records, one run.

A job is a :class:`JobSpec`: a source notebook, the parameters papermill passes it, where
the executed notebook goes, and its record ``<name>.job.json``, written only when the
notebook succeeded. The record holds the digest of the job's identity
(:attr:`JobSpec.identity`): everything that determines its output, so a rerun skips a job
whose record matches (:meth:`JobSpec.is_done`) and runs again one whose notebook, msnb
version, parameters or inputs changed:

- the parameters, with the study's folder and the data roots replaced by placeholders
  (``{out}/train``, ``{data:3dmrms}/patient01/...``), so a copied or moved outputs folder
  (and data) keeps its records while papermill still gets the real paths;
- the source notebook's code cells (:func:`notebook_digest`; not its outputs, metadata or
  prose);
- the msnb version (``msnb.__version__``);
- the inputs: the identity of the datasets a job reads (:func:`dataset_identity`), the
  training of an evaluation's model, the prediction files an external method's evaluation
  scores (:func:`predictions_identity`), the digest of ``results.csv`` for the analyses.

Every job's outcome is a :func:`job_result`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msnb
from msnb.datasets import Scan, load_scans
from msnb.external import prediction_files
from msnb.files import write_json
from msnb.paths import notebooks_dir
from msnb.sources import find_scan
from msnb.study.grid import EvalJob, TrainJob, expand_study
from msnb.study.notebooks import execute_notebook
from msnb.study.spec import SET_ONLY_KEYS, TRAINING_DEFAULTS, Study

__all__ = [
    "AGREEMENT_NOTEBOOK",
    "EVAL_NOTEBOOK",
    "EXTERNAL_NOTEBOOK",
    "STATS_NOTEBOOK",
    "TRAIN_NOTEBOOK",
    "JobSpec",
    "dataset_identity",
    "eval_job_parameters",
    "external_job_parameters",
    "file_digest",
    "job_result",
    "job_roots",
    "job_specs",
    "notebook_digest",
    "notebook_job",
    "predictions_identity",
    "read_job_record",
    "relative_parameters",
    "run_job",
    "template_parameters",
    "train_job_parameters",
    "write_job_record",
]

TRAIN_NOTEBOOK = "03_train.ipynb"
EVAL_NOTEBOOK = "04_evaluate.ipynb"
EXTERNAL_NOTEBOOK = "04_evaluate_external.ipynb"
STATS_NOTEBOOK = "06_statistics.ipynb"
AGREEMENT_NOTEBOOK = "05_annotation_agreement.ipynb"


@dataclass
class JobSpec:
    """One papermill run: notebook, parameters, where its record goes."""

    kind: str  # "train", "eval", "external", "stats" or "agreement"
    name: str
    notebook: Path
    output: Path  # executed notebook
    record: Path  # job.json written after success (identity digest)
    parameters: dict
    depends_on: str | None = None
    # What the job reads besides its parameters (e.g. the digest of results.csv, a
    # dataset's identity): part of its identity, so a changed input reruns the job, but not
    # passed to papermill.
    inputs: dict = field(default_factory=dict)
    # {placeholder: folder}: in the identity, parameters under a folder are written relative
    # to it (``{out}/train``), so copying the outputs and the data keeps the records.
    roots: dict = field(default_factory=dict)
    # {record path: digest} of the jobs this one reads (an evaluation: its training): it is
    # done only while they are done with these digests (a model trained again is evaluated
    # again, even under the same identity).
    needs: dict = field(default_factory=dict)

    @property
    def identity(self) -> dict:
        """What determines the job's output: parameters (relative to :attr:`roots`), inputs,
        the notebook's code (:func:`notebook_digest`) and the msnb version."""
        return {
            "parameters": relative_parameters(self.parameters, self.roots),
            "inputs": self.inputs,
            "notebook": notebook_digest(self.notebook),
            "msnb": msnb.__version__,
        }

    @property
    def digest(self) -> str:
        """SHA-256 of the :attr:`identity` (the record holds it)."""
        return _sha256(self.identity)

    def is_done(self) -> bool:
        """Whether the record says this job succeeded with this identity (and the jobs it
        :attr:`needs` are done with theirs)."""
        return _record_matches(self.record, self.digest) and all(
            _record_matches(path, digest) for path, digest in self.needs.items()
        )


def _sha256(blob) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _record_matches(path: str | os.PathLike, digest: str) -> bool:
    rec = read_job_record(path)
    return rec.get("digest") == digest and rec.get("status") == "ok"


def relative_parameters(value, roots: Mapping[str, str | os.PathLike]):
    """``value`` with every path string under a folder of ``roots`` written relative to it.

    Parameters
    ----------
    value : dict, list or scalar
        Papermill parameters (nested dicts and lists of strings, numbers ...).
    roots : mapping of str to path
        ``{placeholder: folder}``; ``"/data/msseg/Training/x.nii.gz"`` under
        ``{"data:msseg2016_train": "/data/msseg"}`` becomes
        ``"{data:msseg2016_train}/Training/x.nii.gz"`` (``~`` expanded on both sides). The
        longest folder wins.

    Returns
    -------
    The same structure, paths replaced (a copy).
    """
    folders = sorted(
        ((str(Path(p).expanduser()), name) for name, p in roots.items()),
        key=lambda f: (-len(f[0]), f[1]),
    )
    return _relative(value, folders)


def _relative(value, folders: list[tuple[str, str]]):
    if isinstance(value, Mapping):
        return {k: _relative(v, folders) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_relative(v, folders) for v in value]
    if not isinstance(value, str):
        return value
    path = os.path.expanduser(value)  # a dataset root may be given as ~/...
    for folder, name in folders:
        if path == folder or path.startswith(folder + os.sep):
            return "{" + name + "}" + path[len(folder) :].replace(os.sep, "/")
    return value


def notebook_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a notebook's code: each code cell's source and tags, in order.

    Outputs, execution counts, metadata and markdown cells are left out: executing or
    opening a notebook, or rewording its prose, does not rerun its jobs. ``""`` for a
    missing notebook (its jobs are never done; running them reports it); the file's bytes
    for one that is not a notebook.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return ""
    try:
        cells = json.loads(raw)["cells"]
        code = [
            {
                "source": "".join(c.get("source") or ""),
                "tags": sorted((c.get("metadata") or {}).get("tags") or []),
            }
            for c in cells
            if c.get("cell_type") == "code"
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        return hashlib.sha256(raw).hexdigest()
    return _sha256(code)


def dataset_identity(spec: Mapping) -> str:
    """A resolved dataset's identity: changes when the files its adapter reads change.

    A generated phantom (a ``phantom.json`` in the dataset's folder or the one above) is
    the SHA-256 of its ``phantom.json``, which describes every scan, and the folder's name
    in it. Any other folder is a fingerprint of the files the adapter reads (each scan's
    FLAIR, masks and brain mask): their paths relative to the root, sizes and modification
    times (ns), read without opening a volume but where the adapter must (MSSEG's empty
    consensus check). Copy data with its file times (``cp -a``, ``rsync -a``) to keep the
    records; a touched file counts as changed.

    Parameters
    ----------
    spec : mapping
        ``{"adapter", "root", "options"}`` (:func:`msnb.sources.resolve_dataset`).

    Returns
    -------
    str
        A SHA-256; ``"?"`` for a dry run's placeholder; ``"unreadable: <error>"`` when the
        adapter cannot read the folder (the jobs reading it fail and say why).
    """
    if spec.get("adapter") in (None, "?"):
        return "?"
    root = Path(spec["root"]).expanduser()
    options = dict(spec.get("options") or {})
    blob: dict = {"adapter": spec["adapter"], "options": options}
    phantom = next((p for p in (root, root.parent) if (p / "phantom.json").is_file()), None)
    if phantom is not None:
        blob["phantom"] = file_digest(phantom / "phantom.json")
        blob["folder"] = root.relative_to(phantom).as_posix()
        return _sha256(blob)
    try:
        with warnings.catch_warnings():  # the jobs reading the dataset repeat them
            warnings.simplefilter("ignore")
            scans = load_scans(spec["adapter"], root, **options)
        blob["scans"] = [_scan_files(scan, root) for scan in scans]
    except (OSError, ValueError) as exc:
        return f"unreadable: {exc}"
    return _sha256(blob)


def _scan_files(scan: Scan, root: Path) -> dict:
    """A scan's id, center and ``[relative path, size, mtime_ns]`` of each of its files."""
    files = {"flair": scan.flair, **scan.masks}
    if scan.brain_mask is not None:
        files["brain_mask"] = scan.brain_mask
    stamps = {}
    for role, path in files.items():
        stat = Path(path).stat()
        rel = Path(os.path.relpath(path, root)).as_posix()
        stamps[role] = [rel, stat.st_size, stat.st_mtime_ns]
    return {"scan": scan.scan_id, "center": scan.center, "files": stamps}


def predictions_identity(folder: str | os.PathLike, glob: str) -> str:
    """The identity of an external method's prediction files: changes when they change.

    A fingerprint of the files :func:`msnb.external.prediction_files` selects (their paths
    relative to ``folder``, sizes and modification times in ns), as :func:`dataset_identity`
    takes a folder dataset's; ``"unreadable: <error>"`` when the folder cannot be listed (the
    job then fails and says why).
    """
    try:
        files = prediction_files(folder, glob)
    except (OSError, ValueError) as exc:
        return f"unreadable: {exc}"
    root = Path(folder).expanduser()
    stamps = []
    for path in files:
        stat = path.stat()
        stamps.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    return _sha256({"glob": glob, "files": stamps})


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (an input of a :class:`JobSpec`)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_job_record(path: str | os.PathLike) -> dict:
    """A job's ``*.job.json`` record; ``{}`` when it is missing, unreadable or not a record
    (its job then runs again)."""
    try:
        record = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return {}
    return record if isinstance(record, dict) else {}


def write_job_record(spec: JobSpec, *, seconds: float) -> Path:
    """Write the record of a successful job (atomically).

    ``digest`` (of :attr:`JobSpec.identity`), ``status``, ``seconds``, the ``parameters``
    papermill got, and the rest of the identity (``notebook``, ``msnb``, ``inputs``) to
    tell why a job runs again.
    """
    identity = spec.identity
    record = {
        "digest": _sha256(identity),
        "status": "ok",
        "seconds": seconds,
        "parameters": spec.parameters,
        "identity": {k: v for k, v in identity.items() if k != "parameters"},
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


def external_job_parameters(
    entry: dict, test_dataset: str, datasets: dict[str, dict], out_dir: Path
) -> dict:
    """Papermill parameters of ``04_evaluate_external`` for one method on one test dataset.

    Parameters
    ----------
    entry : dict
        One of :attr:`msnb.study.spec.Study.external`.
    test_dataset : str
        A dataset of its ``predictions``.
    datasets : dict
        Resolved datasets (or the dry run's placeholders).
    out_dir : Path
        The study's folder.
    """
    method = entry["method"]
    return {
        "predictions": str(entry["predictions"][test_dataset]),
        "method": method,
        "train_datasets": list(entry["train"]),
        "test_dataset": test_dataset,
        "dataset_specs": {test_dataset: datasets[test_dataset]},
        "label": entry["label"],
        "pattern": entry["pattern"],
        "glob": entry["glob"],
        "resample": entry["resample"],
        "binarize": entry["binarize"],
        "allow_missing": entry["allow_missing"],
        "out_dir": str(out_dir / "external" / f"{method}__{test_dataset}"),
        "experiments": [f"external:{method}"],
    }


def _external_specs(study: Study, datasets: dict[str, dict], identities: dict) -> list[JobSpec]:
    """One job per external method and test dataset (:func:`job_specs`)."""
    specs = []
    for entry in study.external:
        for test, folder in entry["predictions"].items():
            name = f"{entry['method']}__{test}"
            roots = {**job_roots(study, datasets, [test]), "predictions": folder}
            specs.append(
                notebook_job(
                    "external",
                    name,
                    EXTERNAL_NOTEBOOK,
                    study.out_dir / "external" / name,
                    external_job_parameters(entry, test, datasets, study.out_dir),
                    inputs={
                        "data": {test: identities[test]},
                        "predictions": predictions_identity(folder, entry["glob"]),
                    },
                    roots=roots,
                )
            )
    return specs


def job_specs(study: Study, datasets: dict[str, dict] | None = None) -> list[JobSpec]:
    """The papermill runs of a study's grid: training first, then evaluations, then the
    evaluations of external methods' masks.

    A training's inputs are the identities (:func:`dataset_identity`) of the datasets it
    reads (its training datasets and its template scan's); an evaluation's are its test
    dataset's and its model's training digest, and it is done only while that training is;
    an external evaluation's are its test dataset's and its prediction files'
    (:func:`predictions_identity`), its prediction folder written ``{predictions}``.

    Parameters
    ----------
    study : Study
    datasets : dict, optional
        Resolved datasets (:func:`msnb.sources.resolve_datasets`); without them the
        parameters hold ``"?"`` for each dataset's adapter and root and for the template
        scan's files, and ``"?"`` stands for each dataset's identity (a dry run).

    Raises
    ------
    StudyError
        The template scan a training needs is not in its dataset.
    """
    trains, evals = expand_study(study)
    templates = _templates(study, trains, datasets)
    if datasets is None:
        datasets = {n: _placeholder(spec) for n, spec in study.datasets.items()}
    identities = {n: dataset_identity(spec) for n, spec in datasets.items()}
    out = study.out_dir
    train_specs = []
    for j in trains:
        reads = _train_reads(j)
        train_specs.append(
            notebook_job(
                "train",
                j.model_id,
                TRAIN_NOTEBOOK,
                out / "train" / j.model_id,
                train_job_parameters(j, datasets, out, templates=templates),
                inputs={"data": {d: identities[d] for d in reads}},
                roots=job_roots(study, datasets, reads),
            )
        )
    # An evaluation's record covers its model's training job: a model trained again with
    # other settings (same id, same bundle path) is evaluated again.
    trained = {s.name: (str(s.record), s.digest) for s in train_specs}
    external = _external_specs(study, datasets, identities)
    return (
        train_specs
        + [
            notebook_job(
                "eval",
                j.name,
                EVAL_NOTEBOOK,
                out / "eval" / j.name,
                eval_job_parameters(j, datasets, out),
                depends_on=j.model_id,
                inputs={
                    "training": trained[j.model_id][1],
                    "data": {j.test_dataset: identities[j.test_dataset]},
                },
                roots=job_roots(study, datasets, [j.test_dataset]),
                needs=dict([trained[j.model_id]]),
            )
            for j in evals
        ]
        + external
    )


def _train_reads(job: TrainJob) -> list[str]:
    """The datasets a training reads: its own, and its template scan's."""
    reads = list(job.train_datasets)
    if job.settings["normalization_reference"] == "template":
        template_dataset = job.settings["template"].split("/")[0]
        reads += [template_dataset] if template_dataset not in reads else []
    return reads


def job_roots(
    study: Study, datasets: Mapping[str, Mapping] | None = None, names: Iterable[str] = ()
) -> dict[str, str]:
    """The :attr:`JobSpec.roots` of a job of ``study`` reading datasets ``names``.

    ``{"out": <the study's folder>, "data:<name>": <its root>}``, without a dry run's
    placeholder roots. Only the job's own datasets: two datasets can share a root (MSSEG's
    training and test sets), and a dataset added to the study changes no other job.
    """
    roots = {"out": str(study.out_dir)}
    for name in names:
        root = (datasets or {}).get(name, {}).get("root")
        if root not in (None, "", "?"):
            roots[f"data:{name}"] = str(Path(root).expanduser())
    return roots


def notebook_job(
    kind: str,
    name: str,
    notebook: str,
    path: Path,
    parameters: dict,
    *,
    depends_on: str | None = None,
    inputs: dict | None = None,
    roots: Mapping[str, str | os.PathLike] | None = None,
    needs: Mapping[str, str] | None = None,
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
        Identities of what the job reads besides its parameters.
    roots : mapping, optional
        ``{placeholder: folder}`` (:func:`job_roots`): paths under them enter the identity
        relative to them.
    needs : mapping, optional
        ``{record path: digest}`` of jobs that must be done for this one to be.
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
        roots={k: str(v) for k, v in (roots or {}).items()},
        needs=dict(needs or {}),
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
        raise study.error("training.template", str(exc)) from exc
