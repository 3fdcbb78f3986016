"""The Gaussian scene pytree, its activations, initialisation and the 3DGS PLY format.

Stored values are *before* activation, exactly as the INRIA 3DGS code stores them:

- ``means``           [N, 3] world positions
- ``log_scales``      [N, 3] log of the per-axis standard deviations (activation ``exp``)
- ``quats``           [N, 4] rotation quaternions in (w, x, y, z) order, normalised on use
- ``opacity_logits``  [N]    logit of opacity (activation ``sigmoid``)
- ``sh0``             [N, 3] degree-0 spherical-harmonic coefficient of the colour
                             (activation ``max(0.5 + C0 * sh0, 0)``, as 3DGS)
- ``sh_rest``         [N, K - 1, 3] or None: the SH coefficients of degrees 1..D
                             (K = (D + 1)^2, INRIA's ``features_rest``; see
                             :mod:`splatjax.sh`); None (the default) is degree 0, a
                             view-independent colour
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
from .host_rows import take_rows
from .sh import MAX_SH_DEGREE, SH_C0, num_sh_coeffs, sh_degree_of, sh_to_rgb

__all__ = [
    "Gaussians",
    "rgb_to_sh0",
    "sh0_to_rgb",
    "init_random_gaussians",
    "load_ply",
    "save_ply",
    "ply_properties",
]

def sh0_to_rgb(sh0: Float[Array, "*b 3"]) -> Float[Array, "*b 3"]:
    """Degree-0 SH coefficient to RGB in [0, inf), as 3DGS: ``max(0.5 + C0 * sh0, 0)``."""
    return jnp.maximum(0.5 + SH_C0 * sh0, 0.0)


def rgb_to_sh0(rgb: Float[Array, "*b 3"]) -> Float[Array, "*b 3"]:
    """Inverse of :func:`sh0_to_rgb` for rgb > 0."""
    return (rgb - 0.5) / SH_C0


class Gaussians(eqx.Module):
    """A set of N 3D Gaussians with spherical-harmonic colour of degree 0-3; a pytree.
    ``sh_rest=None`` (the default) is degree 0: a view-independent colour."""

    means: Float[Array, "N 3"]
    log_scales: Float[Array, "N 3"]
    quats: Float[Array, "N 4"]
    opacity_logits: Float[Array, " N"]
    sh0: Float[Array, "N 3"]
    sh_rest: Float[Array, "N K1 3"] | None = None

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
    def sh_degree(self) -> int:
        """Stored SH degree (0-3), from the shape of ``sh_rest``."""
        if self.sh_rest is None:
            return 0
        return sh_degree_of(self.sh_rest.shape[-2] + 1)

    @property
    def sh(self) -> Float[Array, "N K 3"]:
        """All SH coefficients ``[N, (D + 1)^2, 3]`` (``sh0`` first)."""
        if self.sh_rest is None:
            return self.sh0[..., None, :]
        return jnp.concatenate([self.sh0[..., None, :], self.sh_rest], axis=-2)

    @property
    def colors(self) -> Float[Array, "N 3"]:
        """View-independent RGB colour (the degree-0 part), >= 0."""
        return sh0_to_rgb(self.sh0)

    def colors_for(self, camera_center: Float[Array, "*c 3"], degree=None) -> Float[Array, "*c N 3"]:
        """RGB colour (>= 0) seen from ``camera_center`` (world space; ``[C, 3]`` gives
        ``[C, N, 3]``), evaluated as INRIA 3DGS at the normalised direction (mean - centre).

        ``degree``: None = the stored degree; an int is capped at the stored degree; a traced
        scalar evaluates the stored degree with the higher degrees masked out. When the degree
        used is 0 the colour is the view-independent ``[N, 3]`` one (no SH is evaluated)."""
        stored = self.sh_degree
        if isinstance(degree, (int, np.integer)):
            stored = min(stored, max(int(degree), 0))
            degree = None
        if stored == 0:
            return self.colors
        center = jnp.asarray(camera_center, self.means.dtype)
        dirs = self.means - center[..., None, :]
        return sh_to_rgb(self.sh, dirs, stored, active_degree=degree)

    def with_sh_degree(self, degree: int) -> "Gaussians":
        """The same Gaussians stored at SH ``degree`` (0-3): higher coefficients dropped,
        missing ones zero (as 3DGS initialises them)."""
        if not 0 <= degree <= MAX_SH_DEGREE:
            raise ValueError(f"SH degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
        if degree == 0:
            return self._with_rest(None)
        k1 = num_sh_coeffs(degree) - 1
        rest = self.sh_rest if self.sh_rest is not None else jnp.zeros(self.sh0.shape[:-1] + (0, 3), self.sh0.dtype)
        have = rest.shape[-2]
        if have >= k1:
            rest = rest[..., :k1, :]
        else:
            rest = jnp.concatenate([rest, jnp.zeros(rest.shape[:-2] + (k1 - have, 3), rest.dtype)], axis=-2)
        return self._with_rest(rest)

    def _with_rest(self, sh_rest) -> "Gaussians":
        return Gaussians(means=self.means, log_scales=self.log_scales, quats=self.quats,
                         opacity_logits=self.opacity_logits, sh0=self.sh0, sh_rest=sh_rest)

    def astype(self, dtype) -> "Gaussians":
        return jax.tree_util.tree_map(lambda x: x.astype(dtype), self)

    def take(self, index) -> "Gaussians":
        """Select a subset of Gaussians (boolean mask or integer index array)."""
        return jax.tree_util.tree_map(lambda x: take_rows(x, index), self)


def init_random_gaussians(
    num: int,
    *,
    key: jax.Array,
    extent: float = 1.3,
    opacity: float = 0.1,
    points: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    sh_degree: int = 0,
) -> Gaussians:
    """Initial Gaussians as the reference: uniform points in [-extent, extent]^3 (or the
    given ``points``), random colours (or ``colors`` in [0, 1]), the given opacity,
    identity rotation, and isotropic scale = sqrt(mean squared distance to the 3 nearest
    neighbours) as in 3DGS (``distCUDA2``); SH coefficients of degree 1..``sh_degree`` zero."""
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
    ).with_sh_degree(sh_degree)


# ----------------------------------------------------------------------------- PLY
# Property names and order of the INRIA 3DGS ``save_ply`` for SH degree 0 (degrees 1-3 add
# f_rest_0 .. f_rest_{3(K-1)-1} after f_dc_2, channel-major: f_rest_{c (K-1) + k}).
PLY_PROPERTIES = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    + [f"scale_{i}" for i in range(3)]
    + [f"rot_{i}" for i in range(4)]
)
_F_REST_COUNTS = {3 * (num_sh_coeffs(d) - 1): d for d in range(MAX_SH_DEGREE + 1)}  # 0, 9, 24, 45


def ply_properties(sh_degree: int = 0) -> list[str]:
    """The INRIA 3DGS vertex properties, in order, for SH degree ``sh_degree``."""
    rest = [f"f_rest_{j}" for j in range(3 * (num_sh_coeffs(sh_degree) - 1))]
    i = PLY_PROPERTIES.index("f_dc_2") + 1
    return PLY_PROPERTIES[:i] + rest + PLY_PROPERTIES[i:]


def save_ply(gaussians: Gaussians, path: str | os.PathLike) -> None:
    """Write the standard binary little-endian 3DGS PLY (INRIA property names and order,
    values before activation; ``f_rest_*`` for SH degrees 1-3 in INRIA's channel-major
    order). Written to a temporary file and renamed, so an interrupted write never leaves
    a truncated model behind."""
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
    if g.sh_rest is not None:  # [N, K-1, 3] -> [N, 3, K-1] -> f_rest_{c (K-1) + k}
        rest = np.transpose(np.asarray(g.sh_rest), (0, 2, 1)).reshape(n, -1)
        columns.update({f"f_rest_{j}": rest[:, j] for j in range(rest.shape[1])})
    names = ply_properties(g.sh_degree)
    vertex = np.empty(n, dtype=[(name, "f4") for name in names])
    for name in names:
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


def _sh_rest_count(v: np.ndarray, path: str) -> int:
    """Number of ``f_rest_*`` properties (0, 9, 24 or 45, numbered from 0 without gaps)."""
    names = set(v.dtype.names or ())
    count = sum(1 for name in names if name.startswith("f_rest_"))
    if count not in _F_REST_COUNTS or any(f"f_rest_{j}" not in names for j in range(count)):
        raise DatasetError(f"model file {path!r} has {count} f_rest_* properties; a 3DGS PLY of SH degree 0-3 has "
                           "0, 9, 24 or 45 (f_rest_0 .. f_rest_{n-1})")
    return count


def load_ply(path: str | os.PathLike) -> Gaussians:
    """Read a 3DGS PLY (INRIA layout, binary or ASCII), SH degree 0-3: the degree follows
    from the number of ``f_rest_*`` properties (0, 9, 24, 45; INRIA's channel-major order).
    A missing, unreadable, truncated or non-3DGS file, no vertices, another ``f_rest``
    count, or non-finite values raise :class:`DatasetError` naming the file."""
    path = os.fspath(require_file(path, "model file"))
    v = _ply_vertices(path)
    n_rest = _sh_rest_count(v, path)

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
        sh_rest=None if n_rest == 0 else jnp.transpose(
            col(*[f"f_rest_{j}" for j in range(n_rest)]).reshape(-1, 3, n_rest // 3), (0, 2, 1)),
    )
