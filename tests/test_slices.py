"""Slice store: geometry round trips, caching, atomicity, patient split, torch Dataset."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import make_brain

from msnb.datasets import load_scans
from msnb.preprocess import compute_brain_mask
from msnb.slices import (
    IDENTITY,
    SliceDataset,
    SliceStore,
    brain_slices,
    build_slice_store,
    compute_geometry,
    from_model_plane,
    split_by_patient,
    to_model_plane,
)


def test_geometry_round_trip_recovers_a_smooth_plane():
    brain = np.zeros((40, 30, 5), bool)
    brain[5:35, 8:24, :] = True
    geom = compute_geometry(brain, 64, margin=2)
    assert (geom.x0, geom.x1, geom.y0, geom.y1, geom.side) == (3, 37, 6, 26, 34)
    x, y = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    plane = (np.sin(x / 6.0) + np.cos(y / 5.0)).astype(np.float32)
    up = to_model_plane(plane, geom)
    assert up.shape == (64, 64)
    back = from_model_plane(up, geom, (40, 30))
    inner = np.s_[5:35, 8:24]
    assert np.abs(back[inner] - plane[inner]).max() < 0.05
    assert back[:3].max() == 0 and back[:, 27:].max() == 0  # outside the bounding box


def test_mask_round_trip_keeps_a_lesion_on_its_voxels():
    brain = np.ones((50, 60, 3), bool)
    geom = compute_geometry(brain, 96, margin=0)
    mask = np.zeros((50, 60), np.float32)
    mask[20:26, 30:37] = 1
    small = to_model_plane(mask, geom) >= 0.5
    back = from_model_plane(small.astype(np.float32), geom, (50, 60)) >= 0.5
    inter = (back & (mask > 0)).sum()
    assert 2 * inter / (back.sum() + mask.sum()) > 0.9


def test_brain_slices_keep_slices_with_enough_brain():
    brain = make_brain((20, 20, 20))
    zs = brain_slices(brain, min_brain_fraction=0.05)
    area = brain.sum(axis=(0, 1))
    assert set(zs) == set(np.flatnonzero(area >= 0.05 * area.max()))
    assert 0 not in zs and area[zs].min() > 0


def test_compute_brain_mask_skull_stripped_and_not():
    brain = make_brain((30, 30, 30))
    img = np.where(brain, 100.0, 0.0)
    img[15, 15, 15] = 0  # a hole inside the brain is filled
    assert (compute_brain_mask(img) == brain).all()
    rng = np.random.default_rng(0)
    noisy = np.where(brain, 100.0, 5.0) + rng.normal(0, 2, brain.shape)  # no zero background
    got = compute_brain_mask(noisy)
    assert (got == brain).mean() > 0.98


def test_store_is_built_once_and_rebuilt_when_an_input_changes(mrms_root, tmp_path):
    scans = load_scans("3dmrms", mrms_root)
    store = build_slice_store(scans, size=32, cache_dir=tmp_path / "cache", progress=False)
    assert store.images.shape == (len(store), 32, 32) and store.masks.dtype == np.uint8
    assert set(store.manifest.scan_id) == {s.scan_id for s in scans}
    # lesions are where the FLAIR is bright: lesion pixels brighter than the brain
    img, msk = np.asarray(store.images), np.asarray(store.masks).astype(bool)
    assert msk.any() and img[msk].mean() > img[(img > 0) & ~msk].mean() + 30
    assert store.manifest.lesion_voxels.sum() == msk.sum()
    again = build_slice_store(scans, size=32, cache_dir=tmp_path / "cache", progress=False)
    assert again.path == store.path
    mtime = os.stat(scans[0].flair).st_mtime_ns
    os.utime(scans[0].flair, ns=(mtime + 10**9, mtime + 10**9))
    rebuilt = build_slice_store(scans, size=32, cache_dir=tmp_path / "cache", progress=False)
    assert rebuilt.path != store.path
    other = build_slice_store(scans, size=24, cache_dir=tmp_path / "cache", progress=False)
    assert other.images.shape[1:] == (24, 24)


def test_store_build_failure_leaves_nothing(mrms_root, tmp_path):
    scans = load_scans("3dmrms", mrms_root)
    (scans[-1].brain_mask).write_bytes(b"broken")
    with pytest.raises(ValueError, match="patient03_brainmask.nii.gz: cannot read"):
        build_slice_store(scans, size=16, cache_dir=tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_split_by_patient_is_seeded_and_disjoint():
    keys = [f"d/{i}" for i in range(10) for _ in range(3)]  # three timepoints each
    train, val = split_by_patient(keys, val_fraction=0.2, seed=1)
    assert len(val) == 2 and len(train) == 8 and not set(train) & set(val)
    assert (train, val) == split_by_patient(keys, val_fraction=0.2, seed=1)
    assert split_by_patient(keys, seed=2) != (train, val)
    assert split_by_patient(["a/1", "a/2"], val_fraction=0.2)[1] != []


def test_dataset_items_and_patient_indices(msseg_root, tmp_path):
    scans = load_scans("msseg2016_train", msseg_root)
    store = build_slice_store(scans, size=32, cache_dir=tmp_path, progress=False)
    train, val = split_by_patient(store.manifest.patient_key, seed=0)
    idx = store.indices_for(val)
    assert set(store.manifest.patient_key.iloc[idx]) == set(val)
    ds = SliceDataset(store, idx)
    image, mask = ds[0]
    assert tuple(image.shape) == (1, 32, 32) and str(image.dtype) == "torch.float32"
    np.testing.assert_array_equal(image[0].numpy(), store.images[idx[0]])
    assert set(np.unique(mask.numpy())) <= {0.0, 1.0}
    reopened = SliceStore(store.path)
    assert len(reopened) == len(store) and reopened.normalizer_key == IDENTITY.key
