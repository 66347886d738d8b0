"""Executing a parameterized notebook with papermill: the one runner of msnb.

The study's jobs and the tests both run notebooks through :func:`execute_notebook`, with
the ``msnb`` kernel over Unix sockets (where the OS has them) in a folder only the user can
enter, working in the notebook's folder, with the environment :func:`kernel_environment`
adds, and without the SIGINT that jupyter_client sends before a shutdown. Nothing here
changes the process's working folder or environment, so several notebooks can run at once
from threads of one process.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = [
    "KERNEL",
    "execute_notebook",
    "kernel_config",
    "kernel_environment",
    "kernel_manager_class",
]

KERNEL = "msnb"

# Variables added to the environment of the kernels started in this thread (or task).
_KERNEL_ENV: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "msnb_kernel_env", default=None
)


@contextlib.contextmanager
def kernel_environment(env: Mapping[str, str]) -> Iterator[None]:
    """Add ``env`` to the environment of the kernels :func:`execute_notebook` starts here.

    Scoped to the calling thread (a context variable): the study's parallel runner gives each
    job's kernel its share of the cores this way without touching ``os.environ``.
    """
    token = _KERNEL_ENV.set(dict(env))
    try:
        yield
    finally:
        _KERNEL_ENV.reset(token)


def kernel_config(
    env: Mapping[str, str] | None = None, *, socket_dir: str | os.PathLike | None = None
):
    """Kernel settings for papermill: Unix sockets (ZeroMQ IPC) where the OS has them.

    Over IPC, access to the kernel's channels follows file permissions instead of open
    loopback ports, and ipykernel no longer prints its "Kernel is running over TCP without
    encryption" warning once per notebook into the study's output. Each kernel gets its
    own socket prefix (concurrent jobs never collide); jupyter_client removes the sockets
    when the kernel stops. Elsewhere papermill's TCP default stays. ipykernel still binds
    one loopback TCP port of its own, whatever the transport: the pipe through which forked
    subprocesses send their output (it drops every message that does not start with a
    random 16-byte key the kernel gives only to its children; no setting turns it off).

    Parameters
    ----------
    env : mapping, optional
        Variables added to the kernel's environment (:func:`kernel_manager_class`).
    socket_dir : path-like, optional
        A folder of this kernel's own for its sockets (:func:`execute_notebook` gives each
        kernel a private one); default: a unique prefix in the temporary folder.

    Returns
    -------
    traitlets.config.Config or None
        None when there is nothing to set.
    """
    from traitlets.config import Config

    settings: dict = {}
    if os.name == "posix":
        prefix = (
            Path(socket_dir) / "kernel"
            if socket_dir
            else Path(tempfile.gettempdir()) / f"msnb-kernel-{uuid.uuid4().hex[:12]}"
        )
        settings["KernelManager"] = {"transport": "ipc", "ip": str(prefix)}
    if env:
        settings["StudyKernelManager"] = {"extra_env": dict(env)}
    return Config(settings) if settings else None


@functools.cache
def kernel_manager_class():
    """jupyter_client's AsyncKernelManager with an added environment, without the interrupt
    before a shutdown.

    ``StudyKernelManager.extra_env`` (set through :func:`kernel_config`) is added to the
    environment the kernel starts with (and restarts with).

    jupyter_client sends SIGINT before its shutdown request. When a notebook has
    finished that interrupt has nothing to stop, but it sometimes lands while the kernel
    handles a message, and ipykernel then prints "ERROR | KeyboardInterrupt caught in
    kernel." into the study's output (6 times in a 67-job quick study). Interrupts outside
    a shutdown (a cell timeout) are unchanged; a kernel that ignores the shutdown request
    is still terminated, then killed.
    """
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import Dict

    class StudyKernelManager(AsyncKernelManager):
        extra_env = Dict(help="Variables added to the kernel's environment.").tag(config=True)

        async def start_kernel(self, **kw) -> None:
            if self.extra_env:
                kw["env"] = {**kw.get("env", os.environ), **self.extra_env}
            await super().start_kernel(**kw)

        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    return StudyKernelManager


def execute_notebook(
    notebook: str | os.PathLike,
    output: str | os.PathLike,
    parameters: Mapping | None = None,
    *,
    kernel: str = KERNEL,
    cwd: str | os.PathLike | None = None,
    progress: bool = False,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> Path:
    """Run ``notebook`` with ``parameters`` into ``output`` (papermill); returns ``output``.

    Parameters
    ----------
    notebook, output : path-like
        The source notebook and the executed copy (papermill keeps it, with the error,
        when a cell fails).
    parameters : mapping, optional
        Values for the notebook's ``parameters`` cell.
    kernel : str, default "msnb"
        The Jupyter kernel (``make setup`` registers ``msnb`` inside the venv).
    cwd : path-like, optional
        Working folder of the kernel (default: the notebook's folder).
    progress : bool, default False
        papermill's progress bar.
    env : mapping, optional
        Variables added to the kernel's environment (default: those of the enclosing
        :func:`kernel_environment`, if any).
    timeout : float, optional
        Seconds one cell may run before it is interrupted and the run fails (nbclient's
        ``CellTimeoutError``); default: no limit (a study's training cell may take hours).

    Raises
    ------
    papermill.PapermillExecutionError
        A cell failed.
    nbclient.exceptions.CellTimeoutError
        A cell ran past ``timeout``.
    """
    import papermill as pm

    notebook, output = Path(notebook).absolute(), Path(output).absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    env = env if env is not None else _KERNEL_ENV.get()
    # The kernel's sockets go in a folder only this user can enter (mode 0700, whatever the
    # umask), removed afterwards. Its working folder goes through nbclient's resources, not
    # papermill's ``cwd``: that one changes the working folder of the whole process, which
    # threads running notebooks at once would see change under them.
    with tempfile.TemporaryDirectory(prefix="msnb-kernel-", ignore_cleanup_errors=True) as tmp:
        pm.execute_notebook(
            str(notebook),
            str(output),
            parameters=dict(parameters or {}),
            kernel_name=kernel,
            progress_bar=progress,
            resources={"metadata": {"path": str(Path(cwd or notebook.parent).absolute())}},
            config=kernel_config(env, socket_dir=tmp),
            kernel_manager_class=kernel_manager_class(),
            execution_timeout=timeout,
        )
    return output
