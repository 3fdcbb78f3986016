"""The Gaussian scene pytree, its activations, initialisation and the 3DGS PLY format.

Stored values are *before* activation, exactly as the INRIA 3DGS code stores them:

- ``means``           [N, 3] world positions
- ``log_scales``      [N, 3] log of the per-axis standard deviations (activation ``exp``)
- ``quats``           [N, 4] rotation quaternions in (w, x, y, z) order, normalised on use
- ``opacity_logits``  [N]    logit of opacity (activation ``sigmoid``)
- ``sh0``             [N, 3] degree-0 spherical-harmonic coefficient of the colour
                             (activation ``max(0.5 + C0 * sh0, 0)``, as 3DGS)
"""

from __future__ import annotations

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .errors import DatasetError
from .files import atomic_write, require_file

__all__ = [
    "Gaussians",
    "rgb_to_sh0",
    "sh0_to_rgb",
    "init_random_gaussians",
    "load_ply",
    "save_ply",
]

SH_C0 = 0.28209479177387814  # Y_0^0 = 1 / (2 sqrt(pi))


def sh0_to_rgb(sh0: Float[Array, "*b 3"]) -> Float[Array, "*b 3"]:
    """Degree-0 SH coefficient to RGB in [0, inf), as 3DGS: ``max(0.5 + C0 * sh0, 0)``."""
    return jnp.maximum(0.5 + SH_C0 * sh0, 0.0)


def rgb_to_sh0(rgb: Float[Array, "*b 3"]) -> Float[Array, "*b 3"]:
    """Inverse of :func:`sh0_to_rgb` for rgb > 0."""
    return (rgb - 0.5) / SH_C0


class Gaussians(eqx.Module):
    """A set of N 3D Gaussians with degree-0 (view-independent) colour; a pytree."""

    means: Float[Array, "N 3"]
    log_scales: Float[Array, "N 3"]
    quats: Float[Array, "N 4"]
    opacity_logits: Float[Array, " N"]
    sh0: Float[Array, "N 3"]

    @property
    def num(self) -> int:
        return self.means.shape[0]

    @property
    def scales(self) -> Float[Array, "N 3"]:
        """Per-axis standard deviations (world units)."""
        return jnp.exp(self.log_scales)

    @property
    def unit_quats(self) -> Float[Array, "N 4"]:
        """Normalised (w, x, y, z) quaternions."""
        return self.quats / jnp.linalg.norm(self.quats, axis=-1, keepdims=True)

    @property
    def opacities(self) -> Float[Array, " N"]:
        return jax.nn.sigmoid(self.opacity_logits)

    @property
    def colors(self) -> Float[Array, "N 3"]:
        """RGB colour, >= 0."""
        return sh0_to_rgb(self.sh0)

    def astype(self, dtype) -> "Gaussians":
        return jax.tree_util.tree_map(lambda x: x.astype(dtype), self)

    def take(self, index) -> "Gaussians":
        """Select a subset of Gaussians (boolean mask or integer index array)."""
        return jax.tree_util.tree_map(lambda x: x[index], self)


def init_random_gaussians(
    num: int,
    *,
    key: jax.Array,
    extent: float = 1.3,
    opacity: float = 0.1,
    points: np.ndarray | None = None,
    colors: np.ndarray | None = None,
) -> Gaussians:
    """Initial Gaussians as the reference: uniform points in [-extent, extent]^3 (or the
    given ``points``), random colours (or ``colors`` in [0, 1]), the given opacity,
    identity rotation, and isotropic scale = sqrt(mean squared distance to the 3 nearest
    neighbours) as in 3DGS (``distCUDA2``)."""
    from scipy.spatial import cKDTree

    k_pos, k_col = jax.random.split(key)
    if points is None:
        pts = np.asarray(jax.random.uniform(k_pos, (num, 3), minval=-extent, maxval=extent))
    else:
        pts = np.asarray(points, dtype=np.float32)
        num = pts.shape[0]
    if colors is None:
        rgb = np.asarray(jax.random.uniform(k_col, (num, 3)))
    else:
        rgb = np.asarray(colors, dtype=np.float32)
    dist, _ = cKDTree(pts).query(pts, k=4)
    mean_sq = np.maximum(np.mean(dist[:, 1:] ** 2, axis=1), 1e-7)
    log_scale = np.log(np.sqrt(mean_sq))
    quats = np.zeros((num, 4), np.float32)
    quats[:, 0] = 1.0
    return Gaussians(
        means=jnp.asarray(pts, jnp.float32),
        log_scales=jnp.asarray(np.repeat(log_scale[:, None], 3, axis=1), jnp.float32),
        quats=jnp.asarray(quats),
        opacity_logits=jnp.full((num,), float(np.log(opacity / (1 - opacity))), jnp.float32),
        sh0=rgb_to_sh0(jnp.asarray(rgb, jnp.float32)),
    )


