"""Where msnb reads data and writes outputs: the one place for paths.

Environment variables override the defaults:

- ``MSNB_DATA``: root of the datasets (default ``<repo>/data``).
- ``MSNB_OUTPUTS``: root of everything a run writes (default ``<repo>/outputs``).
- ``MSNB_CACHE``: slice stores and other rebuildable caches (default ``<outputs>/cache``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "cache_root",
    "data_root",
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
