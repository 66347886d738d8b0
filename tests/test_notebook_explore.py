"""Run notebooks/01_explore_data.ipynb with papermill on the tiny phantom."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msnb.paths import notebooks_dir


def test_explore_helpers_on_tiny_phantom(tmp_path):
    from msnb import explore
    from msnb.phantom import generate_phantom

    root = generate_phantom(tmp_path / "ph", preset="tiny", progress=False)
    scans = explore.load_explore_scans(root, ["msseg2016_test", "isbi2015"])
    table = explore.compute_dataset_table(scans)
    assert set(table.center) == {"01", "07", "03", "isbi"}
    assert (table.brain_slices > 0).all()
    assert table.scans.sum() == len(scans)
    per_scan, summary = explore.compute_lesion_stats(scans)
    assert (per_scan.lesions > 0).all() and (per_scan.load_ml > 0).all()
    assert list(summary.dataset) == ["msseg2016_test", "isbi2015"]
    axes = explore.plot_center_slices(scans)
    assert len(axes) == 4
    ax = explore.plot_center_histograms(scans)
    assert len(ax.get_lines()) == 4


@pytest.mark.slow
def test_notebook_runs_on_tiny_phantom(tmp_path):
    import papermill

    from msnb.phantom import generate_phantom

    root = generate_phantom(tmp_path / "ph", preset="tiny", progress=False)
    out = tmp_path / "01_explore_data.ipynb"
    papermill.execute_notebook(
        str(notebooks_dir() / "01_explore_data.ipynb"),
        str(out),
        parameters={"data_root": str(root)},
        kernel_name="msnb",
        cwd=str(tmp_path),
        progress_bar=False,
    )
    nb = json.loads(Path(out).read_text())
    images = [
        o
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) == 2
    text = json.dumps(nb)
    assert "msseg2016_test" in text


def test_source_notebook_is_stripped_and_thin():
    nb = json.loads((notebooks_dir() / "01_explore_data.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert all(len("".join(c["source"]).splitlines()) <= 10 for c in code)
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    assert nb["cells"][0]["source"][0].startswith("# ") and "?" in "".join(nb["cells"][0]["source"])
