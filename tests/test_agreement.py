"""Annotation agreement on hand-made masks with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import write

from msnb import agreement, datasets, masks


def cube(shape=(12, 12, 12), lo=(2, 2, 2), size=4) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, a + size) for a in lo)] = True
    return m


def test_dice_of_two_cubes_with_known_overlap():
    a = cube(lo=(2, 2, 2))
    b = cube(lo=(4, 2, 2))  # shifted by half the side: 2 x 4 x 4 = 32 shared voxels of 64
    assert masks.dice(a, b) == pytest.approx(0.5)
    assert masks.dice(a, a) == 1.0
    assert masks.dice(a, np.zeros_like(a)) == 0.0
    assert math.isnan(masks.dice(np.zeros_like(a), np.zeros_like(a)))
    with pytest.raises(ValueError, match="shapes differ"):
        masks.dice(a, a[:-1])


@pytest.mark.parametrize("rule", ["simple", "auto"])
def test_lesion_agreement_counts_lesions(rule):
    shape = (20, 12, 12)
    a = cube(shape, lo=(1, 2, 2)) | cube(shape, lo=(12, 2, 2))  # two lesions
    b = cube(shape, lo=(1, 2, 2))  # finds the first only
    res = agreement.compute_lesion_agreement(a, b, lesion_rule=rule)
    assert (res["n_lesions_a"], res["n_lesions_b"]) == (2, 1)
    assert res["sensitivity"] == 0.5 and res["ppv"] == 1.0
    assert res["f1"] == pytest.approx(2 / 3)
    swapped = agreement.compute_lesion_agreement(b, a, lesion_rule=rule)
    assert (swapped["sensitivity"], swapped["ppv"]) == (1.0, 0.5)
    empty = agreement.compute_lesion_agreement(np.zeros(shape, bool), b, lesion_rule=rule)
    assert math.isnan(empty["sensitivity"]) and math.isnan(empty["f1"])


def test_simple_rule_drops_small_components_and_needs_overlap():
    shape = (20, 12, 12)
    a = cube(shape, lo=(1, 2, 2))
    a[15, 5, 5] = True  # a 1-voxel speck: below 3 mm^3, not a lesion
    res = agreement.compute_lesion_agreement(a, a, lesion_rule="simple")
    assert res["n_lesions_a"] == 1
    b = np.zeros(shape, bool)
    b[1, 2, 2] = b[1, 2, 3] = b[1, 3, 2] = True  # 3 of 64 voxels (< 10 %)
    low = agreement.compute_lesion_agreement(a, b, lesion_rule="simple")
    assert low["sensitivity"] == 0.0


def test_rules_differ_on_a_lesion_of_exactly_the_minimal_volume():
    shape = (12, 12, 12)
    a = cube(shape, lo=(2, 2, 2))
    a[9, 9, 8:11] = True  # a 3-voxel lesion: 3 mm^3, kept by "simple", dropped by "msseg"
    simple = agreement.compute_lesion_agreement(a, a, lesion_rule="simple")
    msseg = agreement.compute_lesion_agreement(a, a, lesion_rule="msseg")
    assert (simple["n_lesions_a"], msseg["n_lesions_a"]) == (2, 1)
    with pytest.raises(ValueError, match="unknown lesion rule"):
        agreement.compute_lesion_agreement(a, a, lesion_rule="strict")


def _raters():
    truth = cube(lo=(3, 3, 3), size=5)
    r1 = truth.copy()
    r2 = truth.copy()
    r2[3, 3, 3] = False  # misses one corner voxel
    r3 = np.roll(truth, 2, axis=0)  # an outlier rater
    return truth, [r1, r2, r3]


def test_union_majority_and_staple_on_constructed_raters():
    truth, raters = _raters()
    union = masks.combine_masks(raters, method="union")
    majority = masks.combine_masks(raters, method="majority")
    staple = masks.combine_masks(raters, method="staple")
    assert np.array_equal(union, truth | raters[2])
    expected_majority = np.stack(raters).sum(0) >= 2
    assert np.array_equal(majority, expected_majority)
    # two of three raters agree on (almost) the truth: STAPLE follows them, not the outlier
    assert masks.dice(staple, truth) > 0.95
    assert masks.dice(staple, truth) > masks.dice(union, truth)
    zero = [np.zeros((4, 4, 4), bool)] * 3
    assert not masks.combine_masks(zero, method="staple").any()
    with pytest.raises(ValueError, match="unknown consensus method"):
        masks.combine_masks(raters, method="mean")


def test_rater_agreement_on_msseg_layout_matches_hand_computation(msseg_root):
    scans = datasets.load_scans("msseg2016_train", msseg_root)
    df = agreement.compute_rater_agreement(scans)
    assert len(df) == len(scans) * (7 + 21)
    assert set(df["kind"]) == {"rater_vs_consensus", "rater_vs_rater"}
    # conftest raters: odd raters are the consensus shifted by one voxel, even raters equal it
    summary = agreement.summarize_agreement(df).set_index(["kind", "metric"])
    from msnb.nifti import load_mask

    per_scan_rc, per_scan_rr = [], []
    for s in scans:
        c = load_mask(s.masks["consensus"]).data
        d = masks.dice(c, np.roll(c, 1, axis=0))
        per_scan_rc.append((3 + 4 * d) / 7)
        per_scan_rr.append((9 + 12 * d) / 21)
    dice_rc = summary.loc[("rater_vs_consensus", "dice")]
    assert dice_rc["mean"] == pytest.approx(np.mean(per_scan_rc))
    assert dice_rc["n_scans"] == len(scans)
    assert summary.loc[("rater_vs_rater", "dice"), "mean"] == pytest.approx(np.mean(per_scan_rr))
    assert summary.loc[("rater_vs_rater", "dice"), "ci_low"] <= np.mean(per_scan_rr)
    matrix = agreement.compute_agreement_matrix(df)
    assert list(matrix.index) == ["consensus", *[f"rater{k}" for k in range(1, 8)]]
    assert np.allclose(matrix.to_numpy(), matrix.to_numpy().T)
    assert matrix.loc["rater2", "consensus"] == 1.0 and matrix.loc["rater1", "rater3"] == 1.0
    assert (np.diag(matrix) == 1).all()


def test_isbi_without_consensus_scores_rater_pairs_only(isbi_root):
    scans = datasets.load_scans("isbi2015", isbi_root)
    df = agreement.compute_rater_agreement(scans)
    assert len(df) == len(scans) and set(df["kind"]) == {"rater_vs_rater"}
    assert df["dice"].between(0, 1).all() and (df["volume_a_ml"] > 0).all()
    summary = agreement.summarize_agreement(df)
    assert list(summary["kind"].unique()) == ["rater_vs_rater"]


def test_consensus_builders_against_raters_consensus_and_truth(msseg_root, tmp_path):
    scans = datasets.load_scans("msseg2016_train", msseg_root)
    truth_dir = tmp_path / "truth"
    from msnb.nifti import load_mask

    for s in scans:
        c = load_mask(s.masks["consensus"]).data.astype(np.uint8)
        write(truth_dir / f"{s.subject}_{s.timepoint}_truth.nii.gz", c)
    truth = agreement.find_truth(scans, truth_dir, pattern="{subject}_{timepoint}_truth.nii*")
    assert set(truth) == {s.scan_id for s in scans}
    df = agreement.compare_consensus_builders(scans, truth)
    assert set(df["reference_kind"]) == {"rater", "consensus", "truth"}
    assert len(df) == len(scans) * 3 * (7 + 2)
    # 4 of 7 raters are the shifted consensus: the majority vote is that shifted mask
    maj = df[(df["method"] == "majority") & (df["reference"] == "rater1")]
    assert (maj["dice"] == 1.0).all()
    truth_rows = df[(df["reference"] == "truth")].set_index(["scan_id", "method"])["dice"]
    cons_rows = df[(df["reference"] == "consensus")].set_index(["scan_id", "method"])["dice"]
    assert np.allclose(truth_rows, cons_rows)  # here the truth is the consensus
    summary = agreement.summarize_consensus_builders(df)
    assert len(summary) == 3 * 3 and (summary["n_scans"] == len(scans)).all()
    assert agreement.find_truth(scans, "") == {}
    assert agreement.find_truth(scans, tmp_path / "absent") == {}


def test_find_truth_follows_the_phantom_layout(msseg_root, tmp_path):
    scans = datasets.load_scans("msseg2016_train", msseg_root)
    for s in scans:
        cc, pp = s.subject.split("_")
        write(tmp_path / "Training" / f"Center_{cc}_Patient_{pp}_truth.nii.gz", np.zeros((2, 2, 2)))
    write(tmp_path / "Training" / "Center_01_Patient_01_tissue.nii.gz", np.zeros((2, 2, 2)))
    truth = agreement.find_truth(scans, tmp_path)
    assert len(truth) == len(scans)
    assert truth["msseg2016_train/01_01/01"].name == "Center_01_Patient_01_truth.nii.gz"


def test_plot_agreement_matrix_returns_axes():
    import matplotlib

    matplotlib.use("Agg")
    mat = pd.DataFrame([[1.0, 0.7], [0.7, 1.0]], index=["a", "b"], columns=["a", "b"])
    ax = agreement.plot_agreement_matrix(mat)
    assert hasattr(ax, "collections") and len(ax.texts) == 4


def test_label_cost_and_writing(tmp_path):
    from test_stats import make_results

    table, tests = agreement.compute_label_cost(make_results())
    assert set(table["label"]) == {"rater1", "rater2", "union"}
    assert "rm_anova" in set(tests["test"])
    empty_table, empty_tests = agreement.compute_label_cost("")
    assert empty_table.empty and empty_tests["status"].str.startswith("not enough data").all()
    written = agreement.write_agreement(
        {"labels": table, "label_tests": tests}, tmp_path / "a", summary={"n_scans": 3}
    )
    data = json.loads(written["metrics"].read_text())
    assert data["kind"] == "agreement" and data["metrics"] == {"n_scans": 3}
    assert list(data["tables"]) == ["label_tests"]  # the large tables only as CSV
    assert len(data["tables"]["label_tests"]) == len(tests)
    assert {p.name for p in (tmp_path / "a").iterdir()} == {
        "labels.csv",
        "label_tests.csv",
        "metrics.json",
    }
