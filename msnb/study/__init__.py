"""The study grid: a YAML file of experiments, expanded into papermill jobs.

A study file names its datasets, the training defaults and the experiments the way the
paper thinks about them (``single``, ``combinations``, ``labels``, ``ablations``).
:func:`expand_study` turns it into one training job per distinct training configuration and
one evaluation job per (model, test dataset); :func:`run_study` executes them with
papermill, sequentially or on a Dask distributed cluster, skipping jobs whose results exist
for the same parameters, and gathers every metrics file into ``results.csv``.

Example (see ``parameters/quick.yaml``)::

    name: quick
    datasets:
      isbi2015: {phantom: quick, seed: 0}
      msseg2016_train: {adapter: msseg2016_train, root: ${MSNB_DATA}/msseg2016}
    training: {architecture: unetplusplus, encoder: resnet18, size: 96, epochs: 8}
    experiments:
      single: [isbi2015, msseg2016_train]
      combinations: [{train: [isbi2015, msseg2016_train], test: [3dmrms]}]
      labels: {dataset: isbi2015, labels: [rater1, rater2, union]}
      ablations:
        - {name: linear, change: {normalization: linear}, of: [single]}
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from msnb.paths import notebooks_dir, outputs_root
from msnb.study.notebooks import execute_notebook

DATASET_ADAPTERS = {
    # dataset name -> (adapter, sub-folder of a phantom or data root)
    "isbi2015": ("isbi2015", "isbi2015"),
    "msseg2016_train": ("msseg2016_train", "msseg2016"),
    "msseg2016_test": ("msseg2016_test", "msseg2016"),
    "3dmrms": ("3dmrms", "3dmrms"),
}

TRAINING_KEYS = {
    "architecture": str,
    "encoder": str,
    "encoder_weights": (str, type(None)),
    "size": int,
    "epochs": int,
    "batch_size": int,
    "lr": float,
    "normalization": str,
    "label": str,
    "device": str,
    "time_budget_s": (int, float, type(None)),
    "seed": int,
    "val_fraction": float,
    "pos_weight": float,
    "max_slices_per_epoch": (int, type(None)),
}
TRAINING_DEFAULTS = {
    "architecture": "unetplusplus",
    "encoder": "resnet18",
    "encoder_weights": None,
    "size": 96,
    "epochs": 8,
    "batch_size": 16,
    "lr": 1e-3,
    "normalization": "quantile",
    "label": "consensus",
    "device": "auto",
    "time_budget_s": None,
    "seed": 0,
    "val_fraction": 0.2,
    "pos_weight": 0.8,
    "max_slices_per_epoch": None,
}
EXPERIMENT_KINDS = ("single", "combinations", "labels", "ablations")
# Datasets without a consensus train on one rater when asked for "consensus" (as the paper
# does for ISBI 2015); naming that rater in the model id lets the single-dataset model and
# the rater1 model of the labels experiment be trained once.
CONSENSUS_FALLBACK = {"isbi2015": "rater1"}
TRAIN_NOTEBOOK = "03_train.ipynb"
EVAL_NOTEBOOK = "04_evaluate.ipynb"
STATS_NOTEBOOK = "06_statistics.ipynb"
AGREEMENT_NOTEBOOK = "05_annotation_agreement.ipynb"


class StudyError(ValueError):
    """A malformed study file; the message names the file and the key."""


# --------------------------------------------------------------------------- study file


@dataclass
class Study:
    """A parsed, validated study file."""

    name: str
    path: Path | None
    datasets: dict[str, dict]
    training: dict
    experiments: dict
    out_dir: Path
    raw: dict = field(repr=False, default_factory=dict)


def _expand_env(value):
    if isinstance(value, str):
        return os.path.expandvars(re.sub(r"\$\{MSNB_DATA\}", _data_root_str(), value))
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def _data_root_str() -> str:
    from msnb.paths import data_root

    return str(data_root())


def _fail(where: str, key: str, problem: str):
    raise StudyError(f"{where}: {key}: {problem}")


def _check_type(where: str, key: str, value, types) -> None:
    types = types if isinstance(types, tuple) else (types,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return
    if isinstance(value, bool) or not isinstance(value, types):
        names = "/".join("null" if t is type(None) else t.__name__ for t in types)
        _fail(where, key, f"expected {names}, got {value!r}")


def _check_training(where: str, prefix: str, values: dict) -> None:
    if not isinstance(values, dict):
        _fail(where, prefix, "expected a mapping")
    for k, v in values.items():
        if k not in TRAINING_KEYS:
            _fail(
                where,
                f"{prefix}.{k}",
                f"unknown training setting (known: {', '.join(TRAINING_KEYS)})",
            )
        _check_type(where, f"{prefix}.{k}", v, TRAINING_KEYS[k])


def load_study(path: str | os.PathLike, *, out_root: str | os.PathLike | None = None) -> Study:
    """Read and validate a study file; every error names the file and the key.

    Parameters
    ----------
    path : path-like
        The YAML study file.
    out_root : path-like, optional
        Folder that receives ``<name>/`` (default :func:`msnb.paths.outputs_root`).
    """
    path = Path(path)
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"{where}: study file not found") from None
    except yaml.YAMLError as exc:
        raise StudyError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise StudyError(f"{where}: expected a mapping at the top level")
    unknown = set(raw) - {"name", "datasets", "training", "experiments", "description"}
    if unknown:
        _fail(
            where,
            sorted(unknown)[0],
            "unknown top-level key (known: name, description, datasets, training, experiments)",
        )
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
        _fail(where, "name", f"expected a simple name (letters, digits, _ . -), got {name!r}")
    datasets = raw.get("datasets")
    if not isinstance(datasets, dict) or not datasets:
        _fail(where, "datasets", "expected a non-empty mapping of dataset name -> location")
    parsed = {}
    for dname, spec in datasets.items():
        key = f"datasets.{dname}"
        if not isinstance(spec, dict):
            _fail(where, key, "expected a mapping with 'phantom' or 'adapter' and 'root'")
        if "phantom" in spec:
            if dname not in DATASET_ADAPTERS:
                _fail(where, key, f"the phantom provides only {', '.join(DATASET_ADAPTERS)}")
            if spec["phantom"] not in ("tiny", "quick", "standard"):
                _fail(
                    where,
                    f"{key}.phantom",
                    f"unknown preset {spec['phantom']!r} (tiny, quick, standard)",
                )
            _check_type(where, f"{key}.seed", spec.get("seed", 0), int)
            extra = set(spec) - {"phantom", "seed"}
            if extra:
                _fail(where, f"{key}.{sorted(extra)[0]}", "unknown key for a phantom dataset")
            parsed[dname] = {"phantom": spec["phantom"], "seed": int(spec.get("seed", 0))}
        else:
            adapter = spec.get("adapter", DATASET_ADAPTERS.get(dname, (None,))[0])
            from msnb.datasets import ADAPTERS

            if adapter not in ADAPTERS:
                _fail(
                    where,
                    f"{key}.adapter",
                    f"unknown adapter {adapter!r} (known: {', '.join(ADAPTERS)})",
                )
            if not isinstance(spec.get("root"), str):
                _fail(where, f"{key}.root", "expected the dataset folder")
            options = spec.get("options", {})
            if not isinstance(options, dict):
                _fail(where, f"{key}.options", "expected a mapping of adapter options")
            parsed[dname] = {
                "adapter": adapter,
                "root": _expand_env(spec["root"]),
                "options": options,
            }
    training = dict(TRAINING_DEFAULTS)
    _check_training(where, "training", raw.get("training") or {})
    training.update(raw.get("training") or {})
    exps = raw.get("experiments")
    if not isinstance(exps, dict) or not exps:
        _fail(
            where, "experiments", f"expected a mapping with some of {', '.join(EXPERIMENT_KINDS)}"
        )
    for k in exps:
        if k not in EXPERIMENT_KINDS:
            _fail(
                where,
                f"experiments.{k}",
                f"unknown experiment kind (known: {', '.join(EXPERIMENT_KINDS)})",
            )
    study = Study(
        name=name,
        path=path,
        datasets=parsed,
        training=training,
        experiments=exps,
        out_dir=Path(out_root or outputs_root()) / name,
        raw=raw,
    )
    expand_study(study)  # validates the experiments' references
    return study


# --------------------------------------------------------------------------- expansion


@dataclass(frozen=True)
class TrainJob:
    model_id: str
    train_datasets: tuple[str, ...]
    config: tuple  # sorted (key, value) pairs of the training settings
    experiments: tuple[str, ...]

    @property
    def settings(self) -> dict:
        return dict(self.config)


@dataclass(frozen=True)
class EvalJob:
    model_id: str
    test_dataset: str
    experiments: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.model_id}__{self.test_dataset}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9+_.-]+", "-", str(text)).strip("-").lower()


def model_id_for(
    train_datasets: Sequence[str], settings: dict, defaults: dict | None = None
) -> str:
    """Readable, unique id of a training configuration.

    ``<datasets joined by +>__<normalization>__<architecture>-<encoder>__<label>``, followed
    by ``__<hash>`` of the other settings when they differ from ``defaults`` (e.g. an
    ablation changing the size), so two configurations never share an id.
    """
    base = "__".join(
        [
            "+".join(train_datasets),
            _slug(settings["normalization"]),
            f"{_slug(settings['architecture'])}-{_slug(settings['encoder'])}",
            _slug(settings["label"]),
        ]
    )
    shown = {"normalization", "architecture", "encoder", "label"}
    defaults = defaults or {}
    others = {
        k: v for k, v in sorted(settings.items()) if k not in shown and defaults.get(k, v) != v
    }
    if others:
        digest = hashlib.sha1(json.dumps(others, sort_keys=True).encode()).hexdigest()[:8]
        base += f"__{digest}"
    return base


def _names(where: str, key: str, value, known: dict) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        _fail(where, key, "expected a list of dataset names")
    for v in value:
        if v not in known:
            _fail(where, key, f"unknown dataset {v!r} (declared: {', '.join(known)})")
    return list(value)


def expand_study(study: Study) -> tuple[list[TrainJob], list[EvalJob]]:
    """The jobs of a study: each distinct training configuration once, then its tests.

    Returns
    -------
    (train_jobs, eval_jobs)
        In a stable order; a model shared by several experiments appears once, with all
        the experiments that use it.
    """
    where = str(study.path)
    exps = study.experiments
    base = study.training
    # (train datasets, settings overrides, tests, experiment tag)
    plans: list[tuple[list[str], dict, list[str], str]] = []

    def single(overrides: dict, tag: str) -> None:
        names = _names(where, "experiments.single", exps["single"], study.datasets)
        for d in names:
            plans.append(([d], overrides, [t for t in names if t != d], tag))

    def combinations(overrides: dict, tag: str) -> None:
        items = exps["combinations"]
        if not isinstance(items, list):
            _fail(
                where, "experiments.combinations", "expected a list of {train: [...], test: [...]}"
            )
        for i, item in enumerate(items):
            key = f"experiments.combinations[{i}]"
            if not isinstance(item, dict) or set(item) - {"train", "test"}:
                _fail(where, key, "expected a mapping with 'train' and 'test'")
            train = _names(where, f"{key}.train", item.get("train"), study.datasets)
            test = _names(where, f"{key}.test", item.get("test"), study.datasets)
            plans.append((train, overrides, test, tag))

    def labels(overrides: dict, tag: str) -> None:
        spec = exps["labels"]
        if not isinstance(spec, dict) or "dataset" not in spec:
            _fail(
                where,
                "experiments.labels",
                "expected a mapping with 'dataset', 'labels' and optionally 'test'",
            )
        (dataset,) = _names(where, "experiments.labels.dataset", spec["dataset"], study.datasets)
        labs = spec.get("labels", ["rater1", "rater2", "union"])
        if not isinstance(labs, list) or not all(isinstance(x, str) for x in labs):
            _fail(where, "experiments.labels.labels", "expected a list of labels")
        test = spec.get("test") or [d for d in study.datasets if d != dataset]
        test = _names(where, "experiments.labels.test", test, study.datasets)
        for lab in labs:
            plans.append(([dataset], {**overrides, "label": lab}, test, tag))

    builders: dict[str, Callable[[dict, str], None]] = {
        "single": single,
        "combinations": combinations,
        "labels": labels,
    }
    for kind in ("single", "combinations", "labels"):
        if kind in exps:
            builders[kind]({}, kind)
    ablations = exps.get("ablations") or []
    if not isinstance(ablations, list):
        _fail(where, "experiments.ablations", "expected a list of {name, change, of}")
    for i, abl in enumerate(ablations):
        key = f"experiments.ablations[{i}]"
        if not isinstance(abl, dict) or not isinstance(abl.get("name"), str):
            _fail(where, f"{key}.name", "expected a name")
        change = abl.get("change")
        _check_training(where, f"{key}.change", change)
        if not change:
            _fail(where, f"{key}.change", "expected at least one setting to change")
        of = abl.get("of", ["single"])
        if isinstance(of, str):
            of = [of]
        for kind in of:
            if kind not in builders:
                _fail(
                    where,
                    f"{key}.of",
                    f"expected some of single, combinations, labels; got {kind!r}",
                )
            if kind not in exps:
                _fail(where, f"{key}.of", f"experiment {kind!r} is not defined in this study")
            builders[kind](dict(change), f"ablation:{abl['name']}")

    trains: dict[str, dict] = {}
    evals: dict[tuple[str, str], set] = {}
    for train, overrides, tests, tag in plans:
        settings = {**base, **overrides}
        if settings["architecture"].lower() in ("unet++", "unetplusplus"):
            settings["architecture"] = "unetplusplus"
        settings["architecture"] = settings["architecture"].lower()
        if len(train) == 1 and settings["label"] == "consensus" and train[0] in CONSENSUS_FALLBACK:
            settings["label"] = CONSENSUS_FALLBACK[train[0]]
        mid = model_id_for(train, settings, base)
        entry = trains.setdefault(mid, {"train": tuple(train), "settings": settings, "tags": []})
        if tag not in entry["tags"]:
            entry["tags"].append(tag)
        for t in tests:
            evals.setdefault((mid, t), set()).add(tag)
    train_jobs = [
        TrainJob(mid, e["train"], tuple(sorted(e["settings"].items())), tuple(e["tags"]))
        for mid, e in trains.items()
    ]
    eval_jobs = [EvalJob(mid, t, tuple(sorted(tags))) for (mid, t), tags in evals.items()]
    return train_jobs, eval_jobs


# --------------------------------------------------------------------------- data


def resolve_datasets(
    study: Study, names: Sequence[str] | None = None, *, progress: bool = True
) -> dict[str, dict]:
    """Where each dataset lives: ``{name: {"adapter", "root", "options"}}``.

    Phantom datasets are generated on demand (once per preset and seed) under
    ``<outputs>/phantom/<preset>-seed<seed>/``.
    """
    out = {}
    for name in names or list(study.datasets):
        spec = study.datasets[name]
        if "phantom" in spec:
            adapter, sub = DATASET_ADAPTERS[name]
            root = outputs_root() / "phantom" / f"{spec['phantom']}-seed{spec['seed']}"
            if not (root / "phantom.json").exists():
                from msnb.phantom import generate_phantom

                generate_phantom(root, preset=spec["phantom"], seed=spec["seed"], progress=progress)
            out[name] = {"adapter": adapter, "root": str(root / sub), "options": {}}
        else:
            out[name] = dict(spec)
    return out


# --------------------------------------------------------------------------- jobs


def _params_digest(params: dict, inputs: dict | None = None) -> str:
    blob = {"parameters": params, "inputs": inputs} if inputs else params
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train_job_parameters(job: TrainJob, datasets: dict[str, dict], out_dir: Path) -> dict:
    """Papermill parameters of ``03_train`` for a training job."""
    s = job.settings
    return {
        "train_datasets": list(job.train_datasets),
        "dataset_specs": {d: datasets[d] for d in job.train_datasets},
        "model_id": job.model_id,
        "out_dir": str(out_dir / "train"),
        **s,
    }


def eval_job_parameters(job: EvalJob, datasets: dict[str, dict], out_dir: Path) -> dict:
    """Papermill parameters of ``04_evaluate`` for an evaluation job."""
    return {
        "bundle": str(out_dir / "train" / job.model_id),
        "test_dataset": job.test_dataset,
        "dataset_specs": {job.test_dataset: datasets[job.test_dataset]},
        "out_dir": str(out_dir / "eval" / job.name),
        "experiments": list(job.experiments),
    }


@dataclass
class JobSpec:
    """One papermill run: notebook, parameters, where its record goes."""

    kind: str  # "train" or "eval"
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
        return _params_digest(self.parameters, self.inputs)

    def is_done(self) -> bool:
        rec = _read_record(self.record)
        return rec.get("digest") == self.digest and rec.get("status") == "ok"


def _read_record(path: Path) -> dict:
    """A job's ``*.job.json`` record; ``{}`` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def job_specs(study: Study, datasets: dict[str, dict] | None = None) -> list[JobSpec]:
    """The papermill runs of a study: training first, then evaluations."""
    trains, evals = expand_study(study)
    if datasets is None:
        datasets = {n: {"adapter": "?", "root": "?"} for n in study.datasets}
    out = study.out_dir
    specs = []
    for j in trains:
        specs.append(
            JobSpec(
                "train",
                j.model_id,
                notebooks_dir() / TRAIN_NOTEBOOK,
                out / "train" / f"{j.model_id}.ipynb",
                out / "train" / f"{j.model_id}.job.json",
                train_job_parameters(j, datasets, out),
            )
        )
    for j in evals:
        specs.append(
            JobSpec(
                "eval",
                j.name,
                notebooks_dir() / EVAL_NOTEBOOK,
                out / "eval" / f"{j.name}.ipynb",
                out / "eval" / f"{j.name}.job.json",
                eval_job_parameters(j, datasets, out),
                depends_on=j.model_id,
            )
        )
    return specs


