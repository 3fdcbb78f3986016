"""Camera batches for pose estimation: selection, camera-to-world conversion, candidate
cameras on a sphere and in-plane rolls.

Poses returned to users are camera-to-world 4 x 4 in the Blender/OpenGL convention
(:func:`camera_to_c2w`), the convention of ``transforms.json`` data.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from ..camera import OPENGL_TO_OPENCV, Camera, camera_from_blender, look_at_c2w, stack_cameras
from ..host_rows import set_rows, take_rows

__all__ = ["index_cameras", "set_cameras", "interleave_cameras", "camera_to_c2w", "cameras_from_c2w", "sphere_cameras", "inplane_rotations",
           "num_cameras", "as_batch", "inplane_angles"]


def index_cameras(cameras: Camera, index) -> Camera:
    """Select cameras from a stacked batch (integer, slice or index array)."""
    return jax.tree_util.tree_map(lambda x: take_rows(x, index), cameras)


def set_cameras(cameras: Camera, index, new: Camera) -> Camera:
    """The stacked batch ``cameras`` with the cameras at ``index`` (index array) replaced by
    ``new`` (as many, stacked)."""
    return jax.tree_util.tree_map(lambda a, b: set_rows(a, index, b), cameras, new)


def interleave_cameras(batches: list[Camera]) -> Camera:
    """n stacked batches of Q cameras as one batch of Q * n, query-major (camera i of batch j
    at row i * n + j)."""
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a, 1).reshape((-1,) + a[0].shape[1:]), *batches)


def num_cameras(cameras: Camera) -> int:
    """Number of cameras in a stacked batch (1 for a single camera)."""
    return int(cameras.R.shape[0]) if cameras.R.ndim == 3 else 1


def as_batch(cameras: Camera) -> Camera:
    """A stacked batch (a single camera gets a leading axis of 1)."""
    return cameras if cameras.R.ndim == 3 else jax.tree_util.tree_map(lambda x: x[None], cameras)


def camera_to_c2w(camera: Camera) -> Float[np.ndarray, "*c 4 4"]:
    """Camera-to-world 4 x 4 (float64, Blender/OpenGL axes) of one camera or a stacked
    batch. The world-to-camera matrix may be a general linear map (the reference screw is
    only near a rotation): the centre is the exact preimage of the camera origin,
    ``-R^-1 t``, and the rotation block is the nearest rotation to R^T (polar factor)."""
    R = np.asarray(camera.R, np.float64)
    t = np.asarray(camera.t, np.float64)
    center = -np.linalg.solve(R, t[..., None])[..., 0]
    u, _, vt = np.linalg.svd(R)
    d = np.sign(np.linalg.det(u @ vt))
    u[..., :, -1] *= d[..., None]
    rot = u @ vt  # nearest rotation to R (det +1)
    c2w = np.zeros(R.shape[:-2] + (4, 4))
    c2w[..., :3, :3] = np.swapaxes(rot, -1, -2)
    c2w[..., :3, 3] = center
    c2w[..., 3, 3] = 1.0
    return c2w @ OPENGL_TO_OPENCV


def cameras_from_c2w(
    c2w: Float[np.ndarray, "C 4 4"], camera_angle_x: float, width: int, height: int
) -> Camera:
    """Stacked cameras from Blender/OpenGL camera-to-world matrices."""
    c2w = np.asarray(c2w, np.float64).reshape(-1, 4, 4)
    return stack_cameras([camera_from_blender(m, camera_angle_x, width, height) for m in c2w])


def sphere_cameras(
    num: int,
    radius: float,
    camera_angle_x: float,
    width: int,
    height: int,
    *,
    target=(0.0, 0.0, 0.0),
    up=(0.0, 0.0, 1.0),
    upper_hemisphere: bool = False,
) -> tuple[Camera, np.ndarray]:
    """``num`` cameras on a Fibonacci sphere of ``radius`` around ``target``, looking at it
    with ``up`` as the world's up axis (Blender scenes: +z). Returns (stacked cameras,
    Blender camera-to-world [num, 4, 4])."""
    if num < 1:
        raise ValueError(f"sphere_cameras: num must be >= 1, got {num}")
    i = np.arange(num) + 0.5
    zmin = 0.0 if upper_hemisphere else -1.0
    z = 1.0 - (1.0 - zmin) * i / num
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, 1.0))
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    # orthonormal frame with `up` as its z axis
    a = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(up, a)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    dirs = (r * np.cos(phi))[:, None] * e1 + (r * np.sin(phi))[:, None] * e2 + z[:, None] * up
    target = np.asarray(target, np.float64)
    c2w = np.stack([look_at_c2w(target + radius * d, target, up) for d in dirs])
    return cameras_from_c2w(c2w, camera_angle_x, width, height), c2w


def inplane_rotations(cameras: Camera, angles_rad) -> Camera:
    """Each camera rolled about its optical axis by each angle (the image rotates about
    the principal point). Returns a stacked batch of C * len(angles) cameras, camera-major."""
    cams = as_batch(cameras)
    ang = jnp.asarray(angles_rad, cams.R.dtype).reshape(-1)
    c, s = jnp.cos(ang), jnp.sin(ang)
    o, one = jnp.zeros_like(c), jnp.ones_like(c)
    Rz = jnp.stack([jnp.stack([c, -s, o], -1), jnp.stack([s, c, o], -1), jnp.stack([o, o, one], -1)], -2)
    R = jnp.einsum("aij,cjk->caik", Rz, cams.R).reshape(-1, 3, 3)
    t = jnp.einsum("aij,cj->cai", Rz, cams.t).reshape(-1, 3)
    n = ang.shape[0]

    def rep(x):
        return jnp.repeat(x, n, axis=0)

    return Camera(R=R, t=t, fx=rep(cams.fx), fy=rep(cams.fy), cx=rep(cams.cx), cy=rep(cams.cy),
                  width=cams.width, height=cams.height)


def inplane_angles(count: int) -> np.ndarray:
    """``count`` roll angles evenly spaced over the circle, excluding 0, wrapped into
    (-pi, pi] (radians)."""
    angles = np.arange(1, count + 1) * 2 * np.pi / (count + 1)
    return np.where(angles > np.pi, angles - 2 * np.pi, angles)
