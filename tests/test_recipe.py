"""Every setting of the paper's recipe changes what it says it changes (issue: the paper's
protocol, exactly): learning-rate steps, checkpoint selection, the template reference,
whole-slice geometry, N4 per dataset and the weights a model started from."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch

from msnb import train
from msnb.bundle import load_bundle
from msnb.datasets import load_3dmrms, load_msseg2016_train
from msnb.preprocess import load_flair, n4_correct
from msnb.recipe import TrainConfig
from msnb.slices import compute_geometry
from msnb.sources import load_datasets
from msnb.train import evaluate_slices, train_model

TINY = dict(size=32, epochs=1, batch_size=4, max_slices_per_epoch=8, progress=False, num_threads=2)


def test_settings_are_validated():
    for bad in (
        {"slice_crop": "box"},
        {"selection_metric": "iou"},
        {"normalization_reference": "atlas"},
        {"lr_step_epochs": 0},
        {"foreground_fraction": 1.5},
        {"normalization_reference": "template"},  # without the template file
    ):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    cfg = TrainConfig.from_parameters({"lr_step_epochs": 0, "template": "", "size": 64})
    assert cfg.lr_step_epochs is None and cfg.template is None and cfg.size == 64


def _slices(lesion_voxels: list[int]):
    """A stand-in for training data: store rows 0..n-1, lesion voxels per row, all training."""
    import pandas as pd

    store = type("Store", (), {"manifest": pd.DataFrame({"lesion_voxels": lesion_voxels})})()
    idx = np.arange(len(lesion_voxels))
    return train._Data(store, None, [], [], idx, idx[:0])


def test_foreground_sampler_draws_its_share_from_lesion_slices():
    lesion = [0] * 90 + [5] * 10  # rows 90..99 have lesion
    data = _slices(lesion)
    uniform = TrainConfig(max_slices_per_epoch=40)
    # off (the paper): the permutation, cut, exactly as before the setting existed
    got = train.epoch_order(data, uniform, np.random.default_rng(3))
    assert np.array_equal(got, np.random.default_rng(3).permutation(100)[:40])
    half = TrainConfig(max_slices_per_epoch=40, foreground_fraction=0.5)
    orders = [train.epoch_order(data, half, np.random.default_rng(s)) for s in range(20)]
    assert all(len(o) == 40 for o in orders)
    # 20 of 40 drawn from the 10 lesion slices (with replacement), plus uniform draws
    share = np.mean([np.mean(o >= 90) for o in orders])
    assert 0.5 <= share <= 0.6, share
    assert np.mean([np.mean(o[:20] >= 90) for o in orders]) < 0.9  # shuffled, not first
    # enough lesion slices: drawn without replacement, each at most once among them
    many = _slices([1] * 60 + [0] * 40)
    quarter = TrainConfig(max_slices_per_epoch=80, foreground_fraction=0.25)
    order = train.epoch_order(many, quarter, np.random.default_rng(0))
    assert len(order) == 80 and np.sum(order < 60) >= 20


def test_lr_warms_up_linearly_then_holds():
    def rates(warmup: int, n: int = 6) -> list[float]:
        opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        run = train._Run(None, opt, TrainConfig(lr_warmup_steps=warmup), "cpu", False, "none", None)
        out = []
        for _ in range(n):
            train._warm_up(run, 1e-3)
            out.append(opt.param_groups[0]["lr"])
            run.steps += 1
        return out

    assert rates(4) == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert rates(0) == pytest.approx([1e-3] * 6)  # the paper: no warm-up
    with pytest.raises(ValueError, match="lr_warmup_steps"):
        TrainConfig(lr_warmup_steps=-1)


def test_validation_subset_is_fixed_evenly_spaced_and_spans_the_patients():
    indices = np.arange(1000, 1300)  # e.g. 3 validation patients of 100 slices each
    assert train.validation_subset(indices, None) is indices  # the paper: every slice
    assert train.validation_subset(indices, 400) is indices  # fewer than the cap: all
    sub = train.validation_subset(indices, 30)
    assert sub.size == 30 and np.unique(sub).size == 30 and np.all(np.diff(sub) > 0)
    assert sub[0] == 1000 and sub[-1] == 1299  # from the first patient's to the last's
    assert np.ptp(np.diff(sub)) <= 1  # evenly spaced: every 10th or 11th slice
    assert [np.sum((sub >= lo) & (sub < lo + 100)) for lo in (1000, 1100, 1200)] == [10, 10, 10]
    with pytest.raises(ValueError, match="max_val_slices"):
        TrainConfig(max_val_slices=0)


def test_a_capped_validation_scores_only_its_subset(mrms_root, tmp_path):
    scans = load_3dmrms(mrms_root)
    capped = train_model(scans, TrainConfig(**TINY, max_val_slices=3), cache_dir=tmp_path / "c")
    summary = capped.summary()
    assert summary["val_slices"] > 3 and summary["val_slices_scored"] == 3
    whole = train_model(scans, TrainConfig(**TINY), cache_dir=tmp_path / "c")
    assert whole.summary()["val_slices_scored"] == whole.summary()["val_slices"]
    # the same model (same seed, same steps) scored on fewer slices: a different score
    assert capped.history.val_loss.iloc[0] != whole.history.val_loss.iloc[0]


@pytest.mark.slow
def test_lr_steps_down_by_gamma(mrms_root, tmp_path):
    scans = load_3dmrms(mrms_root)
    tiny = {**TINY, "max_slices_per_epoch": 4}
    cfg = TrainConfig(**{**tiny, "epochs": 3, "lr_step_epochs": 1, "lr_gamma": 0.5})
    r = train_model(scans, cfg, cache_dir=tmp_path / "c")
    assert r.history.lr.tolist() == pytest.approx([1e-3, 5e-4, 2.5e-4])
    constant = train_model(scans, TrainConfig(**{**tiny, "epochs": 2}), cache_dir=tmp_path / "c")
    assert constant.history.lr.tolist() == [1e-3] * 2


class _Fixed(torch.nn.Module):
    """A 'model' whose logits are the stored mask of a few slices, shifted."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[: x.shape[0]]