def run_job(spec: JobSpec, *, progress: bool = False) -> dict:
    """Execute one job with papermill; returns ``{"name", "status", "seconds", "error"}``.

    A failed notebook is kept at ``spec.output`` with its error (papermill writes it); the
    record ``job.json`` is written (atomically) only on success.
    """
    from msnb.files import atomic_path

    start = time.perf_counter()
    try:
        execute_notebook(spec.notebook, spec.output, spec.parameters, progress=progress)
    except Exception as exc:  # papermill raises PapermillExecutionError for cell errors
        first = str(exc).strip().splitlines()
        return {
            "name": spec.name,
            "kind": spec.kind,
            "status": "failed",
            "seconds": time.perf_counter() - start,
            "error": first[-1] if first else type(exc).__name__,
            "notebook": str(spec.output),
        }
    seconds = time.perf_counter() - start
    record = {
        "digest": spec.digest,
        "status": "ok",
        "seconds": seconds,
        "parameters": spec.parameters,
    }
    with atomic_path(spec.record) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str))
    return {
        "name": spec.name,
        "kind": spec.kind,
        "status": "ok",
        "seconds": seconds,
        "error": None,
        "notebook": str(spec.output),
    }


# --------------------------------------------------------------------------- runner


def _worker_env(jobs: int) -> dict:
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    return {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "MALLOC_MMAP_MAX_": "0",
        "MALLOC_TRIM_THRESHOLD_": "68719476736",
    }


