"""``msnb segment`` on ONNX Runtime: same maps as torch, exports kept fresh, no torch import."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import read_only, write
from test_predict import _saved_bundle, phantom

import msnb
from msnb.bundle import BundleError, load_bundle
from msnb.cli import main
from msnb.onnxrt import export_folders, find_export, open_backend, weights_sha256
from msnb.paths import cache_root
from msnb.segment import segment_file

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A tiny UNet bundle, exported once (every test copies it before changing it)."""
    path = _saved_bundle(tmp_path_factory.mktemp("onnx") / "bundle")
    assert open_backend(load_bundle(path, weights=False), backend="onnx").exported
    return path


def _copy(bundle: Path, dst: Path, *, export: bool = True) -> Path:
    ignore = None if export else shutil.ignore_patterns("model.onnx*")
    return Path(shutil.copytree(bundle, dst, ignore=ignore))


def _probability(result: dict) -> np.ndarray:
    return np.asarray(nib.load(result["probability"]).dataobj)


def test_onnx_and_torch_give_the_same_maps(bids_root, bundle, tmp_path):
    flair = bids_root / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_FLAIR.nii.gz"
    out = {}
    for backend in ("torch", "onnx"):
        res = segment_file(flair, bundle, tmp_path / backend, bids=None, backend=backend)
        assert res["backend"] == backend
        side = json.loads(Path(res["mask"]).with_suffix("").with_suffix(".json").read_text())
        assert side["msnb"]["backend"] == backend and side["msnb"]["threshold"] == 0.5
        assert side["msnb"]["backend_version"].startswith(
            {"torch": "torch ", "onnx": "onnxruntime "}[backend]
        )
        out[backend] = (_probability(res), np.asarray(nib.load(res["mask"]).dataobj))
    (p_torch, m_torch), (p_onnx, m_onnx) = out["torch"], out["onnx"]
    assert p_torch.max() > 0.3  # not an all-zero map that would match anything
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-4, rtol=0)
    clear = np.abs(p_torch - 0.5) > 1e-4  # away from threshold ties
    np.testing.assert_array_equal(m_onnx[clear], m_torch[clear])


def _perturb_weights(bundle: Path) -> None:
    state = torch.load(bundle / "weights.pt", weights_only=True)
    name = next(k for k, v in state.items() if v.dtype == torch.float32 and v.ndim == 4)
    state[name] = state[name] * 3.0
    (bundle / "weights.pt").unlink()  # copytree copied it; a new file, as a retraining writes
    torch.save(state, bundle / "weights.pt")


def test_stale_or_damaged_export_is_made_again(bundle, tmp_path):
    img, _, _ = phantom()
    flair = write(tmp_path / "flair.nii.gz", img)
    mine = _copy(bundle, tmp_path / "bundle")
    old = (mine / "model.onnx").read_bytes()
    _perturb_weights(mine)  # the weights change: the export beside them is stale
    assert find_export(load_bundle(mine, weights=False)) is None
    res = segment_file(flair, mine, tmp_path / "onnx", backend="onnx", probabilities=True)
    record = json.loads((mine / "model.onnx.json").read_text())
    assert record["weights_sha256"] == weights_sha256(mine)
    assert (mine / "model.onnx").read_bytes() != old
    ref = segment_file(flair, mine, tmp_path / "torch", backend="torch", probabilities=True)
    np.testing.assert_allclose(_probability(res), _probability(ref), atol=1e-4, rtol=0)
    # a damaged file under a fresh record: made again too
    (mine / "model.onnx").write_bytes(b"not an onnx model")
    engine = open_backend(load_bundle(mine, weights=False), backend="onnx")
    assert engine.exported and (mine / "model.onnx").read_bytes() != b"not an onnx model"


@pytest.fixture
def read_only_bundle(bundle, tmp_path):
    """A copy of the bundle without its export, in a folder nobody may write into."""
    with read_only(_copy(bundle, tmp_path / "ro", export=False)) as ro:
        yield ro