class _Store:
    def __init__(self, masks):
        self.masks = masks
        self.images = np.zeros(masks.shape, np.float32)


def test_validation_scores_pooled_and_per_slice():
    truth = np.zeros((3, 4, 4), np.uint8)
    truth[0, :2] = 1  # 8 voxels
    truth[1, 0, 0] = 1  # 1 voxel, missed
    pred = np.zeros((3, 1, 4, 4), np.float32) - 10
    pred[0, 0, :2] = 10  # slice 0 perfect; slice 2 empty and empty
    scores = evaluate_slices(
        _Fixed(torch.from_numpy(pred)),
        _Store(truth),
        np.arange(3),
        config=TrainConfig(batch_size=32),
        device="cpu",
        channels_last=False,
        autocast="none",
    )
    assert scores["pooled_dice"] == pytest.approx(2 * 8 / (8 + 9))
    assert scores["mean_slice_dice"] == pytest.approx((1 + 0 + 1) / 3)
    assert math.isfinite(scores["loss"])


def test_checkpoint_follows_the_selection_metric(monkeypatch):
    """Pooled Dice rises while mean per-slice Dice falls: each setting keeps its own epoch."""
    script = iter([])

    def scripted(*_, **__):
        return next(script)

    monkeypatch.setattr(train, "evaluate_slices", scripted)
    monkeypatch.setattr(train, "_train_epoch", lambda run, store, order, epoch: (0.1, 4, False))
    model = torch.nn.Linear(1, 1)
    data = train._Data(None, None, [], [], np.arange(4), np.arange(2))
    for metric, best_epoch in (("pooled_dice", 3), ("mean_slice_dice", 1)):
        script = iter(
            {"loss": 1.0, "pooled_dice": 0.1 * e, "mean_slice_dice": 1 - 0.1 * e} for e in (1, 2, 3)
        )
        cfg = TrainConfig(epochs=3, selection_metric=metric, progress=False)
        opt = torch.optim.Adam(model.parameters())
        run = train._Run(model, opt, cfg, "cpu", False, "none", None)
        history, best, _ = train._fit(run, data, np.random.default_rng(0))
        assert best["epoch"] == best_epoch and len(history) == 3


