"""Running a study's jobs: one after the other, or on a Dask distributed cluster.

An evaluation runs after the training it depends on and is skipped (a ``"skipped"``
:func:`~msnb.study.jobs.job_result`) when that training failed. On a cluster, Dask decides
what runs when; a local cluster runs one single-threaded worker per job slot.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from msnb.study.jobs import JobSpec, job_result, run_job

__all__ = ["run_distributed", "run_jobs", "run_sequential"]

OnStart = Callable[[JobSpec], None]
OnDone = Callable[[dict], None]


def run_jobs(
    pending: list[JobSpec],
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    gpu_training: bool = False,
    on_start: OnStart | None = None,
    on_done: OnDone | None = None,
) -> list[dict]:
    """Run ``pending`` (trainings before the evaluations that need them).

    Parameters
    ----------
    pending : list of JobSpec
    jobs : int, default 1
        Jobs at once; more than 1 starts a Dask ``LocalCluster`` on loopback.
    scheduler : str, optional
        Address of an existing Dask distributed scheduler (overrides ``jobs``).
    gpu_training : bool, default False
        On a cluster, give each training the worker resource ``GPU: 1``.
    on_start, on_done : callable, optional
        Called with a job when it starts, and with its result when it ends.

    Returns
    -------
    list of dict
        The jobs' :func:`~msnb.study.jobs.job_result`, in the order they ended.
    """
    on_start = on_start or (lambda spec: None)
    on_done = on_done or (lambda result: None)
    if scheduler is None and jobs <= 1:
        return run_sequential(pending, on_start=on_start, on_done=on_done)
    return run_distributed(
        pending,
        jobs=jobs,
        scheduler=scheduler,
        gpu_training=gpu_training,
        on_start=on_start,
        on_done=on_done,
    )


def run_sequential(pending: list[JobSpec], *, on_start: OnStart, on_done: OnDone) -> list[dict]:
    """Run the jobs one after the other in this process (see :func:`run_jobs`)."""
    results: list[dict] = []
    train_failed: set[str] = set()
    for spec in pending:
        if spec.depends_on in train_failed:
            res = _skipped(spec, spec.depends_on)
        else:
            on_start(spec)
            res = run_job(spec)
        if res["status"] != "ok" and spec.kind == "train":
            train_failed.add(spec.name)
        results.append(res)
        on_done(res)
    return results


def run_distributed(
    pending: list[JobSpec],
    *,
    jobs: int,
    scheduler: str | None,
    gpu_training: bool,
    on_start: OnStart,
    on_done: OnDone,
) -> list[dict]:
    """Run the jobs on a Dask cluster: a new ``LocalCluster`` or ``scheduler``'s."""
    from dask.distributed import Client, LocalCluster, as_completed  # heavy, only when used

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
    client = Client(cluster if cluster is not None else scheduler)
    results: list[dict] = []
    try:
        futures = {}
        for spec in pending:
            deps = [futures[spec.depends_on]] if spec.depends_on in futures else []
            resources = {"GPU": 1} if gpu_training and spec.kind == "train" else None
            futures[spec.name] = client.submit(
                _run_after,
                spec,
                deps,
                key=f"msnb-{spec.kind}-{spec.name}",
                pure=False,
                resources=resources,
            )
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


def _skipped(spec: JobSpec, training: str) -> dict:
    return job_result(spec, "skipped", error=f"training {training} failed")


def _run_after(spec: JobSpec, deps: list[dict]) -> dict:
    """Dask task: run ``spec`` unless the training it depends on failed."""
    for d in deps:
        if d.get("status") != "ok":
            return _skipped(spec, d["name"])
    return run_job(spec)


def _worker_env(jobs: int) -> dict[str, str]:
    """Environment of a local Dask worker: its share of the cores, glibc's allocator tuned."""
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    return {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "MALLOC_MMAP_MAX_": "0",
        "MALLOC_TRIM_THRESHOLD_": "68719476736",
    }
