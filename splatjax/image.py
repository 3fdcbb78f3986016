"""Image helpers in JAX, one copy each: resize, Gaussian filters, SSIM map, greyscale.

Images are float32 ``[..., H, W, 3]`` in [0, 1], channels last (dm-pix convention);
single-channel maps are ``[..., H, W]``. Every function here is pure and jit-able.

- :func:`resize`: bilinear, antialiased when shrinking, half-pixel centres
  (``jax.image.resize`` "linear").
- :func:`gaussian_filter`: ``scipy.ndimage.gaussian_filter`` (same kernel radius rule and
  "reflect" border), for smoothing anomaly maps (sigma 4) and the SSIM map's statistics.
- :func:`gaussian_blur`: the 11-tap, sigma-1.5 "valid" blur of dm-pix's SSIM, used by
  :func:`splatjax.losses.ssim`.
- :func:`ssim_map`: per-pixel SSIM of single-channel images with reflected borders (the
  map has the input's size).
- :func:`grey`: ITU-R 601 luma (0.299, 0.587, 0.114), as kornia's ``rgb_to_grayscale``.
- :func:`srgb_to_linear`, :func:`linear_to_srgb`: the sRGB transfer function (IEC 61966-2-1)
  and its inverse, elementwise on values in [0, 1] (numpy in, numpy out; jax in, jax out).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

__all__ = ["resize", "resize_to_width", "box_downsample", "gaussian_filter", "gaussian_blur", "ssim_map", "grey",
           "srgb_to_linear", "linear_to_srgb"]

_LUMA = (0.299, 0.587, 0.114)


@functools.partial(jax.jit, static_argnames=("height", "width"))
def _resize(images: Array, height: int, width: int) -> Array:
    shape = images.shape[:-3] + (height, width, images.shape[-1])
    return jax.image.resize(images, shape, "linear", antialias=True)


def resize(images: Float[ArrayLike, "*B H W C"], height: int, width: int) -> Float[Array, "*B h w C"]:
    """Bilinear resize of the H and W axes to ``height x width`` (antialiased when
    shrinking; half-pixel centres). Returns float32; a no-op when the size matches."""
    images = jnp.asarray(images, jnp.float32)
    if images.shape[-3:-1] == (height, width):
        return images
    return _resize(images, int(height), int(width))


def resize_to_width(images: Float[ArrayLike, "*B H W C"], width: int) -> Float[Array, "*B h w C"]:
    """:func:`resize` to ``width`` pixels wide, the aspect ratio kept (height rounded, >= 1)."""
    images = jnp.asarray(images, jnp.float32)
    h, w = images.shape[-3:-1]
    return resize(images, max(1, int(round(h * width / w))), int(width))


def box_downsample(images: Float[Array, "*B Hk Wk C"], factor: int) -> Float[Array, "*B H W C"]:
    """The mean of every ``factor`` x ``factor`` block of the H and W axes (both divisible
    by ``factor``): the box filter a camera pixel (or a path tracer's box reconstruction
    filter) integrates, from ``factor``^2 regularly spaced samples per pixel."""
    k = int(factor)
    if k == 1:
        return images
    h, w = images.shape[-3] // k, images.shape[-2] // k
    if (h * k, w * k) != tuple(images.shape[-3:-1]):
        raise ValueError(f"box_downsample: image size {images.shape[-3:-1]} is not divisible by {k}")
    blocks = images.reshape(images.shape[:-3] + (h, k, w, k, images.shape[-1]))
    return blocks.mean(axis=(-4, -2))


def _gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    radius = int(truncate * float(sigma) + 0.5)  # scipy.ndimage's radius rule
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / float(sigma)) ** 2)
    return (w / w.sum()).astype(np.float32)


def _filter_axis(x: Array, kernel: np.ndarray, axis: int) -> Array:
    """1-D correlation along ``axis`` (-1 or -2) with scipy's "reflect" boundary (= numpy
    "symmetric"), as one convolution in float32 at full precision (no TF32 on GPUs)."""
    r = (kernel.shape[0] - 1) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = jnp.pad(x, pad, mode="symmetric")
    lead = x.shape[:-2]
    xp = xp.reshape((-1, 1) + xp.shape[-2:])
    k = jnp.asarray(kernel, jnp.float32)
    k = k.reshape(1, 1, -1, 1) if axis in (-2, x.ndim - 2) else k.reshape(1, 1, 1, -1)
    out = jax.lax.conv_general_dilated(xp, k, (1, 1), "VALID", precision=jax.lax.Precision.HIGHEST)
    return out.reshape(lead + x.shape[-2:])


@functools.partial(jax.jit, static_argnames=("sigma", "truncate"))
def _gaussian_filter(x: Array, sigma: float, truncate: float) -> Array:
    k = _gaussian_kernel(sigma, truncate)
    return _filter_axis(_filter_axis(x, k, -2), k, -1)


def gaussian_filter(x: Float[ArrayLike, "*B H W"], sigma: float, *, truncate: float = 4.0) -> Float[Array, "*B H W"]:
    """Gaussian smoothing over the last two axes, as ``scipy.ndimage.gaussian_filter``:
    same kernel (radius ``int(truncate * sigma + 0.5)``), same "reflect" boundary;
    ``sigma`` in pixels (<= 0: no smoothing). Leading axes are batch axes."""
    x = jnp.asarray(x, jnp.float32)
    if sigma <= 0:
        return x
    return _gaussian_filter(x, float(sigma), float(truncate))


SSIM_FILTER_SIZE = 11
SSIM_FILTER_SIGMA = 1.5


def _ssim_taps(size: int = SSIM_FILTER_SIZE, sigma: float = SSIM_FILTER_SIGMA) -> np.ndarray:
    """dm-pix's 1-D Gaussian taps (normalised to sum 1)."""
    half = size // 2
    shift = (2 * half - size + 1) / 2
    f = np.exp(-0.5 * ((np.arange(size) - half + shift) / sigma) ** 2)
    return (f / f.sum()).astype(np.float32)


