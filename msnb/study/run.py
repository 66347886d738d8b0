"""Running a study end to end: datasets, grid, results, analyses, report, timings.

:func:`run_study` resolves the datasets (generating phantoms once), runs the grid's pending
jobs (:mod:`msnb.study.runners`), gathers ``results.csv`` (:mod:`msnb.study.results`), runs
the statistics and agreement notebooks on it, writes ``report.html``
(:mod:`msnb.study.reporting`) and ``timings.json``. Jobs whose record matches their
parameters are skipped, so a killed study resumes where it stopped.

One run at a time per study folder (:func:`study_lock`); each run first removes the
temporaries that killed runs left there, records its environment in ``environment.txt``
and adds its stage times to the history of ``timings.json``. Every path the run writes lies
under the study's folder (or the shared cache): a name that would leave it is refused
before anything runs.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from msnb import __version__
from msnb.files import (
    clean_stale_temporaries,
    exclusive_lock,
    restrict_writes,
    write_json,
    write_text,
)
from msnb.paths import REPO_ROOT, PathEscapeError, cache_root, check_inside
from msnb.sources import phantom_root, resolve_dataset, resolve_datasets
from msnb.study.jobs import JobSpec, job_result, job_specs, read_job_record, run_job
from msnb.study.reporting import write_study_report
from msnb.study.results import analysis_specs, estimate, gather_results
from msnb.study.runners import check_scheduler, run_jobs
from msnb.study.spec import Study, StudyError, check_dataset_roots, load_study

__all__ = [
    "LOCK_NAME",
    "check_job_paths",
    "environment_text",
    "job_state",
    "run_study",
    "study_lock",
    "timed",
    "write_environment",
    "write_timings",
]

#: The lock file of a study's folder (see :func:`study_lock`).
LOCK_NAME = ".msnb-study.lock"


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
        Jobs at once, each in its own kernel, started from threads of this process (no
        network port).
    scheduler : str, optional
        Address of an existing Dask distributed scheduler (overrides ``jobs``).
    dry_run : bool, default False
        Print each job with its state (:func:`job_state`) and an estimate of the work left;
        run nothing, write nothing, generate no phantom.
    progress : bool, default True
        Progress bars (phantom generation, jobs).
    statistics : bool, default True
        Run ``06_statistics`` (and ``05_annotation_agreement``) on ``results.csv`` when
        those notebooks exist.
    only : sequence of str, optional
        Run only the jobs with these names (and skip the rest); for tests and reruns.

    Returns
    -------
    dict
        ``{"jobs": [...results...], "failed": [...], "skipped": int, "results_csv": path,
        "statistics", "analyses", "report", "timings"}``; ``failed`` holds the failed jobs
        and the evaluations skipped because their training failed (``"status":
        "skipped"``, no notebook); ``skipped`` counts the jobs already done. A dry run:
        ``"specs"`` and ``"states"`` (``{name: state}``), nothing run.

    Raises
    ------
    StudyError
        A folder dataset's root is missing or not a readable folder (checked first), or no
        Dask scheduler answers at ``scheduler``.
    PathEscapeError
        A job would write outside the study's folder (a name with ``..`` or ``/``).
    msnb.files.LockedError
        Another ``msnb study`` runs on the same folder (the message names it).
    """
    if not isinstance(study, Study):
        study = load_study(study)
    _check_out_dir(study)
    check_job_paths(job_specs(study), study.out_dir)  # the paths do not need the datasets
    if dry_run:
        return _dry_run(study)
    check_dataset_roots(study)  # before phantoms are generated or any job starts
    if scheduler is not None:
        check_scheduler(scheduler)  # one line within a few seconds, before any work
    with study_lock(study) as holder:
        clean_stale_temporaries(study.out_dir, recursive=True, any_writer=True)
        clean_stale_temporaries(cache_root() / "slices")
        write_environment(study, holder=holder)
        return _run_locked(
            study,
            holder,
            jobs=jobs,
            scheduler=scheduler,
            progress=progress,
            statistics=statistics,
            only=only,
        )