def _run_pending(
    pending: list[JobSpec],
    *,
    jobs: int,
    scheduler: str | None,
    gpu_training: bool,
    on_start: Callable[[JobSpec], None],
    on_done: Callable[[dict], None],
) -> list[dict]:
    results: list[dict] = []
    train_failed: set[str] = set()
    if scheduler is None and jobs <= 1:
        for spec in pending:
            if spec.depends_on in train_failed:
                res = {
                    "name": spec.name,
                    "kind": spec.kind,
                    "status": "skipped",
                    "seconds": 0.0,
                    "error": f"training {spec.depends_on} failed",
                    "notebook": str(spec.output),
                }
            else:
                on_start(spec)
                res = run_job(spec)
            if res["status"] != "ok" and spec.kind == "train":
                train_failed.add(spec.name)
            results.append(res)
            on_done(res)
        return results

    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=jobs,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            env=_worker_env(jobs),
        )
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = {}
        by_name = {}
        for spec in pending:
            by_name[spec.name] = spec
            deps = [futures[spec.depends_on]] if spec.depends_on in futures else []
            resources = {"GPU": 1} if gpu_training and spec.kind == "train" else None
            fut = client.submit(
                _run_after,
                spec,
                deps,
                key=f"msnb-{spec.kind}-{spec.name}",
                pure=False,
                resources=resources,
            )
            futures[spec.name] = fut
        # Dask decides what runs when; count as running one job per worker slot.
        slots = jobs if scheduler is None else max(len(client.scheduler_info()["workers"]), 1)
        for spec in pending[:slots]:
            on_start(spec)
        for i, fut in enumerate(as_completed(list(futures.values()))):
            res = fut.result()
            results.append(res)
            on_done(res)
            if slots + i < len(pending):
                on_start(pending[slots + i])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return results


