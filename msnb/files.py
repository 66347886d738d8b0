"""Writing files safely: atomic writes, JSON that any reader can parse, one writer at a time.

Every file msnb writes goes through :func:`atomic_path` (write to a temporary name beside
the target, then rename), so a killed run never leaves a half-written file behind. A
temporary's name holds its writer's pid and host (``.<name>.<pid>@<host>.<random>.tmp``),
so a later run removes those of dead writers (:func:`clean_stale_temporaries`).
:func:`restrict_writes` confines the writes of a block to folders (a study's), and
:func:`exclusive_lock` keeps a second process out of a folder.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime
import errno
import json
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from msnb.paths import PathEscapeError, check_inside

__all__ = [
    "FolderError",
    "LockedError",
    "atomic_path",
    "clean_stale_temporaries",
    "exclusive_lock",
    "restrict_writes",
    "to_jsonable",
    "write_json",
    "write_text",
]

#: This host in temporaries' names (letters, digits and ``-`` only).
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:24] or "host"
#: A temporary of :func:`atomic_path`: ``.<name>.<pid>@<host>.<8 random>.tmp[<suffixes>]``.
_TAGGED = re.compile(r"^\..+\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]*)\.[a-z0-9_]{8}\.tmp(\..*)?$")
#: A temporary of an msnb that did not name its writer: ``.<name>.<8 random>.tmp[...]``.
_UNTAGGED = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\..*)?$")
#: The folders the writes of the current block must stay under (None: anywhere).
_WRITE_ROOTS: contextvars.ContextVar[tuple[Path, ...] | None] = contextvars.ContextVar(
    "msnb_write_roots", default=None
)


class LockedError(ValueError):
    """Another process holds the lock of a folder; the message names it."""


class FolderError(OSError, ValueError):
    """A folder msnb must write into is a file, cannot be created or is read-only.

    An :class:`OSError` (what it is) and a :class:`ValueError` (bad input: the command
    line prints its one-line message), as :class:`io.UnsupportedOperation` is both.
    """


def _temporary(path: Path, tag: str = "") -> Path:
    """A free name beside ``path`` for a temporary of this process (nothing created)."""
    fd, name = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}@{HOST}.",
        suffix=f".tmp{tag}{''.join(path.suffixes)}",
        dir=path.parent,
    )
    os.close(fd)
    os.unlink(name)
    return Path(name)


def _check_roots(path: Path, root: str | os.PathLike | None) -> None:
    """Refuse ``path`` outside ``root`` or outside every folder of :func:`restrict_writes`."""
    if root is not None:
        check_inside(path, root)
    roots = _WRITE_ROOTS.get()
    if roots is None:
        return
    for r in roots:
        with contextlib.suppress(PathEscapeError):
            check_inside(path, r)
            return
    raise PathEscapeError(
        f"{path}: lies outside the folders this run writes to "
        f"({', '.join(map(str, roots))}); msnb writes only under them"
    )


def write_roots() -> tuple[Path, ...] | None:
    """The roots :func:`restrict_writes` set in this context (None: no restriction)."""
    return _WRITE_ROOTS.get()


@contextlib.contextmanager
def restrict_writes(*roots: str | os.PathLike) -> Iterator[None]:
    """Within the block, :func:`atomic_path` refuses any target outside ``roots``.

    Applies to this thread (a context variable); notebooks that a study runs in their own
    kernels are checked through their parameters instead.
    """
    token = _WRITE_ROOTS.set(tuple(Path(r) for r in roots))
    try:
        yield
    finally:
        _WRITE_ROOTS.reset(token)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, *, root: str | os.PathLike | None = None
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    Works for files and directories; on error the temporary is removed and ``path`` is
    left untouched. An existing directory at ``path`` is replaced only by a directory: it
    is moved aside, the new one renamed in, then the old one removed.

    Parameters
    ----------
    path : path-like
        The target.
    root : path-like, optional
        A folder ``path`` must lie under (also those of :func:`restrict_writes`).

    Raises
    ------
    PathEscapeError
        ``path`` lies outside ``root`` (or the folders of :func:`restrict_writes`); nothing
        is created or removed.
    IsADirectoryError
        A file was written where a directory is (the directory is kept).
    """
    path = Path(path)
    _check_roots(path, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        yield tmp
        _replace(tmp, path)
    except BaseException:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        raise


def _replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` onto ``path``; a directory there is moved aside, then removed."""
    if not path.is_dir() or path.is_symlink():
        os.replace(tmp, path)
        return
    if not tmp.is_dir() or tmp.is_symlink():
        raise IsADirectoryError(
            errno.EISDIR, "is a folder: msnb does not replace a folder by a file", str(path)
        )
    aside = _temporary(path, ".old")
    os.rename(path, aside)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(aside, path)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _writer_alive(pid: int, host: str) -> bool:
    """Whether the writer of a temporary may still run (unknown: assumed so)."""
    if host != HOST or pid == os.getpid() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(name: str, *, any_writer: bool) -> bool:
    """Whether ``name`` is a temporary of :func:`atomic_path` whose writer is gone."""
    tagged = _TAGGED.match(name)
    if tagged:
        pid, host = int(tagged["pid"]), tagged["host"]
        if host == HOST and pid == os.getpid():
            return False  # this process's own
        return any_writer or not _writer_alive(pid, host)
    return _UNTAGGED.match(name) is not None


def clean_stale_temporaries(
    folder: str | os.PathLike, *, recursive: bool = False, any_writer: bool = False
) -> list[Path]:
    """Remove the temporaries of :func:`atomic_path` left in ``folder`` by dead writers.

    A temporary names its writer (pid and host): it is stale when that process no longer
    runs on this host. Temporaries of other hosts are kept (their writer cannot be seen
    from here), unless ``any_writer``; those of an msnb that did not name its writer are
    stale. Symbolic links are not followed.

    Parameters
    ----------
    folder : path-like
        Where to look (missing: nothing to do).
    recursive : bool, default False
        Look in subfolders too (not inside temporaries, removed whole).
    any_writer : bool, default False
        Every temporary not of this process is stale: for a caller that holds the folder's
        :func:`exclusive_lock`, so no other writer can be at work there.

    Returns
    -------
    list of Path
        The temporaries removed.
    """
    removed = []
    for top, dirs, files in os.walk(folder, followlinks=False):
        for name in [*dirs, *files]:
            if not _is_stale(name, any_writer=any_writer):
                continue
            p = Path(top) / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
        dirs[:] = [d for d in dirs if recursive and (Path(top) / d) not in removed]
    return removed


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, *, purpose: str) -> Iterator[dict]:
    """Hold an exclusive lock on ``path`` for the block, or fail naming its holder.

    The lock is ``flock`` on the file (created if missing, kept afterwards): the system
    releases it when its process ends, however it ends (``kill -9`` too). The file holds
    the holder's pid, host, start time and command, for the message of the next one.

    Parameters
    ----------
    path : path-like
        The lock file.
    purpose : str
        What holds the lock, for the message (e.g. ``"study quick"``).

    Yields
    ------
    dict
        This holder: ``{"pid", "host", "started", "command"}``.

    Raises
    ------
    LockedError
        Another process holds it; the message names its pid, host, start and command.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield {}
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    holder: dict = {}
    try:
        holder = _take_lock(fcntl, fd, path, purpose)
        yield holder
    finally:
        if holder:  # no stale name for the next one to read; then the lock goes
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        os.close(fd)


def _take_lock(fcntl, fd: int, path: Path, purpose: str) -> dict:
    """Lock ``fd`` and write this holder into it (see :func:`exclusive_lock`)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            warnings.warn(
                f"{path}: this file system has no locks; a second {purpose} on this folder "
                "would not be refused",
                stacklevel=4,
            )
            return {}
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise LockedError(
            f"{path.parent}: {purpose} is already running there ({_holder(path)}); "
            "wait for it or stop it (its lock ends with its process)"
        ) from None
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="milliseconds"),
        "command": " ".join(shlex.join(getattr(sys, "orig_argv", sys.argv)).split())[:200],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    return holder


def _holder(path: Path) -> str:
    """The holder of a lock file, in words (from what it wrote there)."""
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on {h['host']} since {h['started']}, command: {h['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown: it has just started"


def to_jsonable(value):
    """``value`` with dataclasses, numpy scalars and arrays, paths and tuples made JSON-ready.

    Non-finite floats (NaN, infinities) become ``None``, so the result passes
    ``json.dumps(..., allow_nan=False)``; anything else unknown becomes its ``str``.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def write_text(
    path: str | os.PathLike, text: str, *, root: str | os.PathLike | None = None
) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (under ``root``, when given)."""
    path = Path(path)
    with atomic_path(path, root=root) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json(
    path: str | os.PathLike, data, *, indent: int = 1, root: str | os.PathLike | None = None
) -> Path:
    """Write ``data`` as JSON (through :func:`to_jsonable`) to ``path`` atomically (under
    ``root``, when given)."""
    text = json.dumps(to_jsonable(data), indent=indent, allow_nan=False) + "\n"
    return write_text(path, text, root=root)
