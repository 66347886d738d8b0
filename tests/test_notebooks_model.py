"""Notebooks 02-04 under papermill on the tiny phantom, and the widgets' callbacks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from msnb.metrics import RESULT_COLUMNS
from msnb.records import read_metrics, read_table
from msnb.viz import plot_prediction_examples


@pytest.fixture(scope="module")
def tiny_phantom(tmp_path_factory):
    from msnb.phantom import generate_phantom

    root = tmp_path_factory.mktemp("phantom")
    generate_phantom(root, preset="tiny", seed=0, progress=False)
    return root


@pytest.mark.slow
def test_notebooks_02_03_04_run_and_record(tiny_phantom, tmp_path, run_notebook):
    run_notebook(
        "02_quantile_normalization", data_root=str(tiny_phantom), out_dir=str(tmp_path / "n02")
    )
    r02 = read_metrics(tmp_path / "n02")
    assert r02["kind"] == "normalization" and r02["parameters"]["per_center"] == 1
    m02 = r02["metrics"]
    # quantile normalization brings the centers' distributions much closer than linear
    assert m02["mean_center_distance"]["quantile"] < 0.2 * m02["mean_center_distance"]["linear"]
    distances = pd.read_csv(tmp_path / "n02" / "distances.csv")
    assert len(r02["tables"]["distances"]) == len(distances) > 0

    run_notebook(
        "03_train",
        data_root=str(tiny_phantom),
        out_dir=str(tmp_path / "models"),
        model_id="m",
        train_datasets=["msseg2016_train", "3dmrms"],
        size=32,
        max_slices_per_epoch=16,
    )
    bundle = tmp_path / "models" / "m"
    m03 = read_metrics(bundle)
    assert m03["kind"] == "training" and m03["parameters"]["size"] == 32
    assert m03["metrics"]["train_datasets"] == "msseg2016_train+3dmrms"
    assert m03["metrics"]["epochs_run"] == 1 and (bundle / "weights.pt").exists()
    assert len(m03["tables"]["history"]) == 1 and (bundle / "history.csv").exists()

    run_notebook(
        "04_evaluate",
        bundle=str(bundle),
        test_dataset="isbi2015",
        data_root=str(tiny_phantom),
        out_dir=str(tmp_path / "eval"),
    )
    rows = pd.read_csv(tmp_path / "eval" / "scans.csv", dtype={"subject": str, "timepoint": str})
    assert list(rows.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert len(rows) == 4 and (rows.train_datasets == "msseg2016_train+3dmrms").all()
    assert (rows.test_dataset == "isbi2015").all() and rows.dice.between(0, 1).all()
    m04 = read_metrics(tmp_path / "eval")
    assert m04["kind"] == "evaluation" and set(m04) == {"kind", "metrics", "parameters", "tables"}
    assert len(m04["tables"]["scans"]) == 4 and m04["metrics"]["model_id"] == "m"
    assert m04["parameters"]["test_dataset"] == "isbi2015"
    assert read_table(tmp_path / "eval", "scans").scan_id.tolist() == rows.scan_id.tolist()


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
    view = view_overlay(img, truth, pred)
    assert view.children[0].value == 2  # starts on the slice with the most lesion


def test_prediction_examples_show_the_slices_with_most_truth_and_prediction():
    img = np.random.default_rng(0).random((6, 6, 5))
    truth = np.zeros(img.shape, np.uint8)
    pred = np.zeros(img.shape, bool)
    truth[1:3, 1:3, 3] = 1  # 4 voxels of truth
    pred[0:3, 0:3, 1] = True  # 9 predicted voxels
    pred[1:2, 1:3, 3] = True
    axes = plot_prediction_examples(img, truth, pred, n=2)
    assert [ax.get_title() for ax in axes] == ["z = 1", "z = 3"]