def _run_after(spec: JobSpec, deps: list) -> dict:
    """Dask task: run ``spec`` unless the training it depends on failed."""
    for d in deps:
        if d.get("status") != "ok":
            return {
                "name": spec.name,
                "kind": spec.kind,
                "status": "skipped",
                "seconds": 0.0,
                "error": f"training {d['name']} failed",
                "notebook": str(spec.output),
            }
    return run_job(spec)


def _train_centers(bundle_dir: Path, datasets: dict[str, dict], cache: dict) -> str:
    """Centers of the scans a bundle was trained on, joined with ``+`` ("" when unknown)."""
    from msnb.datasets import load_scans

    try:
        info = json.loads((bundle_dir / "bundle.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return ""
    centers = set()
    for name in info.get("train_datasets", []):
        if name not in datasets or datasets[name].get("adapter") in (None, "?"):
            return ""
        if name not in cache:
            spec = datasets[name]
            scans = load_scans(spec["adapter"], spec["root"], **spec.get("options", {}))
            cache[name] = {s.scan_id: s.center for s in scans}
        centers |= {cache[name][sid] for sid in info.get("train_scans", []) if sid in cache[name]}
    return "+".join(sorted(centers))


def gather_results(study: Study, datasets: dict[str, dict] | None = None) -> Path | None:
    """Concatenate every evaluation's per-scan metrics into ``<out>/results.csv`` (atomic).

    Only evaluations whose job record is complete are included, so no partial row appears.
    Adds ``experiment`` (the study experiments the row serves) and ``train_centers`` (the
    centers of the model's training scans, to flag unseen centers).
    """
    import pandas as pd

    from msnb.files import atomic_path

    frames = []
    cache: dict = {}
    for spec in job_specs(study):
        if spec.kind != "eval" or not spec.record.exists():
            continue
        rows = _read_eval_rows(Path(spec.parameters["out_dir"]))
        if rows is not None:
            centers = _train_centers(Path(spec.parameters["bundle"]), datasets or {}, cache)
            frames.append(
                rows.assign(
                    experiment=";".join(spec.parameters["experiments"]), train_centers=centers
                )
            )
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    path = study.out_dir / "results.csv"
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return path


def _read_eval_rows(folder: Path):
    import pandas as pd

    csv = folder / "scans.csv"
    if csv.exists():
        return pd.read_csv(csv, dtype={"subject": str, "timepoint": str, "center": str})
    mj = folder / "metrics.json"
    if mj.exists():
        data = json.loads(mj.read_text())
        rows = data.get("rows") or data.get("scans")
        if rows:
            return pd.DataFrame(rows).astype({"subject": str, "timepoint": str, "center": str})
    return None


def estimate(study: Study, specs: Sequence[JobSpec]) -> str:
    """A rough estimate of the work (for ``--dry-run``)."""
    n_train = sum(s.kind == "train" for s in specs)
    n_eval = len(specs) - n_train
    epochs = sum(s.parameters.get("epochs", 0) for s in specs if s.kind == "train")
    return (
        f"{n_train} trainings ({epochs} epochs in all), {n_eval} evaluations, "
        f"{len(specs)} notebooks (papermill adds about 8 s each)"
    )


def run_study(
    study: Study | str | os.PathLike,
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    dry_run: bool = False,
    progress: bool = True,
    statistics: bool = True,
    only: Sequence[str] | None = None,
) -> dict:
    """Run a study end to end.

    Parameters
    ----------
    study : Study or path to its YAML file
    jobs : int, default 1
        Jobs at once; more than 1 starts a Dask ``LocalCluster`` on loopback.
    scheduler : str, optional
        Address of an existing Dask distributed scheduler (overrides ``jobs``).
    dry_run : bool, default False
        Print the job list and an estimate, run nothing.
    statistics : bool, default True
        Run ``06_statistics`` on ``results.csv`` when that notebook exists.
    only : sequence of str, optional
        Run only the jobs with these names (and skip the rest); for tests and reruns.

    Returns
    -------
    dict
        ``{"jobs": [...results...], "failed": [...], "skipped": int, "results_csv": path}``
    """
    if not isinstance(study, Study):
        study = load_study(study)
    if dry_run:
        specs = job_specs(study)
        for s in specs:
            state = "done" if s.is_done() else "todo"
            print(f"[{state}] {s.kind:5s} {s.name}")
        print(f"{study.name}: {estimate(study, specs)}")
        return {"jobs": [], "failed": [], "skipped": 0, "results_csv": None, "specs": specs}
    wall = time.perf_counter()
    timings: dict[str, float] = {}
    with _timed(timings, "datasets"):
        datasets = resolve_datasets(study, progress=progress)
    specs = job_specs(study, datasets)
    if only is not None:
        specs = [s for s in specs if s.name in set(only)]
    done = [s for s in specs if s.is_done()]
    pending = [s for s in specs if not s.is_done()]
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(specs),
        initial=len(done),
        desc=f"study {study.name}",
        unit="job",
        disable=not progress,
    )
    state = {"running": 0, "failed": 0}

    def on_start(spec: JobSpec) -> None:
        state["running"] += 1
        bar.set_postfix(running=state["running"], failed=state["failed"], refresh=True)

    def on_done(res: dict) -> None:
        state["running"] = max(state["running"] - 1, 0)
        state["failed"] += res["status"] != "ok"
        bar.update(1)
        bar.set_postfix(running=state["running"], failed=state["failed"], refresh=True)

    gpu = study.training.get("device") == "cuda" and scheduler is not None
    with _timed(timings, "grid"):
        results = _run_pending(
            pending,
            jobs=jobs,
            scheduler=scheduler,
            gpu_training=gpu,
            on_start=on_start,
            on_done=on_done,
        )
    for kind in ("train", "eval"):
        timings[f"{kind}_jobs"] = sum(r["seconds"] for r in results if r["kind"] == kind)
    bar.close()
    failed = [r for r in results if r["status"] != "ok"]
    with _timed(timings, "results"):
        csv = gather_results(study, datasets)
    stats = None
    analyses = []
    if statistics and csv is not None:
        for spec in analysis_specs(study, datasets, csv):
            with _timed(timings, spec.name):
                res = (
                    {"name": spec.name, "kind": spec.kind, "status": "ok", "error": None}
                    if spec.is_done()
                    else run_job(spec)
                )
            analyses.append(res)
            if spec.kind == "stats":
                stats = res
            if res["status"] != "ok":
                failed.append(res)
    report = None
    if csv is not None:
        with _timed(timings, "report"):
            report = write_study_report(study, datasets)
    timings["total"] = time.perf_counter() - wall
    write_timings(study, timings, jobs=jobs if scheduler is None else None)
    for r in failed:
        print(f"FAILED {r['kind']} {r['name']}: {r['error']} -> {r.get('notebook')}")
    return {
        "jobs": results,
        "failed": failed,
        "skipped": len(done),
        "results_csv": csv,
        "statistics": stats,
        "analyses": analyses,
        "report": report,
        "timings": timings,
    }


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str):
    """Record the wall time of the ``with`` block as ``timings[key]`` (seconds)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = time.perf_counter() - start


def write_timings(study: Study, timings: dict[str, float], *, jobs: int | None) -> Path:
    """Write this run's stage times to ``<out>/timings.json`` (atomically) and return its path.

    Keys: ``datasets`` (finding or generating them), ``grid`` (wall time of the training and
    evaluation notebooks), ``train_jobs`` / ``eval_jobs`` (summed notebook seconds; more than
    ``grid`` when jobs ran in parallel), ``results``, ``statistics``, ``agreement-<dataset>``,
    ``report`` and ``total``, in seconds. Jobs skipped because they were done count 0.
    """
    from msnb.files import atomic_path

    path = study.out_dir / "timings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "study": study.name,
        "jobs": jobs,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return path


def rater_datasets(datasets: dict[str, dict]) -> list[str]:
    """Study datasets whose scans carry two raters or more (annotation agreement applies)."""
    from msnb.datasets import load_scans

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
    digest includes that of ``results.csv`` where it reads it, so an unchanged study does not
    rerun them. Missing notebooks are left out.
    """
    out = study.out_dir
    csv_digest = {"results_csv": _file_digest(results_csv)}
    specs = []
    if (notebooks_dir() / STATS_NOTEBOOK).exists():
        specs.append(
            JobSpec(
                "stats",
                "statistics",
                notebooks_dir() / STATS_NOTEBOOK,
                out / "statistics.ipynb",
                out / "statistics.job.json",
                {"results_csv": str(results_csv), "out_dir": str(out / "statistics")},
                inputs=csv_digest,
            )
        )
    if not (notebooks_dir() / AGREEMENT_NOTEBOOK).exists():
        return specs
    labels_dataset = (study.experiments.get("labels") or {}).get("dataset")
    for name in rater_datasets(datasets):
        uses_results = name == labels_dataset
        specs.append(
            JobSpec(
                "agreement",
                f"agreement-{name}",
                notebooks_dir() / AGREEMENT_NOTEBOOK,
                out / "agreement" / f"{name}.ipynb",
                out / "agreement" / f"{name}.job.json",
                {
                    "data_root": datasets[name]["root"],
                    "dataset": datasets[name]["adapter"],
                    "results_csv": str(results_csv) if uses_results else "",
                    "out_dir": str(out / "agreement" / name),
                },
                inputs=csv_digest if uses_results else {},
            )
        )
    return specs


