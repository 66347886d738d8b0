"""Where a dataset's scans come from: a data root, an explicit adapter + folder, or the phantom.

The one place that turns a dataset *spec* into scans. A spec is what a study file or a
notebook parameter says about a dataset:

- ``{"adapter": "msseg2016_train", "root": "/data/msseg2016", "options": {}}``: a folder
  in an adapter's layout;
- ``{"phantom": "quick", "seed": 0}``: the generated phantom of that preset and seed,
  generated on first use under ``<outputs>/phantom/<preset>-seed<seed>/`` (one cache key
  for the study, the notebooks and the tests);
- nothing: a dataset of :data:`msnb.datasets.DATASETS` under a data root, or under the
  phantom when there is no data root.

Either spec may add ``"n4": true``: the dataset's FLAIRs are N4-corrected whenever they are
read (:func:`msnb.preprocess.load_flair`), in training and in testing alike (the authors
correct 3D-MR-MS only).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from msnb.datasets import DATASETS, Scan, load_scans
from msnb.docs import fill_doc
from msnb.nifti import check_output_dir
from msnb.paths import outputs_root
from msnb.phantom import PRESETS, generate_phantom

__all__ = [
    "dataset_folder",
    "ensure_phantom",
    "find_scan",
    "load_datasets",
    "phantom_root",
    "resolve_dataset",
    "resolve_datasets",
]


def phantom_root(preset: str = "tiny", seed: int = 0) -> Path:
    """The folder of the generated phantom ``preset`` with ``seed``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown phantom preset {preset!r} (known: {', '.join(PRESETS)})")
    return outputs_root() / "phantom" / f"{preset}-seed{int(seed)}"


@fill_doc
def ensure_phantom(preset: str = "tiny", seed: int = 0, *, progress: bool = False) -> Path:
    """:func:`phantom_root`, generating the phantom there first when it is not complete.

    Parameters
    ----------
    preset : str, default "tiny"
        ``"tiny"``, ``"quick"`` or ``"standard"``.
    %(phantom_seed)s
    %(progress)s

    Raises
    ------
    msnb.nifti.OutputError
        The phantom is missing and its folder cannot be written (``MSNB_OUTPUTS`` is a file
        or read-only); checked before generating.
    """
    root = phantom_root(preset, seed)
    if not (root / "phantom.json").exists():
        check_output_dir(root, what="outputs folder (MSNB_OUTPUTS)")
        generate_phantom(root, preset=preset, seed=seed, progress=progress)
    return root


def _known(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}: give its adapter and root "
            f"(known names: {', '.join(DATASETS)})"
        )


@fill_doc
def resolve_dataset(
    name: str,
    spec: Mapping | None = None,
    *,
    data_root: str | os.PathLike | None = None,
    phantom: str = "tiny",
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Resolve one dataset to ``{"adapter", "root", "options"}`` (see the module docstring).

    Parameters
    ----------
    name : str
        The dataset's name.
    spec : mapping, optional
        ``{"adapter", "root"[, "options"]}`` or ``{"phantom"[, "seed"]}``; wins over the rest.
    %(data_root)s
    %(phantom)s
    %(phantom_seed)s
    %(progress)s
    """
    extra = {"n4": True} if spec is not None and spec.get("n4") else {}
    if spec is not None and "phantom" not in spec:
        out = {k: v for k, v in spec.items() if k != "n4"}
        out["options"] = dict(out.get("options") or {})
        return {**out, **extra}
    _known(name)
    info = DATASETS[name]
    if spec is not None:
        root = ensure_phantom(spec["phantom"], spec.get("seed", 0), progress=progress)
    elif data_root not in (None, ""):
        root = Path(data_root).expanduser()
    else:
        root = ensure_phantom(phantom, seed, progress=progress)
    return {"adapter": info.adapter, "root": str(root / info.folder), "options": {}, **extra}


@fill_doc
def resolve_datasets(
    names: Sequence[str],
    data_root: str | os.PathLike | None = None,
    *,
    specs: Mapping[str, Mapping] | None = None,
    phantom: str = "tiny",
    seed: int = 0,
    progress: bool = False,
) -> dict[str, dict]:
    """:func:`resolve_dataset` for each name: ``{name: {"adapter", "root", "options"}}``.

    Parameters
    ----------
    names : sequence of str
        Dataset names: those of :data:`msnb.datasets.DATASETS`, or any name in ``specs``.
    %(data_root)s
    specs : mapping of str to mapping, optional
        Explicit specs by name (see :func:`resolve_dataset`); they win.
    %(phantom)s
    %(phantom_seed)s
    %(progress)s
    """
    specs = specs or {}
    return {
        name: resolve_dataset(
            name,
            specs.get(name),
            data_root=data_root,
            phantom=phantom,
            seed=seed,
            progress=progress,
        )
        for name in names
    }


@fill_doc
def dataset_folder(
    name: str, data_root: str | os.PathLike | None = "", *, phantom: str = "tiny", seed: int = 0
) -> Path:
    """The folder of dataset ``name``: ``data_root`` itself when given, else the phantom's.

    Parameters
    ----------
    name : str
        A dataset of :data:`msnb.datasets.DATASETS`.
    data_root : path-like, optional
        The dataset's own folder; ``None`` or ``""``: its folder in the phantom.
    %(phantom)s
    %(phantom_seed)s
    """
    if data_root not in (None, ""):
        return Path(data_root).expanduser()
    return Path(resolve_dataset(name, phantom=phantom, seed=seed)["root"])


def load_datasets(specs: Mapping[str, Mapping]) -> list[Scan]:
    """All scans of resolved datasets (see :func:`resolve_datasets`), in order.

    A spec with ``"n4": true`` marks its scans for N4 correction (``Scan.n4``).
    """
    scans: list[Scan] = []
    for spec in specs.values():
        found = load_scans(spec["adapter"], spec["root"], **(spec.get("options") or {}))
        if spec.get("n4"):
            found = [dataclasses.replace(s, n4=True) for s in found]
        scans.extend(found)
    return scans


def find_scan(
    specs: Mapping[str, Mapping], dataset: str, subject: str, *, timepoint: str = "01"
) -> Scan:
    """One scan of a resolved dataset (e.g. a normalization template).

    Parameters
    ----------
    specs : mapping of str to mapping
        Resolved datasets (see :func:`resolve_datasets`).
    dataset : str
        A name in ``specs``.
    subject : str
        The scan's subject, as the dataset's adapter names it (MSSEG 2016: ``"08_03"`` is
        center 08, patient 03).
    timepoint : str, default "01"

    Raises
    ------
    ValueError
        ``dataset`` is not in ``specs``, or has no such scan (the message names the dataset
        and lists some of its subjects).
    """
    if dataset not in specs:
        raise ValueError(f"dataset {dataset!r} is not resolved (resolved: {', '.join(specs)})")
    scans = load_datasets({dataset: specs[dataset]})
    for scan in scans:
        if scan.subject == subject and scan.timepoint == timepoint:
            return scan
    subjects = sorted({s.subject for s in scans})
    shown = ", ".join(subjects[:8]) + (", ..." if len(subjects) > 8 else "")
    raise ValueError(
        f"dataset {dataset!r} has no scan of subject {subject!r} at timepoint {timepoint!r} "
        f"({len(subjects)} subjects: {shown})"
    )
