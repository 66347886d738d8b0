"""Running a study end to end: datasets, grid, results, analyses, report, timings.

:func:`run_study` resolves the datasets (generating phantoms once), runs the grid's pending
jobs (:mod:`msnb.study.runners`), gathers ``results.csv`` (:mod:`msnb.study.results`), runs
the statistics and agreement notebooks on it, writes ``report.html``
(:mod:`msnb.study.reporting`) and ``timings.json``. Jobs whose record matches their
parameters are skipped, so a killed study resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from msnb.files import write_json
from msnb.sources import resolve_datasets
from msnb.study.jobs import JobSpec, job_result, job_specs, run_job
from msnb.study.reporting import write_study_report
from msnb.study.results import analysis_specs, estimate, gather_results
from msnb.study.runners import run_jobs
from msnb.study.spec import Study, load_study

__all__ = ["run_study", "timed", "write_timings"]


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
        "statistics", "analyses", "report", "timings"}`` (a dry run: ``"specs"``, no run).
    """
    if not isinstance(study, Study):
        study = load_study(study)
    if dry_run:
        return _dry_run(study)
    wall = time.perf_counter()
    timings: dict[str, float] = {}
    with timed(timings, "datasets"):
        datasets = resolve_datasets(list(study.datasets), specs=study.datasets, progress=progress)
    specs = job_specs(study, datasets)
    if only is not None:
        specs = [s for s in specs if s.name in set(only)]
    results, skipped = _run_grid(
        study, specs, jobs=jobs, scheduler=scheduler, progress=progress, timings=timings
    )
    failed = [r for r in results if r["status"] != "ok"]
    with timed(timings, "results"):
        csv = gather_results(study, datasets)
    analyses = (
        _run_analyses(study, datasets, csv, timings) if statistics and csv is not None else []
    )
    failed += [r for r in analyses if r["status"] != "ok"]
    report = None
    if csv is not None:
        with timed(timings, "report"):
            report = write_study_report(study, datasets)
    timings["total"] = time.perf_counter() - wall
    write_timings(study, timings, jobs=jobs if scheduler is None else None)
    for r in failed:
        print(f"FAILED {r['kind']} {r['name']}: {r['error']} -> {r.get('notebook')}")
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


@contextlib.contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
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
    record = {
        "study": study.name,
        "jobs": jobs,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    return write_json(study.out_dir / "timings.json", record)


def _dry_run(study: Study) -> dict:
    """Print the job list, each marked done or todo, and an estimate of the work."""
    specs = job_specs(study)
    for s in specs:
        state = "done" if s.is_done() else "todo"
        print(f"[{state}] {s.kind:5s} {s.name}")
    print(f"{study.name}: {estimate(study, specs)}")
    return {"jobs": [], "failed": [], "skipped": 0, "results_csv": None, "specs": specs}


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
    for kind in ("train", "eval"):
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
