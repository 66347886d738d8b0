"""``msnb segment``: distinct outputs per input, threshold, failures, resume, BIDS derivatives."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import write
from test_predict import _saved_bundle, oracle_bundle, phantom

from msnb.cli import main
from msnb.nifti import OutputError
from msnb.segment import plan_outputs, segment_file, segment_files


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return _saved_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


def test_same_file_names_get_distinct_outputs(tmp_path, bundle):
    # every MSSEG 2016 FLAIR is FLAIR_preprocessed.nii.gz: three inputs gave one mask before
    img, _, _ = phantom()
    shapes = {"Center_01/Patient_01": 26, "Center_01/Patient_02": 24, "Center_07/Patient_01": 22}
    inputs = [
        write(
            tmp_path / "Training" / p / "Preprocessed_Data" / "FLAIR_preprocessed.nii.gz",
            img[..., :z],
        )
        for p, z in shapes.items()
    ]
    out = tmp_path / "out"
    assert main(["segment", *map(str, inputs), "--model", str(bundle), "--out", str(out)]) == 0
    for p, z in shapes.items():
        mask = nib.load(out / f"{p.replace('/', '_')}_FLAIR_preprocessed_lesions.nii.gz")
        assert mask.shape == (*img.shape[:2], z)  # each input's own mask
    assert len(list(out.glob("*_lesions.nii.gz"))) == 3
    # the same file twice is refused before any work
    with pytest.raises(ValueError, match="given twice"):
        plan_outputs([inputs[0], inputs[1], inputs[0]], out)


def test_threshold(tmp_path, capsys):
    img, _, _ = phantom()
    path = write(tmp_path / "flair.nii.gz", img)
    low = segment_file(path, oracle_bundle(), tmp_path / "low", threshold=0.1, probabilities=True)
    high = segment_file(path, oracle_bundle(), tmp_path / "high", threshold=0.9, probabilities=True)
    prob = np.asarray(nib.load(high["probability"]).dataobj)
    for res, t in ((low, 0.1), (high, 0.9)):
        mask = np.asarray(nib.load(res["mask"]).dataobj).astype(bool)
        np.testing.assert_array_equal(mask, prob >= t)
    assert high["volume_ml"] < low["volume_ml"]
    for bad in ("0", "1.5", "nan"):
        args = ["segment", str(path), "--model", "x", "--out", str(tmp_path), "--threshold", bad]
        assert main(args) == 1
        assert "--threshold) must be a number in (0, 1]" in capsys.readouterr().err


def test_one_unreadable_input_does_not_stop_the_others(tmp_path, bundle, capsys):
    img, _, _ = phantom()
    a = write(tmp_path / "in" / "a.nii.gz", img)
    bad = tmp_path / "in" / "b_broken.nii.gz"
    bad.write_bytes(b"not a nifti file")
    c = write(tmp_path / "in" / "c.nii.gz", img)
    out = tmp_path / "out"
    rc = main(["segment", str(a), str(bad), str(c), "--model", str(bundle), "--out", str(out)])
    assert rc == 1
    captured = capsys.readouterr()
    assert f"error: {bad}:" in captured.err
    assert f"1 of 3 inputs failed: {bad}" in captured.err
    assert (out / "a_lesions.nii.gz").is_file() and (out / "c_lesions.nii.gz").is_file()
    assert not list(out.glob("b_broken*"))
    statuses = [line.split()[2] for line in captured.out.strip().splitlines()[-3:]]
    assert statuses == ["ok", "error", "ok"]


def test_skip_existing_resumes_a_folder(tmp_path, bundle, capsys):
    img, _, _ = phantom()
    for name, z in (("a", 26), ("b", 24)):
        write(tmp_path / "in" / f"{name}.nii.gz", img[..., :z])
    out, summary = tmp_path / "out", tmp_path / "summary.tsv"
    base = ["segment", str(tmp_path / "in"), "--model", str(bundle), "--out", str(out)]
    assert main([*base, "--summary", str(summary)]) == 0
    first = pd.read_csv(summary, sep="\t")
    assert list(first.subject) == ["a", "b"] and list(first.status) == ["ok", "ok"]
    kept = (out / "a_lesions.nii.gz").stat().st_mtime_ns
    for path in out.glob("b_*"):  # as if the run had stopped before b
        path.unlink()
    capsys.readouterr()
    assert main([*base, "--skip-existing", "--summary", str(summary)]) == 0
    assert "outputs exist, skipped" in capsys.readouterr().out
    again = pd.read_csv(summary, sep="\t")
    assert list(again.status) == ["skipped", "ok"]
    assert (out / "a_lesions.nii.gz").stat().st_mtime_ns == kept
    assert nib.load(out / "b_lesions.nii.gz").shape == (*img.shape[:2], 24)
    pd.testing.assert_frame_equal(again[["lesions", "volume_ml"]], first[["lesions", "volume_ml"]])


def test_bids_derivatives(bids_root, bundle, capsys):
    out = bids_root / "derivatives" / "msnb"
    assert main(["segment", str(bids_root), "--model", str(bundle), "--out", str(out)]) == 0
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "msnb"
    assert description["DatasetLinks"]["raw"] == bids_root.as_uri()
    anat = out / "sub-01" / "ses-02" / "anat"
    stem = "sub-01_ses-02_space-orig"
    flair = nib.load(bids_root / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_FLAIR.nii.gz")
    mask = nib.load(anat / f"{stem}_desc-lesion_mask.nii.gz")
    prob = nib.load(anat / f"{stem}_label-lesion_probseg.nii.gz")
    assert mask.shape == prob.shape == flair.shape and mask.get_data_dtype() == np.uint8
    np.testing.assert_allclose(mask.affine, flair.affine)
    side = json.loads((anat / f"{stem}_desc-lesion_mask.json").read_text())
    assert side["Type"] == "Lesion"
    assert side["Sources"] == ["bids:raw:sub-01/ses-02/anat/sub-01_ses-02_FLAIR.nii.gz"]
    digest = hashlib.sha256((bundle / "bundle.json").read_bytes()).hexdigest()
    assert side["msnb"]["bundle_json_sha256"] == digest and side["msnb"]["threshold"] == 0.5
    table = pd.read_csv(anat / f"{stem}_desc-lesion_lesions.tsv", sep="\t")
    assert list(table.columns) == ["id", "voxels", "ml", "x_mm", "y_mm", "z_mm"]
    assert (out / "sub-03" / "anat" / "sub-03_space-orig_desc-lesion_mask.nii.gz").is_file()
    assert len(list(out.rglob("*_mask.nii.gz"))) == 4
    summary = capsys.readouterr().out.strip().splitlines()[-5:]
    assert summary[0].split()[:4] == ["input", "subject", "session", "status"]
    assert [line.split()[1:4] for line in summary[1:3]] == [["01", "01", "ok"], ["01", "02", "ok"]]


def test_bids_output_folder_and_inputs_are_checked(bids_root, tmp_path, capsys):
    img, _, _ = phantom()
    plain = write(tmp_path / "plain.nii.gz", img)
    with pytest.raises(ValueError, match="plain.nii.gz: not a BIDS raw file"):
        plan_outputs([plain], tmp_path / "out", bids=True)
    # auto: a plain input among BIDS ones gives the plain layout
    flair = bids_root / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz"
    assert plan_outputs([flair, plain], tmp_path)[0].bids is None
    assert plan_outputs([flair], tmp_path)[0].bids is not None
    foreign = tmp_path / "fmriprep"
    foreign.mkdir()
    (foreign / "dataset_description.json").write_text('{"GeneratedBy": [{"Name": "fMRIPrep"}]}')
    with pytest.raises(OutputError, match="not msnb's derivatives"):
        segment_files(plan_outputs([flair], foreign), oracle_bundle())
    assert not (foreign / "sub-02").exists()
