"""Dataset adapters on tiny NIfTI files written in each real layout."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import scan_arrays, write

from msnb.cli import main
from msnb.datasets import DatasetError, label_sources, load_label, load_scans
from msnb.nifti import load_image


def test_isbi2015_records(isbi_root):
    scans = load_scans("isbi2015", isbi_root)
    assert [(s.subject, s.timepoint) for s in scans] == [
        ("01", "01"),
        ("01", "02"),
        ("01", "03"),
        ("02", "01"),
        ("02", "02"),
    ]
    assert {s.center for s in scans} == {"isbi"}
    assert all(sorted(s.masks) == ["rater1", "rater2"] and s.brain_mask is None for s in scans)
    assert scans[0].masks["rater2"].name == "training01_01_mask2.nii"
    # no consensus in ISBI: the consensus label is the union of both raters (the paper's)
    assert label_sources(scans[0], "consensus") == ["rater1", "rater2"]
    assert label_sources(scans[0], "union") == ["rater1", "rater2"]
    assert label_sources(scans[0], "rater1") == ["rater1"]
    consensus = load_label(scans[0], "consensus").data
    r1, r2 = (load_label(scans[0], f"rater{k}").data for k in (1, 2))
    assert np.array_equal(consensus, r1 | r2) and not np.array_equal(consensus, r1)


def test_isbi2015_case_insensitive_and_gz(isbi_root):
    f = isbi_root / "training" / "training01" / "preprocessed" / "training01_01_flair_pp.nii"
    f.rename(f.with_name("TRAINING01_01_FLAIR_PP.nii"))
    m = isbi_root / "training" / "training02" / "masks" / "training02_01_mask1.nii"
    m.rename(m.with_name("training02_01_mask1.nii.gz"))
    assert len(load_scans("isbi2015", isbi_root)) == 5


def test_isbi2015_flair_without_mask_is_an_error(isbi_root):
    (isbi_root / "training" / "training02" / "masks" / "training02_02_mask2.nii").unlink()
    with pytest.raises(
        DatasetError, match="training02_02_flair_pp.nii: FLAIR without its rater 2 mask"
    ):
        load_scans("isbi2015", isbi_root)


def test_msseg_train_and_test(msseg_root):
    train = load_scans("msseg2016_train", msseg_root)
    assert [s.subject for s in train] == ["01_01", "01_02", "07_01", "08_01"]
    assert [s.center for s in train] == ["01", "01", "07", "08"]
    assert sorted(train[0].masks) == ["consensus"] + [f"rater{k}" for k in range(1, 8)]
    assert train[0].raters == [f"rater{k}" for k in range(1, 8)]
    assert train[0].brain_mask.name == "Brain_Mask.nii.gz"
    with pytest.warns(
        UserWarning, match="consensus is empty; scan msseg2016_test/07_02/01 left out"
    ):
        test = load_scans("msseg2016_test", msseg_root)
    assert [s.subject for s in test] == ["01_01", "03_01", "03_02", "07_01"]
    assert {s.center for s in test} == {"01", "03", "07"}


def test_msseg_missing_consensus_names_the_folder(msseg_root):
    missing = msseg_root / "Training" / "Center_08" / "Patient_01" / "Masks" / "Consensus.nii.gz"
    missing.unlink()
    with pytest.raises(DatasetError, match="Center_08/Patient_01/Masks: missing consensus mask"):
        load_scans("msseg2016_train", msseg_root)


def test_3dmrms(mrms_root):
    scans = load_scans("3dmrms", mrms_root)
    assert [s.subject for s in scans] == ["01", "02", "03"]
    assert all(list(s.masks) == ["consensus"] and s.brain_mask is not None for s in scans)
    (mrms_root / "patient02" / "patient02_consensus_gt.nii.gz").unlink()
    with pytest.raises(DatasetError, match="patient02_FLAIR.nii.gz: FLAIR without its mask"):
        load_scans("3dmrms", mrms_root)


def test_folder_adapter(tmp_path):
    for center in ("A", "B"):
        for subj in (f"{center}1", f"{center}2"):
            flair, cons, _, _ = scan_arrays(len(subj))
            write(tmp_path / center / subj / "flair.nii.gz", flair)
            write(tmp_path / center / subj / "lesions.nii.gz", cons)
    scans = load_scans(
        "folder",
        tmp_path,
        flair="*/*/flair.nii.gz",
        masks={"consensus": "{dir}/lesions.nii.gz"},
        pattern=r"(?P<center>[^/]+)/(?P<subject>[^/]+)/",
    )
    assert [(s.center, s.subject) for s in scans] == [
        ("A", "A1"),
        ("A", "A2"),
        ("B", "B1"),
        ("B", "B2"),
    ]
    # A pattern that gives two scans the same subject and timepoint: reported with both paths.
    with pytest.raises(DatasetError, match="duplicate scan folder/flair/01: .*A1/flair.nii.gz and"):
        load_scans(
            "folder",
            tmp_path,
            flair="*/*/flair.nii.gz",
            masks={"consensus": "{dir}/lesions.nii.gz"},
            pattern=r"(?P<subject>flair)",
        )
    (tmp_path / "B" / "B2" / "lesions.nii.gz").unlink()
    with pytest.raises(DatasetError, match="B/B2/flair.nii.gz: FLAIR without its consensus mask"):
        load_scans(
            "folder",
            tmp_path,
            flair="*/*/flair.nii.gz",
            masks={"consensus": "{dir}/lesions.nii.gz"},
            pattern=r"(?P<center>[^/]+)/(?P<subject>[^/]+)/",
        )


def test_unknown_adapter_and_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset adapter 'brats'"):
        load_scans("brats", tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_scans("3dmrms", tmp_path / "absent")


def test_union_and_majority_labels(msseg_root):
    scan = load_scans("msseg2016_train", msseg_root)[0]
    flair = load_image(scan.flair)
    cons = load_label(scan, "consensus", reference=flair).data
    union = load_label(scan, "union", reference=flair).data
    majority = load_label(scan, "majority", reference=flair).data
    shifted = np.roll(cons, 1, axis=0)  # raters 1,3,5,7 are shifted, 2,4,6 are not
    np.testing.assert_array_equal(union, cons | shifted)
    np.testing.assert_array_equal(majority, shifted)
    with pytest.raises(DatasetError, match="label 'rater9' is not available"):
        load_label(scan, "rater9")


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_cli_scans_on_every_layout(isbi_root, msseg_root, mrms_root, capsys, fmt):
    for adapter, root, n in (
        ("isbi2015", isbi_root, 5),
        ("msseg2016_train", msseg_root, 4),
        ("3dmrms", mrms_root, 3),
    ):
        assert main(["scans", adapter, "--root", str(root), "--format", fmt]) == 0
        out = capsys.readouterr().out
        if fmt == "csv":
            assert out.splitlines()[0] == "dataset,subject,timepoint,center,flair,masks,brain_mask"
            assert len(out.strip().splitlines()) == n + 1
        else:
            assert f"{n} scans" in out
    assert main(["scans", "3dmrms", "--root", str(mrms_root / "nothing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_bids_adapter(bids_root):
    scans = load_scans("bids", bids_root)
    assert [(s.subject, s.timepoint, s.center) for s in scans] == [
        ("01", "01", "paris"),
        ("01", "02", "paris"),
        ("02", "01", "lyon"),
        ("03", "01", "unknown"),  # participants.tsv says n/a
    ]
    assert [s.flair.name for s in scans][:2] == [
        "sub-01_ses-01_FLAIR.nii.gz",
        "sub-01_ses-02_FLAIR.nii.gz",
    ]
    # masks from two pipelines, space-orig or no space; other spaces and descs left aside
    assert scans[0].masks["consensus"].name == "sub-01_ses-01_space-orig_desc-consensus_mask.nii.gz"
    assert sorted(scans[2].masks) == ["consensus", "rater1", "rater2"]
    assert scans[2].raters == ["rater1", "rater2"]
    assert (
        scans[3].brain_mask.name == "sub-03_desc-brain_mask.nii.gz"
        and "brain" not in scans[3].masks
    )
    assert scans[0].brain_mask is None
    # the masks are the written ones: rater 2 of sub-02 differs from its consensus
    r2 = load_label(scans[2], "rater2").data
    assert r2.any() and not np.array_equal(r2, load_label(scans[2], "consensus").data)
    # one pipeline only
    only = load_scans("bids", bids_root, pipeline="manual")
    assert len(only) == 4 and list(only[2].masks) == ["consensus"]


def test_bids_adapter_errors(bids_root):
    with pytest.raises(DatasetError, match="derivatives/absent: no such derivatives pipeline"):
        load_scans("bids", bids_root, pipeline="absent")
    # a FLAIR whose only lesion masks are in another pipeline
    with pytest.raises(
        DatasetError, match="sub-01_ses-01_FLAIR.nii.gz: FLAIR without a lesion mask"
    ):
        load_scans("bids", bids_root, pipeline="raters")
    # the same mask twice
    twice = (
        bids_root
        / "derivatives"
        / "raters"
        / "sub-02"
        / "anat"
        / "sub-02_desc-consensus_mask.nii.gz"
    )
    (
        bids_root
        / "derivatives"
        / "manual"
        / "sub-02"
        / "anat"
        / "sub-02_desc-consensus_mask.nii.gz"
    ).rename(twice)
    write(
        bids_root
        / "derivatives"
        / "manual"
        / "sub-02"
        / "anat"
        / "sub-02_space-orig_desc-consensus_mask.nii.gz",
        np.zeros((2, 2, 2), np.uint8),
    )
    with pytest.raises(DatasetError, match="a second consensus mask"):
        load_scans("bids", bids_root)
    (bids_root / "participants.tsv").write_text("subject\tsite\nsub-01\tparis\n")
    with pytest.raises(DatasetError, match="participants.tsv: no participant_id column"):
        load_scans("bids", bids_root, pipeline="raters")
    with pytest.raises(DatasetError, match="no FLAIR images"):
        load_scans("bids", bids_root / "derivatives")


def test_cli_scans_bids(bids_root, capsys):
    assert main(["scans", "bids", "--root", str(bids_root), "--format", "csv", "--check"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert (
        len(out) == 5
        and out[3].startswith("bids,02,01,lyon,")
        and out[3].endswith("consensus;rater1;rater2,")
    )
