"""Recording a notebook's results: ``metrics.json`` (and its table), written atomically.

Later notebooks and :func:`msnb.study.gather_results` read these files, never other
notebooks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from msnb.bundle import _jsonable
from msnb.io import atomic_path


def record_metrics(
    out_dir: str | os.PathLike,
    metrics: dict,
    *,
    rows=None,
    parameters: dict | None = None,
    table_name: str = "scans.csv",
) -> Path:
    """Write ``<out_dir>/metrics.json`` atomically (and ``<out_dir>/<table_name>`` for rows).

    Parameters
    ----------
    out_dir : path-like
        Created if missing.
    metrics : dict
        Summary values (numbers, strings, lists); NaN and infinities become ``null``.
    rows : pandas.DataFrame or list of dict, optional
        One row per item (e.g. per test scan); stored under ``"rows"`` in the JSON and,
        for a DataFrame, also as a CSV table.
    parameters : dict, optional
        The notebook's parameters, stored under ``"parameters"``.
    table_name : str, default "scans.csv"

    Returns
    -------
    Path
        The ``metrics.json`` written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"metrics": metrics}
    if parameters is not None:
        doc["parameters"] = parameters
    if rows is not None:
        if hasattr(rows, "to_dict"):
            with atomic_path(out / table_name) as tmp:
                rows.to_csv(tmp, index=False)
            doc["rows"] = rows.to_dict(orient="records")
        else:
            doc["rows"] = list(rows)
    path = out / "metrics.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(doc), indent=1, allow_nan=False))
    return path


def read_metrics(path: str | os.PathLike) -> dict:
    """Read a ``metrics.json`` (a file or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    return json.loads(path.read_text())
