"""The teaching tour: widget callbacks as plain functions, and a real-browser run."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from browser import CHROMIUM_FLAGS, ERROR_OUTPUT, Lab, find_chromium, run_all_cells

from msnb.datasets import load_scans
from msnb.paths import notebooks_dir
from msnb.widgets import load_slice_volumes, plot_slice_frame, slice_frame


def test_slice_frame_follows_slice_and_overlay(msseg_root):
    scan = load_scans("msseg2016_train", msseg_root)[0]
    vols = load_slice_volumes(scan)
    a = slice_frame(vols, 10, "consensus")
    assert list(a["outlines"]) == ["consensus"] and a["lesion_voxels"]["consensus"] > 0
    np.testing.assert_array_equal(a["plane"], vols["image"][:, :, 10])
    b = slice_frame(vols, 0, "consensus")
    assert b["lesion_voxels"]["consensus"] == 0 and not np.array_equal(a["plane"], b["plane"])
    raters = slice_frame(vols, 10, "all raters")
    assert list(raters["outlines"]) == [f"rater{k}" for k in range(1, 8)]
    assert slice_frame(vols, 999, "none")["z"] == vols["image"].shape[2] - 1
    with pytest.raises(ValueError, match="unknown overlay 'rater9'"):
        slice_frame(vols, 10, "rater9")
    ax = plot_slice_frame(raters)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"rater{k}" for k in range(1, 8)]


@pytest.mark.slow
def test_tour_runs_under_papermill(run_notebook):
    """Every cell runs; the static figures are there for a reader without a live kernel."""
    nb = run_notebook("00_tour", interactive=True)
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
    assert (
        sum("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs) == 3
    )


@pytest.mark.slow
def test_tour_in_a_real_browser(tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(notebooks_dir() / "00_tour.ipynb", root / "00_tour.ipynb")
    lab = Lab(root, tmp_path / "home", env={"MSNB_OUTPUTS": str(tmp_path / "outputs")})
    try:
        lab.wait()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(lab.url("lab/tree/00_tour.ipynb"))
            page.wait_for_selector(
                ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000
            )
            try:
                run = run_all_cells(page)
                page.wait_for_function(
                    "document.querySelectorAll('.widget-slider').length >= 3", timeout=30_000
                )
            finally:
                page.screenshot(path=str(tmp_path / "after-run.png"))
            print(f"Run All requests: {run['run_all_requests']}, dialogs: {run['dialogs']}")
            page.wait_for_selector(
                ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000
            )
            errors = page.locator("[data-mime-type='application/vnd.jupyter.stderr'] .ansi-red-fg")
            assert page.locator(ERROR_OUTPUT).count() == 0
            assert errors.count() == 0
            browser_view = page.locator(".widget-vbox").first
            browser_view.scroll_into_view_if_needed()
            image = browser_view.locator(".widget-output img").first
            image.wait_for(timeout=30_000)
            before = image.get_attribute("src")
            shot_before = image.screenshot()
            browser_view.locator(".widget-slider .noUi-handle").first.focus()
            for _ in range(5):
                page.keyboard.press("ArrowDown")
            deadline = time.time() + 30
            after = before
            while time.time() < deadline and after == before:
                time.sleep(0.5)
                image = browser_view.locator(".widget-output img").first
                after = image.get_attribute("src")
            page.screenshot(path=str(tmp_path / "tour.png"), full_page=False)
            assert after != before, "moving the slice slider did not change the image"
            assert image.screenshot() != shot_before
            browser.close()
    finally:
        lab.stop()
