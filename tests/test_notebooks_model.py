"""Notebooks 02-04 under papermill on the tiny phantom, and the widgets' callbacks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from msnb.paths import notebooks_dir

NOTEBOOKS = ["02_quantile_normalization", "03_train", "04_evaluate"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_source_notebooks_are_stripped_and_thin(name):
    nb = json.loads((notebooks_dir() / f"{name}.ipynb").read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "msnb"
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown" and cells[0]["source"][0].startswith("# ")
    assert "?" in "".join(cells[0]["source"]).splitlines()[0]
    assert any(
        c["cell_type"] == "markdown" and "".join(c["source"]).strip() == "## Setup" for c in cells
    )
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    for line in "".join(params[0]["source"]).splitlines():
        assert "#" in line, f"parameter without a comment: {line}"
    for c in cells:
        if c["cell_type"] == "code" and c not in params:
            assert c["outputs"] == [] and c["execution_count"] is None
            assert len("".join(c["source"]).splitlines()) <= 12, c["source"]


@pytest.fixture(scope="module")
def tiny_phantom(tmp_path_factory):
    from msnb.phantom import generate_phantom

    root = tmp_path_factory.mktemp("phantom")
    generate_phantom(root, preset="tiny", seed=0, progress=False)
    return root


def _run(name, out, **params):
    import papermill as pm

    pm.execute_notebook(
        str(notebooks_dir() / f"{name}.ipynb"),
        str(out / f"{name}.ipynb"),
        parameters=params,
        kernel_name="msnb",
        cwd=str(notebooks_dir()),
        progress_bar=False,
    )
    return out / f"{name}.ipynb"


@pytest.mark.slow
def test_notebooks_02_03_04_run_and_record(tiny_phantom, tmp_path):
    import pandas as pd

    _run(
        "02_quantile_normalization",
        tmp_path,
        data_root=str(tiny_phantom),
        out_dir=str(tmp_path / "n02"),
    )
    m02 = json.loads((tmp_path / "n02" / "metrics.json").read_text())["metrics"]
    # quantile normalization brings the centers' distributions much closer than linear
    assert m02["mean_center_distance"]["quantile"] < 0.2 * m02["mean_center_distance"]["linear"]

    _run(
        "03_train",
        tmp_path,
        data_root=str(tiny_phantom),
        out_dir=str(tmp_path / "models"),
        model_id="m",
        train_datasets=["msseg2016_train", "3dmrms"],
        size=32,
        max_slices_per_epoch=16,
    )
    bundle = tmp_path / "models" / "m"
    m03 = json.loads((bundle / "metrics.json").read_text())
    assert m03["metrics"]["train_datasets"] == "msseg2016_train+3dmrms"
    assert m03["metrics"]["epochs_run"] == 1 and (bundle / "weights.pt").exists()

    _run(
        "04_evaluate",
        tmp_path,
        bundle=str(bundle),
        test_dataset="isbi2015",
        data_root=str(tiny_phantom),
        out_dir=str(tmp_path / "eval"),
    )
    rows = pd.read_csv(tmp_path / "eval" / "scans.csv", dtype={"subject": str, "timepoint": str})
    from msnb.predict import RESULT_COLUMNS

    assert list(rows.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert len(rows) == 4 and (rows.train_datasets == "msseg2016_train+3dmrms").all()
    assert (rows.test_dataset == "isbi2015").all() and rows.dice.between(0, 1).all()
    m04 = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert len(m04["rows"]) == 4 and m04["metrics"]["model_id"] == "m"


def test_widget_callbacks(mrms_root):
    from msnb.datasets import load_3dmrms
    from msnb.normalize import compare_normalizations
    from msnb.widgets import normalization_frame, overlay_frame, view_normalization, view_overlay

    comp = compare_normalizations(load_3dmrms(mrms_root), per_center=2)
    sid = comp.scans.scan_id.iloc[1]
    frame = normalization_frame(comp, sid, 10, "quantile")
    assert frame["plane"].shape == (24, 28)
    assert frame["values"].min() >= 0 and frame["values"].max() <= 1
    raw = normalization_frame(comp, sid, 999, "raw")  # clipped to the last slice
    assert raw["title"].endswith("z = 19 | raw") and raw["values"].max() > 50
    assert view_normalization(comp) is not None

    img = np.random.default_rng(0).random((6, 6, 4))
    truth = np.zeros(img.shape, bool)
    pred = np.zeros(img.shape, bool)
    truth[1:3, 1:3, 2] = True
    pred[2:4, 2:4, 2] = True
    f = overlay_frame(img, truth, pred, 2)
    assert (f["tp"], f["fp"], f["fn"]) == (1, 3, 3)
    assert view_overlay(img, truth, pred) is not None
