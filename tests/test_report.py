"""The study report's parts (labels, paths, figures, the viewer) and the page a reader opens.

:func:`check_report_page` is called by the tiny study's end-to-end test
(``test_study.py``), which runs the study once and checks its report.html here in headless
Chromium.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from msnb.report import model_labels, public_text
from msnb.viz import (
    plot_ablation_pairs,
    plot_bland_altman,
    plot_center_boxes,
    plot_table2_beside_paper,
    view_overlay_3d,
)

#: The figures every report of a study with single models, an ablation, a multi-center
#: test set and trained bundles shows (the ``alt`` of their images).
REPORT_FIGURES = (
    "Table 2 heatmap",
    "ablation normalization",
    "per-center box plots",
    "Bland-Altman lesion volume",
    "learning curves",
    "Figure 2 panel",
)
#: An absolute path: a slash-led folder name not preceded by a word, a placeholder or a URL.
ABSOLUTE = re.compile(r"(?<![\w>.~:/+=-])/(?:tmp|home|root|work|usr|var|opt|Users|mnt)/")


def check_report_page(report: Path, results: pd.DataFrame, forbidden, shot: Path) -> dict:
    """Open ``report`` in headless Chromium and check what a reader gets (see the issue)."""
    from browser import find_chromium, open_report

    source = re.sub(r"[A-Za-z0-9+/=]{200,}", "", report.read_text())  # images, sprites
    for folder in forbidden:  # no absolute path, in the page or in any viewer's page
        assert str(folder) not in source, f"{folder} in the report"
    assert not ABSOLUTE.search(source), ABSOLUTE.search(source)
    if find_chromium() is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    page = open_report(report, shot)
    errors = [m for m in page["console"] if m[0] in ("error", "pageerror", "requestfailed")]
    assert not errors, errors
    for figure in REPORT_FIGURES:
        assert figure in page["images"], f"no {figure!r} figure"
    # one viewer for the truth and one per model of the Figure-2 panel, each drawn
    assert len(page["viewers"]) >= 2 and all(v and v[0] > 0 for v in page["viewers"])
    text = page["text"]
    assert "..." not in text and "\u2026" not in text  # nothing truncated
    for model_id in results["model_id"].unique():
        assert model_id in text, f"model id {model_id} missing in full"
    assert "not run" not in text and "Statistics: the paper" not in text
    env = (report.parent / "environment.txt").read_text()
    commit = re.search(r"^commit: (\w+)", env, re.M).group(1)
    assert commit in text and "environment.txt" in page["links"]
    html_links = [h for h in page["links"] if h.endswith(".html")]
    assert html_links and all((report.parent / h).is_file() for h in html_links)
    for nb in report.parent.glob("*/*.ipynb"):
        assert nb.relative_to(report.parent).with_suffix(".html").as_posix() in html_links
    return page


# --------------------------------------------------------------------------- parts


def test_public_text_names_nested_folders_by_their_own_name(tmp_path):
    study = tmp_path / "outputs" / "tiny"
    text = f"read {tmp_path}/data/x.nii and wrote {study}/train/m.ipynb ({tmp_path}/outputs)"
    out = public_text(
        text, {"<data>": tmp_path / "data", "<outputs>": tmp_path / "outputs", "<study>": study}
    )
    assert out == "read <data>/x.nii and wrote <study>/train/m.ipynb (<outputs>)"
    assert str(tmp_path) not in out


def _results(rows) -> pd.DataFrame:
    columns = [
        "model_id", "train_datasets", "normalization", "architecture", "encoder", "label",
        "experiment", "seed",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def test_model_labels_are_readable_unique_and_name_what_differs():
    results = _results([
        ["a", "msseg2016_train", "quantile", "unetplusplus", "resnet18", "consensus", "single", 0],
        ["a1", "msseg2016_train", "quantile", "unetplusplus", "resnet18", "consensus", "single", 1],
        ["b", "msseg2016_train", "linear", "unetplusplus", "resnet18", "consensus", "ablation:linear", 0],
        ["c", "isbi2015", "quantile", "unetplusplus", "resnet18", "union", "single", 0],
        ["d", "isbi2015", "quantile", "unetplusplus", "resnet18", "rater1", "labels", 0],
        ["e", "msseg2016_train", "quantile", "unetplusplus", "resnet18", "consensus", "ablation:own_reference", 0],
        ["f", "3dmrms+isbi2015", "quantile", "unet", "resnet18", "consensus", "ablation:unet", 0],
    ])  # fmt: skip
    labels = model_labels(results)
    assert labels == {
        "a": "MSSEG-2016 train, seed 0",
        "a1": "MSSEG-2016 train, seed 1",
        "b": "MSSEG-2016 train, linear, seed 0",
        "c": "ISBI-2015, seed 0",  # ISBI 2015's union is its default label
        "d": "ISBI-2015, rater1, seed 0",
        "e": "MSSEG-2016 train, own_reference, seed 0",
        "f": "3D-MR-MS + ISBI-2015, unet, seed 0",
    }
    one_seed = model_labels(results[results.seed == 0])
    assert one_seed["a"] == "MSSEG-2016 train" and one_seed["b"] == "MSSEG-2016 train, linear"
    same = ["3dmrms", "quantile", "unetplusplus", "resnet18", "consensus", "single", 0]
    twins = model_labels(_results([["x", *same], ["y", *same]]))
    assert twins == {"x": "3D-MR-MS", "y": "3D-MR-MS #2"}


def test_table2_beside_paper_shows_only_the_cells_the_study_ran():
    comparison = pd.DataFrame(
        {
            "train_datasets": ["3dmrms", "3dmrms", "isbi2015"],
            "test_dataset": ["isbi2015", "msseg2016_test", "3dmrms"],
            "metric": "dice",
            "paper": [0.603, 0.544, 0.460],
            "study": [0.41, np.nan, 0.35],
            "study_sd": [0.02, np.nan, np.nan],
            "n_scans": [5, 0, 4],
            "status": ["ok", "not run", "ok"],
        }
    )
    axes = plot_table2_beside_paper(comparison, titles={"3dmrms": "3D-MR-MS"})
    study_text = {t.get_text() for t in axes[0].texts}
    paper_text = {t.get_text() for t in axes[1].texts}
    assert {"0.41 ± 0.02\nn=5", "0.35\nn=4"} <= study_text
    assert {"0.603", "0.460"} <= paper_text and "0.544" not in paper_text  # not run: left out
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["3D-MR-MS", "isbi2015"]
    plt.close("all")


def test_ablation_pairs_draw_each_pair_and_the_papers_dashed():
    table = pd.DataFrame(
        {"train_datasets": ["a", "b"], "test_dataset": ["b", "a"],
         "dice_quantile": [0.5, 0.6], "dice_linear": [0.4, 0.65]}
    )  # fmt: skip
    paper = table.assign(dice_quantile=[0.7, 0.7], dice_linear=[0.6, 0.6]).iloc[:1]
    ax = plot_ablation_pairs(table, ("quantile", "linear"), paper=paper)
    solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert [list(ln.get_ydata()) for ln in solid] == [[0.5, 0.4], [0.6, 0.65]]
    assert [list(ln.get_ydata()) for ln in dashed] == [[0.7, 0.6]]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["quantile", "linear"]
    plt.close("all")


def test_center_boxes_hatch_the_centers_a_model_never_saw():
    scores = pd.DataFrame(
        {
            "model_id": ["m"] * 4 + ["n"] * 4,
            "center": ["01", "01", "03", "03"] * 2,
            "dice": [0.5, 0.6, 0.3, 0.4, 0.55, 0.5, 0.2, 0.3],
            "seen_in_training": pd.array([True, True, False, False] * 2, dtype="boolean"),
        }
    )
    ax = plot_center_boxes(scores, labels={"m": "model M", "n": "model N"})
    hatched = [p for p in ax.patches if p.get_hatch() == "//"]
    assert len(ax.patches) == 4 and len(hatched) == 2  # center 03, for both models
    assert [t.get_text() for t in ax.get_xticklabels()] == ["01", "03\n(unseen)"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["model M", "model N", "unseen center"]
    plt.close("all")


def test_bland_altman_bias_and_limits_are_the_volume_differences():
    true, pred = np.array([1.0, 2.0, 4.0, np.nan]), np.array([2.0, 2.0, 7.0, 1.0])
    ax = plot_bland_altman(true, pred, groups=["a", "a", "b", "b"])
    diff = np.array([1.0, 0.0, 3.0])
    levels = sorted(ln.get_ydata()[0] for ln in ax.get_lines() if len(ln.get_ydata()))
    sd = diff.std(ddof=1)
    np.testing.assert_allclose(levels, sorted([0, diff.mean(), diff.mean() - 1.96 * sd,
                                               diff.mean() + 1.96 * sd]))  # fmt: skip
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    np.testing.assert_allclose(offsets, [[1.5, 1.0], [2.0, 0.0], [5.5, 3.0]])  # NaN left out
    plt.close("all")


def test_three_plane_viewer_shows_truth_and_errors_without_a_kernel():
    image = np.random.default_rng(0).random((20, 24, 16)).astype(np.float32)
    truth = np.zeros(image.shape, bool)
    truth[5:9, 6:10, 7:10] = True
    pred = np.roll(truth, 2, axis=0)
    view = view_overlay_3d(image, truth, pred, affine=np.diag([2.0, 2.0, 2.0, 1.0]), title="x")
    page = view.html
    assert "brainsprite" in page and '"showLR": true' in page.replace("True", "true")
    assert not re.search(r"<script[^>]+src=", page)  # every script inline: works offline
    assert re.search(r'"title": "x"', page)