def _figure2_section(study: Study, datasets: dict[str, dict]) -> tuple[str, str] | None:
    """The Figure-2-style panel: one scan of a test set, every single-dataset model."""
    from msnb.datasets import load_scans
    from msnb.report import figure_to_html, plot_figure2_panel

    trains, evals = expand_study(study)
    singles = [
        t
        for t in trains
        if "single" in t.experiments and (study.out_dir / "train" / t.model_id).is_dir()
    ]
    tested = {e.test_dataset for e in evals if e.model_id in {t.model_id for t in singles}}
    if not singles or not tested:
        return None
    test = "msseg2016_test" if "msseg2016_test" in tested else sorted(tested)[0]
    spec = datasets[test]
    scan = load_scans(spec["adapter"], spec["root"], **spec.get("options", {}))[0]
    bundles = {
        "+".join(t.train_datasets): study.out_dir / "train" / t.model_id
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


def write_study_report(study: Study, datasets: dict[str, dict]) -> Path:
    """Write ``<out>/report.html`` for a study (see :mod:`msnb.report`)."""
    from msnb.report import build_report, notebook_body_html

    extra = []
    for nb in sorted((study.out_dir / "agreement").glob("*.ipynb")):
        if _read_record(nb.with_suffix(".job.json")).get("status") != "ok":
            continue  # a failed agreement notebook is listed under the executed notebooks
        extra.append((f"Annotation agreement: {nb.stem}", notebook_body_html(nb)))
    try:
        panel = _figure2_section(study, datasets)
    except Exception as exc:  # the report must not hide the study's results
        panel = ("Figure 2", f"<p>The panel could not be drawn: {exc}</p>")
    if panel:
        extra.append(panel)
    text = study.path.read_text() if study.path else yaml.safe_dump(study.raw)
    return build_report(
        study.out_dir, study_text=text, title=f"msnb study {study.name}", extra_sections=extra
    )


def _cli_study(args: argparse.Namespace) -> int:
    out = run_study(args.file, jobs=args.jobs, scheduler=args.scheduler, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    n = len(out["jobs"])
    print(f"{n} jobs run, {out['skipped']} already done, {len(out['failed'])} failed")
    if out["results_csv"]:
        print(f"results: {out['results_csv']}")
    if out.get("report"):
        print(f"report: {out['report']}")
    return 1 if out["failed"] else 0


def register_cli(sub) -> None:
    p = sub.add_parser("study", help="run a study grid (papermill over dataset pairs)")
    p.add_argument("file", help="study YAML file, e.g. parameters/quick.yaml")
    p.add_argument("--jobs", type=int, default=1, help="jobs at once on a Dask LocalCluster")
    p.add_argument("--scheduler", help="address of a Dask distributed scheduler")
    p.add_argument("--dry-run", action="store_true", help="print the jobs and the estimated work")
    p.set_defaults(func=_cli_study)
