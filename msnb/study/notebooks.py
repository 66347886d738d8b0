"""Executing a parameterized notebook with papermill: the one runner of msnb.

The study's jobs and the tests both run notebooks through :func:`execute_notebook`, with
the ``msnb`` kernel over Unix sockets (where the OS has them) and without the SIGINT that
jupyter_client sends before a shutdown.
"""

from __future__ import annotations

import functools
import os
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

__all__ = ["KERNEL", "execute_notebook", "kernel_config", "kernel_manager_class"]

KERNEL = "msnb"


def kernel_config():
    """Kernel settings for papermill: Unix sockets (ZeroMQ IPC) where the OS has them.

    Over IPC, access to the kernel follows file permissions instead of an open loopback
    port, and ipykernel no longer prints its "Kernel is running over TCP without
    encryption" warning once per notebook into the study's output. Each kernel gets its
    own socket prefix in the temporary folder (concurrent jobs never collide);
    jupyter_client removes the sockets when the kernel stops. Returns None (papermill's
    TCP default) elsewhere.
    """
    if os.name != "posix":
        return None
    from traitlets.config import Config

    prefix = Path(tempfile.gettempdir()) / f"msnb-kernel-{uuid.uuid4().hex[:12]}"
    return Config({"KernelManager": {"transport": "ipc", "ip": str(prefix)}})


@functools.cache
def kernel_manager_class():
    """jupyter_client's AsyncKernelManager without the interrupt before a shutdown.

    jupyter_client sends SIGINT before its shutdown request. When a notebook has
    finished that interrupt has nothing to stop, but it sometimes lands while the kernel
    handles a message, and ipykernel then prints "ERROR | KeyboardInterrupt caught in
    kernel." into the study's output (6 times in a 67-job quick study). Interrupts outside
    a shutdown (a cell timeout) are unchanged; a kernel that ignores the shutdown request
    is still terminated, then killed.
    """
    from jupyter_client.manager import AsyncKernelManager

    class StudyKernelManager(AsyncKernelManager):
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

    Raises
    ------
    papermill.PapermillExecutionError
        A cell failed.
    """
    import papermill as pm

    notebook, output = Path(notebook), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(
        str(notebook),
        str(output),
        parameters=dict(parameters or {}),
        kernel_name=kernel,
        progress_bar=progress,
        cwd=str(cwd or notebook.parent),
        config=kernel_config(),
        kernel_manager_class=kernel_manager_class(),
    )
    return output
