"""Rotations and rigid motions: quaternions (w, x, y, z), the SE(3) screw map of SplatPose,
applying a rigid motion to Gaussians, and the equivalent camera move.

Column-vector convention throughout: a rigid motion (A, b) maps x -> A @ x + b.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .camera import Camera
from .gaussians import Gaussians

__all__ = [
    "quat_normalize",
    "quat_multiply",
    "quat_conjugate",
    "quat_to_rotmat",
    "rotmat_to_quat",
    "skew",
    "screw_to_transform",
    "screw_to_transform_reference",
    "so3_exp",
    "transform_gaussians",
    "transform_camera",
    "rotation_angle",
    "half_rotation_angle",
]


def quat_normalize(q: Float[Array, "*b 4"]) -> Float[Array, "*b 4"]:
    return q / jnp.linalg.norm(q, axis=-1, keepdims=True)


def quat_multiply(a: Float[Array, "*b 4"], b: Float[Array, "*b 4"]) -> Float[Array, "*b 4"]:
    """Hamilton product a * b of (w, x, y, z) quaternions (rotation b first, then a)."""
    aw, ax, ay, az = jnp.moveaxis(a, -1, 0)
    bw, bx, by, bz = jnp.moveaxis(b, -1, 0)
    return jnp.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def quat_conjugate(q: Float[Array, "*b 4"]) -> Float[Array, "*b 4"]:
    return q * jnp.array([1.0, -1.0, -1.0, -1.0], q.dtype)


def quat_to_rotmat(q: Float[Array, "*b 4"]) -> Float[Array, "*b 3 3"]:
    """Rotation matrix of a (w, x, y, z) quaternion (normalised first)."""
    w, x, y, z = jnp.moveaxis(quat_normalize(q), -1, 0)
    return jnp.stack([
        jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], axis=-2)


def rotmat_to_quat(R: Float[Array, "*b 3 3"]) -> Float[Array, "*b 4"]:
    """(w, x, y, z) quaternion with w >= 0 of a rotation matrix (Shepperd's method, all
    four branches evaluated and the best-conditioned one selected)."""
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    tr = m00 + m11 + m22
    cands = jnp.stack([
        jnp.stack([1 + tr, R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1),
        jnp.stack([R[..., 2, 1] - R[..., 1, 2], 1 + m00 - m11 - m22, R[..., 0, 1] + R[..., 1, 0], R[..., 0, 2] + R[..., 2, 0]], -1),
        jnp.stack([R[..., 0, 2] - R[..., 2, 0], R[..., 0, 1] + R[..., 1, 0], 1 - m00 + m11 - m22, R[..., 1, 2] + R[..., 2, 1]], -1),
        jnp.stack([R[..., 1, 0] - R[..., 0, 1], R[..., 0, 2] + R[..., 2, 0], R[..., 1, 2] + R[..., 2, 1], 1 - m00 - m11 + m22], -1),
    ], axis=-2)
    best = jnp.argmax(jnp.stack([tr, m00, m11, m22], -1), axis=-1)
    q = jnp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = quat_normalize(q)
    return q * jnp.where(q[..., :1] < 0, -1.0, 1.0)


def skew(w: Float[Array, "*b 3"]) -> Float[Array, "*b 3 3"]:
    """[w]_x, the cross-product matrix: skew(w) @ v == cross(w, v)."""
    x, y, z = jnp.moveaxis(w, -1, 0)
    o = jnp.zeros_like(x)
    return jnp.stack([jnp.stack([o, -z, y], -1), jnp.stack([z, o, -x], -1), jnp.stack([-y, x, o], -1)], -2)


def screw_to_transform_reference(
    w: Float[Array, " 3"], v: Float[Array, " 3"], theta: Float[Array, ""]
) -> tuple[Float[Array, "3 3"], Float[Array, " 3"]]:
    """SplatPose's screw map, exactly as the reference code (w is *not* normalised, so R is
    only near a rotation):
    R = I + sin(theta) [w] + (1 - cos(theta)) [w]^2,
    t = (I theta + (1 - cos(theta)) [w] + (theta - sin(theta)) [w]^2) v."""
    W = skew(w)
    W2 = W @ W
    eye = jnp.eye(3, dtype=W.dtype)
    R = eye + jnp.sin(theta) * W + (1 - jnp.cos(theta)) * W2
    V = eye * theta + (1 - jnp.cos(theta)) * W + (theta - jnp.sin(theta)) * W2
    return R, V @ v


def screw_to_transform(
    w: Float[Array, " 3"], v: Float[Array, " 3"], theta: Float[Array, ""], *, eps: float = 1e-12
) -> tuple[Float[Array, "3 3"], Float[Array, " 3"]]:
    """The corrected screw map: the SE(3) exponential of the twist (w_hat theta, v theta)
    with w_hat = w / |w| (a proper rotation for any input). With |w| = 1 it equals
    :func:`screw_to_transform_reference`."""
    norm = jnp.sqrt(jnp.sum(w * w) + eps)
    return screw_to_transform_reference(w / norm, v, theta)


def so3_exp(phi: Float[Array, "*b 3"]) -> Float[Array, "*b 3 3"]:
    """Rodrigues' formula, stable at phi = 0 (Taylor terms for small angles)."""
    th2 = jnp.sum(phi * phi, axis=-1)[..., None, None]
    small = th2 < 1e-8
    th2s = jnp.where(small, 1.0, th2)
    th = jnp.sqrt(th2s)
    a = jnp.where(small, 1.0 - th2 / 6.0, jnp.sin(th) / th)
    b = jnp.where(small, 0.5 - th2 / 24.0, (1.0 - jnp.cos(th)) / th2s)
    W = skew(phi)
    return jnp.eye(3, dtype=phi.dtype) + a * W + b * (W @ W)


