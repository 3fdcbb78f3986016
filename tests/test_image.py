"""splatjax.image: the one copy of each image helper against its oracle (scipy's Gaussian
filter, dm-pix's SSIM filter and map, kornia's grey weights, jax.image.resize)."""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from splatjax import image


@pytest.mark.parametrize("shape,sigma", [((2, 50, 61), 4.0), ((40, 33), 1.5), ((1, 9, 12), 4.0)])
def test_gaussian_filter_equals_scipy(shape, sigma):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    ours = np.asarray(image.gaussian_filter(jnp.asarray(x), sigma))
    axes = (len(shape) - 2, len(shape) - 1)
    ref = scipy.ndimage.gaussian_filter(x.astype(np.float64), sigma, axes=axes)
    np.testing.assert_allclose(ours, ref, atol=2e-6, rtol=1e-5)
    assert image.gaussian_filter(x, 0.0).shape == x.shape


def test_gaussian_blur_matches_dm_pix_default_filter():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (3, 40, 52, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(scale=0.15, size=a.shape), 0, 1).astype(np.float32)
    for x, y in ((a[0], b[0]), (a, b)):  # single image and a leading batch axis
        ours_map = dm_pix.ssim(x, y, return_map=True, filter_fn=image.gaussian_blur)
        ref_map = dm_pix.ssim(x, y, return_map=True)
        assert ours_map.shape == ref_map.shape
        np.testing.assert_allclose(ours_map, ref_map, rtol=0, atol=1e-5)
    # the blur of a constant image is that constant ('valid' output: 10 pixels smaller)
    out = image.gaussian_blur(jnp.full((20, 30, 2), 0.7))
    assert out.shape == (10, 20, 2)
    np.testing.assert_allclose(out, 0.7, rtol=1e-6)


def test_ssim_map_of_identical_images_is_one_and_matches_dm_pix_inside():
    rng = np.random.default_rng(1)
    a = rng.random((30, 30)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    np.testing.assert_allclose(np.asarray(image.ssim_map(jnp.asarray(a), jnp.asarray(a))), 1.0, atol=1e-5)
    ours = np.asarray(image.ssim_map(jnp.asarray(a), jnp.asarray(b)))
    ref = np.asarray(dm_pix.ssim(a[..., None], b[..., None], return_map=True))[..., 0]  # valid part
    np.testing.assert_allclose(ours[5:-5, 5:-5], ref, atol=1e-4)


def test_grey_uses_the_601_weights():
    x = np.random.default_rng(2).random((2, 5, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(image.grey(x)), x @ np.array([0.299, 0.587, 0.114], np.float32),
                               rtol=1e-6)
    assert image.grey(x[0]).shape == (5, 7)


def test_resize_is_antialiased_linear_and_keeps_aspect():
    x = np.random.default_rng(3).random((2, 40, 60, 3)).astype(np.float32)
    out = image.resize(x, 20, 30)
    ref = jax.image.resize(jnp.asarray(x), (2, 20, 30, 3), "linear", antialias=True)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6)
    assert image.resize(x, 40, 60) is not None and np.array_equal(image.resize(x, 40, 60), x)
    assert image.resize_to_width(x, 30).shape == (2, 20, 30, 3)
    assert image.resize_to_width(x[0], 15).shape == (10, 15, 3)
    # a constant image stays constant
    np.testing.assert_allclose(np.asarray(image.resize(np.full((9, 9, 1), 0.3, np.float32), 4, 4)), 0.3, atol=1e-6)