def gaussian_blur(z: Float[Array, "*b H W C"]) -> Float[Array, "*b H-10 W-10 C"]:
    """The 11-tap, sigma-1.5 separable Gaussian blur of SSIM, "valid" (no padding), over
    the H and W axes of every channel: dm-pix's default ``filter_fn`` run as two
    single-channel plane convolutions (same taps, about 2x faster on XLA:CPU)."""
    taps = jnp.asarray(_ssim_taps(), z.dtype)
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


def ssim_map(
    a: Float[Array, "*B H W"],
    b: Float[Array, "*B H W"],
    *,
    sigma: float = 1.5,
    truncate: float = 3.5,
    max_val: float = 1.0,
) -> Float[Array, "*B H W"]:
    """Per-pixel SSIM of single-channel images, Gaussian window (sigma 1.5, 11 taps).

    Unlike dm-pix's "valid" map, the window statistics use reflected borders so the map
    has the input's size (maps of several scales can be added pixel by pixel)."""
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    f = functools.partial(gaussian_filter, sigma=sigma, truncate=truncate)
    mu_a, mu_b = f(a), f(b)
    var_a = f(a * a) - mu_a**2
    var_b = f(b * b) - mu_b**2
    cov = f(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return num / den


def grey(images: Float[ArrayLike, "*B H W 3"]) -> Float[Array, "*B H W"]:
    """Greyscale (ITU-R 601 luma weights 0.299, 0.587, 0.114; kornia's rgb_to_grayscale)."""
    x = jnp.asarray(images)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x @ jnp.asarray(_LUMA, x.dtype)


def _xp(x):
    return np if isinstance(x, np.ndarray) else jnp


def srgb_to_linear(x: Float[ArrayLike, "*s"]) -> Float[ArrayLike, "*s"]:
    """sRGB-encoded values in [0, 1] to linear light (clipped to [0, 1] first)."""
    xp = _xp(x)
    x = xp.clip(x, 0.0, 1.0)
    return xp.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: Float[ArrayLike, "*s"]) -> Float[ArrayLike, "*s"]:
    """Linear light in [0, 1] (clipped first) to sRGB-encoded values."""
    xp = _xp(x)
    x = xp.clip(x, 0.0, 1.0)
    return xp.where(x <= 0.0031308, 12.92 * x, 1.055 * xp.power(x, 1 / 2.4) - 0.055)
