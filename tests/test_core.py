"""Core helpers: JSON that any reader parses, the one results record, mask scores."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from msnb import masks, records
from msnb.files import to_jsonable, write_json


@dataclass
class _Point:
    x: float
    where: Path


def test_to_jsonable_handles_numpy_paths_dataclasses_and_nan():
    value = {
        1: np.float32(0.5),
        "arr": np.arange(3),
        "nan": math.nan,
        "inf": np.float64(np.inf),
        "point": _Point(np.int64(2), Path("/a/b")),
        "tuple": (1, "x"),
    }
    out = to_jsonable(value)
    assert out == {
        "1": 0.5,
        "arr": [0, 1, 2],
        "nan": None,
        "inf": None,
        "point": {"x": 2, "where": "/a/b"},
        "tuple": [1, "x"],
    }
    json.dumps(out, allow_nan=False)


def test_write_json_is_atomic(tmp_path):
    target = write_json(tmp_path / "a.json", {"v": math.nan})
    assert json.loads(target.read_text()) == {"v": None}
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(RecursionError):
        write_json(target, loop)  # cannot serialize: the old file is kept
    assert json.loads(target.read_text()) == {"v": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_record_metrics_one_schema_round_trip(tmp_path):
    table = pd.DataFrame({"subject": ["01", "02"], "dice": [0.5, math.nan]})
    path = records.record_metrics(
        tmp_path / "r",
        {"mean": np.float64(0.5)},
        kind="evaluation",
        tables={"scans": table, "extra": [{"a": 1}]},
        parameters={"seed": 0},
    )
    doc = records.read_metrics(path.parent)
    assert doc == {
        "kind": "evaluation",
        "metrics": {"mean": 0.5},
        "parameters": {"seed": 0},
        "tables": {
            "scans": [{"subject": "01", "dice": 0.5}, {"subject": "02", "dice": None}],
            "extra": [{"a": 1}],
        },
    }
    back = records.read_table(path.parent, "scans", dtype={"subject": str})
    assert back.subject.tolist() == ["01", "02"]  # leading zeros kept
    (path.parent / "scans.csv").unlink()
    from_json = records.read_table(path.parent, "scans", dtype={"subject": str})
    assert from_json.subject.tolist() == ["01", "02"] and math.isnan(from_json.dice[1])
    assert records.read_table(path.parent, "missing") is None
    assert not (path.parent / "extra.csv").exists()  # lists are kept in the JSON only


def test_dice_iou_f1_and_consensus():
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    a[:2] = True  # 32 voxels
    b[1:3] = True  # 32 voxels, 16 shared
    assert masks.dice_iou(a, b) == pytest.approx((0.5, 1 / 3))
    assert masks.dice(a, a) == 1.0
    assert all(math.isnan(v) for v in masks.dice_iou(~a & a, ~a & a))
    with pytest.raises(ValueError, match="shapes differ"):
        masks.dice(a, a[:-1])
    assert masks.f1_score(1.0, 0.5) == pytest.approx(2 / 3) and masks.f1_score(0.0, 0.0) == 0.0
    c = np.zeros_like(a)
    c[0] = True
    raters = [a, b, c]
    assert masks.combine_masks(raters, method="union").sum() == 48
    majority = masks.combine_masks(raters, method="majority")
    assert majority.sum() == 16 + 16 - 0  # slices 0 (a, c) and 1 (a, b)
    assert np.array_equal(majority[:2].all(axis=(1, 2)), [True, True])
    staple = masks.combine_masks(raters, method="staple")
    assert (
        staple.dtype == bool and not (staple & ~masks.combine_masks(raters, method="union")).any()
    )
    assert np.array_equal(masks.combine_masks([a, a, a], method="staple"), a)
    assert not masks.combine_masks([c & ~c] * 3, method="staple").any()
    with pytest.raises(ValueError, match="unknown consensus method"):
        masks.combine_masks(raters, method="mean")


def test_lesion_slices_most_first_ties_by_index():
    m = np.zeros((3, 3, 5), bool)
    m[:, :, 3] = True  # 9
    m[0, :, 1] = True  # 3
    m[0, :, 4] = True  # 3
    assert masks.lesion_slices(m, n=3).tolist() == [3, 1, 4]
    assert masks.most_lesion_slice(m) == 3
    assert masks.most_lesion_slice(m, axis=0) == 0
    assert masks.lesion_slices(np.array([0, 2, 2, 5]), n=2, axis=0).tolist() == [3, 1]


def test_fill_doc_indents_shared_text_and_fails_on_unknown_names():
    from msnb import predict, sources
    from msnb.docs import docdict, fill_doc

    def f():
        """Do.

        Parameters
        ----------
        %(device)s
        """

    assert fill_doc(f).__doc__.splitlines()[4] == "        " + docdict["device"].splitlines()[0]
    assert (
        "%(" not in predict.predict_volume.__doc__ and "%(" not in sources.resolve_datasets.__doc__
    )
    assert docdict["autocast"].splitlines()[1].strip() in predict.infer_slices.__doc__

    def g():
        """%(nope)s"""

    g.__doc__ = "x\n    %(nope)s\n"
    with pytest.raises(KeyError):
        fill_doc(g)
