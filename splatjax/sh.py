"""Real spherical harmonics of degree 0-3 for view-dependent colour, as INRIA 3DGS.

Coefficients are stored per Gaussian as ``sh [N, K, 3]`` with ``K = (degree + 1)^2``
basis functions in the INRIA order (index ``l^2 + l + m`` for ``-l <= m <= l``) and the
INRIA constants and signs (``sh_utils.eval_sh``: the real harmonics with the
Condon-Shortley phase, e.g. ``Y_1 = -C1 y, C1 z, -C1 x``). The colour seen along the unit
direction ``d`` (from the camera centre to the Gaussian's mean, world space) is
``max(sum_k Y_k(d) sh_k + 0.5, 0)``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = [
    "SH_C0",
    "SH_C1",
    "SH_C2",
    "SH_C3",
    "MAX_SH_DEGREE",
    "num_sh_coeffs",
    "sh_degree_of",
    "sh_basis",
    "sh_to_rgb",
]

MAX_SH_DEGREE = 3
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
         1.445305721320277, -0.5900435899266435)


def num_sh_coeffs(degree: int) -> int:
    """Basis functions up to ``degree``: ``(degree + 1)^2``."""
    return (degree + 1) ** 2


def sh_degree_of(num_coeffs: int) -> int:
    """The degree whose basis has ``num_coeffs`` functions (1, 4, 9 or 16); ``ValueError``
    otherwise."""
    for d in range(MAX_SH_DEGREE + 1):
        if num_sh_coeffs(d) == num_coeffs:
            return d
    raise ValueError(f"{num_coeffs} SH coefficients is not (degree + 1)^2 for a degree in 0..{MAX_SH_DEGREE}")


def sh_basis(dirs: Float[Array, "*b 3"], degree: int) -> Float[Array, "*b K"]:
    """The ``(degree + 1)^2`` INRIA real SH basis values at unit directions ``dirs``."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    out = [jnp.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2.0 * zz - xx - yy), SH_C2[3] * x * z,
                SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3.0 * xx - yy), SH_C3[1] * x * y * z, SH_C3[2] * y * (4.0 * zz - xx - yy),
                SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy), SH_C3[4] * x * (4.0 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3.0 * yy)]
    return jnp.stack(out, axis=-1)


def sh_to_rgb(
    sh: Float[Array, "*b K 3"],
    dirs: Float[Array, "*b 3"],
    degree: int | None = None,
    active_degree: Array | int | None = None,
) -> Float[Array, "*b 3"]:
    """Colour ``max(sum_k Y_k(d) sh_k + 0.5, 0)`` seen along ``dirs`` (any length, normalised
    here; world space, from the camera centre to the Gaussian) from the first
    ``(degree + 1)^2`` coefficients (``degree`` default: all of ``sh``'s).

    ``active_degree`` (optional, may be traced): basis functions of a higher degree count as
    zero (the fitting schedule's warm-up without recompiling)."""
    full = sh_degree_of(sh.shape[-2])
    degree = full if degree is None else degree
    if degree > full:
        raise ValueError(f"SH degree {degree} asked of {sh.shape[-2]} coefficients (degree {full})")
    n2 = jnp.sum(dirs * dirs, axis=-1, keepdims=True)
    unit = jnp.where(n2 > 0, dirs / jnp.sqrt(jnp.where(n2 > 0, n2, 1.0)), 0.0)
    basis = sh_basis(unit, degree)
    if active_degree is not None:
        level = jnp.asarray([d for d in range(degree + 1) for _ in range(2 * d + 1)])
        basis = jnp.where(level <= active_degree, basis, 0.0)
    rgb = jnp.einsum("...k,...kc->...c", basis, sh[..., : num_sh_coeffs(degree), :])
    return jnp.maximum(rgb + 0.5, 0.0)
