"""Photometric losses shared by fitting and pose refinement."""

from __future__ import annotations

import dm_pix
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["ssim", "l1", "photometric_loss", "psnr"]


def ssim(a: Float[Array, "H W 3"], b: Float[Array, "H W 3"]) -> Float[Array, ""]:
    """Mean SSIM with an 11 x 11 Gaussian window, sigma 1.5 (dm-pix), images in [0, 1]."""
    return dm_pix.ssim(a, b, max_val=1.0, filter_size=11, filter_sigma=1.5)


def l1(a: Float[Array, "H W 3"], b: Float[Array, "H W 3"]) -> Float[Array, ""]:
    return jnp.mean(jnp.abs(a - b))


def photometric_loss(
    pred: Float[Array, "H W 3"], target: Float[Array, "H W 3"], *, ssim_weight: float = 0.2
) -> Float[Array, ""]:
    """(1 - w) L1 + w (1 - SSIM), w = 0.2 as 3DGS and SplatPose."""
    return (1.0 - ssim_weight) * l1(pred, target) + ssim_weight * (1.0 - ssim(pred, target))


def psnr(a: Float[Array, "H W 3"], b: Float[Array, "H W 3"]) -> Float[Array, ""]:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    return -10.0 * jnp.log10(jnp.mean((a - b) ** 2))
