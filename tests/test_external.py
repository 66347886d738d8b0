"""Masks made by other tools: matched to scans by name, checked against their grid, scored.

Predictions are written in nnU-Net's output naming (``<case>.nii.gz``) and in a BIDS
derivatives layout on the small datasets of ``conftest.py``; the expected Dice of each is
computed here from the arrays, independently of msnb's metrics.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import write
from scipy import ndimage

from msnb.cli import main
from msnb.datasets import load_scans
from msnb.external import (
    MatchError,
    check_complete,
    evaluate_predictions,
    match_predictions,
)
from msnb.metrics import ID_COLUMNS
from msnb.nifti import NiftiError


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def _array(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _nnunet_predictions(scans, folder: Path) -> dict[str, float]:
    """Each scan's consensus, its erosion or its shift, in nnU-Net names; the expected Dice."""
    expected = {}
    for i, scan in enumerate(scans):
        truth = _array(scan.masks["consensus"]).astype(bool)
        pred = [truth, ndimage.binary_dilation(truth), np.roll(truth, 1, axis=1)][i % 3]
        case = f"MSSEG_{scan.subject}"  # e.g. MSSEG_01_02: center 01, patient 02
        write(folder / f"{case}.nii.gz", pred.astype(np.uint8))
        expected[scan.scan_id] = dice(truth, pred)
    return expected


def test_nnunet_names_are_matched_and_scored(msseg_root, tmp_path):
    scans = load_scans("msseg2016_train", msseg_root)
    folder = tmp_path / "nnunet"
    expected = _nnunet_predictions(scans, folder)
    # what nnU-Net writes beside its predictions is not a prediction
    (folder / "plans.json").write_text("{}")
    write(folder / "MSSEG_99_01.nii.gz", np.zeros((2, 2, 2), np.uint8))
    match = match_predictions(scans, folder)
    assert {s.scan_id for s in match.matched} == set(expected) and not match.missing
    assert [p.name for p, _ in match.extra] == ["MSSEG_99_01.nii.gz"]
    assert "extra: MSSEG_99_01.nii.gz" in match.report()
    table = evaluate_predictions(match, method="nnunet", train_datasets=["isbi2015"])
    got = table.set_index("scan_id")["dice"].to_dict()
    assert got == pytest.approx(expected)
    assert 1.0 in got.values() and min(got.values()) < 0.9  # the truth, and worse
    assert set(table.model_id) == {"nnunet"} and set(table.train_datasets) == {"isbi2015"}
    assert set(table.architecture) == {"external"} and not table.resampled.any()
    assert tuple(table.columns[: len(ID_COLUMNS)]) == ID_COLUMNS


def _bids_derivatives(scans, root: Path, skip: str) -> dict[str, float]:
    """Masks in a BIDS derivatives layout (one scan left out); the expected Dice of each."""
    expected = {}
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "lst", "DatasetType": "derivative"}')
    for scan in scans:
        if scan.scan_id == skip:
            continue
        # ISBI 2015's truth is the union of its two raters
        truth = (_array(scan.masks["rater1"]) > 0) | (_array(scan.masks["rater2"]) > 0)
        pred = ndimage.binary_erosion(truth) if scan.timepoint == "02" else truth
        anat = root / f"sub-{scan.subject}" / f"ses-{int(scan.timepoint)}" / "anat"
        stem = f"sub-{scan.subject}_ses-{int(scan.timepoint)}_space-orig_desc-lesion"
        write(anat / f"{stem}_mask.nii.gz", pred.astype(np.uint8))
        write(anat / f"{stem}_probseg.nii.gz", pred.astype(np.float32) * 0.9)
        expected[scan.scan_id] = dice(truth, pred)
    return expected


def test_bids_derivatives_are_matched_and_missing_ones_reported(isbi_root, tmp_path):
    scans = load_scans("isbi2015", isbi_root)
    folder = tmp_path / "derivatives" / "lstai"
    expected = _bids_derivatives(scans, folder, skip="isbi2015/02/02")
    match = match_predictions(scans, folder)
    assert [s.scan_id for s in match.missing] == ["isbi2015/02/02"]
    assert all(how == "bids" for how in match.naming.values())
    assert len(match.extra) == len(expected) and all("probseg" in w for _, w in match.extra)
    with pytest.raises(ValueError, match=r"1 of 5 scans have no prediction.*isbi2015/02/02"):
        check_complete(match)
    check_complete(match, allow_missing=True)
    table = evaluate_predictions(match, method="lstai")
    assert table.set_index("scan_id")["dice"].to_dict() == pytest.approx(expected)
    assert set(table.eval_label) == {"consensus"} and (table.dice < 1).any()


