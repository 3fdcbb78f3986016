"""Losses: SSIM against dm-pix's default filter, the photometric loss's own VJP and
its loop batching against the plain formula differentiated by JAX."""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from splatjax import losses


def _images(seed, shape=(3, 40, 52, 3)):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, shape).astype(np.float32)
    b = np.clip(a + rng.normal(scale=0.15, size=shape), 0, 1).astype(np.float32)
    return jnp.asarray(a), jnp.asarray(b)


def _plain(pred, target, w=0.2):
    """The formula with dm-pix's default SSIM filter, differentiated by JAX itself."""
    s = dm_pix.ssim(pred, target, max_val=1.0, filter_size=11, filter_sigma=1.5)
    return (1 - w) * jnp.mean(jnp.abs(pred - target)) + w * (1 - s)


def test_ssim_matches_dm_pix_default():
    a, b = _images(0)
    for x, y in ((a[0], b[0]), (a, b)):  # single image and a leading batch axis
        ref = dm_pix.ssim(x, y, max_val=1.0, filter_size=11, filter_sigma=1.5)
        np.testing.assert_allclose(losses.ssim(x, y), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("batching", ["loop", "vector"])
def test_photometric_loss_value_and_grads_match_the_plain_formula(batching):
    a, b = _images(1)
    loss = lambda p, t: losses.photometric_loss(p, t, batching=batching)  # noqa: E731
    np.testing.assert_allclose(loss(a[0], b[0]), _plain(a[0], b[0]), rtol=1e-6)
    # gradient with respect to the prediction, the target, and both
    for argnums in (0, 1, (0, 1)):
        ours = jax.grad(loss, argnums)(a[0], b[0])
        ref = jax.grad(_plain, argnums)(a[0], b[0])
        for o, r in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
            np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-7)
    # vmap(grad) and grad of a vmapped sum, under jit: per-image gradients
    per = jax.jit(jax.vmap(jax.value_and_grad(loss)))(a, b)
    summed = jax.jit(jax.grad(lambda p: jnp.sum(jax.vmap(loss)(p, b))))(a)
    for i in range(a.shape[0]):
        v, g = jax.value_and_grad(_plain)(a[i], b[i])
        np.testing.assert_allclose(per[0][i], v, rtol=1e-6)
        np.testing.assert_allclose(per[1][i], g, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(summed[i], g, rtol=1e-4, atol=1e-7)
    # a scaled cotangent scales the gradient; the weight is honoured
    g3 = jax.grad(lambda p: 3.0 * loss(p, b[0]))(a[0])
    np.testing.assert_allclose(g3, 3.0 * jax.grad(_plain)(a[0], b[0]), rtol=1e-4, atol=1e-7)
    w = losses.photometric_loss(a[0], b[0], ssim_weight=0.5, batching=batching)
    np.testing.assert_allclose(w, _plain(a[0], b[0], 0.5), rtol=1e-6)


def test_photometric_loss_rejects_unknown_batching():
    a, b = _images(2)
    with pytest.raises(ValueError, match="batching"):
        losses.photometric_loss(a[0], b[0], batching="serial")
