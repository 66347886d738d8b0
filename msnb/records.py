"""A notebook's results record: ``metrics.json`` and its tables, one schema for every notebook.

Every notebook that produces results ends with :func:`record_metrics`. The record is::

    {"kind": "evaluation" | "training" | "statistics" | "agreement" | ...,
     "metrics": {...summary values...},
     "parameters": {...the notebook's parameters...},     # when given
     "tables": {"scans": [...records...], ...}}           # when given

and each table given as a DataFrame is also written as ``<name>.csv`` beside it. Later
notebooks and the study's results gatherer read these files, never other notebooks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from msnb.files import atomic_path, write_json

__all__ = ["RECORD_NAME", "read_metrics", "read_table", "record_metrics"]

RECORD_NAME = "metrics.json"


def _records(table) -> list:
    if hasattr(table, "to_json"):
        # through pandas' JSON writer: NaN -> null, numpy and timestamp types handled
        return json.loads(table.to_json(orient="records"))
    return list(table)


def record_metrics(
    out_dir: str | os.PathLike,
    metrics: Mapping,
    *,
    kind: str = "notebook",
    tables: Mapping | None = None,
    parameters: Mapping | None = None,
    csv: bool = True,
) -> Path:
    """Write ``<out_dir>/metrics.json`` (and ``<out_dir>/<name>.csv`` per table) atomically.

    Parameters
    ----------
    out_dir : path-like
        Created if missing.
    metrics : mapping
        Summary values (numbers, strings, lists); NaN and infinities become ``null``.
    kind : str, default "notebook"
        What produced the record (``"evaluation"``, ``"training"``, ``"statistics"``,
        ``"agreement"``, ``"normalization"`` ...).
    tables : mapping of str to DataFrame or list of dict, optional
        Tables stored under ``"tables"``; a DataFrame is also written as ``<name>.csv``.
    parameters : mapping, optional
        The notebook's parameters, stored under ``"parameters"``.
    csv : bool, default True
        Write the DataFrame tables as CSV files too.

    Returns
    -------
    Path
        The ``metrics.json`` written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict = {"kind": kind, "metrics": dict(metrics)}
    if parameters is not None:
        doc["parameters"] = dict(parameters)
    if tables:
        doc["tables"] = {}
        for name, table in tables.items():
            if csv and hasattr(table, "to_csv"):
                with atomic_path(out / f"{name}.csv") as tmp:
                    table.to_csv(tmp, index=False)
            doc["tables"][name] = _records(table)
    return write_json(out / RECORD_NAME, doc)


def read_metrics(path: str | os.PathLike) -> dict:
    """Read a ``metrics.json`` (a file or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_NAME
    return json.loads(path.read_text())


def read_table(folder: str | os.PathLike, name: str, *, dtype: Mapping | None = None):
    """Table ``name`` of the record in ``folder`` as a DataFrame (its CSV, else its JSON).

    Returns None when the folder holds neither.
    """
    import pandas as pd

    folder = Path(folder)
    csv = folder / f"{name}.csv"
    if csv.exists():
        return pd.read_csv(csv, dtype=dict(dtype or {}))
    if (folder / RECORD_NAME).exists():
        rows = read_metrics(folder).get("tables", {}).get(name)
        if rows:
            return pd.DataFrame(rows).astype(dict(dtype or {}))
    return None