def _run_locked(
    study: Study,
    holder: dict,
    *,
    jobs: int,
    scheduler: str | None,
    progress: bool,
    statistics: bool,
    only: Sequence[str] | None,
) -> dict:
    """:func:`run_study` once it holds the study's lock."""
    wall = time.perf_counter()
    timings: dict[str, float] = {}
    with timed(timings, "datasets"):
        datasets = resolve_datasets(list(study.datasets), specs=study.datasets, progress=progress)
    all_specs = job_specs(study, datasets)
    check_job_paths(all_specs, study.out_dir)
    specs = all_specs if only is None else [s for s in all_specs if s.name in set(only)]
    with restrict_writes(study.out_dir, cache_root()):
        results, skipped = _run_grid(
            study, specs, jobs=jobs, scheduler=scheduler, progress=progress, timings=timings
        )
        for r in results:  # no notebook exists for an evaluation skipped after its training
            r["notebook"] = None if r["status"] == "skipped" else r["notebook"]
        failed = [r for r in results if r["status"] != "ok"]
        with timed(timings, "results"):
            csv = gather_results(study, datasets, specs=all_specs)
        analyses = (
            _run_analyses(study, datasets, csv, timings) if statistics and csv is not None else []
        )
        failed += [r for r in analyses if r["status"] != "ok"]
        report = None
        if csv is not None:
            with timed(timings, "report"):
                report = write_study_report(study, datasets)
        timings["total"] = time.perf_counter() - wall
        run = _run_entry(holder, results, skipped)
        write_timings(study, timings, jobs=jobs if scheduler is None else None, run=run)
    _print_problems(failed)
    return {
        "jobs": results,
        "failed": failed,
        "skipped": skipped,
        "results_csv": csv,
        "statistics": next((r for r in analyses if r["kind"] == "stats"), None),
        "analyses": analyses,
        "report": report,
        "timings": timings,
    }


def _print_problems(failed: list[dict]) -> None:
    """One line per failed job (with its notebook) and per evaluation skipped (none)."""
    for r in failed:
        if r["status"] == "skipped":
            print(f"SKIPPED {r['kind']} {r['name']}: {r['error']} (not run)")
        else:
            print(f"FAILED {r['kind']} {r['name']}: {r['error']} -> {r.get('notebook')}")


def study_lock(study: Study) -> contextlib.AbstractContextManager[dict]:
    """The lock of a study's folder: one ``msnb study`` at a time on it.

    ``flock`` on ``<out>/.msnb-study.lock`` (:func:`msnb.files.exclusive_lock`): the system
    releases it when the run ends, even by ``kill -9``. A second run fails at once with
    :class:`msnb.files.LockedError` naming the first one's pid, host, start and command.
    """
    return exclusive_lock(study.out_dir / LOCK_NAME, purpose=f"msnb study {study.name}")


def _check_out_dir(study: Study) -> None:
    """The study's folder is one folder, named after the study, in its outputs folder."""
    out = study.out_dir
    if out.name != study.name:
        raise PathEscapeError(f"{out}: the study name {study.name!r} is not a folder name")
    check_inside(out, out.parent)


def check_job_paths(specs: Sequence[JobSpec], root: Path) -> None:
    """Check that every path the jobs write lies under ``root`` (the study's folder).

    The executed notebook, the record, and the folders of the ``out_dir`` and ``bundle``
    parameters (with ``model_id``: the bundle a training writes).

    Raises
    ------
    PathEscapeError
        A path leaves ``root`` (a dataset or model name with ``..`` or ``/``).
    """
    for spec in specs:
        p = spec.parameters
        paths = [spec.output, spec.record, p.get("out_dir"), p.get("bundle")]
        if p.get("out_dir") and p.get("model_id"):
            paths.append(Path(p["out_dir"]) / p["model_id"])
        for path in paths:
            if path:
                check_inside(path, root)


@contextlib.contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Record the wall time of the ``with`` block as ``timings[key]`` (seconds)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = time.perf_counter() - start


def write_timings(
    study: Study, timings: dict[str, float], *, jobs: int | None, run: dict | None = None
) -> Path:
    """Add this run's stage times to ``<out>/timings.json`` (atomically); returns its path.

    Keys of ``seconds``: ``datasets`` (finding or generating them), ``grid`` (wall time of
    the training and evaluation notebooks), ``train_jobs`` / ``eval_jobs`` /
    ``external_jobs`` (summed notebook seconds; more than ``grid`` when jobs ran in parallel), ``results``, ``statistics``,
    ``agreement-<dataset>``, ``report`` and ``total``, in seconds. Jobs skipped because
    they were done count 0.

    The file's top level is this run's (``study``, ``jobs``, ``seconds``); ``runs`` lists
    every run of the study, oldest first, each with its ``jobs``, ``seconds`` and what
    ``run`` holds (:func:`run_study`: ``started``, ``host``, ``pid``, ``msnb``, ``ran``,
    ``skipped``, ``failed``, ``not_run``). A file of an msnb without ``runs`` becomes the
    first entry.
    """
    path = study.out_dir / "timings.json"
    seconds = {k: round(v, 2) for k, v in timings.items()}
    runs = [*_previous_runs(path), {**(run or {}), "jobs": jobs, "seconds": seconds}]
    record = {"study": study.name, "jobs": jobs, "seconds": seconds, "runs": runs}
    return write_json(path, record, root=study.out_dir)


