"""The reference renderer: dense, pure JAX, slow on purpose, and the oracle every fast
kernel is tested against.

Conventions (shared exactly by the FFI kernels in ``cuda_ffi/``):

- Projection: ``p = R @ mean + t`` (OpenCV camera, R any 3 x 3 matrix), depth ``z = p.z``;
  Gaussians with ``z <= NEAR_PLANE`` are culled. Mean in pixels ``(fx x/z + cx, fy y/z + cy)``;
  pixel (row i, col j) is sampled at its centre (j + 0.5, i + 0.5).
- EWA: ``cov2d = J R Sigma R^T J^T + 0.3 I`` with Sigma = Rq S S^T Rq^T (Rq from the (w, x, y, z)
  quaternion, S = diag(scales)); J is the perspective Jacobian at the camera-space mean
  whose x/z and y/z are clamped to the frustum widened by 30 % (as 3DGS/gsplat:
  ``-(cx/fx + 0.3 tanfovx) <= x/z <= (W - cx)/fx + 0.3 tanfovx``, ``tanfovx = 0.5 W / fx``).
  A Gaussian with ``det(cov2d) <= 0`` is culled.
- Blending: Gaussians in increasing depth (ties: lower index first); at each pixel
  ``alpha = min(0.99, opacity * exp(-0.5 d^T cov2d^{-1} d))``; alphas below 1/255 are
  skipped; blending stops *before* a Gaussian that would bring the transmittance below
  1e-4; ``rgb = sum_i c_i alpha_i T_i + T_final * background``, ``alpha = 1 - T_final``.

Antialiased mode (``antialiased=True``, gsplat's ``rasterize_mode="antialiased"``): each
opacity is multiplied by ``sqrt(det(cov2d - 0.3 I) / det(cov2d))`` (undilated over dilated
determinant, 0 when the undilated one is <= 0), so that the dilation does not brighten
small Gaussians.

There is no radius cut-off here: a Gaussian touches exactly the pixels where its alpha
reaches 1/255. A tile kernel must therefore bound each Gaussian by the opacity-aware
radius ``sqrt(2 ln(255 opacity) lambda_max(cov2d))``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ..se3 import quat_to_rotmat

__all__ = [
    "NEAR_PLANE",
    "ALPHA_MIN",
    "ALPHA_MAX",
    "TRANSMITTANCE_MIN",
    "DILATION",
    "project",
    "opacity_compensation",
    "rasterize_reference",
]

NEAR_PLANE = 0.2
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
TRANSMITTANCE_MIN = 1e-4
DILATION = 0.3


def project(
    means: Float[Array, "N 3"],
    scales: Float[Array, "N 3"],
    quats: Float[Array, "N 4"],
    R: Float[Array, "3 3"],
    t: Float[Array, " 3"],
    intrinsics: Float[Array, " 4"],
    width: int,
    height: int,
) -> tuple[Float[Array, "N 2"], Float[Array, "N 3"], Float[Array, " N"], Float[Array, "N 3"], Bool[Array, " N"]]:
    """EWA projection. Returns (means2d in pixels, conics (a, b, c) of the inverse 2D
    covariance [[a, b], [b, c]], depths, cov2d (a, b, c) including the dilation, valid)."""
    fx, fy, cx, cy = intrinsics[0], intrinsics[1], intrinsics[2], intrinsics[3]
    p = means @ R.T + t
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    valid = z > NEAR_PLANE
    zs = jnp.where(valid, z, 1.0)
    tan_x = 0.5 * width / fx
    tan_y = 0.5 * height / fy
    lim_xp = (width - cx) / fx + 0.3 * tan_x
    lim_xn = cx / fx + 0.3 * tan_x
    lim_yp = (height - cy) / fy + 0.3 * tan_y
    lim_yn = cy / fy + 0.3 * tan_y
    tx = zs * jnp.clip(x / zs, -lim_xn, lim_xp)
    ty = zs * jnp.clip(y / zs, -lim_yn, lim_yp)
    o = jnp.zeros_like(zs)
    J = jnp.stack([
        jnp.stack([fx / zs, o, -fx * tx / (zs * zs)], -1),
        jnp.stack([o, fy / zs, -fy * ty / (zs * zs)], -1),
    ], -2)  # N 2 3
    Rq = quat_to_rotmat(quats)
    M = Rq * scales[:, None, :]  # Rq S
    cov3d = M @ jnp.swapaxes(M, -1, -2)
    T = J @ R  # N 2 3
    cov2d = T @ cov3d @ jnp.swapaxes(T, -1, -2)
    a = cov2d[:, 0, 0] + DILATION
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + DILATION
    det = a * c - b * b
    valid = valid & (det > 0)
    dets = jnp.where(valid, det, 1.0)
    conics = jnp.stack([c / dets, -b / dets, a / dets], -1)
    means2d = jnp.stack([fx * x / zs + cx, fy * y / zs + cy], -1)
    return means2d, conics, z, jnp.stack([a, b, c], -1), valid


def opacity_compensation(cov2d: Float[Array, "N 3"]) -> Float[Array, " N"]:
    """Antialiasing factor ``sqrt(det(cov2d - DILATION I) / det(cov2d))`` of dilated 2D
    covariances (a, b, c) as :func:`project` returns them; 0 where the undilated
    determinant is <= 0 (and where the dilated one is, such Gaussians being culled)."""
    a, b, c = cov2d[:, 0], cov2d[:, 1], cov2d[:, 2]
    det = a * c - b * b
    det0 = (a - DILATION) * (c - DILATION) - b * b
    ok = (det0 > 0) & (det > 0)
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, det0 / jnp.where(ok, det, 1.0), 1.0)), 0.0)


def _composite_pixels(pix, means2d, conics, opacities, colors, valid, background):
    """Front-to-back compositing of depth-sorted Gaussians at pixel centres pix [P, 2]."""
    d = pix[:, None, :] - means2d[None, :, :]
    dx, dy = d[..., 0], d[..., 1]
    power = -0.5 * (conics[:, 0] * dx * dx + conics[:, 2] * dy * dy) - conics[:, 1] * dx * dy
    alpha = jnp.minimum(ALPHA_MAX, opacities * jnp.exp(power))
    alpha = jnp.where(valid & (alpha >= ALPHA_MIN), alpha, 0.0)
    # T after each Gaussian; transmittance is monotone, so the Gaussians kept are a prefix.
    t_after = jnp.cumprod(1.0 - alpha, axis=-1)
    alpha = jnp.where(t_after >= TRANSMITTANCE_MIN, alpha, 0.0)
    one_minus = 1.0 - alpha
    t_before = jnp.cumprod(jnp.concatenate([jnp.ones_like(one_minus[:, :1]), one_minus[:, :-1]], -1), axis=-1)
    weights = alpha * t_before
    t_final = t_before[:, -1] * one_minus[:, -1]
    rgb = weights @ colors + t_final[:, None] * background[None, :]
    return rgb, 1.0 - t_final


def rasterize_reference(
    means: Float[Array, "N 3"],
    scales: Float[Array, "N 3"],
    quats: Float[Array, "N 4"],
    opacities: Float[Array, " N"],
    colors: Float[Array, "N 3"],
    R: Float[Array, "3 3"],
    t: Float[Array, " 3"],
    intrinsics: Float[Array, " 4"],
    background: Float[Array, " 3"],
    *,
    width: int,
    height: int,
    means2d_offset: Float[Array, "N 2"] | None = None,
    antialiased: bool = False,
    max_chunk_elements: int = 1 << 22,
) -> tuple[Float[Array, "H W 3"], Float[Array, "H W"]]:
    """Dense render of activated Gaussian parameters (scales > 0, opacities in (0, 1),
    colours >= 0) from one camera. ``means2d_offset`` (zeros) is added to the projected
    means; its gradient is the screen-space mean gradient used by densification.
    ``antialiased``: scale opacities by :func:`opacity_compensation` (static)."""
    means2d, conics, depths, cov2d, valid = project(means, scales, quats, R, t, intrinsics, width, height)
    if antialiased:
        opacities = opacities * opacity_compensation(cov2d)
    if means2d_offset is not None:
        means2d = means2d + means2d_offset
    order = jnp.argsort(jnp.where(valid, depths, jnp.inf), stable=True)
    means2d, conics, valid = means2d[order], conics[order], valid[order]
    opac, cols = opacities[order], colors[order]
    n = means.shape[0]
    rows_per_chunk = max(1, min(height, max_chunk_elements // max(1, n * width)))
    while height % rows_per_chunk:
        rows_per_chunk -= 1
    jj, ii = jnp.meshgrid(jnp.arange(width), jnp.arange(height))
    pix = jnp.stack([jj, ii], -1).astype(means.dtype) + 0.5  # H W 2, (u, v)
    pix = pix.reshape(height // rows_per_chunk, rows_per_chunk * width, 2)

    def chunk(p):
        return _composite_pixels(p, means2d, conics, opac, cols, valid, background)

    rgb, alpha = jax.lax.map(chunk, pix)
    return rgb.reshape(height, width, 3), alpha.reshape(height, width)