def test_a_pattern_names_files_msnb_does_not_know(isbi_root, tmp_path):
    scans = load_scans("isbi2015", isbi_root)
    folder = tmp_path / "own"
    for scan in scans:
        write(folder / f"p{scan.subject}" / f"t{scan.timepoint}.nii", _array(scan.masks["rater1"]))
    # the default names read "p01/t02.nii" as nothing
    assert not match_predictions(scans, folder).matched
    match = match_predictions(scans, folder, pattern=r"p(?P<subject>\d+)/t(?P<timepoint>\d+)")
    assert len(match.matched) == len(scans) and all(v == "pattern" for v in match.naming.values())
    table = evaluate_predictions(match, method="own", label="rater1")
    assert (table.dice == 1.0).all()
    with pytest.raises(ValueError, match="no \\(\\?P<subject>"):
        match_predictions(scans, folder, pattern=r"p(\d+)")


def test_ties_and_second_files_are_errors_naming_them(isbi_root, tmp_path):
    scans = load_scans("isbi2015", isbi_root)
    folder = tmp_path / "two"
    mask = _array(scans[0].masks["rater1"])
    write(folder / "case_01_01.nii.gz", mask)
    write(folder / "other_01_01.nii.gz", mask)
    with pytest.raises(MatchError, match="a second prediction for isbi2015/01/01"):
        match_predictions(scans, folder)
    # one subject with one scan, another named like subject + timepoint: the timepoint wins
    flat = [s for s in scans if s.timepoint == "01"]
    shutil.rmtree(folder)
    write(folder / "x_01_01.nii.gz", mask)
    match = match_predictions(flat, folder)
    assert [s.scan_id for s in match.matched] == ["isbi2015/01/01"]


def test_another_grid_is_refused_or_resampled(mrms_root, tmp_path):
    scans = load_scans("3dmrms", mrms_root)[:1]
    scan = scans[0]
    truth = _array(scan.masks["consensus"])
    folder = tmp_path / "pred"
    # the same voxels stored flipped along x, with the affine that says so (LPS-like)
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped[0, 3] = truth.shape[0] - 1
    path = folder / f"patient{scan.subject}.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(truth[::-1].copy(), flipped), path)
    match = match_predictions(scans, folder)
    with pytest.raises(
        NiftiError, match=r"patient01.nii.gz.*not that of its scan's FLAIR.*resample"
    ):
        evaluate_predictions(match, method="m")
    table = evaluate_predictions(match, method="m", resample=True)
    assert table.resampled.all() and table.dice.iloc[0] == pytest.approx(1.0)
    # a mask of another shape is resampled too: here half the voxel size, the same mask
    fine = np.repeat(np.repeat(np.repeat(truth, 2, 0), 2, 1), 2, 2)
    half = np.diag([0.5, 0.5, 0.5, 1.0])
    half[:3, 3] = -0.25
    nib.save(nib.Nifti1Image(fine, half), path)
    table = evaluate_predictions(match_predictions(scans, folder), method="m", resample=True)
    assert table.dice.iloc[0] == pytest.approx(1.0)
    # a label map with two labels is refused unless binarized
    nib.save(nib.Nifti1Image(truth * 2, np.eye(4)), path)
    with pytest.raises(NiftiError, match="not binary"):
        evaluate_predictions(match_predictions(scans, folder), method="m")
    table = evaluate_predictions(match_predictions(scans, folder), method="m", binarize=True)
    assert table.dice.iloc[0] == pytest.approx(1.0)


def test_msnb_evaluate_command(msseg_root, tmp_path, capsys):
    scans = load_scans("msseg2016_train", msseg_root)
    folder = tmp_path / "nnunet"
    expected = _nnunet_predictions(scans, folder)
    out = tmp_path / "rows.csv"
    args = ["evaluate", "--pred-dir", str(folder), "--dataset", "msseg2016_train"]
    args += ["--root", str(msseg_root), "--method", "nnunet", "--out", str(out)]
    assert main(args) == 0
    rows = pd.read_csv(out, dtype={"subject": str, "timepoint": str})
    assert rows.set_index("scan_id")["dice"].to_dict() == pytest.approx(expected)
    assert "4 of 4 scans have a prediction" in capsys.readouterr().out
    # a scan without its file: one line, exit 1, nothing written; --allow-missing scores the rest
    next(folder.glob("*.nii.gz")).unlink()
    out.unlink()
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("msnb evaluate: error:") and "1 of 4" in err[0]
    assert not out.exists()
    assert main([*args, "--allow-missing"]) == 0
    assert len(pd.read_csv(out)) == 3


