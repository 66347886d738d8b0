"""Running a study's jobs: one after the other, several at once, or on a Dask cluster.

Every job runs in a Jupyter kernel of its own (a process), so running several at once needs
no scheduler process: :func:`run_parallel` keeps up to ``jobs`` of them going from threads of
the study process, and opens no network port (the kernels talk over Unix sockets, see
:mod:`msnb.study.notebooks`). An evaluation runs after the training it depends on and is
skipped (a ``"skipped"`` :func:`~msnb.study.jobs.job_result`) when that training failed.
On a user's Dask distributed scheduler (``scheduler``), Dask decides what runs when.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from msnb.files import restrict_writes, write_roots
from msnb.study.jobs import JobSpec, job_result, run_job
from msnb.study.notebooks import kernel_environment
from msnb.study.spec import StudyError

__all__ = [
    "SCHEDULER_TIMEOUT",
    "check_scheduler",
    "run_distributed",
    "run_jobs",
    "run_parallel",
    "run_sequential",
]

OnStart = Callable[[JobSpec], None]
OnDone = Callable[[dict], None]

SCHEDULER_TIMEOUT = 5.0  # seconds a --scheduler address has to answer


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
        Jobs at once, each in its own kernel, started from threads of this process.
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

    Raises
    ------
    StudyError
        No Dask scheduler answers at ``scheduler`` (nothing has run).
    """
    on_start = on_start or (lambda spec: None)
    on_done = on_done or (lambda result: None)
    if scheduler is not None:
        return run_distributed(
            pending,
            scheduler=scheduler,
            gpu_training=gpu_training,
            on_start=on_start,
            on_done=on_done,
        )
    if jobs <= 1:
        return run_sequential(pending, on_start=on_start, on_done=on_done)
    return run_parallel(pending, jobs=jobs, on_start=on_start, on_done=on_done)


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


def run_parallel(
    pending: list[JobSpec], *, jobs: int, on_start: OnStart, on_done: OnDone
) -> list[dict]:
    """Run up to ``jobs`` jobs at once, from threads of this process (see :func:`run_jobs`).

    A job starts, in ``pending``'s order, as soon as a slot is free and the job it depends on
    (when that one is in ``pending``) has ended; it is skipped if that job did not succeed.
    Jobs run with the caller's write roots (:func:`msnb.files.restrict_writes`), each
    thread in a context of its own (:func:`_in_thread_context`). Each kernel gets
    its share of the cores (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``) and glibc's allocator
    settings (:func:`_kernel_env`).
    """
    env = _kernel_env(jobs)
    names = {s.name for s in pending}
    waiting = list(pending)
    ended: dict[str, str] = {}  # job name -> status
    running: dict[Future, JobSpec] = {}
    results: list[dict] = []
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="msnb-job") as pool:
        while waiting or running:
            while len(running) < jobs:
                spec = next(
                    (s for s in waiting if s.depends_on not in names or s.depends_on in ended),
                    None,
                )
                if spec is None:
                    break
                waiting.remove(spec)
                if ended.get(spec.depends_on, "ok") != "ok":
                    res = _skipped(spec, spec.depends_on)
                    ended[spec.name] = res["status"]
                    results.append(res)
                    on_done(res)
                    continue
                on_start(spec)
                roots = write_roots()  # msnb.files.restrict_writes holds in the job too
                running[pool.submit(_in_thread_context, _run_with_env, spec, env, roots)] = spec
            if not running:
                if waiting:  # only a dependency cycle gets here
                    raise RuntimeError(f"jobs wait on each other: {[s.name for s in waiting]}")
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                res = future.result()
                ended[running.pop(future).name] = res["status"]
                results.append(res)
                on_done(res)
    return results


def run_distributed(
    pending: list[JobSpec],
    *,
    scheduler: str,
    gpu_training: bool,
    on_start: OnStart,
    on_done: OnDone,
) -> list[dict]:
    """Run the jobs on the Dask distributed cluster of ``scheduler`` (see :func:`run_jobs`)."""
    from dask.distributed import Client, as_completed  # heavy, only when used

    check_scheduler(scheduler)
    try:
        client = Client(scheduler, timeout=SCHEDULER_TIMEOUT, set_as_default=False)
    except OSError as exc:
        raise StudyError(f"--scheduler {scheduler}: {_one_line(exc)}") from None
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
        # Dask decides what runs when; count as running one job per worker.
        slots = max(len(client.scheduler_info()["workers"]), 1)
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
    return results


def check_scheduler(address: str, *, timeout: float = SCHEDULER_TIMEOUT) -> None:
    """Raise a :class:`StudyError` naming ``address`` unless a Dask scheduler answers there.

    Connects the way a Dask client does (with the TLS settings of the Dask configuration for
    a ``tls://`` address) and closes the connection again.

    Parameters
    ----------
    address : str
        e.g. ``tcp://head-node:8786``.
    timeout : float, default SCHEDULER_TIMEOUT
        Seconds to wait for an answer.
    """
    from distributed.comm import connect
    from distributed.security import Security

    async def probe() -> None:
        args = Security().get_connection_args("client")
        comm = await connect(address, timeout=timeout, **args)
        await comm.close()

    # A thread of its own: asyncio.run refuses to run inside a running loop (a notebook's).
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            pool.submit(asyncio.run, probe()).result()
        except ValueError as exc:
            raise StudyError(
                f"--scheduler {address}: not a Dask address ({_one_line(exc)})"
            ) from None
        except OSError as exc:
            raise StudyError(
                f"--scheduler {address}: no Dask scheduler answered within {timeout:g} s "
                f"({_one_line(exc)})"
            ) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _skipped(spec: JobSpec, training: str) -> dict:
    return job_result(spec, "skipped", error=f"training {training} failed")


_THREAD = threading.local()


def _in_thread_context(fn, *args):
    """Call ``fn(*args)`` in this thread's own :class:`contextvars.Context`, one per thread.

    Not a copy of the caller's: libraries keep per-context state there, such as
    jupyter_core's event loop (``jupyter_core.utils.ensure_event_loop``), and two job threads
    running in copies of a context whose loop was set (by a notebook run earlier in the
    calling thread) would both drive that one loop ("This event loop is already running").
    """
    context = getattr(_THREAD, "context", None)
    if context is None:
        context = _THREAD.context = contextvars.Context()
    return context.run(fn, *args)


def _run_with_env(spec: JobSpec, env: dict[str, str], roots: tuple | None = None) -> dict:
    """Thread task of :func:`run_parallel`: run ``spec`` with ``env`` added to its kernel's,
    its writes restricted to ``roots`` (the caller's :func:`msnb.files.restrict_writes`)."""
    restrict = restrict_writes(*roots) if roots is not None else contextlib.nullcontext()
    with restrict, kernel_environment(env):
        return run_job(spec)


def _run_after(spec: JobSpec, deps: list[dict]) -> dict:
    """Dask task: run ``spec`` unless the training it depends on failed."""
    for d in deps:
        if d.get("status") != "ok":
            return _skipped(spec, d["name"])
    return run_job(spec)


def _kernel_env(jobs: int) -> dict[str, str]:
    """Environment added to each job's kernel: its share of the cores, glibc's allocator tuned."""
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    return {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "MALLOC_MMAP_MAX_": "0",
        "MALLOC_TRIM_THRESHOLD_": "68719476736",
    }
