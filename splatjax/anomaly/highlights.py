"""Specular highlights a view-independent model cannot render, taken out of the query before
its anomaly map.

A degree-0 (view-independent) Gaussian model renders a glossy part's diffuse colour; the
query shows, besides, the light's highlights at view-dependent places. Under the
dichromatic reflection model a highlight of a white light adds the same amount to R, G
and B, so the part of a query pixel's brightening over the render that is common to all
three channels,

    s(x) = max( min_c (q_c(x) - r_c(x)), 0 ),

is what a highlight can explain. It is taken out up to a cap measured per model:

    q'(x) = q(x) - min(s(x), cap)          (the same amount from each channel)

where ``cap`` is a high percentile of s over the object's pixels in defect-free views
rendered at their own poses (the heatmap calibration's training views,
:func:`highlight_cap`): a matte, well-fitted model leaves little unexplained brightening
there and gets a small cap, so a white stain or a hole onto a white background still
counts; a glossy part's cap covers its highlights. Colour changes (a stain of another hue)
and darkening (a missing chunk's shadowed inside) are never discounted.

A bright highlight on a saturated colour clips: on a magenta face (0.75, 0.40, 0.73) a
highlight of 0.5 reads (1, 0.9, 1), so red and blue show only 0.25 of it and the common
part leaves 0.25 of green, a false hue change. With a ``saturation`` level (the camera's
clipping point, e.g. 0.998 for 8-bit images that reach 255), a query channel at or above
it is known only to be at least that bright: the brightening is measured on the channels
that did not clip (where every one clipped, see below), and a clipped channel
keeps only what the render plus that brightening does not reach:

    q'_c = q_c - s                       (channel not clipped)
    q'_c = r_c + max(q_c - r_c - s, 0)   (channel clipped)

Without clipped channels this is the formula above. Where every channel clipped, the
pixel is white: a highlight that saturated all three, or the white background seen through
a hole or past a changed outline. A white region enclosed by the object (not connected to
the white that touches the image's border) is taken for a highlight, and the brightening is
the least that clips every channel, ``max_c (q_c - r_c)`` (so the whole of it is explained
when that is under the cap); a white region connected to the border is taken for
background and keeps the common part, ``min_c (q_c - r_c)``, as without saturation.

Light adds in linear units, not in the images' sRGB encoding, which compresses bright
values: the face above in linear light is (0.52, 0.13, 0.49) and a highlight that reads
(0.97, 0.78, 0.96) in sRGB is (0.94, 0.57, 0.91), the same 0.41-0.44 added to each
channel, where the sRGB values differ by 0.22-0.38. In linear space the brightening, the
cap and the discount are in linear light (render and query decoded from sRGB, the
discounted query encoded back; ``space="linear"``).

Units: images in [0, 1], RGB; the background is the renders' background colour.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float
from scipy import ndimage

from ..image import linear_to_srgb, srgb_to_linear

__all__ = ["common_brightening", "enclosed_white", "highlight_cap", "discount_highlights"]

OBJECT_TOLERANCE = 0.01  # a pixel is the object's where render or image differs from the background by more


def _clipped(images: Array, saturation: float | None) -> Array:
    """Per channel: the image reached ``saturation`` (all False when it is None or 0)."""
    if not saturation:
        return jnp.zeros(images.shape, bool)
    return images >= jnp.float32(saturation)


def enclosed_white(white: np.ndarray) -> np.ndarray:
    """Of a boolean mask ``[*b, H, W]`` (pixels where every channel clipped), the pixels whose
    8-connected region does not touch the image's border: white inside the object, not the
    background around it (``scipy.ndimage.label`` per image)."""
    white = np.asarray(white, bool)
    out = np.zeros_like(white)
    flat, flat_out = white.reshape(-1, *white.shape[-2:]), out.reshape(-1, *white.shape[-2:])
    for i, mask in enumerate(flat):
        if not mask.any():
            continue
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        flat_out[i] = (labels > 0) & ~np.isin(labels, border)
    return out


def common_brightening(renders: Float[ArrayLike, "*b H W 3"], images: Float[ArrayLike, "*b H W 3"],
                       saturation: float | None = None) -> Float[Array, "*b H W"]:
    """``max(min_c (image_c - render_c), 0)`` per pixel: the brightening shared by R, G and B;
    with ``saturation`` (in (0, 1]; None or 0: off) the minimum runs over the image's channels
    below it; where every channel reached it, ``max_c`` in white regions enclosed by the
    object (:func:`enclosed_white`) and ``min_c`` in the white connected to the border. With
    ``saturation`` the enclosed regions are found on the host (not jit-able)."""
    q = jnp.asarray(images, jnp.float32)
    diff = q - jnp.asarray(renders, jnp.float32)
    clipped = _clipped(q, saturation)
    every = jnp.all(clipped, axis=-1)
    counted = jnp.where(clipped & ~every[..., None], jnp.inf, diff)
    s = jnp.min(counted, axis=-1)
    if saturation:
        s = jnp.where(jnp.asarray(enclosed_white(np.asarray(every))), jnp.max(diff, axis=-1), s)
    return jnp.maximum(s, 0.0)


def highlight_cap(renders: Float[ArrayLike, "B H W 3"], images: Float[ArrayLike, "B H W 3"],
                  background: Float[ArrayLike, " 3"], percentile: float = 99.9,
                  saturation: float | None = None, space: str = "srgb") -> float:
    """The ``percentile`` (0-100) of :func:`common_brightening` (with ``saturation``, in
    ``space``: "srgb" or "linear") over the object's pixels of
    defect-free views and the model's renders at the same poses (object pixels: render or
    image further than 0.01 from ``background`` in some channel); 0.0 when there are none."""
    r = np.asarray(renders, np.float32)
    q = np.asarray(images, np.float32)
    bg = np.asarray(background, np.float32)
    obj = np.any(np.abs(r - bg) > OBJECT_TOLERANCE, axis=-1) | np.any(np.abs(q - bg) > OBJECT_TOLERANCE, axis=-1)
    if not obj.any():
        return 0.0
    s = np.asarray(common_brightening(*_in_space(r, q, saturation, space)))[obj]
    return float(np.percentile(s, percentile))


def discount_highlights(renders: Float[ArrayLike, "*b H W 3"], queries: Float[ArrayLike, "*b H W 3"],
                        cap: float, saturation: float | None = None, space: str = "srgb"
                        ) -> Float[Array, "*b H W 3"]:
    """The queries with ``s = min(common_brightening, cap)`` taken from each channel; with
    ``saturation``, a channel that reached it keeps ``r_c + max(q_c - r_c - s, 0)``; with
    ``space`` "linear", all of it in linear light (``cap`` in linear units; see the module doc)."""
    r, q, saturation = _in_space(jnp.asarray(renders, jnp.float32), jnp.asarray(queries, jnp.float32), saturation,
                                 space)
    s = jnp.minimum(common_brightening(r, q, saturation), jnp.float32(cap))[..., None]
    out = jnp.where(_clipped(q, saturation), r + jnp.maximum(q - r - s, 0.0), q - s)
    return linear_to_srgb(out) if space == "linear" else out


def _in_space(renders, images, saturation: float | None, space: str):
    """(renders, images, saturation) in ``space``: as given for "srgb", decoded to linear light
    (the clipping level too) for "linear"."""
    if space == "srgb":
        return renders, images, saturation
    if space != "linear":
        raise ValueError(f"highlight space must be 'srgb' or 'linear', got {space!r}")
    level = float(srgb_to_linear(np.float64(saturation))) if saturation else saturation
    return srgb_to_linear(renders), srgb_to_linear(images), level
