"""splatjax.camera: the Blender/OpenGL -> OpenCV conversion, intrinsics, scaling and
stacking cameras, look-at poses."""

from __future__ import annotations

import numpy as np
import pytest

import splatjax as sj
from splatjax.camera import focal_from_fov, look_at_c2w


def test_camera_from_blender_convention():
    eye = np.array([0.5, -3.0, 1.0])
    c2w = look_at_c2w(eye)
    cam = sj.camera_from_blender(c2w, 0.7, 200, 100)
    np.testing.assert_allclose(np.asarray(cam.center), eye, atol=1e-5)
    # the look-at target (origin) projects to the principal point, in front of the camera
    p = np.asarray(cam.R) @ np.zeros(3) + np.asarray(cam.t)
    assert p[2] > 0
    np.testing.assert_allclose(float(cam.fx), 0.5 * 200 / np.tan(0.35), rtol=1e-6)
    np.testing.assert_allclose([float(cam.cx), float(cam.cy)], [100.0, 50.0])
    # a point above the target (world +z, the OpenGL camera's "up") is above the centre: v < cy
    q = np.asarray(cam.R) @ np.array([0.0, 0.0, 0.3]) + np.asarray(cam.t)
    assert float(cam.fy) * q[1] / q[2] + float(cam.cy) < float(cam.cy)
    np.testing.assert_allclose(np.asarray(sj.blender_c2w_from_camera(cam)), c2w, atol=1e-5)


def test_camera_from_blender_rejects_bad_matrix():
    with pytest.raises(ValueError, match="4x4"):
        sj.camera_from_blender(np.eye(3), 0.7, 10, 10)
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        sj.camera_from_blender(bad, 0.7, 10, 10)


def test_camera_scaled_and_stacked():
    cam = sj.camera_from_blender(look_at_c2w((0, -3, 0)), 0.7, 400, 400)
    small = cam.scaled(100, 100)
    assert (small.width, small.height) == (100, 100)
    np.testing.assert_allclose(float(small.fx), float(cam.fx) / 4, rtol=1e-6)
    batch = sj.stack_cameras([cam, cam])
    assert batch.R.shape == (2, 3, 3) and batch.intrinsics.shape == (2, 4)
    with pytest.raises(ValueError, match="different image sizes"):
        sj.stack_cameras([cam, small])


def test_look_at_is_rigid_and_faces_the_target():
    for pos, roll in [((0.5, -3.0, 1.0), 0.0), ((0.0, 0.0, 4.0), 0.3), ((2.0, 2.0, -1.0), -0.2)]:
        m = look_at_c2w(np.asarray(pos, float), roll=roll)
        R = m[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        np.testing.assert_allclose(m[3], [0, 0, 0, 1])
        # OpenGL: the camera looks down its -z axis, towards the origin
        np.testing.assert_allclose(-R[:, 2], -np.asarray(pos) / np.linalg.norm(pos), atol=1e-12)


def test_focal_from_fov():
    assert focal_from_fov(np.pi / 2, 200) == pytest.approx(100.0)
    assert focal_from_fov(0.6911112070083618, 800) == pytest.approx(1111.1110311937682)