def _previous_runs(path: Path) -> list[dict]:
    """The ``runs`` of an existing ``timings.json`` (its one run, in the older format)."""
    old = read_job_record(path)  # {} when missing or unreadable
    if isinstance(old.get("runs"), list):
        return old["runs"]
    if "seconds" in old:
        return [{"jobs": old.get("jobs"), "seconds": old["seconds"]}]
    return []


def _run_entry(holder: dict, results: list[dict], skipped: int) -> dict:
    """This run's entry in ``timings.json``'s ``runs`` (besides its jobs and seconds)."""
    status = [r["status"] for r in results]
    return {
        "started": holder.get("started") or _now(),
        "host": holder.get("host", platform.node()),
        "pid": holder.get("pid", os.getpid()),
        "msnb": __version__,
        "ran": sum(s != "skipped" for s in status),
        "skipped": skipped,
        "failed": status.count("failed"),
        "not_run": status.count("skipped"),
    }


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- environment


def environment_text(*, started: str | None = None, command: str | None = None) -> str:
    """What a study ran with: msnb's version and commit, Python, the platform, and every
    installed distribution as ``name==version`` (one a line, sorted)."""
    names = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            names.setdefault(name.lower(), f"{name}=={dist.version}")
    header = [
        "# The environment of this study's last run (written as each run starts)",
        f"started: {started or _now()}",
        f"msnb: {__version__}",
        f"commit: {_git_commit()}",
        f"python: {platform.python_version()} ({platform.python_implementation()})",
        f"platform: {platform.platform()}",
        f"command: {command or ' '.join(sys.argv)}",
        "",
        "# installed distributions",
    ]
    return "\n".join(header + [names[k] for k in sorted(names)]) + "\n"


