"""Pinhole cameras in the OpenCV convention and conversion from Blender/NeRF poses.

A :class:`Camera` holds the *world-to-camera* transform ``x_cam = R @ x_world + t`` in the
OpenCV convention (x right, y down, camera looks down +z), focal lengths and principal
point in pixels, and the static image size. Pixel (row i, column j) has its centre at
image coordinates (u, v) = (j + 0.5, i + 0.5); a camera-space point projects to
``u = fx * x / z + cx``, ``v = fy * y / z + cy``.

Blender/NeRF ``transform_matrix`` is camera-to-world in the OpenGL convention (x right,
y up, camera looks down -z); OpenCV axes are obtained by negating its columns 1 and 2.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = [
    "Camera",
    "camera_from_blender",
    "blender_c2w_from_camera",
    "look_at_c2w",
    "focal_from_fov",
    "stack_cameras",
    "OPENGL_TO_OPENCV",
]

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


class Camera(eqx.Module):
    """World-to-camera pose (OpenCV) plus intrinsics; a pytree. Stack several with
    :func:`stack_cameras` to get a camera batch with a leading axis C on every array leaf
    (width and height are static and shared)."""

    R: Float[Array, "3 3"]
    t: Float[Array, " 3"]
    fx: Float[Array, ""]
    fy: Float[Array, ""]
    cx: Float[Array, ""]
    cy: Float[Array, ""]
    width: int = eqx.field(static=True)
    height: int = eqx.field(static=True)

    @property
    def intrinsics(self) -> Float[Array, "*c 4"]:
        """(fx, fy, cx, cy) stacked on the last axis."""
        return jnp.stack([self.fx, self.fy, self.cx, self.cy], axis=-1)

    @property
    def viewmat(self) -> Float[Array, "*c 4 4"]:
        """4 x 4 world-to-camera matrix (OpenCV)."""
        top = jnp.concatenate([self.R, self.t[..., :, None]], axis=-1)
        bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], top.dtype), top.shape[:-2] + (1, 4))
        return jnp.concatenate([top, bottom], axis=-2)

    @property
    def center(self) -> Float[Array, "*c 3"]:
        """Camera centre in world coordinates, ``-R^T t``."""
        return -jnp.einsum("...ji,...j->...i", self.R, self.t)

    def c2w_opencv(self) -> Float[Array, "*c 4 4"]:
        """Camera-to-world 4 x 4 in the OpenCV convention (assumes R is a rotation)."""
        Rt = jnp.swapaxes(self.R, -1, -2)
        top = jnp.concatenate([Rt, self.center[..., :, None]], axis=-1)
        bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], top.dtype), top.shape[:-2] + (1, 4))
        return jnp.concatenate([top, bottom], axis=-2)

    def with_pose(self, R, t) -> "Camera":
        return Camera(R=R, t=t, fx=self.fx, fy=self.fy, cx=self.cx, cy=self.cy,
                      width=self.width, height=self.height)

    def scaled(self, width: int, height: int) -> "Camera":
        """The same camera for an image resized to (width, height): intrinsics scaled."""
        sx, sy = width / self.width, height / self.height
        return Camera(R=self.R, t=self.t, fx=self.fx * sx, fy=self.fy * sy,
                      cx=self.cx * sx, cy=self.cy * sy, width=width, height=height)


def focal_from_fov(camera_angle_x: float, width: int) -> float:
    """Focal length in pixels from the horizontal field of view (radians)."""
    return 0.5 * width / np.tan(0.5 * camera_angle_x)


def camera_from_blender(
    c2w: Float[Array, "4 4"] | np.ndarray,
    camera_angle_x: float,
    width: int,
    height: int,
    *,
    camera_angle_y: float | None = None,
    dtype=jnp.float32,
) -> Camera:
    """Camera from a Blender/NeRF camera-to-world matrix (OpenGL axes) and horizontal field
    of view in radians. Square pixels (fy = fx) unless ``camera_angle_y`` is given;
    principal point at the image centre."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
        raise ValueError(f"camera-to-world must be a finite 4x4 matrix, got shape {c2w.shape}")
    c2w_cv = c2w @ OPENGL_TO_OPENCV
    R = c2w_cv[:3, :3].T
    t = -R @ c2w_cv[:3, 3]
    fx = focal_from_fov(camera_angle_x, width)
    fy = fx if camera_angle_y is None else focal_from_fov(camera_angle_y, height)
    return Camera(
        R=jnp.asarray(R, dtype), t=jnp.asarray(t, dtype),
        fx=jnp.asarray(fx, dtype), fy=jnp.asarray(fy, dtype),
        cx=jnp.asarray(width / 2.0, dtype), cy=jnp.asarray(height / 2.0, dtype),
        width=int(width), height=int(height),
    )


def blender_c2w_from_camera(camera: Camera) -> Float[Array, "*c 4 4"]:
    """Camera-to-world in the Blender/OpenGL convention (inverse of
    :func:`camera_from_blender`'s pose part)."""
    return camera.c2w_opencv() @ jnp.asarray(OPENGL_TO_OPENCV, camera.R.dtype)


def look_at_c2w(
    position: Float[np.ndarray, " 3"],
    target: Float[np.ndarray, " 3"] = (0.0, 0.0, 0.0),
    up: Float[np.ndarray, " 3"] = (0.0, 0.0, 1.0),
    *,
    roll: float = 0.0,
) -> Float[np.ndarray, "4 4"]:
    """Blender/OpenGL camera-to-world for a camera at ``position`` looking at ``target``
    (world ``up`` kept up; any right vector when looking along it), then rolled by
    ``roll`` radians about the viewing axis."""
    position = np.asarray(position, np.float64)
    back = position - np.asarray(target, np.float64)
    back = back / np.linalg.norm(back)
    right = np.cross(np.asarray(up, np.float64), back)
    if np.linalg.norm(right) < 1e-6:
        right = np.cross(np.array([0.0, 1.0, 0.0]), back)
    right = right / np.linalg.norm(right)
    cam_up = np.cross(back, right)
    c, s = math.cos(roll), math.sin(roll)
    right, cam_up = c * right + s * cam_up, -s * right + c * cam_up
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, cam_up, back, position
    return m


def stack_cameras(cameras: list[Camera]) -> Camera:
    """Stack cameras of one image size into a batch (leading axis C on each array leaf)."""
    sizes = {(c.width, c.height) for c in cameras}
    if len(sizes) != 1:
        raise ValueError(f"cannot stack cameras of different image sizes: {sorted(sizes)}")
    import jax

    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *cameras)