def _results_with_external() -> pd.DataFrame:
    """An msnb default model (two seeds) and an external method on the same six scans."""
    rng = np.random.default_rng(0)
    rows = []
    base = {"label": "consensus", "normalization": "quantile", "architecture": "unetplusplus"}
    base |= {"encoder": "resnet18", "test_dataset": "3dmrms", "timepoint": "01", "center": "lj"}
    model = "msseg2016_train__quantile__unetplusplus-resnet18__consensus"
    for k in range(6):
        scan = {"subject": f"{k:02d}", "iou": 0.5, "lesion_sensitivity": 0.5}
        scan |= {"lesion_ppv": 0.5, "lesion_f1": 0.5, "true_volume_ml": 1.0, "pred_volume_ml": 1.0}
        for seed, mid in ((0, model), (1, f"{model}__seed1")):
            d = 0.4 + 0.05 * k + 0.02 * seed
            rows.append({**base, **scan, "model_id": mid, "seed": seed, "dice": d})
        ext = {"label": "", "normalization": "", "architecture": "external", "encoder": "nnunet"}
        d = 0.6 + 0.03 * k + rng.uniform(0, 0.01)
        rows.append({**base, **scan, **ext, "model_id": "nnunet", "dice": d, "seed": 0})
    table = pd.DataFrame(rows).assign(train_datasets="msseg2016_train")
    experiment = np.where(table.model_id == "nnunet", "external:nnunet", "single")
    return table.assign(experiment=experiment)


def test_statistics_show_the_external_method_beside_msnbs_models():
    from msnb.stats import compute_all_tables

    results = _results_with_external()
    tables = compute_all_tables(results)
    table = tables["external"].set_index("method")
    model = "msseg2016_train__quantile__unetplusplus-resnet18__consensus"
    assert set(table.index) == {"nnunet", model}
    assert table.loc["nnunet", "source"] == "external" and table.loc[model, "source"] == "msnb"
    ext = results[results.model_id == "nnunet"].dice
    msnb_rows = results[results.model_id != "nnunet"]
    assert table.loc["nnunet", "dice"] == pytest.approx(ext.mean())
    assert table.loc[model, "dice"] == pytest.approx(msnb_rows.groupby("seed").dice.mean().mean())
    assert table.loc[model, "n_seeds"] == 2 and table.loc[model, "n_scans"] == 6
    # the external rows are no default model: Table 2 holds msnb's model only
    assert "nnunet" not in set(tables["train_test"].get("model_id", []))
    assert tables["train_test"]["n_models"].max() == 2
    tests = tables["tests"][tables["tests"].table == "external"].set_index("unit")
    per_scan = ext.to_numpy() - msnb_rows.groupby("subject").dice.mean().to_numpy()
    assert tests.loc["scan", "mean_diff"] == pytest.approx(per_scan.mean())
    assert tests.loc["scan", "status"] == "ok" and tests.loc["scan", "n"] == 6
    assert tests.loc["scan", "comparison"] == f"dice: nnunet - {model}"


# --------------------------------------------------------------------------- in a study


def _external_study(tmp_path: Path, msseg_root: Path, mrms_root: Path, **entry) -> Path:
    import yaml

    spec = {
        "name": "ext",
        "datasets": {
            "msseg2016_train": {"adapter": "msseg2016_train", "root": str(msseg_root)},
            "3dmrms": {"adapter": "3dmrms", "root": str(mrms_root)},
        },
        "external": [
            {
                "method": "nnunet",
                "train": ["3dmrms"],
                "predictions": {"msseg2016_train": str(tmp_path / "nnunet")},
                **entry,
            },
            {"method": "lstai", "predictions": {"3dmrms": str(tmp_path / "lst")}},
        ],
    }
    path = tmp_path / "ext.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"method": "nn__unet"}, r"external\[0\].method: method name 'nn__unet'"),
        ({"predictions": {"brats": "/x"}}, r"external\[0\].predictions.brats: unknown dataset"),
        ({"predictions": []}, r"external\[0\].predictions: expected a mapping"),
        ({"pattern": "(\\d+"}, r"external\[0\].pattern: .*not a valid regular expression"),
        ({"pattern": "(\\d+)"}, r"external\[0\].pattern: .*no \(\?P<subject>"),
        ({"resample": "yes"}, r"external\[0\].resample: expected true or false"),
        ({"label": "rater9x"}, r"external\[0\].label"),
        ({"threshold": 0.5}, r"external\[0\].threshold: unknown key"),
        ({"train": ["a+b"]}, r"external\[0\].train\[0\]: dataset name 'a\+b'"),
        ({"method": "lstai"}, r"external\[1\].method: method 'lstai' is repeated"),
    ],
)
def test_external_entries_are_checked_at_load(tmp_path, msseg_root, mrms_root, entry, message):
    from msnb.study import StudyError, load_study

    path = _external_study(tmp_path, msseg_root, mrms_root, **entry)
    with pytest.raises(StudyError, match=r"ext.yaml:\d+: " + message):
        load_study(path, out_root=tmp_path / "out")


