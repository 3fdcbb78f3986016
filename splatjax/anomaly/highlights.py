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

Units: images in [0, 1], RGB; the background is the renders' background colour.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

__all__ = ["common_brightening", "highlight_cap", "discount_highlights"]

OBJECT_TOLERANCE = 0.01  # a pixel is the object's where render or image differs from the background by more


def common_brightening(renders: Float[ArrayLike, "*b H W 3"], images: Float[ArrayLike, "*b H W 3"]
                       ) -> Float[Array, "*b H W"]:
    """``max(min_c (image_c - render_c), 0)`` per pixel: the brightening shared by R, G and B."""
    diff = jnp.asarray(images, jnp.float32) - jnp.asarray(renders, jnp.float32)
    return jnp.maximum(jnp.min(diff, axis=-1), 0.0)


def highlight_cap(renders: Float[ArrayLike, "B H W 3"], images: Float[ArrayLike, "B H W 3"],
                  background: Float[ArrayLike, " 3"], percentile: float = 99.9) -> float:
    """The ``percentile`` (0-100) of :func:`common_brightening` over the object's pixels of
    defect-free views and the model's renders at the same poses (object pixels: render or
    image further than 0.01 from ``background`` in some channel); 0.0 when there are none."""
    r = np.asarray(renders, np.float32)
    q = np.asarray(images, np.float32)
    bg = np.asarray(background, np.float32)
    obj = np.any(np.abs(r - bg) > OBJECT_TOLERANCE, axis=-1) | np.any(np.abs(q - bg) > OBJECT_TOLERANCE, axis=-1)
    if not obj.any():
        return 0.0
    s = np.asarray(common_brightening(r, q))[obj]
    return float(np.percentile(s, percentile))


def discount_highlights(renders: Float[ArrayLike, "*b H W 3"], queries: Float[ArrayLike, "*b H W 3"],
                        cap: float) -> Float[Array, "*b H W 3"]:
    """The queries with ``min(common_brightening, cap)`` taken from each channel."""
    s = jnp.minimum(common_brightening(renders, queries), jnp.float32(cap))
    return jnp.asarray(queries, jnp.float32) - s[..., None]
