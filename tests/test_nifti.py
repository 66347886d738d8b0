"""NIfTI I/O: canonical orientation, round trips, and a clear error for each bad input."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from conftest import SHAPE, affine_lps, affine_ras, write

from msnb.files import atomic_path
from msnb.nifti import NiftiError, load_image, load_mask, save_image, save_mask


def test_lps_volume_is_canonical_and_maps_back(tmp_path):
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    path = write(tmp_path / "lps.nii.gz", data, affine_lps())
    vol = load_image(path)
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    # Same world coordinate for the same voxel value in both grids.
    i, j, k = 3, 5, 7
    world = affine_lps() @ [i, j, k, 1]
    ci, cj, ck = np.round(np.linalg.inv(vol.affine) @ world)[:3].astype(int)
    assert vol.data[ci, cj, ck] == data[i, j, k]
    np.testing.assert_array_equal(vol.to_original(vol.data), data)
    np.testing.assert_array_equal(vol.from_original(data), vol.data)


def test_save_mask_keeps_affine_header_and_lands_on_original_voxels(tmp_path):
    data = np.zeros(SHAPE, dtype=np.float32)
    path = write(tmp_path / "lps.nii.gz", data, affine_lps())
    vol = load_image(path)
    mask = np.zeros(vol.shape, dtype=bool)
    mask[1, 2, 3] = True  # canonical voxel
    out = save_mask(mask, vol, tmp_path / "out" / "mask.nii.gz")
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, affine_lps())
    arr = np.asanyarray(img.dataobj)
    assert arr.shape == SHAPE and arr.sum() == 1
    # canonical x=1 is original x = X-1-1 (x flipped), y likewise, z unchanged
    assert arr[SHAPE[0] - 2, SHAPE[1] - 3, 3] == 1
    prob = save_image(mask.astype(np.float32) * 0.7, vol, tmp_path / "p.nii.gz")
    assert np.asanyarray(nib.load(str(prob)).dataobj).max() == pytest.approx(0.7)


def test_four_d_single_volume_is_squeezed(tmp_path):
    path = write(tmp_path / "one.nii.gz", np.ones(SHAPE + (1,), dtype=np.float32))
    assert load_image(path).shape == SHAPE


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: write(p, np.ones(SHAPE + (3,), np.float32)), "4D with 3 volumes"),
        (lambda p: write(p, np.ones(SHAPE[:2], np.float32)), "expected a 3D volume, got 2D"),
        (lambda p: write(p, np.full(SHAPE, np.nan, np.float32)), "NaN or infinite"),
        (lambda p: p.write_bytes(b"not a nifti at all"), "cannot read NIfTI"),
    ],
)
def test_bad_images_name_the_file(tmp_path, make, message):
    path = tmp_path / "bad.nii.gz"
    make(path)
    with pytest.raises(NiftiError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_truncated_file_is_reported(tmp_path):
    path = write(tmp_path / "full.nii.gz", np.random.default_rng(0).random(SHAPE, dtype=np.float32))
    raw = gzip.decompress(path.read_bytes())
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(NiftiError, match="truncated") as info:
        load_image(cut)
    assert "cut.nii.gz" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(NiftiError, match="does not exist"):
        load_image(tmp_path / "nope.nii.gz")


def test_mask_shape_and_affine_must_match_image(tmp_path):
    img = load_image(write(tmp_path / "img.nii.gz", np.ones(SHAPE, np.float32)))
    other = write(tmp_path / "shape.nii.gz", np.zeros((10, 10, 10), np.uint8))
    with pytest.raises(NiftiError, match="shape .* does not match image shape") as info:
        load_mask(other, reference=img)
    assert "shape.nii.gz" in str(info.value)
    shifted = affine_ras()
    shifted[0, 3] = 0.5
    moved = write(tmp_path / "moved.nii.gz", np.zeros(SHAPE, np.uint8), shifted)
    with pytest.raises(NiftiError, match="affine differs"):
        load_mask(moved, reference=img)
    tiny = affine_ras()
    tiny[0, 3] = 1e-5  # within tolerance
    assert (
        load_mask(
            write(tmp_path / "ok.nii.gz", np.zeros(SHAPE, np.uint8), tiny), reference=img
        ).shape
        == SHAPE
    )


def test_non_binary_masks_need_binarize(tmp_path):
    m255 = np.zeros(SHAPE, np.uint8)
    m255[2:4, 2:4, 2:4] = 255
    p255 = write(tmp_path / "m255.nii.gz", m255)
    with pytest.raises(NiftiError, match="not binary .*0, 255"):
        load_mask(p255)
    assert load_mask(p255, binarize=True).data.sum() == 8
    prob = np.zeros(SHAPE, np.float32)
    prob[0, 0, 0], prob[0, 0, 1] = 0.4, 0.6
    pprob = write(tmp_path / "prob.nii.gz", prob)
    with pytest.raises(NiftiError, match="not binary"):
        load_mask(pprob)
    got = load_mask(pprob, binarize=True).data
    assert got.sum() == 1 and got[0, 0, 1]


def test_empty_brain_mask_is_an_error(tmp_path):
    path = write(tmp_path / "brain.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(NiftiError, match="brain mask is empty"):
        load_mask(path, allow_empty=False, what="brain mask")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]