def transform_gaussians(gaussians: Gaussians, A: Float[Array, "3 3"], b: Float[Array, " 3"]) -> Gaussians:
    """Move the object by the rigid motion x -> A x + b: means are mapped and each
    Gaussian's rotation is composed with A (A must be a rotation). Degree-0 colour only:
    view-dependent (SH degree >= 1) colour would need its coefficients rotated, which is
    not implemented, so such a model is refused (move the camera instead:
    :func:`transform_camera` is exact for any degree)."""
    if gaussians.sh_rest is not None and gaussians.sh_rest.shape[-2] > 0:
        raise ValueError(f"transform_gaussians: the model has SH degree {gaussians.sh_degree} colour, whose "
                         "coefficients would have to be rotated (not implemented); use transform_camera")
    qa = rotmat_to_quat(A)
    return Gaussians(
        means=gaussians.means @ A.T + b,
        log_scales=gaussians.log_scales,
        quats=quat_multiply(jnp.broadcast_to(qa, gaussians.quats.shape), gaussians.quats),
        opacity_logits=gaussians.opacity_logits,
        sh0=gaussians.sh0,
    )


def transform_camera(camera: Camera, A: Float[Array, "3 3"], b: Float[Array, " 3"]) -> Camera:
    """The camera that sees the *untouched* object exactly as ``camera`` sees the object
    moved by x -> A x + b: world-to-camera becomes (R A, R b + t). Valid for any 3 x 3 A
    (also the reference's non-orthonormal screw matrix), since the renderer treats the
    world-to-camera matrix as a general linear map."""
    return camera.with_pose(camera.R @ A, camera.R @ b + camera.t)


def rotation_angle(R1: Float[Array, "*b 3 3"], R2: Float[Array, "*b 3 3"]) -> Float[Array, "*b"]:
    """Full rotation angle of R1^T R2 in radians, computed as 2 arccos |q1 . q2|."""
    d = jnp.abs(jnp.sum(rotmat_to_quat(R1) * rotmat_to_quat(R2), axis=-1))
    return 2.0 * jnp.arccos(jnp.clip(d, 0.0, 1.0))


def half_rotation_angle(R1: Float[Array, "*b 3 3"], R2: Float[Array, "*b 3 3"]) -> Float[Array, "*b"]:
    """arccos |q1 . q2|: half the rotation angle, the quantity the SplatPose reference code
    stores in its pose-error table."""
    return 0.5 * rotation_angle(R1, R2)


# keep jax imported for users doing `from splatjax.se3 import *` in notebooks
del jax