@pytest.mark.slow
def test_template_reference_is_shared_by_models_of_different_data(msseg_root, mrms_root, tmp_path):
    template = next(s for s in load_msseg2016_train(msseg_root))
    cfg = TrainConfig(
        **TINY,
        normalization_reference="template",
        template=str(template.flair),
        template_brain_mask=str(template.brain_mask),
    )
    train_model(load_3dmrms(mrms_root), cfg, bundle_path=tmp_path / "a", cache_dir=tmp_path / "c")
    train_model(
        load_msseg2016_train(msseg_root), cfg, bundle_path=tmp_path / "b", cache_dir=tmp_path / "c"
    )
    a, b = (np.load(tmp_path / n / "reference.npy") for n in "ab")
    np.testing.assert_array_equal(a, b)
    own = train_model(load_3dmrms(mrms_root), TrainConfig(**TINY), cache_dir=tmp_path / "c")
    assert not np.array_equal(own.normalizer.reference, a)  # the per-model variant differs
    meta = json.loads((tmp_path / "a" / "bundle.json").read_text())
    assert meta["config"]["normalization_reference"] == "template"
    assert meta["initial_weights"] == {"encoder_weights": None}


def test_whole_slice_geometry_keeps_the_plane():
    brain = np.zeros((40, 30, 5), bool)
    brain[10:20, 5:25] = True
    box = compute_geometry(brain, 32)
    whole = compute_geometry(brain, 32, crop="none")
    assert (box.x0, box.x1, box.y0, box.y1) == (6, 24, 1, 29)
    assert (whole.x0, whole.x1, whole.y0, whole.y1, whole.side) == (0, 40, 0, 30, 40)


@pytest.mark.slow
def test_bundle_remembers_its_slice_geometry(mrms_root, tmp_path):
    cfg = TrainConfig(**TINY, slice_crop="none", min_brain_fraction=0.0)
    r = train_model(
        load_3dmrms(mrms_root), cfg, bundle_path=tmp_path / "b", cache_dir=tmp_path / "c"
    )
    assert load_bundle(tmp_path / "b").slice_crop == "none"
    geometry = next(iter(r.store.geometries.values()))
    assert (geometry.x0, geometry.y0) == (0, 0)


def test_n4_removes_a_bias_field_and_follows_the_dataset_spec(mrms_root):
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (32, 32, 16)), indexing="ij")
    brain = x**2 + y**2 + z**2 < 0.8
    field = np.exp(0.4 * x + 0.2 * z)
    image = np.where(brain, 100.0 * field, 0).astype(np.float32)
    corrected = n4_correct(image, brain, spacing=(1.0, 1.0, 3.0))

    def cv(a):
        return float(a[brain].std() / a[brain].mean())

    assert cv(corrected) < 0.5 * cv(image)
    assert not corrected[~brain].any()

    plain = load_datasets({"3dmrms": {"adapter": "3dmrms", "root": str(mrms_root)}})
    marked = load_datasets({"3dmrms": {"adapter": "3dmrms", "root": str(mrms_root), "n4": True}})
    assert not any(s.n4 for s in plain) and all(s.n4 for s in marked)
    raw, brain0 = load_flair(plain[0])
    n4, brain1 = load_flair(marked[0])
    assert np.array_equal(brain0, brain1) and not np.array_equal(raw.data, n4.data)
    stored = np.asanyarray(nib.load(str(plain[0].flair)).dataobj)
    assert stored.shape == raw.shape  # the file itself is never changed


def test_imagenet_from_torch_cache_and_recorded(tmp_path, monkeypatch):
    """``imagenet`` takes torchvision's file from torch's hub cache; the bundle names it."""
    from msnb.models import build_model, describe_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # empty: smp's hub copy is absent
    src = build_model("unet", "resnet18", in_channels=3)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(src.encoder.state_dict(), folder / "resnet18-0123abcd.pth")
    model = build_model("unetplusplus", "resnet18", encoder_weights="imagenet")
    torch.testing.assert_close(
        model.encoder.layer4[1].conv2.weight, src.encoder.layer4[1].conv2.weight
    )
    torch.testing.assert_close(model.encoder.conv1.weight[:, 0], src.encoder.conv1.weight.sum(1))
    info = describe_weights("imagenet", "resnet18")
    assert info["encoder_weights"] == "imagenet"
    assert info["file"].endswith("resnet18-0123abcd.pth") and len(info["sha256"]) == 64
    (folder / "resnet18-0123abcd.pth").unlink()
    assert describe_weights("imagenet", "resnet18")["encoder_weights"] == "imagenet"
