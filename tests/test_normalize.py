"""Quantile, linear and z-score normalization."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from msnb.normalize import (
    LinearNormalizer,
    QuantileNormalizer,
    ZScoreNormalizer,
    average_ranks,
    build_reference,
    distribution_distance,
    get_normalizer,
    quantile_function,
)


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    image = rng.gamma(3.0, 100.0, size=(20, 22, 18)).astype(np.float32)
    brain = np.zeros(image.shape, bool)
    brain[3:17, 4:19, 2:16] = True
    image[~brain] = 7.0  # background must not matter
    return image, brain


def test_average_ranks_match_scipy_with_ties():
    rng = np.random.default_rng(1)
    floats = rng.normal(size=5000).astype(np.float32)
    floats[::5] = floats[0]
    ints = rng.integers(0, 50, size=5000).astype(np.float32)
    for v in (floats, ints):
        np.testing.assert_allclose(average_ranks(v), rankdata(v) - 1)


def test_quantile_is_monotone_and_zero_outside(volume):
    image, brain = volume
    ref = build_reference([(image * 3 + 5, brain)])
    out = QuantileNormalizer(ref)(image, brain)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert np.all(out[~brain] == 0)
    v, o = image[brain], out[brain]
    order = np.argsort(v, kind="stable")
    assert np.all(np.diff(o[order]) >= 0)
    assert o.min() == pytest.approx(0.0) and o.max() == pytest.approx(1.0)


def test_quantile_reproduces_the_reference_distribution(volume):
    image, brain = volume
    n = int(brain.sum())
    # with one quantile per voxel, the volume that defined the reference maps onto itself
    exact = build_reference([(image, brain)], n_quantiles=n, rescale=False)
    out = QuantileNormalizer(exact)(image, brain)
    np.testing.assert_allclose(out[brain], image[brain], rtol=1e-5)
    # any monotone transform of it is mapped back onto the same values
    warped = np.exp(image / 200.0) * 17
    np.testing.assert_allclose(
        QuantileNormalizer(exact)(warped, brain)[brain], image[brain], rtol=1e-5
    )
    # with a coarse reference the output's quantile function is the reference
    ref = build_reference([(image, brain)], n_quantiles=256, rescale=False)
    out = QuantileNormalizer(ref)(warped, brain)
    np.testing.assert_allclose(quantile_function(out[brain], 256), ref, rtol=0.01)


def test_quantile_ties_get_one_value(volume):
    image, brain = volume
    ref = build_reference([(image, brain)])
    tied = np.round(image / 50.0)  # many ties
    out = QuantileNormalizer(ref)(tied, brain)
    for value in np.unique(tied[brain])[:5]:
        assert np.unique(out[brain & (tied == value)]).size == 1
    # average rank: a value held by all voxels maps to the reference median
    const = np.where(brain, 5.0, 0).astype(np.float32)
    mid = QuantileNormalizer(ref)(const, brain)[brain]
    assert np.allclose(mid, np.interp(0.5, np.linspace(0, 1, ref.size), ref))


def test_mean_quantile_function_reference(volume):
    image, brain = volume
    a = build_reference([(image, brain)], n_quantiles=64, rescale=False)
    b = build_reference([(image * 3, brain)], n_quantiles=64, rescale=False)
    both = build_reference([(image, brain), (image * 3, brain)], n_quantiles=64, rescale=False)
    np.testing.assert_allclose(both, (a + b) / 2)
    scaled = build_reference([(image, brain), (image * 3, brain)], n_quantiles=64)
    assert scaled[0] == 0 and scaled[-1] == 1 and np.all(np.diff(scaled) >= 0)


def test_keys_are_stable_and_depend_on_the_reference(volume):
    image, brain = volume
    ref = build_reference([(image, brain)])
    k1 = get_normalizer("quantile", ref).key
    assert k1 == QuantileNormalizer(ref.copy()).key and k1.startswith("quantile-")
    assert k1 != get_normalizer("quantile", ref * 0.5).key
    assert get_normalizer("linear").key == "linear"
    assert get_normalizer("zscore").key == "zscore"
    with pytest.raises(ValueError, match="reference"):
        get_normalizer("quantile")
    with pytest.raises(ValueError, match="unknown normalization"):
        get_normalizer("histogram")
    with pytest.raises(ValueError, match="non-decreasing"):
        QuantileNormalizer(np.array([0.0, 2.0, 1.0]))


def test_linear_and_zscore(volume):
    image, brain = volume
    lin = LinearNormalizer()(image, brain)
    assert lin[brain].min() == 0 and lin[brain].max() == pytest.approx(1)
    assert np.all(lin[~brain] == 0)
    z = ZScoreNormalizer()(image, brain)
    assert z[brain].mean() == pytest.approx(0, abs=1e-5)
    assert z[brain].std() == pytest.approx(1, abs=1e-4)
    assert np.all(z[~brain] == 0)


def test_outliers_break_linear_not_quantile(volume):
    image, brain = volume
    spiky = image.copy()
    spiky[brain.nonzero()[0][0], brain.nonzero()[1][0], brain.nonzero()[2][0]] = 1e6
    ref = build_reference([(image, brain)])
    q = QuantileNormalizer(ref)
    assert np.median(LinearNormalizer()(spiky, brain)[brain]) < 0.01
    assert abs(np.median(q(spiky, brain)[brain]) - np.median(q(image, brain)[brain])) < 1e-3


def test_empty_brain_raises(volume):
    image, _ = volume
    with pytest.raises(ValueError, match="empty brain"):
        LinearNormalizer()(image, np.zeros(image.shape, bool))


def test_distribution_distance():
    a = np.arange(1000, dtype=float)
    assert distribution_distance(a, a) == 0
    assert distribution_distance(a, a + 10) == pytest.approx(10)
    assert distribution_distance(a, a + 10, scale=5) == pytest.approx(2)
