"""Photometric losses shared by fitting and pose refinement.

SSIM is dm-pix's (11 x 11 Gaussian window, sigma 1.5, 'valid' filtering) with one change of
implementation, not of value: the separable Gaussian blur is passed to ``dm_pix.ssim`` as
``filter_fn`` and runs as two single-channel 2-D convolutions over the image planes
(:func:`gaussian_blur`), about 2x faster on XLA:CPU than dm-pix's default (a vmapped 1-D
``jnp.convolve`` per row), with the same taps; ``tests/test_losses.py`` checks it against
dm-pix's default filter, value and gradient.

:func:`photometric_loss` carries its own VJP so that, under ``jax.vmap``, the loss and its
gradient can run one image after another (``batching="loop"``, the default on CPU): SSIM is
memory-bound, and a whole batch of 400 x 400 intermediates falls out of the CPU caches,
which made a vmapped batch about 1.5x slower per image than single images. On accelerators
the default is ordinary vectorised batching. Either way the values are those of the plain
formula (tested).
"""

from __future__ import annotations

import functools

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import sequential_vmap
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Float

__all__ = ["ssim", "l1", "photometric_loss", "psnr", "gaussian_blur"]

SSIM_FILTER_SIZE = 11
SSIM_FILTER_SIGMA = 1.5


def _gaussian_taps(size: int = SSIM_FILTER_SIZE, sigma: float = SSIM_FILTER_SIGMA) -> np.ndarray:
    """dm-pix's 1-D Gaussian taps (normalised to sum 1)."""
    half = size // 2
    shift = (2 * half - size + 1) / 2
    f = np.exp(-0.5 * ((np.arange(size) - half + shift) / sigma) ** 2)
    return (f / f.sum()).astype(np.float32)


def gaussian_blur(z: Float[Array, "*b H W C"]) -> Float[Array, "*b H-10 W-10 C"]:
    """The 11-tap, sigma-1.5 separable Gaussian blur of SSIM, 'valid' (no padding), over the
    H and W axes of every channel: the same filter as dm-pix's default ``filter_fn``."""
    taps = jnp.asarray(_gaussian_taps(), z.dtype)
    k = taps.shape[0]
    shape = z.shape
    planes = jnp.moveaxis(z, -1, -3).reshape((-1, 1) + shape[-3:-1])  # [n, 1, H, W]
    dn = ("NCHW", "OIHW", "NCHW")
    conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1), padding="VALID",
                             dimension_numbers=dn, precision=jax.lax.Precision.HIGHEST)
    out = conv(planes, taps.reshape(1, 1, 1, k))
    out = conv(out, taps.reshape(1, 1, k, 1))
    out = out.reshape(shape[:-3] + (shape[-1],) + out.shape[-2:])
    return jnp.moveaxis(out, -3, -1)


def ssim(a: Float[Array, "H W 3"], b: Float[Array, "H W 3"]) -> Float[Array, ""]:
    """Mean SSIM with an 11 x 11 Gaussian window, sigma 1.5 (dm-pix), images in [0, 1]."""
    return dm_pix.ssim(a, b, max_val=1.0, filter_size=SSIM_FILTER_SIZE, filter_sigma=SSIM_FILTER_SIGMA,
                       filter_fn=gaussian_blur)


def l1(a: Float[Array, "H W 3"], b: Float[Array, "H W 3"]) -> Float[Array, ""]:
    return jnp.mean(jnp.abs(a - b))


def _photometric(pred, target, ssim_weight):
    return (1.0 - ssim_weight) * l1(pred, target) + ssim_weight * (1.0 - ssim(pred, target))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _photometric_vjp(pred, target, ssim_weight, loop):
    return _photometric(pred, target, ssim_weight)


def _photometric_fwd(pred, target, ssim_weight, loop):
    p, t = pred.value, target.value
    argnums = tuple(i for i, a in enumerate((pred, target)) if a.perturbed)
    if not argnums:
        return _photometric(p, t, ssim_weight), (None, None)

    def value_and_grads(p, t):
        return jax.value_and_grad(_photometric, argnums)(p, t, ssim_weight)

    value, grads = (sequential_vmap(value_and_grads) if loop else value_and_grads)(p, t)
    full = [None, None]
    for i, g in zip(argnums, grads):
        full[i] = g
    return value, tuple(full)


def _photometric_bwd(ssim_weight, loop, grads, ct):
    g_pred, g_target = grads
    if isinstance(ct, SymbolicZero):
        return None, None
    return (None if g_pred is None else ct * g_pred), (None if g_target is None else ct * g_target)


_photometric_vjp.defvjp(_photometric_fwd, _photometric_bwd, symbolic_zeros=True)


def photometric_loss(
    pred: Float[Array, "H W 3"],
    target: Float[Array, "H W 3"],
    *,
    ssim_weight: float = 0.2,
    batching: str = "auto",
) -> Float[Array, ""]:
    """(1 - w) L1 + w (1 - SSIM), w = 0.2 as 3DGS and SplatPose.

    ``batching`` says how ``jax.vmap`` over this loss runs its value and gradient:
    "loop" (one image after another; faster on CPU, where SSIM is memory-bound),
    "vector" (ordinary vectorised batching) or "auto" ("loop" on the CPU backend, else
    "vector"). The value and gradient are the same either way."""
    if batching not in ("auto", "loop", "vector"):
        raise ValueError(f"photometric_loss: batching must be 'auto', 'loop' or 'vector', got {batching!r}")
    loop = batching == "loop" or (batching == "auto" and jax.default_backend() == "cpu")
    return _photometric_vjp(pred, target, float(ssim_weight), loop)


def psnr(a: Float[Array, "H W 3"], b: Float[Array, "H W 3"]) -> Float[Array, ""]:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    return -10.0 * jnp.log10(jnp.mean((a - b) ** 2))
