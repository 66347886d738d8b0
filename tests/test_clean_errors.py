"""Clean errors: bad bundles, outputs, devices, dataset options, slice caches and scans.

Every fault goes through the real command line (``msnb.cli.main``) where one exists: one
line naming the file and the problem, exit code 1, no traceback, nothing half-written.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from importlib import metadata
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import read_only, scan_arrays, write
from test_predict import _saved_bundle, phantom

from msnb.bundle import save_bundle
from msnb.cli import main
from msnb.datasets import load_scans
from msnb.models import build_model
from msnb.nifti import load_image
from msnb.normalize import build_reference, get_normalizer
from msnb.slices import SliceStore, build_slice_store

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """A linear and a quantile bundle of an untrained UNet (as test_predict's), made once."""
    root = tmp_path_factory.mktemp("bundles")
    img, _, brain = phantom()
    ref = build_reference([(img, brain)], n_quantiles=16)
    save_bundle(
        root / "quantile",
        build_model("unet", "resnet18"),
        architecture="unet",
        encoder="resnet18",
        size=32,
        normalizer=get_normalizer("quantile", ref),
    )
    return {"linear": _saved_bundle(root / "linear"), "quantile": root / "quantile"}


@pytest.fixture
def flair(tmp_path) -> Path:
    img, _, _ = phantom()
    return write(tmp_path / "in" / "a.nii.gz", img)


def _copy(bundle: Path, dst: Path) -> Path:
    """A copy of a bundle whose files are hard links (replace a file before changing it)."""
    dst.mkdir()
    for f in bundle.iterdir():
        os.link(f, dst / f.name)
    return dst


def _replace(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def _segment(capsys, flair, bundle, out, *extra) -> tuple[int, list[str]]:
    """Run ``msnb segment``; its exit code and its stderr lines."""
    rc = main(["segment", str(flair), "--model", str(bundle), "--out", str(out), *extra])
    return rc, capsys.readouterr().err.strip().splitlines()


def _one_error(rc, err, command, *needles) -> str:
    assert rc == 1, err
    assert len(err) == 1 and err[0].startswith(f"msnb {command}: error: "), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


# --------------------------------------------------------------------------- bundles


def _meta(bundle: Path) -> dict:
    return json.loads((bundle / "bundle.json").read_text())


WEIGHTS_FAULTS = {
    "empty": lambda b: _replace(b / "weights.pt", b""),
    "truncated": lambda b: _replace(b / "weights.pt", (b / "weights.pt").read_bytes()[:5000]),
    "not torch": lambda b: _replace(b / "weights.pt", b"these are not weights\n" * 40),
}


@pytest.mark.parametrize("fault", list(WEIGHTS_FAULTS))
def test_corrupt_or_empty_weights(fault, bundles, flair, tmp_path, capsys):
    bad = _copy(bundles["linear"], tmp_path / "bad")
    WEIGHTS_FAULTS[fault](bad)
    rc, err = _segment(capsys, flair, bad, tmp_path / "out")
    _one_error(rc, err, "segment", str(bad / "weights.pt"))
    assert not (tmp_path / "out").exists()


def test_weights_of_another_architecture(bundles, flair, tmp_path, capsys):
    bad = _copy(bundles["linear"], tmp_path / "bad")
    meta = _meta(bad)
    meta["architecture"] = "unetplusplus"
    _replace(bad / "bundle.json", json.dumps(meta).encode())
    rc, err = _segment(capsys, flair, bad, tmp_path / "out")
    line = _one_error(rc, err, "segment", str(bad / "weights.pt"), "unetplusplus")
    assert len(line) < 400  # not the list of every key
    assert not (tmp_path / "out").exists()


JSON_FAULTS = {
    "truncated": (lambda t: t[:100], "not valid JSON"),
    "not an object": (lambda t: "[1, 2]", "not a JSON object"),
    "no size": (
        lambda t: json.dumps({k: v for k, v in json.loads(t).items() if k != "size"}),
        "size",
    ),
    "bad size": (lambda t: json.dumps({**json.loads(t), "size": "big"}), "size"),
    "unknown architecture": (
        lambda t: json.dumps({**json.loads(t), "architecture": "resnet"}),
        "resnet",
    ),
    "newer format": (lambda t: json.dumps({**json.loads(t), "format": 99}), "format"),
    "no normalization": (
        lambda t: json.dumps({**json.loads(t), "normalization": "linear"}),
        "normalization",
    ),
}


@pytest.mark.parametrize("fault", list(JSON_FAULTS))
def test_truncated_or_mismatched_bundle_json(fault, bundles, flair, tmp_path, capsys):
    bad = _copy(bundles["linear"], tmp_path / "bad")
    change, needle = JSON_FAULTS[fault]
    _replace(bad / "bundle.json", change((bad / "bundle.json").read_text()).encode())
    rc, err = _segment(capsys, flair, bad, tmp_path / "out")
    _one_error(rc, err, "segment", str(bad / "bundle.json"), needle)
    assert not (tmp_path / "out").exists()


REFERENCE_FAULTS = {
    "missing": (lambda b: (b / "reference.npy").unlink(), "missing"),
    "garbage": (lambda b: _replace(b / "reference.npy", b"\x93NUMPY garbage"), "cannot read"),
    "2-D": (
        lambda b: (b / "reference.npy").unlink() or np.save(b / "reference.npy", np.eye(4)),
        "1-D",
    ),
    "NaN": (
        lambda b: (
            (b / "reference.npy").unlink() or np.save(b / "reference.npy", np.full(16, np.nan))
        ),
        "finite",
    ),
}


@pytest.mark.parametrize("fault", list(REFERENCE_FAULTS))
def test_missing_or_corrupt_reference(fault, bundles, flair, tmp_path, capsys):
    bad = _copy(bundles["quantile"], tmp_path / "bad")
    change, needle = REFERENCE_FAULTS[fault]
    change(bad)
    rc, err = _segment(capsys, flair, bad, tmp_path / "out")
    _one_error(rc, err, "segment", str(bad / "reference.npy"), needle)
    assert not (tmp_path / "out").exists()


def test_bundles_record_the_scientific_libraries(bundles):
    versions = _meta(bundles["linear"])["versions"]
    for dist in ("scipy", "pingouin", "nibabel", "nilearn", "SimpleITK"):
        try:
            expected = metadata.version(dist)
        except metadata.PackageNotFoundError:  # not installed: not recorded
            assert dist not in versions
            continue
        assert versions[dist] == expected, dist
    assert versions["numpy"] == np.__version__  # the ones recorded before are kept


# --------------------------------------------------------------------------- outputs


@pytest.fixture
def no_inference(monkeypatch):
    """Records any call of the prediction (which must not run before the outputs are checked)."""
    import msnb.predict

    calls = []
    real = msnb.predict.predict_volume

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(msnb.predict, "predict_volume", spy)
    return calls


def test_out_is_a_file_checked_before_inference(bundles, flair, tmp_path, capsys, no_inference):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    rc, err = _segment(capsys, flair, bundles["linear"], afile)
    _one_error(rc, err, "segment", str(afile), "not a folder")
    rc, err = _segment(capsys, flair, bundles["linear"], afile / "sub")
    _one_error(rc, err, "segment", str(afile), "not a folder")
    assert no_inference == [] and afile.read_text() == "keep me"


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write into (as root: immutable, since root ignores modes)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    with read_only(ro):
        yield ro


def test_read_only_out_checked_before_inference(
    bundles, flair, read_only_dir, capsys, no_inference
):
    rc, err = _segment(capsys, flair, bundles["linear"], read_only_dir)
    _one_error(rc, err, "segment", str(read_only_dir), "not writable")
    rc, err = _segment(capsys, flair, bundles["linear"], read_only_dir / "new")
    _one_error(rc, err, "segment", str(read_only_dir), "not writable")
    assert no_inference == [] and list(read_only_dir.iterdir()) == []


def test_disk_full_leaves_no_outputs(bundles, flair, tmp_path, capsys, monkeypatch):
    import pandas as pd

    def full(self, path, *args, **kwargs):  # the table is the last output written
        Path(path).write_bytes(b"id,vox")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    out = tmp_path / "out"
    rc, err = _segment(capsys, flair, bundles["linear"], out, "--probabilities")
    _one_error(rc, err, "segment", str(out / "a_lesions.csv"), os.strerror(errno.ENOSPC))
    assert sorted(p.name for p in out.iterdir()) == []  # no mask, no map, no temporary


def test_outputs_are_complete_when_the_disk_is_not_full(bundles, flair, tmp_path, capsys):
    rc, _ = _segment(capsys, flair, bundles["linear"], tmp_path / "out", "--probabilities")
    assert rc == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["a_lesions.csv", "a_lesions.nii.gz", "a_probability.nii.gz"]


def test_msnb_outputs_that_is_a_file(tmp_path, monkeypatch):
    from msnb.sources import ensure_phantom

    afile = tmp_path / "outputs"
    afile.write_text("")
    monkeypatch.setenv("MSNB_OUTPUTS", str(afile))
    with pytest.raises(OSError, match=f"{afile}: .*MSNB_OUTPUTS.*not a folder"):
        ensure_phantom("tiny", 0)


# --------------------------------------------------------------------------- run options


def test_cuda_without_a_gpu(bundles, flair, tmp_path, capsys, monkeypatch, no_inference):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, err = _segment(capsys, flair, bundles["linear"], tmp_path / "out", "--device", "cuda")
    _one_error(rc, err, "segment", "cuda", "not available")
    rc, err = _segment(capsys, flair, bundles["linear"], tmp_path / "out", "--device", "tpu")
    _one_error(rc, err, "segment", "tpu", "unknown device")
    assert no_inference == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("size", ["-1", "0"])
def test_batch_size_must_be_positive(size, bundles, flair, tmp_path, capsys, no_inference):
    rc, err = _segment(capsys, flair, bundles["linear"], tmp_path / "out", "--batch-size", size)
    _one_error(rc, err, "segment", "--batch-size", size)
    assert no_inference == [] and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- datasets


@pytest.fixture
def folder_root(tmp_path) -> Path:
    root = tmp_path / "folder"
    for s in ("s1", "s2"):
        flair, lesion, _, _ = scan_arrays(3)
        write(root / s / "flair.nii.gz", flair)
        write(root / s / "lesion.nii.gz", lesion)
    return root


FOLDER_FAULTS = {
    "bad regex": (["--pattern", "(?P<subject>[a-z"], "--pattern"),
    "no subject group": (["--pattern", "(?P<patient>s[0-9])"], "subject"),
    "unknown placeholder": (["--mask", "consensus={subject}/lesion.nii.gz"], "{subject}"),
    "unclosed placeholder": (["--mask", "consensus={dir/lesion.nii.gz"], "consensus"),
    "positional placeholder": (["--brain-mask", "{0}/brain.nii.gz"], "{0}"),
    "no name": (["--mask", "lesion.nii.gz"], "NAME=PATTERN"),
}


@pytest.mark.parametrize("fault", list(FOLDER_FAULTS))
def test_bad_folder_adapter_options(fault, folder_root, capsys):
    extra, needle = FOLDER_FAULTS[fault]
    argv = ["scans", "folder", "--root", str(folder_root), "--flair", "*/flair.nii.gz", *extra]
    rc = main(argv)
    _one_error(rc, capsys.readouterr().err.strip().splitlines(), "scans", needle)


def test_absolute_flair_glob(folder_root, capsys):
    rc = main(["scans", "folder", "--root", str(folder_root), "--flair", "/x/*.nii.gz"])
    _one_error(rc, capsys.readouterr().err.strip().splitlines(), "scans", "/x/*.nii.gz")


def test_unreadable_msseg_consensus(msseg_root, capsys):
    bad = msseg_root / "Training" / "Center_07" / "Patient_01" / "Masks" / "Consensus.nii.gz"
    _replace(bad, b"\x1f\x8b not really gzip")
    rc = main(["scans", "msseg2016_train", "--root", str(msseg_root)])
    _one_error(rc, capsys.readouterr().err.strip().splitlines(), "scans", str(bad))


def test_scans_check_reports_every_problem(mrms_root, capsys):
    rc = main(["scans", "3dmrms", "--root", str(mrms_root), "--check"])
    out = capsys.readouterr()
    assert rc == 0 and "3 scans checked: no problem" in out.out, out
    p1 = mrms_root / "patient01" / "patient01_FLAIR.nii.gz"
    _replace(p1, p1.read_bytes()[:300])  # truncated
    _, cons, _, _ = scan_arrays(102)
    p2 = write(mrms_root / "patient02" / "patient02_consensus_gt.nii.gz", cons * 2)  # 0/2
    p3 = write(mrms_root / "patient03" / "patient03_brainmask.nii.gz", np.ones((5, 5, 5), np.uint8))
    rc = main(["scans", "3dmrms", "--root", str(mrms_root), "--check"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 4 and err[-1] == "msnb scans: error: 3 problems in 3 of 3 scans", err
    for path, problem in ((p1, "cannot read"), (p2, "not binary"), (p3, "does not match")):
        assert any(line.startswith(f"{path}: ") and problem in line for line in err), (path, err)


def test_scans_check_affine_mismatch(mrms_root, capsys):
    _, cons, _, _ = scan_arrays(101)
    shifted = np.diag([1.0, 1.0, 1.0, 1.0])
    shifted[0, 3] = 2.0
    p = write(mrms_root / "patient01" / "patient01_consensus_gt.nii.gz", cons, shifted)
    rc = main(["scans", "3dmrms", "--root", str(mrms_root), "--check"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and any(line.startswith(f"{p}: ") and "affine" in line for line in err), err


# --------------------------------------------------------------------------- geometry


def _rotation_x(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    aff = np.eye(4)
    aff[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return aff


def test_anisotropic_and_oblique_inputs_warn(tmp_path):
    img, _, _ = phantom()
    iso = write(tmp_path / "iso.nii.gz", img)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(iso)
    thick = write(tmp_path / "thick.nii.gz", img, np.diag([1.0, 1.0, 3.0, 1.0]))
    with pytest.warns(
        UserWarning, match=r"thick.nii.gz: anisotropic voxels \(1 x 1 x 3 mm in RAS\+ order\)"
    ):
        load_image(thick)
    tilted = write(tmp_path / "tilted.nii.gz", img, _rotation_x(12))
    with pytest.warns(UserWarning, match=r"tilted.nii.gz: oblique .* 12\.0 degrees"):
        load_image(tilted)


def test_geometry_warning_on_the_command_line(mrms_root, capsys):
    d = mrms_root / "patient02"
    aff = np.diag([0.5, 0.5, 3.0, 1.0])
    for f in d.iterdir():
        img = nib.load(f)
        write(f, np.asarray(img.dataobj), aff)
    rc = main(["scans", "3dmrms", "--root", str(mrms_root), "--check"])
    out = capsys.readouterr()
    warn = [line for line in out.err.splitlines() if "warning" in line]
    assert rc == 0, out
    assert len(warn) == 1 and warn[0].startswith("msnb scans: warning: "), out.err
    assert "patient02_FLAIR.nii.gz: anisotropic voxels (0.5 x 0.5 x 3 mm in RAS+ order)" in warn[0]
    assert "not resampled" in warn[0] and "axial slices 3 mm apart" in warn[0]


# --------------------------------------------------------------------------- slice store

STORE_FAULTS = {
    "truncated images": lambda s: _replace(s / "images.f32", (s / "images.f32").read_bytes()[:-64]),
    "changed images": lambda s: _replace(
        s / "images.f32", b"\x00\x00\x80\x7f" + (s / "images.f32").read_bytes()[4:]
    ),
    "manifest row dropped": lambda s: _replace(
        s / "manifest.csv", b"".join((s / "manifest.csv").read_bytes().splitlines(True)[:-1])
    ),
    "meta not JSON": lambda s: _replace(s / "meta.json", b"{"),
    "masks missing": lambda s: (s / "masks.u8").unlink(),
}


@pytest.mark.parametrize("fault", list(STORE_FAULTS))
def test_corrupt_slice_store_is_rebuilt(fault, mrms_root, tmp_path):
    scans = load_scans("3dmrms", mrms_root)
    store = build_slice_store(scans, size=32, cache_dir=tmp_path / "cache", progress=False)
    images, masks = np.array(store.images), np.array(store.masks)
    path = store.path
    del store
    STORE_FAULTS[fault](path)
    with pytest.raises(ValueError, match=str(path)):
        SliceStore(path)
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = build_slice_store(scans, size=32, cache_dir=tmp_path / "cache", progress=False)
    assert rebuilt.path == path
    np.testing.assert_array_equal(np.array(rebuilt.images), images)
    np.testing.assert_array_equal(np.array(rebuilt.masks), masks)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]
    shutil.rmtree(tmp_path / "cache")
