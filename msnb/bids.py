"""The BIDS naming rules msnb reads and writes (BIDS 1.10, raw and derivatives).

A BIDS file name is ``sub-<label>[_<key>-<label>...]_<suffix><extension>``: key-value
*entities*, then a suffix (``FLAIR``, ``mask``, ``probseg``...). Raw anatomical images lie
in ``sub-<label>/[ses-<label>/]anat/``; a pipeline's outputs in
``derivatives/<pipeline>/`` with the same folders, the source file's entities, then
derivative entities (``space``, ``label``, ``desc``...). This module parses and builds such
names and folders; :func:`msnb.datasets.load_bids` reads a BIDS tree into scans and
``msnb segment`` writes its outputs as derivatives.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

__all__ = [
    "DERIVATIVE_ENTITIES",
    "BidsName",
    "derivative_path",
    "find_bids_root",
    "find_flairs",
    "is_bids_root",
    "parse_name",
    "read_participants",
]

_EXTENSIONS = (".nii.gz", ".nii", ".tsv", ".json")
_ENTITY = re.compile(r"([a-zA-Z]+)-([a-zA-Z0-9]+)")
_SUFFIX = re.compile(r"[a-zA-Z0-9]+")

#: Entities a derivative adds to its source file's (they are not part of the source's
#: identity when a derivative is matched to its source).
DERIVATIVE_ENTITIES = ("space", "res", "den", "label", "desc")


class BidsName:
    """A parsed BIDS file name.

    Attributes
    ----------
    entities : dict of str to str
        In the order they appear (``{"sub": "01", "ses": "02", "desc": "consensus"}``).
    suffix : str
        ``"FLAIR"``, ``"mask"``...
    extension : str
        ``".nii.gz"``, ``".nii"``, ``".tsv"`` or ``".json"``.
    """

    def __init__(self, entities: dict[str, str], suffix: str, extension: str):
        self.entities = dict(entities)
        self.suffix = suffix
        self.extension = extension

    @property
    def source(self) -> tuple[tuple[str, str], ...]:
        """The entities that name the source acquisition (all but :data:`DERIVATIVE_ENTITIES`)."""
        return tuple((k, v) for k, v in self.entities.items() if k not in DERIVATIVE_ENTITIES)

    def stem(self, entities: dict[str, str] | None = None) -> str:
        """``key-value`` pairs joined by ``_`` (``entities`` or these)."""
        ents = self.entities if entities is None else entities
        return "_".join(f"{k}-{v}" for k, v in ents.items())


def parse_name(name: str | Path) -> BidsName | None:
    """Parse a BIDS file name; None when ``name`` is not one.

    A BIDS name starts with ``sub-<label>``, has only ``key-label`` entities with
    alphanumeric labels before its suffix, and ends in ``.nii[.gz]``, ``.tsv`` or ``.json``
    (extensions are matched case-insensitively, entities and suffix as written).
    """
    name = Path(name).name
    ext = next((e for e in _EXTENSIONS if name.lower().endswith(e)), None)
    if ext is None:
        return None
    parts = name[: -len(ext)].split("_")
    if len(parts) < 2 or not _SUFFIX.fullmatch(parts[-1]):
        return None
    entities = {}
    for part in parts[:-1]:
        m = _ENTITY.fullmatch(part)
        if not m or m.group(1) in entities:
            return None
        entities[m.group(1)] = m.group(2)
    if next(iter(entities)) != "sub":
        return None
    return BidsName(entities, parts[-1], ext)


def _anat_folder_matches(path: Path, name: BidsName) -> Path | None:
    """The dataset root above ``path`` when ``path`` lies in ``sub-X/[ses-Y/]anat/``
    matching its entities, else None."""
    folder = path.parent
    if folder.name != "anat":
        return None
    folder = folder.parent
    if "ses" in name.entities:
        if folder.name != f"ses-{name.entities['ses']}":
            return None
        folder = folder.parent
    if folder.name != f"sub-{name.entities['sub']}":
        return None
    return folder.parent


def find_bids_root(path: str | Path) -> Path | None:
    """The BIDS dataset root of a raw anatomical file, or None when ``path`` is not one.

    ``path`` must have a BIDS name and lie in ``<root>/sub-<sub>/[ses-<ses>/]anat/`` with
    folders matching its ``sub`` and ``ses`` entities.
    """
    path = Path(path)
    name = parse_name(path)
    return None if name is None else _anat_folder_matches(path.absolute(), name)


def is_bids_root(folder: str | Path) -> bool:
    """Whether ``folder`` holds a BIDS dataset: a ``dataset_description.json`` or
    ``sub-*`` folders."""
    folder = Path(folder)
    if (folder / "dataset_description.json").is_file():
        return True
    return folder.is_dir() and any(
        p.is_dir() and p.name.startswith("sub-") for p in folder.iterdir()
    )


def find_flairs(root: str | Path) -> list[Path]:
    """The raw FLAIR images of a BIDS dataset: ``sub-*/[ses-*/]anat/*_FLAIR.nii[.gz]``.

    Returns
    -------
    list of Path
        Sorted; only files whose name parses as BIDS with the suffix ``FLAIR`` and whose
        folders match their ``sub``/``ses`` entities.
    """
    root = Path(root)
    found = []
    for pattern in ("sub-*/anat/*_FLAIR.nii*", "sub-*/ses-*/anat/*_FLAIR.nii*"):
        for path in root.glob(pattern):
            name = parse_name(path)
            if name is None or name.suffix != "FLAIR" or not name.extension.startswith(".nii"):
                continue
            if path.is_file() and _anat_folder_matches(path, name) is not None:
                found.append(path)
    return sorted(found)


def derivative_path(
    out: str | Path, source: BidsName, *, entities: dict[str, str], suffix: str, extension: str
) -> Path:
    """Where a derivative of ``source`` lies in the derivatives folder ``out``.

    ``out/sub-X/[ses-Y/]anat/<source entities>_<entities>_<suffix><extension>``: the
    source's entities (less any derivative entity it has), then ``entities`` in order.
    """
    folder = Path(out) / f"sub-{source.entities['sub']}"
    if "ses" in source.entities:
        folder = folder / f"ses-{source.entities['ses']}"
    ents = {**dict(source.source), **entities}
    return folder / "anat" / f"{source.stem(ents)}_{suffix}{extension}"


def read_participants(root: str | Path) -> dict[str, dict[str, str]]:
    """``participants.tsv`` of a BIDS dataset as ``{subject label: {column: value}}``.

    The ``participant_id`` column holds ``sub-<label>``; an absent file gives ``{}``. The
    values are strings as written (``n/a`` included).

    Raises
    ------
    ValueError
        The file has no ``participant_id`` column or lists a participant twice (the message
        names the file).
    """
    path = Path(root) / "participants.tsv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
        columns = rows[0].keys() if rows else []
    if rows and "participant_id" not in columns:
        raise ValueError(f"{path}: no participant_id column (columns: {', '.join(columns)})")
    table = {}
    for row in rows:
        pid = (row["participant_id"] or "").strip()
        label = pid[4:] if pid.startswith("sub-") else pid
        if label in table:
            raise ValueError(f"{path}: participant {pid} is listed twice")
        table[label] = {k: (v or "").strip() for k, v in row.items() if k is not None}
    return table