def _git_commit() -> str:
    """msnb's git commit (and whether files differ from it), when run from a checkout."""
    if not (REPO_ROOT / ".git").exists():
        return "none (msnb is not run from a git checkout)"
    git = ["git", "-C", str(REPO_ROOT)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (git did not answer)"
    return f"{head} (local changes: {'yes' if changed else 'no'})"


def write_environment(study: Study, *, holder: dict | None = None) -> Path:
    """Write ``<out>/environment.txt`` (:func:`environment_text`, atomically).

    When the previous run's environment differs (other versions), its file is kept as
    ``environment.<its start>.txt``, since results of that run may remain.
    """
    holder = holder or {}
    path = study.out_dir / "environment.txt"
    text = environment_text(started=holder.get("started"), command=holder.get("command"))
    try:
        old = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        old = None
    if old is not None and _versions_part(old) != _versions_part(text):
        started = next((ln[9:] for ln in old.splitlines() if ln.startswith("started: ")), "old")
        keep = "".join(c if c.isalnum() or c in "-." else "-" for c in started)
        write_text(study.out_dir / f"environment.{keep}.txt", old, root=study.out_dir)
    return write_text(path, text, root=study.out_dir)


def _versions_part(text: str) -> list[str]:
    """An environment file without the lines that change at every run."""
    return [ln for ln in text.splitlines() if not ln.startswith(("started: ", "command: "))]


# --------------------------------------------------------------------------- dry run


def job_state(spec: JobSpec) -> str:
    """``"done"`` (its record matches), ``"stale"`` (a record of a run with other
    parameters or inputs: it runs again) or ``"todo"`` (no successful record)."""
    if spec.is_done():
        return "done"
    return "stale" if read_job_record(spec.record).get("status") == "ok" else "todo"


def _dry_run(study: Study) -> dict:
    """Print each job with its state, and an estimate of the work left; run nothing."""
    datasets, missing = _available_datasets(study)
    try:
        specs = job_specs(study, datasets)
    except StudyError:
        if not missing:
            raise
        specs = job_specs(study)  # a template scan in a phantom not generated yet
    unknown = _reading(specs, missing)
    states = {s.name: "todo" if s.name in unknown else job_state(s) for s in specs}
    for s in specs:
        print(f"{'[' + states[s.name] + ']':8s}{s.kind:5s} {s.name}")
    counts = {k: list(states.values()).count(k) for k in ("done", "stale", "todo")}
    print(
        f"{counts['done']} done, {counts['stale']} stale (done with other parameters or "
        f"inputs: they run again), {counts['todo']} todo"
    )
    for name in missing:
        spec = study.datasets[name]
        print(
            f"{name}: phantom {spec['phantom']}-seed{spec.get('seed', 0)} not generated yet "
            "(the run generates it first); the jobs reading it are todo"
        )
    pending = [s for s in specs if states[s.name] != "done"]
    print(f"{study.name}: {estimate(study, pending)}")
    return {
        "jobs": [],
        "failed": [],
        "skipped": 0,
        "results_csv": None,
        "specs": specs,
        "states": states,
    }


def _available_datasets(study: Study) -> tuple[dict[str, dict], list[str]]:
    """The study's datasets resolved without generating anything, and those that cannot be
    (phantoms not generated yet; ``"?"`` placeholders stand for them)."""
    datasets, missing = {}, []
    for name, spec in study.datasets.items():
        if "phantom" in spec:
            root = phantom_root(spec["phantom"], spec.get("seed", 0))
            if not (root / "phantom.json").exists():
                missing.append(name)
                datasets[name] = {
                    "adapter": "?",
                    "root": "?",
                    **({"n4": True} if spec.get("n4") else {}),
                }
                continue
        datasets[name] = resolve_dataset(name, spec)
    return datasets, missing


def _reading(specs: Sequence[JobSpec], datasets: Sequence[str]) -> set[str]:
    """Names of the jobs that read one of ``datasets``, or whose training does."""
    missing = set(datasets)
    reads = {
        s.name
        for s in specs
        if missing & set(s.parameters.get("dataset_specs", {}))
        or str(s.parameters.get("template", "")).startswith("?")
    }
    return reads | {s.name for s in specs if s.depends_on in reads}


def _run_grid(
    study: Study,
    specs: list[JobSpec],
    *,
    jobs: int,
    scheduler: str | None,
    progress: bool,
    timings: dict[str, float],
) -> tuple[list[dict], int]:
    """Run the grid's jobs that are not done; returns their results and how many were done.

    Records ``grid`` (wall time), ``train_jobs`` and ``eval_jobs`` (summed job seconds) in
    ``timings``.
    """
    done = [s for s in specs if s.is_done()]
    pending = [s for s in specs if not s.is_done()]
    with _JobsBar(len(specs), len(done), study.name, progress) as bar, timed(timings, "grid"):
        results = run_jobs(
            pending,
            jobs=jobs,
            scheduler=scheduler,
            gpu_training=study.training.get("device") == "cuda" and scheduler is not None,
            on_start=bar.start,
            on_done=bar.done,
        )
    for kind in ("train", "eval", "external"):
        timings[f"{kind}_jobs"] = sum(r["seconds"] for r in results if r["kind"] == kind)
    return results, len(done)


def _run_analyses(
    study: Study, datasets: dict[str, dict], csv: Path, timings: dict[str, float]
) -> list[dict]:
    """Run the statistics and agreement notebooks on ``results.csv`` (unless done)."""
    analyses = []
    for spec in analysis_specs(study, datasets, csv):
        with timed(timings, spec.name):
            res = job_result(spec, "ok") if spec.is_done() else run_job(spec)
        analyses.append(res)
    return analyses


class _JobsBar:
    """A tqdm bar over a study's jobs, showing how many run and how many failed."""

    def __init__(self, total: int, done: int, name: str, progress: bool) -> None:
        self.bar = tqdm(
            total=total, initial=done, desc=f"study {name}", unit="job", disable=not progress
        )
        self.running = self.failed = 0

    def __enter__(self) -> _JobsBar:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def start(self, spec: JobSpec) -> None:
        self.running += 1
        self.bar.set_postfix(running=self.running, failed=self.failed, refresh=True)

    def done(self, result: dict) -> None:
        self.running = max(self.running - 1, 0)
        self.failed += result["status"] != "ok"
        self.bar.update(1)
        self.bar.set_postfix(running=self.running, failed=self.failed, refresh=True)