# ----------------------------------------------------------------------------- PLY
# Property names and order of the INRIA 3DGS ``save_ply`` for SH degree 0.
PLY_PROPERTIES = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    + [f"scale_{i}" for i in range(3)]
    + [f"rot_{i}" for i in range(4)]
)


def save_ply(gaussians: Gaussians, path: str | os.PathLike) -> None:
    """Write the standard binary little-endian 3DGS PLY (INRIA property names and order,
    SH degree 0, values before activation). Written to a temporary file and renamed, so
    an interrupted write never leaves a truncated model behind."""
    from plyfile import PlyData, PlyElement

    g = jax.device_get(gaussians)
    n = np.asarray(g.means).shape[0]
    columns = {
        "x": g.means[:, 0], "y": g.means[:, 1], "z": g.means[:, 2],
        "nx": np.zeros(n), "ny": np.zeros(n), "nz": np.zeros(n),
        "f_dc_0": g.sh0[:, 0], "f_dc_1": g.sh0[:, 1], "f_dc_2": g.sh0[:, 2],
        "opacity": g.opacity_logits,
        **{f"scale_{i}": g.log_scales[:, i] for i in range(3)},
        **{f"rot_{i}": g.quats[:, i] for i in range(4)},
    }
    vertex = np.empty(n, dtype=[(name, "f4") for name in PLY_PROPERTIES])
    for name in PLY_PROPERTIES:
        vertex[name] = np.asarray(columns[name], dtype=np.float32)
    ply = PlyData([PlyElement.describe(vertex, "vertex")], text=False)
    atomic_write(path, ply.write)


def _ply_vertices(path: str) -> np.ndarray:
    """The vertex table of a PLY file, or a :class:`DatasetError` naming the file."""
    from plyfile import PlyData

    try:
        with open(path, "rb") as f:
            ply = PlyData.read(f)
        v = ply["vertex"].data
    except PermissionError as exc:
        raise DatasetError(f"model file {path!r} cannot be read: permission denied") from exc
    except Exception as exc:  # plyfile raises many types (ValueError, KeyError, struct.error ...)
        raise DatasetError(f"model file {path!r} is not a readable PLY file with a 'vertex' element "
                           f"(truncated or corrupt? {type(exc).__name__}: {exc})") from exc
    missing = [p for p in PLY_PROPERTIES if p not in ("nx", "ny", "nz") and p not in (v.dtype.names or ())]
    if missing:
        raise DatasetError(f"model file {path!r} is not a 3DGS PLY: missing vertex properties {missing}")
    if len(v) == 0:
        raise DatasetError(f"model file {path!r} holds no Gaussians (0 vertices)")
    return v


def load_ply(path: str | os.PathLike) -> Gaussians:
    """Read a 3DGS PLY (INRIA layout, binary or ASCII). Higher-order SH (``f_rest_*``) is
    ignored: splatjax models are degree 0. A missing, unreadable, truncated or non-3DGS
    file, no vertices, or non-finite values raise :class:`DatasetError` naming the file."""
    path = os.fspath(require_file(path, "model file"))
    v = _ply_vertices(path)

    def col(*names):
        out = np.stack([np.asarray(v[n], np.float32) for n in names], axis=-1)
        if not np.all(np.isfinite(out)):
            bad = int(np.sum(~np.all(np.isfinite(out), axis=-1)))
            raise DatasetError(f"model file {path!r} has NaN or infinite {'/'.join(names)} "
                               f"in {bad} of {len(out)} Gaussians")
        return jnp.asarray(out)

    return Gaussians(
        means=col("x", "y", "z"),
        log_scales=col("scale_0", "scale_1", "scale_2"),
        quats=col("rot_0", "rot_1", "rot_2", "rot_3"),
        opacity_logits=col("opacity")[:, 0],
        sh0=col("f_dc_0", "f_dc_1", "f_dc_2"),
    )
