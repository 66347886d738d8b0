"""Loss, training loop (determinism, time budget), bundles and model construction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from msnb.bundle import load_bundle, save_bundle
from msnb.datasets import load_3dmrms
from msnb.device import resolve_speedups
from msnb.models import (
    WeightsUnavailableError,
    build_model,
    canonical_architecture,
    weighted_bce_with_logits,
)
from msnb.normalize import build_reference, get_normalizer
from msnb.train import TrainConfig, data_summary, train_model

TINY = dict(size=32, epochs=1, batch_size=4, max_slices_per_epoch=8, progress=False, num_threads=2)


def test_weighted_bce_matches_hand_computation():
    z = torch.tensor([2.0, -1.0, 0.5, -3.0])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    p = 1 / (1 + np.exp(-z.numpy().astype(float)))
    w = 0.8
    by_hand = -(w * y.numpy() * np.log(p) + (1 - w) * (1 - y.numpy()) * np.log(1 - p)).mean()
    assert float(weighted_bce_with_logits(z, y, pos_weight=w)) == pytest.approx(by_hand, rel=1e-6)
    # stable for extreme logits (no inf/nan)
    big = weighted_bce_with_logits(torch.tensor([80.0, -80.0]), torch.tensor([0.0, 1.0]))
    assert math.isfinite(float(big)) and float(big) == pytest.approx((0.2 * 80 + 0.8 * 80) / 2)


def test_build_model_variants():
    m = build_model("UNet++", "resnet18")
    assert type(m).__name__ == "UnetPlusPlus"
    assert type(build_model("unet")).__name__ == "Unet"
    out = m(torch.zeros(2, 1, 32, 32))
    assert out.shape == (2, 1, 32, 32)
    assert canonical_architecture("unetpp") == "unetplusplus"
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("segformer")


def test_imagenet_offline_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no torchvision file either
    with pytest.raises(WeightsUnavailableError, match="encoder_weights='/path"):
        build_model("unet", "resnet18", encoder_weights="imagenet")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_model("unet", "resnet18", encoder_weights=tmp_path / "missing.pth")


def test_local_encoder_weights_file(tmp_path):
    src = build_model("unet", "resnet18", in_channels=3)
    torch.save(src.encoder.state_dict(), tmp_path / "enc.pth")
    m = build_model("unet", "resnet18", encoder_weights=tmp_path / "enc.pth")
    w3 = src.encoder.conv1.weight.detach()
    assert m.encoder.conv1.weight.shape[1] == 1
    torch.testing.assert_close(m.encoder.layer1[0].conv1.weight, src.encoder.layer1[0].conv1.weight)
    torch.testing.assert_close(m.encoder.conv1.weight[:, 0], w3.sum(1))


def test_config_validation_and_speedups():
    with pytest.raises(ValueError, match="multiple of 32"):
        TrainConfig(size=100)
    cfg = TrainConfig.from_dict({"size": 64, "model_id": "ignored", "architecture": "unet++"})
    assert cfg.size == 64 and cfg.architecture == "unetplusplus"
    cl, ac = resolve_speedups("cpu", autocast="none", channels_last=True)
    assert cl is True and ac == "none"
    assert resolve_speedups("mps") == (False, "none")
    with pytest.raises(ValueError, match="autocast"):
        resolve_speedups("cpu", autocast="fp8")


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_same_seed_same_weights_and_bundle_round_trip(mrms_root, tmp_path):
    scans = load_3dmrms(mrms_root)
    r1 = train_model(
        scans, TrainConfig(**TINY), cache_dir=tmp_path / "c", bundle_path=tmp_path / "b1"
    )
    r2 = train_model(scans, TrainConfig(**TINY), cache_dir=tmp_path / "c")
    w1, w2 = _weights(r1.model), _weights(r2.model)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    timing = {"seconds": r1.history.seconds, "val_seconds": r1.history.val_seconds}
    assert r1.history.equals(r2.history.assign(**timing))
    r3 = train_model(scans, TrainConfig(**{**TINY, "seed": 1}), cache_dir=tmp_path / "c")
    assert not all(torch.equal(w1[k], v) for k, v in _weights(r3.model).items())

    # split by patient: 3 patients -> 2 train, 1 validation, disjoint
    assert len(r1.train_patients) == 2 and len(r1.val_patients) == 1
    assert not set(r1.train_patients) & set(r1.val_patients)
    summary = data_summary(r1.store, r1.train_patients, r1.val_patients)
    assert set(summary.split) == {"train", "val"}

    # the bundle holds everything inference needs
    b = load_bundle(tmp_path / "b1")
    assert all(torch.equal(w1[k], v) for k, v in b.model.state_dict().items())
    assert b.size == 32 and b.threshold == 0.5 and b.normalizer.key == r1.normalizer.key
    np.testing.assert_array_equal(b.reference, r1.normalizer.reference)
    meta = json.loads((tmp_path / "b1" / "bundle.json").read_text())
    assert meta["config"]["seed"] == 0 and meta["config"]["pos_weight"] == 0.8
    assert meta["train_scans"] == [s.scan_id for s in scans]
    assert meta["train_datasets"] == ["3dmrms"]
    assert {"torch", "segmentation_models_pytorch", "msnb"} <= set(meta["versions"])
    assert (tmp_path / "b1" / "history.csv").exists()
    assert b.describe()["normalization"] == "quantile"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b1")]  # no temporary left
    # calibration planes for int8: training patients' stored planes, half with lesion
    planes = b.calibration_planes()
    store, train = r1.store, r1.store.indices_for(r1.train_patients)
    assert planes.shape[1:] == (32, 32) and 8 <= len(planes) <= 32
    stored = np.asarray(store.images[train], np.float16).reshape(len(train), -1)
    rows = {row.tobytes(): i for i, row in zip(train, stored, strict=True)}
    picked = [rows[p.astype(np.float16).tobytes()] for p in planes]  # each is a training plane
    lesion = store.manifest.lesion_voxels.to_numpy()[picked] > 0
    assert lesion.sum() >= min(16, (store.manifest.lesion_voxels.to_numpy()[train] > 0).sum())


@pytest.mark.slow
def test_time_budget_stops_cleanly(mrms_root, tmp_path):
    scans = load_3dmrms(mrms_root)
    cfg = TrainConfig(**{**TINY, "epochs": 50, "max_slices_per_epoch": None, "time_budget_s": 0.0})
    r = train_model(scans, cfg, cache_dir=tmp_path / "c", normalization="linear")
    assert r.stopped_by_budget
    assert len(r.history) == 1 and bool(r.history.partial.iloc[0])
    assert r.history.slices.iloc[0] == 4  # one batch, then stop
    assert r.summary()["stopped_by_budget"] is True
    assert r.normalizer.key == "linear"


def test_bundle_rejects_a_changed_reference(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((8, 8, 8))
    ref = build_reference([(img, np.ones(img.shape, bool))], n_quantiles=16)
    model = build_model("unet", "resnet18")
    save_bundle(
        tmp_path / "b",
        model,
        architecture="unet",
        encoder="resnet18",
        size=32,
        normalizer=get_normalizer("quantile", ref),
    )
    b = load_bundle(tmp_path / "b")
    assert b.describe()["architecture"] == "unet"
    np.save(tmp_path / "b" / "reference.npy", ref * 0.5)
    with pytest.raises(ValueError, match="does not match"):
        load_bundle(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="not a model bundle"):
        load_bundle(tmp_path)
