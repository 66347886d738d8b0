"""Hand-built cases for every branch of the per-scan metrics (MSSEG-2016 lesion detection)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from msnb.masks import dice_iou, f1_score
from msnb.metrics import (
    compute_metrics,
    detected_lesions,
    label_lesions,
    lesion_table,
    min_lesion_voxels,
    overlap_table,
    summarize,
)

SHAPE = (30, 30, 30)


def box(x0, x1, y0=0, y1=2, z0=0, z1=2, shape=SHAPE):
    m = np.zeros(shape, dtype=bool)
    m[x0:x1, y0:y1, z0:z1] = True
    return m


def test_dice_iou_hand_computed():
    t = box(0, 4)  # 16 voxels
    p = box(2, 6)  # 16 voxels, 8 shared
    d, j = dice_iou(t, p)
    assert d == pytest.approx(2 * 8 / 32)
    assert j == pytest.approx(8 / 24)


@pytest.mark.parametrize(
    "truth_empty, pred_empty, status, dice",
    [
        (False, False, "ok", 1.0),
        (True, False, "empty_truth", 0.0),
        (False, True, "empty_pred", 0.0),
        (True, True, "both_empty", math.nan),
    ],
)
def test_empty_cases_are_explicit(truth_empty, pred_empty, status, dice):
    lesion = box(5, 9)
    empty = np.zeros(SHAPE, bool)
    t = empty if truth_empty else lesion
    p = empty if pred_empty else lesion
    m = compute_metrics(t, p)
    assert m.status == status
    if math.isnan(dice):
        assert math.isnan(m.dice) and math.isnan(m.iou)
    else:
        assert m.dice == dice
    # lesion metrics: NaN exactly when their denominator is empty
    assert math.isnan(m.lesion_sensitivity) == truth_empty
    assert math.isnan(m.lesion_ppv) == pred_empty
    assert math.isnan(m.lesion_f1) == (truth_empty or pred_empty)


def test_f1_branches():
    assert f1_score(0.0, 0.0) == 0.0
    assert f1_score(1.0, 0.5) == pytest.approx(2 / 3)
    assert math.isnan(f1_score(math.nan, 1.0))
    assert math.isnan(f1_score(1.0, math.nan))


def test_min_size_drops_3mm3_or_less():
    assert min_lesion_voxels(1.0) == 4  # 3 voxels of 1 mm^3 (= 3 mm^3) are dropped
    assert min_lesion_voxels(3.375) == 1  # a single 1.5 mm voxel (3.375 mm^3) is kept
    assert min_lesion_voxels(0.5) == 7
    m = np.zeros(SHAPE, bool)
    m[0, 0, 0:3] = True  # 3 voxels: dropped
    m[10, 10, 0:4] = True  # 4 voxels: kept
    labels, n = label_lesions(m, voxel_volume_mm3=1.0)
    assert n == 1 and labels[10, 10, 0] == 1 and labels[0, 0, 0] == 0
    _, n_all = label_lesions(m, min_volume_mm3=0)
    assert n_all == 2


def test_connectivity_six_by_default_like_the_evaluator():
    m = np.zeros(SHAPE, bool)
    m[5:7, 5:7, 5:7] = True
    m[7:9, 7:9, 7:9] = True  # touches the first cube only by a corner
    assert label_lesions(m)[1] == 2
    assert label_lesions(m, connectivity=26)[1] == 1
    m2 = np.zeros(SHAPE, bool)
    m2[5:7, 5:7, 5:7] = True
    m2[7:9, 5:7, 5:7] = True  # shares a face
    assert label_lesions(m2)[1] == 1


def test_overlap_table_counts():
    ref = np.array([[[0, 1, 1, 2]]])
    test = np.array([[[1, 1, 0, 2]]])
    t = overlap_table(ref, 2, test, 2)
    assert t.tolist() == [[0, 1, 0], [1, 1, 0], [0, 0, 1]]


def _table(rows):
    return np.array(rows, dtype=np.int64)


def test_alpha_strictly_more_than_10_percent():
    # one true lesion of 100 voxels; predicted component of 10 voxels fully inside it
    t = _table([[0, 0], [90, 10]])
    assert not detected_lesions(t)[0]  # exactly 10 %: not detected
    t = _table([[0, 0], [89, 11]])
    assert detected_lesions(t)[0]


def test_beta_at_most_70_percent_outside():
    # pred component: 30 inside the lesion, 70 outside all lesions -> 70 % outside: ok
    t = _table([[0, 70], [70, 30]])
    assert detected_lesions(t)[0]
    t = _table([[0, 71], [70, 30]])  # 71/101 outside: too much
    assert not detected_lesions(t)[0]


def test_gamma_only_components_up_to_65_percent_are_checked():
    # lesion 1 overlapped by component 1 (70 voxels, clean) and component 2 (30 voxels,
    # 90 % outside). Component 1 alone accounts for 70 % >= 65 % -> component 2 ignored.
    t = _table([[0, 0, 270], [0, 70, 30]])
    assert detected_lesions(t)[0]
    # component 1 only 60 % of the overlap -> component 2 must be checked -> fails
    t = _table([[0, 0, 360], [0, 60, 40]])
    assert not detected_lesions(t)[0]
    # the first (largest) component is always checked
    t = _table([[0, 900, 0], [0, 100, 10]])
    assert not detected_lesions(t)[0]


def test_outside_counts_other_true_lesions_as_inside():
    # component 1 covers lesion 1 (20 voxels) and lesion 2 (80 voxels): nothing outside
    t = _table([[0, 0], [0, 20], [0, 80]])
    assert detected_lesions(t).tolist() == [True, True]


def test_lesion_sensitivity_and_ppv_end_to_end():
    truth = box(0, 4) | box(10, 14) | box(20, 24)  # three lesions of 16 voxels
    pred = box(0, 4) | box(11, 13) | box(25, 29, 10, 12)  # hit, partial hit, false positive
    m = compute_metrics(truth, pred)
    assert (m.n_true_lesions, m.n_pred_lesions) == (3, 3)
    assert m.n_detected_true == 2
    assert m.lesion_sensitivity == pytest.approx(2 / 3)
    assert m.lesion_ppv == pytest.approx(2 / 3)
    assert m.lesion_f1 == pytest.approx(2 / 3)
    assert m.true_volume_ml == pytest.approx(48 / 1000)
    assert m.tp_voxels == 16 + 8 and m.fp_voxels == 16 and m.fn_voxels == 24


def test_one_prediction_bridging_two_lesions_counts_for_both():
    truth = box(0, 4) | box(6, 10)
    pred = box(0, 10)  # covers both plus the 2-voxel-wide gap (8 voxels outside of 40)
    m = compute_metrics(truth, pred)
    assert m.n_true_lesions == 2 and m.n_pred_lesions == 1
    assert m.lesion_sensitivity == 1.0 and m.lesion_ppv == 1.0


def test_small_true_lesions_dropped_from_lesion_counts_not_from_dice():
    truth = box(0, 4)
    truth[20, 20, 20] = True  # 1 voxel, dropped for lesion metrics
    m = compute_metrics(truth, box(0, 4))
    assert m.n_true_lesions == 1 and m.lesion_sensitivity == 1.0
    assert m.dice < 1.0


def test_voxel_volume_scales_volumes_and_min_size():
    truth = box(0, 1, 0, 1, 0, 2)  # 2 voxels
    m = compute_metrics(truth, truth, voxel_volume_mm3=2.0)  # 4 mm^3 > 3: kept
    assert m.n_true_lesions == 1 and m.true_volume_ml == pytest.approx(0.004)
    m = compute_metrics(truth, truth, voxel_volume_mm3=1.0)  # 2 mm^3: dropped
    assert m.n_true_lesions == 0 and math.isnan(m.lesion_sensitivity) and m.dice == 1.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool))


def test_lesion_table_world_centroids():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-10, 0, 5]
    m = np.zeros((10, 10, 10), bool)
    m[1:3, 1:3, 1:3] = True  # 8 voxels, centre voxel (1.5, 1.5, 1.5)
    m[6, 6, 6] = True
    t = lesion_table(m, aff)
    assert t.columns.tolist() == ["id", "voxels", "ml", "x_mm", "y_mm", "z_mm"]
    assert t.voxels.tolist() == [8, 1]
    assert t.iloc[0][["x_mm", "y_mm", "z_mm"]].tolist() == [-7.0, 3.0, 8.0]
    assert t.ml.iloc[0] == pytest.approx(8 * 8 / 1000)
    assert len(lesion_table(np.zeros((3, 3, 3), bool), aff)) == 0


def test_summarize_skips_nan_and_counts_statuses():
    import pandas as pd

    tab = pd.DataFrame(
        {
            "center": ["a", "a", "b"],
            "dice": [0.5, math.nan, 0.9],
            "status": ["ok", "both_empty", "ok"],
        }
    )
    s = summarize(tab, by="center")
    assert s.set_index("center").loc["a", "dice"] == 0.5
    assert s.set_index("center").loc["a", "n_scans"] == 2
    assert s.set_index("center").loc["a", "n_ok"] == 1
