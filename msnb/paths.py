"""Where msnb reads data and writes outputs: the one place for paths.

Environment variables override the defaults:

- ``MSNB_DATA``: root of the datasets (default ``<repo>/data``).
- ``MSNB_OUTPUTS``: root of everything a run writes (default ``<repo>/outputs``).
- ``MSNB_CACHE``: slice stores and other rebuildable caches (default ``<outputs>/cache``).

Every path msnb writes for a study lies under that study's folder: :func:`inside` builds a
path from names and refuses one that leaves its root (a name holding ``..`` or ``/``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "PathEscapeError",
    "cache_root",
    "check_inside",
    "data_root",
    "inside",
    "notebooks_dir",
    "outputs_root",
    "parameters_dir",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def data_root() -> Path:
    """Root folder of the datasets (``MSNB_DATA``)."""
    return _env_path("MSNB_DATA", REPO_ROOT / "data")


def outputs_root() -> Path:
    """Root folder of all outputs (``MSNB_OUTPUTS``)."""
    return _env_path("MSNB_OUTPUTS", REPO_ROOT / "outputs")


def cache_root() -> Path:
    """Root folder of rebuildable caches such as slice stores (``MSNB_CACHE``)."""
    return _env_path("MSNB_CACHE", outputs_root() / "cache")


def notebooks_dir() -> Path:
    """The source notebooks shipped with msnb."""
    return REPO_ROOT / "notebooks"


def parameters_dir() -> Path:
    """The study and preset YAML files shipped with msnb."""
    return REPO_ROOT / "parameters"


class PathEscapeError(ValueError):
    """A path msnb would write lies outside the folder it must stay under."""


def check_inside(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """``path``, after checking it lies strictly under ``root``.

    The check is on the names: ``..`` is resolved, symbolic links are not followed (a
    link a user made inside the outputs is theirs to make).

    Raises
    ------
    PathEscapeError
        ``path`` is ``root`` itself or lies outside it; the message names both.
    """
    path = Path(path)
    full = Path(os.path.normpath(Path(path).absolute()))
    base = Path(os.path.normpath(Path(root).absolute()))
    if full == base or base not in full.parents:
        raise PathEscapeError(
            f"{path}: lies outside {base} (a name with '..' or '/'?); msnb writes only "
            "under that folder"
        )
    return path


def inside(root: str | os.PathLike, *parts: str) -> Path:
    """``root / parts...``, checked to lie under ``root`` (see :func:`check_inside`).

    Examples
    --------
    >>> inside("/out/quick", "eval", "a__b.ipynb").as_posix()
    '/out/quick/eval/a__b.ipynb'
    """
    return check_inside(Path(root).joinpath(*parts), root)
