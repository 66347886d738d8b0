"""notebooks/01_explore_data.ipynb and its helpers (msnb.explore) on the tiny phantom."""

from __future__ import annotations

import json

import pytest

from msnb import explore, sources
from msnb.paths import outputs_root
from msnb.phantom import generate_phantom


def image_outputs(nb: dict) -> list[dict]:
    """The PNG outputs of an executed notebook's code cells."""
    return [
        o
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]


def test_explore_helpers_on_tiny_phantom(tmp_path):
    root = generate_phantom(tmp_path / "ph", preset="tiny", progress=False)
    specs = sources.resolve_datasets(["msseg2016_test", "isbi2015"], root)
    scans = sources.load_datasets(specs)
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


def test_phantom_through_every_center():
    import numpy as np

    from msnb.phantom import CENTERS

    sim = explore.phantom_centers("tiny", 0)
    images = sim["images"]
    assert list(images) == ["phantom", *CENTERS]
    brain, truth = sim["brain"], sim["truth"]
    assert truth.any() and not (truth & ~brain).any()
    # one anatomy: every center is 0 outside the same brain; units differ between centers
    for name in CENTERS:
        assert np.array_equal(images[name] > 0, brain), name
    wm = sim["tissue"] == 3
    levels = {name: float(np.median(images[name][wm & ~truth])) for name in CENTERS}
    assert levels["M03"] > 2 * levels["M08"] > 4 * levels["M01"]
    fig = explore.plot_phantom_centers(sim, center="M07")
    assert len(fig.axes) == len(images) + 1
    title = fig.axes[-1].get_title()
    share = float(title.split("%")[0].split()[-1]) / 100
    assert 0.05 < share < 0.6, title


@pytest.mark.slow
def test_notebook_runs_on_tiny_phantom(tmp_path, run_notebook):
    root = generate_phantom(tmp_path / "ph", preset="tiny", progress=False)
    nb = run_notebook("01_explore_data", data_root=str(root))
    assert len(image_outputs(nb)) == 3
    assert "msseg2016_test" in json.dumps(nb)


@pytest.mark.slow
def test_notebook_defaults_use_the_shared_phantom(run_notebook):
    """Without data_root the notebook reads the phantom every notebook and the study use."""
    nb = run_notebook("01_explore_data")
    assert len(image_outputs(nb)) == 3
    assert (sources.phantom_root("tiny", 0) / "phantom.json").exists()
    assert not (outputs_root() / "phantom" / "tiny").exists()  # no second copy
