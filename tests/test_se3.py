"""splatjax.se3: quaternions, the screw map (reference and exact), applying a rigid motion
to Gaussians and to a camera, rotation angles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import splatjax as sj
from splatjax import se3

from scenes import look_at_c2w


def test_quaternion_matrix_round_trip_and_scipy_agreement():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 4))
    R = np.asarray(se3.quat_to_rotmat(jnp.asarray(q, jnp.float32)))
    # scipy uses (x, y, z, w)
    R_scipy = Rotation.from_quat(np.concatenate([q[:, 1:], q[:, :1]], 1)).as_matrix()
    np.testing.assert_allclose(R, R_scipy, atol=1e-5)
    q2 = np.asarray(se3.rotmat_to_quat(jnp.asarray(R)))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(np.sum(q2 * qn, 1)), 1.0, atol=1e-5)
    assert np.all(q2[:, 0] >= 0)


def test_quat_multiply_composes_rotations():
    rng = np.random.default_rng(1)
    a, b = (jnp.asarray(rng.normal(size=(10, 4)), jnp.float32) for _ in range(2))
    a, b = se3.quat_normalize(a), se3.quat_normalize(b)
    lhs = se3.quat_to_rotmat(se3.quat_multiply(a, b))
    rhs = se3.quat_to_rotmat(a) @ se3.quat_to_rotmat(b)
    np.testing.assert_allclose(np.asarray(lhs), np.asarray(rhs), atol=1e-5)


def test_screw_reference_form_matches_exp_map_for_unit_axis():
    rng = np.random.default_rng(2)
    for _ in range(5):
        w = rng.normal(size=3)
        w /= np.linalg.norm(w)
        v, theta = rng.normal(size=3), rng.uniform(0.1, 2.0)
        R, t = se3.screw_to_transform_reference(jnp.asarray(w), jnp.asarray(v), jnp.asarray(theta))
        # SE(3) exponential of the twist (w theta, v theta) via the matrix exponential
        from scipy.linalg import expm

        xi = np.zeros((4, 4))
        xi[:3, :3] = np.asarray(se3.skew(jnp.asarray(w * theta)))
        xi[:3, 3] = v * theta
        T = expm(xi)
        np.testing.assert_allclose(np.asarray(R), T[:3, :3], atol=1e-5)
        np.testing.assert_allclose(np.asarray(t), T[:3, 3], atol=1e-5)


def test_screw_corrected_is_rotation_reference_is_not():
    w, v, theta = jnp.array([0.5, 0.2, -0.1]), jnp.array([0.1, 0.0, 0.3]), jnp.array(0.7)
    R_ref, _ = se3.screw_to_transform_reference(w, v, theta)
    R_exact, _ = se3.screw_to_transform(w, v, theta)
    np.testing.assert_allclose(np.asarray(R_exact @ R_exact.T), np.eye(3), atol=1e-5)
    assert abs(float(jnp.linalg.det(R_exact)) - 1) < 1e-5
    assert float(jnp.abs(R_ref @ R_ref.T - jnp.eye(3)).max()) > 1e-2
    # tiny screws (the reference init, N(0, 1e-6)) are the identity
    R0, t0 = se3.screw_to_transform_reference(jnp.full(3, 1e-6), jnp.full(3, 1e-6), jnp.array(1e-6))
    np.testing.assert_allclose(np.asarray(R0), np.eye(3), atol=1e-6)
    np.testing.assert_allclose(np.asarray(t0), 0.0, atol=1e-6)


def test_so3_exp_small_and_large_angles():
    for phi in [np.zeros(3), np.array([1e-6, 0, 0]), np.array([0.3, -1.2, 0.4])]:
        R = np.asarray(se3.so3_exp(jnp.asarray(phi, jnp.float32)))
        np.testing.assert_allclose(R, Rotation.from_rotvec(phi).as_matrix(), atol=1e-6)


def test_transform_gaussians_refuses_view_dependent_colour():
    g = sj.init_random_gaussians(5, key=jax.random.key(0)).with_sh_degree(2)
    with pytest.raises(ValueError, match="SH degree 2"):
        se3.transform_gaussians(g, jnp.eye(3), jnp.zeros(3))


def test_transform_gaussians_moves_means_and_rotations():
    g = sj.init_random_gaussians(20, key=jax.random.key(0))
    A = se3.so3_exp(jnp.array([0.1, 0.5, -0.3]))
    b = jnp.array([0.2, -0.1, 0.4])
    moved = se3.transform_gaussians(g, A, b)
    np.testing.assert_allclose(np.asarray(moved.means), np.asarray(g.means @ A.T + b), atol=1e-6)
    np.testing.assert_allclose(np.asarray(se3.quat_to_rotmat(moved.quats)),
                               np.asarray(A @ se3.quat_to_rotmat(g.quats)), atol=1e-5)


def test_rotation_angle_full_and_half():
    R1 = jnp.eye(3)
    R2 = jnp.asarray(Rotation.from_euler("z", 30, degrees=True).as_matrix(), jnp.float32)
    assert float(se3.rotation_angle(R1, R2)) == pytest.approx(np.pi / 6, abs=1e-5)
    assert float(se3.half_rotation_angle(R1, R2)) == pytest.approx(np.pi / 12, abs=1e-5)


def test_transform_camera_matches_moving_the_gaussians():
    """Rendering moved Gaussians from a camera equals rendering the originals from the
    camera moved by the inverse motion: the projections of every mean agree."""
    g = sj.init_random_gaussians(30, key=jax.random.key(1))
    cam = sj.camera_from_blender(look_at_c2w(np.array([0.4, -3.0, 1.2])), 0.7, 64, 64)
    A = se3.so3_exp(jnp.array([0.2, -0.1, 0.3]))
    b = jnp.array([0.05, 0.1, -0.2])
    moved = se3.transform_gaussians(g, A, b)
    cam2 = se3.transform_camera(cam, A, b)
    x1 = moved.means @ cam.R.T + cam.t
    x0 = g.means @ cam2.R.T + cam2.t
    np.testing.assert_allclose(np.asarray(x1), np.asarray(x0), atol=1e-5)
