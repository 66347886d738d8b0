"""Whole-scan prediction: orientation round trips, evaluation rows, ``msnb segment``."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import affine_lps, make_brain, make_lesion, write

from msnb.bundle import Bundle, save_bundle
from msnb.cli import main
from msnb.datasets import load_3dmrms
from msnb.metrics import RESULT_COLUMNS
from msnb.models import build_model
from msnb.nifti import NiftiError, load_image
from msnb.normalize import LinearNormalizer
from msnb.predict import evaluate_scans, predict_volume
from msnb.segment import segment_file

SHAPE = (30, 34, 26)


class BrightIsLesion(torch.nn.Module):
    """A stand-in network: logit > 0 where the normalized intensity is above 0.7."""

    def forward(self, x):
        return (x - 0.7) * 40.0


def oracle_bundle(size=32):
    meta = {
        "size": size,
        "threshold": 0.5,
        "model_id": "oracle",
        "train_datasets": ["synthetic"],
        "label": "consensus",
        "architecture": "oracle",
        "encoder": "none",
        "normalization": {"name": "linear", "key": "linear"},
    }
    return Bundle(model=BrightIsLesion(), normalizer=LinearNormalizer(), meta=meta)


def phantom(seed=0):
    """An ellipsoid brain (intensity ~100) with two bright (160) lesions, asymmetric."""
    rng = np.random.default_rng(seed)
    brain = make_brain(SHAPE)
    lesion = make_lesion(brain, center=(9, 12, 10), radius=2.6) | make_lesion(
        brain, center=(19, 22, 15), radius=2.0
    )
    img = np.where(brain, 100 + 2 * rng.standard_normal(SHAPE), 0)
    img[lesion] = 160
    return img.astype(np.float32), lesion, brain


# file grid orientations: RAS, LPS, and a permuted one (axes swapped: PIR-like)
def _permuted_affine():
    aff = np.zeros((4, 4))
    aff[0, 1] = -1.2  # array axis 1 -> -x
    aff[1, 2] = 1.0  # array axis 2 -> +y
    aff[2, 0] = -1.0  # array axis 0 -> -z
    aff[:3, 3] = [20, -10, 30]
    aff[3, 3] = 1
    return aff


AFFINES = {
    "ras": np.diag([1.0, 1.0, 1.0, 1.0]),
    "lps": affine_lps(SHAPE),
    "permuted": _permuted_affine(),
}


@pytest.mark.parametrize("orientation", list(AFFINES))
def test_mask_lands_on_the_input_voxels(tmp_path, orientation):
    img, lesion, brain = phantom()
    aff = AFFINES[orientation]
    path = write(tmp_path / "flair.nii.gz", img, aff)
    flair = load_image(path)
    pred = predict_volume(flair, oracle_bundle(size=64))
    assert pred.mask.shape == img.shape and pred.probability.shape == img.shape
    np.testing.assert_allclose(pred.affine, aff, atol=1e-6)
    dice = 2 * (pred.mask & lesion).sum() / (pred.mask.sum() + lesion.sum())
    assert dice > 0.95, dice
    # a wrong orientation would put the mask elsewhere: the flipped mask does not match
    assert (np.flip(pred.mask, 0) & lesion).sum() < 0.5 * lesion.sum()
    # and the written file is on the input's grid with the input's affine
    res = segment_file(path, oracle_bundle(size=64), tmp_path / "out", probabilities=True)
    out = nib.load(res["mask"])
    assert out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, aff)
    np.testing.assert_array_equal(np.asarray(out.dataobj).astype(bool), pred.mask)
    prob = nib.load(res["probability"])
    assert prob.get_data_dtype() == np.float32 and prob.shape == img.shape
    table = pd.read_csv(res["table"])
    assert list(table.columns) == ["id", "voxels", "ml", "x_mm", "y_mm", "z_mm"]
    assert len(table) == 2 == res["lesions"]
    # centroids in world coordinates agree with the truth's
    ijk = np.argwhere(lesion & (np.indices(SHAPE)[0] < 14))
    world = aff[:3, :3] @ ijk.mean(0) + aff[:3, 3]
    big = table.iloc[0][["x_mm", "y_mm", "z_mm"]].to_numpy(float)
    assert np.abs(big - world).max() < 1.5


def test_brain_mask_restricts_and_is_checked(tmp_path):
    img, lesion, brain = phantom()
    flair = load_image(write(tmp_path / "f.nii.gz", img))
    half = brain.copy()
    half[15:] = False
    pred = predict_volume(flair, oracle_bundle(), brain=half)
    assert not pred.mask[15:].any() and pred.mask[:15].any()
    with pytest.raises(ValueError, match="does not match"):
        predict_volume(flair, oracle_bundle(), brain=half[:-1])
    empty = load_image(write(tmp_path / "zero.nii.gz", np.zeros(SHAPE, np.float32)))
    with pytest.raises(NiftiError, match="brain mask is empty"):
        predict_volume(empty, oracle_bundle())


def test_evaluate_scans_rows(mrms_root):
    scans = load_3dmrms(mrms_root)
    table = evaluate_scans(oracle_bundle(), scans, test_dataset="3dmrms", progress=False)
    assert list(table.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert len(table) == 3 and (table.test_dataset == "3dmrms").all()
    assert (table.train_datasets == "synthetic").all()
    assert table.dice.gt(0.5).all()
    assert set(table.status) == {"ok"}


def _saved_bundle(path):
    model = build_model("unet", "resnet18")
    save_bundle(
        path, model, architecture="unet", encoder="resnet18", size=32, normalizer=LinearNormalizer()
    )
    return path


def test_segment_cli(tmp_path, capsys):
    img, _, brain = phantom()
    a = write(tmp_path / "in" / "a.nii.gz", img, AFFINES["lps"])
    b = write(tmp_path / "in" / "b.nii", img, AFFINES["permuted"])
    bm = write(tmp_path / "in" / "a_brain.nii.gz", brain.astype(np.uint8), AFFINES["lps"])
    bundle = _saved_bundle(tmp_path / "bundle")
    rc = main(["segment", str(a), str(b), "--model", str(bundle), "--out", str(tmp_path / "out")])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and "lesions" in lines[0] and "mL" in lines[0]
    # the summary table: a header and a row per input
    assert lines[2].split()[:3] == ["input", "subject", "status"]
    assert [line.split()[1:2] for line in lines[3:]] == [["a"], ["b"]]
    for stem, aff in (("a", AFFINES["lps"]), ("b", AFFINES["permuted"])):
        m = nib.load(tmp_path / "out" / f"{stem}_lesions.nii.gz")
        assert m.shape == SHAPE and m.get_data_dtype() == np.uint8
        np.testing.assert_allclose(m.affine, aff)
        assert (tmp_path / "out" / f"{stem}_lesions.csv").exists()
    assert not (tmp_path / "out" / "a_probability.nii.gz").exists()
    rc = main(
        [
            "segment",
            str(a),
            "--model",
            str(bundle),
            "--out",
            str(tmp_path / "o2"),
            "--brain-mask",
            str(bm),
            "--probabilities",
        ]
    )
    assert rc == 0 and (tmp_path / "o2" / "a_probability.nii.gz").exists()


def test_segment_cli_bad_inputs(tmp_path, capsys):
    bundle = _saved_bundle(tmp_path / "bundle")
    rc = main(
        [
            "segment",
            str(tmp_path / "missing.nii.gz"),
            "--model",
            str(bundle),
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 1
    assert "does not exist" in capsys.readouterr().err
    img, _, _ = phantom()
    a = write(tmp_path / "a.nii.gz", img)
    bad = write(tmp_path / "bad_brain.nii.gz", np.ones((5, 5, 5), np.uint8))
    rc = main(
        [
            "segment",
            str(a),
            "--model",
            str(bundle),
            "--out",
            str(tmp_path / "o"),
            "--brain-mask",
            str(bad),
        ]
    )
    assert rc == 1 and "does not match" in capsys.readouterr().err
    rc = main(["segment", str(a), "--model", str(tmp_path), "--out", str(tmp_path / "o")])
    assert rc == 1 and "not a model bundle" in capsys.readouterr().err