def test_a_missing_prediction_folder_is_refused_before_any_job(tmp_path, msseg_root, mrms_root):
    from msnb.study import StudyError, load_study, run_study

    study = load_study(_external_study(tmp_path, msseg_root, mrms_root), out_root=tmp_path / "o")
    assert [e["method"] for e in study.external] == ["nnunet", "lstai"] and not study.experiments
    with pytest.raises(StudyError, match=r"external\[0\].predictions.msseg2016_train: .* does not"):
        run_study(study, progress=False)
    assert not (tmp_path / "o" / "ext").exists()


def test_an_external_jobs_identity_covers_its_prediction_files(tmp_path, msseg_root, mrms_root):
    import os

    from msnb.sources import resolve_datasets
    from msnb.study import job_specs, load_study

    _nnunet_predictions(load_scans("msseg2016_train", msseg_root), tmp_path / "nnunet")
    write(tmp_path / "lst" / "sub-01_mask.nii.gz", np.zeros((2, 2, 2), np.uint8))
    study = load_study(_external_study(tmp_path, msseg_root, mrms_root), out_root=tmp_path / "o")
    datasets = resolve_datasets(list(study.datasets), specs=study.datasets)
    specs = {s.name: s for s in job_specs(study, datasets)}
    assert set(specs) == {"nnunet__msseg2016_train", "lstai__3dmrms"}
    spec = specs["nnunet__msseg2016_train"]
    assert spec.kind == "external" and spec.parameters["train_datasets"] == ["3dmrms"]
    assert spec.identity["parameters"]["predictions"] == "{predictions}"
    before = {n: s.digest for n, s in specs.items()}
    # a prediction file rewritten: that job only is new
    some = next((tmp_path / "nnunet").glob("*.nii.gz"))
    os.utime(some, ns=(some.stat().st_atime_ns, some.stat().st_mtime_ns + 10**9))
    after = {s.name: s.digest for s in job_specs(study, datasets)}
    assert after["nnunet__msseg2016_train"] != before["nnunet__msseg2016_train"]
    assert after["lstai__3dmrms"] == before["lstai__3dmrms"]


@pytest.mark.slow
def test_a_study_scores_external_masks_and_resumes(tmp_path, msseg_root, mrms_root):
    """Two external methods as a study's jobs, then the statistics (four notebooks: about 90 s
    on the shared 2-core machine, 40 s of CPU)."""
    from msnb.study import load_study, run_study

    expected = _nnunet_predictions(load_scans("msseg2016_train", msseg_root), tmp_path / "nnunet")
    for scan in load_scans("3dmrms", mrms_root):  # BIDS names: the truth itself
        anat = tmp_path / "lst" / f"sub-{scan.subject}" / "anat"
        shutil.copy(scan.masks["consensus"], anat.mkdir(parents=True) or anat / "x.nii.gz")
        (anat / "x.nii.gz").rename(anat / f"sub-{scan.subject}_desc-lesion_mask.nii.gz")
    study = load_study(_external_study(tmp_path, msseg_root, mrms_root), out_root=tmp_path / "o")
    out = run_study(study, progress=False)
    assert not out["failed"] and {j["kind"] for j in out["jobs"]} == {"external"}
    results = pd.read_csv(out["results_csv"], dtype={"subject": str, "timepoint": str})
    nnunet = results[results.model_id == "nnunet"].set_index("scan_id")
    assert nnunet["dice"].to_dict() == pytest.approx(expected)
    assert (results[results.model_id == "lstai"].dice == 1.0).all()
    assert set(results.experiment) == {"external:nnunet", "external:lstai"}
    assert set(nnunet.train_centers) == {"ljubljana"}  # the centers of its 3dmrms training
    stats = pd.read_csv(study.out_dir / "statistics" / "external.csv")
    assert set(stats.method) == {"nnunet", "lstai"}
    assert "external/nnunet__msseg2016_train.ipynb" in out["report"].read_text()
    # nothing changed: nothing runs; a prediction rewritten: its job only
    assert run_study(study, progress=False)["jobs"] == []
    write(next((tmp_path / "nnunet").glob("*.nii.gz")), np.zeros((24, 28, 20), np.uint8))
    again = run_study(study, progress=False, statistics=False)
    assert [j["name"] for j in again["jobs"]] == ["nnunet__msseg2016_train"]