def test_read_only_bundle_exports_to_the_cache(read_only_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("MSNB_CACHE", str(tmp_path / "cache"))
    img, _, _ = phantom()
    flair = write(tmp_path / "flair.nii.gz", img)
    before = sorted(p.name for p in read_only_bundle.iterdir())
    res = segment_file(flair, read_only_bundle, tmp_path / "out", backend="auto")
    assert res["backend"] == "onnx"
    digest = weights_sha256(read_only_bundle)
    cached = cache_root() / "onnx" / digest[:16]
    assert export_folders(load_bundle(read_only_bundle, weights=False), digest)[1] == cached
    assert sorted(p.name for p in cached.iterdir()) == ["model.onnx", "model.onnx.json"]
    assert sorted(p.name for p in read_only_bundle.iterdir()) == before
    # the next run finds it there and exports nothing
    engine = open_backend(load_bundle(read_only_bundle, weights=False), backend="onnx")
    assert not engine.exported and engine.network.path == cached / "model.onnx"


def test_onnx_backend_needs_onnxruntime_and_the_cpu(bundle, tmp_path, capsys, monkeypatch):
    img, _, _ = phantom()
    flair = write(tmp_path / "flair.nii.gz", img)
    args = ["segment", str(flair), "--model", str(bundle), "--out", str(tmp_path / "out")]
    assert main([*args, "--backend", "onnx", "--device", "cuda"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not on --device cuda" in err[0], err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime fails
    assert main([*args, "--backend", "onnx"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("msnb segment: error: --backend onnx: "), err
    assert "onnxruntime is not installed" in err[0] and "--backend torch" in err[0]
    assert not (tmp_path / "out").exists()
    # auto falls back to torch
    summary = tmp_path / "summary.tsv"
    assert main([*args, "--summary", str(summary)]) == 0
    assert pd.read_csv(summary, sep="\t")["backend"].tolist() == ["torch"]


def test_cli_on_onnx_imports_no_torch(bundle, tmp_path):
    img, _, _ = phantom()
    flair = write(tmp_path / "flair.nii.gz", img)
    out, summary = tmp_path / "out", tmp_path / "summary.tsv"
    code = (
        "import sys\nfrom msnb.cli import main\n"
        f"rc = main(['segment', {str(flair)!r}, '--model', {str(bundle)!r}, '--out', "
        f"{str(out)!r}, '--backend', 'onnx', '--summary', {str(summary)!r}])\n"
        "heavy = {'torch', 'torchvision', 'timm', 'segmentation_models_pytorch', 'onnx'}\n"
        "print(rc, sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    repo = str(Path(msnb.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "0 []", run.stdout + run.stderr
    assert (out / "flair_lesions.nii.gz").is_file()
    assert pd.read_csv(summary, sep="\t")["backend"].tolist() == ["onnx"]


def _with_calibration(bundle: Path, dst: Path, img: np.ndarray, brain: np.ndarray) -> Path:
    """A copy of the bundle keeping, as training does, normalized model planes (here of
    the test scan itself) in ``calibration.npy``."""
    from msnb.slices import brain_slices, compute_geometry, to_model_plane

    mine = _copy(bundle, dst)
    b = load_bundle(mine, weights=False)
    geom = compute_geometry(brain, b.size, crop=b.slice_crop)
    zs = brain_slices(brain, min_brain_fraction=b.min_brain_fraction)
    planes = to_model_plane(b.normalizer(img.astype(np.float32), brain)[:, :, zs], geom)
    np.save(mine / "calibration.npy", np.moveaxis(planes, 2, 0).astype(np.float16))
    return mine


def test_int8_backend_quantizes_once_and_stays_close_to_float32(bundle, tmp_path):
    import onnx

    img, _, brain = phantom()
    flair = write(tmp_path / "flair.nii.gz", img)
    mine = _with_calibration(bundle, tmp_path / "bundle", img, brain)
    maps = {}
    for backend in ("onnx", "onnx-int8"):
        res = segment_file(flair, mine, tmp_path / backend, backend=backend, probabilities=True)
        assert res["backend"] == backend
        maps[backend] = _probability(res)
    ops = {n.op_type for n in onnx.load(mine / "model.int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    record = json.loads((mine / "model.int8.onnx.json").read_text())
    assert record["weights_sha256"] == weights_sha256(mine) and "calibration_sha256" in record
    assert not [p for p in mine.iterdir() if "pre" in p.name or p.name.startswith(".")]
    p32, p8 = maps["onnx"], maps["onnx-int8"]
    assert p32.max() > 0.3 and not np.array_equal(p8, p32)  # quantized, not the float model
    assert np.corrcoef(p8[brain], p32[brain])[0, 1] > 0.98
    assert np.abs(p8 - p32).max() < 0.05
    # kept: the next run quantizes nothing; new calibration planes make it stale
    engine = open_backend(load_bundle(mine, weights=False), backend="onnx-int8")
    assert not engine.exported and engine.network.path == mine / "model.int8.onnx"
    np.save(mine / "calibration.npy", np.load(mine / "calibration.npy")[::2])
    assert find_export(load_bundle(mine, weights=False), int8=True) is None
    assert find_export(load_bundle(mine, weights=False)) == mine / "model.onnx"  # float kept
    assert open_backend(load_bundle(mine, weights=False), backend="onnx-int8").exported


def test_int8_backend_needs_calibration_planes(bundle, tmp_path, capsys):
    img, _, _ = phantom()
    flair = write(tmp_path / "flair.nii.gz", img)
    args = ["segment", str(flair), "--model", str(bundle), "--out", str(tmp_path / "out")]
    assert main([*args, "--backend", "onnx-int8"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("msnb segment: error: --backend onnx-int8: "), err
    assert str(bundle / "calibration.npy") in err[0] and "train it again" in err[0]
    assert not (tmp_path / "out").exists()
    # damaged planes: the file and the problem
    mine = _copy(bundle, tmp_path / "bundle")
    np.save(mine / "calibration.npy", np.zeros((4, 7, 7), np.float16))
    with pytest.raises(BundleError, match=r"calibration\.npy.*\(N, 32, 32\) expected"):
        open_backend(load_bundle(mine, weights=False), backend="onnx-int8")
