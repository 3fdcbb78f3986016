"""In-plane roll of a posed view (splatjax.data.roll): geometry against the camera model,
the image against a per-pixel bilinear twin, and image/pose consistency."""

from __future__ import annotations

import math

import numpy as np
import pytest

from splatjax.camera import camera_from_blender, look_at_c2w
from splatjax.data import roll_view
from splatjax.data.roll import fits_inscribed_circle, roll_image, roll_mask, roll_points, roll_pose

W, H, FOV = 40, 30, 0.7


def project(c2w, points, width=W, height=H):
    """Pixel (u, v) of world points through splatjax.camera's pinhole model."""
    cam = camera_from_blender(c2w, FOV, width, height, dtype=np.float64)
    R, t = np.asarray(cam.R), np.asarray(cam.t)
    x = points @ R.T + t
    return np.stack([float(cam.fx) * x[:, 0] / x[:, 2] + float(cam.cx),
                     float(cam.fy) * x[:, 1] / x[:, 2] + float(cam.cy)], axis=-1)


POINTS = np.array([[0.3, -0.2, 0.1], [-0.4, 0.1, 0.5], [0.0, 0.0, 0.0], [0.2, 0.5, -0.3]])
C2W = look_at_c2w([2.5, -3.0, 1.5])


@pytest.mark.parametrize("angle", [0.3, -1.2, math.pi / 2, 2.9])
def test_projections_rotate_about_the_centre(angle, x64):
    uv, uv_rolled = project(C2W, POINTS), project(roll_pose(C2W, angle), POINTS)
    c, s = math.cos(angle), math.sin(angle)
    d = uv - [W / 2, H / 2]
    expected = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=-1) + [W / 2, H / 2]
    np.testing.assert_allclose(uv_rolled, expected, atol=1e-9)
    np.testing.assert_allclose(roll_points(uv, angle, W, H), expected, atol=1e-9)
    np.testing.assert_allclose(roll_pose(C2W, angle)[:3, 3], C2W[:3, 3], atol=1e-12)  # same centre


def test_positive_angle_is_counter_clockwise_on_screen():
    # a point right of the centre goes up (smaller v) for +90 degrees
    up = roll_points(np.array([[W / 2 + 5.0, H / 2]]), math.pi / 2, W, H)[0]
    np.testing.assert_allclose(up, [W / 2, H / 2 - 5.0], atol=1e-12)


def test_roll_back_and_look_at_relation():
    for a in (0.7, -2.5, 3.1):
        np.testing.assert_allclose(roll_pose(roll_pose(C2W, a), -a), C2W, atol=1e-12)
        np.testing.assert_allclose(roll_pose(C2W, a), look_at_c2w([2.5, -3.0, 1.5], roll=-a), atol=1e-12)
        r = roll_pose(C2W, a)[:3, :3]
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)


def bilinear_twin(rgba, angle):
    """Per-pixel loops, premultiplied bilinear, 0 outside (the obvious version)."""
    x = rgba.astype(np.float64) / 255.0
    pre = np.concatenate([x[..., :3] * x[..., 3:], x[..., 3:]], axis=-1)
    h, w = x.shape[:2]
    c, s = math.cos(angle), math.sin(angle)
    out = np.zeros_like(pre)
    for i in range(h):
        for j in range(w):
            du, dv = j + 0.5 - w / 2, i + 0.5 - h / 2
            # inverse rotation (angle -> -angle) gives the source point
            su, sv = c * du - s * dv + w / 2, s * du + c * dv + h / 2
            fc, fr = su - 0.5, sv - 0.5
            c0, r0 = math.floor(fc), math.floor(fr)
            for rr, wr in ((r0, 1 - (fr - r0)), (r0 + 1, fr - r0)):
                for cc, wc in ((c0, 1 - (fc - c0)), (c0 + 1, fc - c0)):
                    if 0 <= rr < h and 0 <= cc < w:
                        out[i, j] += wr * wc * pre[rr, cc]
    return out


@pytest.mark.parametrize("angle", [0.4, -2.0])
def test_roll_image_matches_the_loop_twin(angle):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    img[..., 3] = np.where(rng.random((9, 11)) < 0.3, 0, img[..., 3])
    got = roll_image(img, angle).astype(np.float64) / 255.0
    want = bilinear_twin(img, angle)
    np.testing.assert_allclose(got[..., 3], want[..., 3], atol=0.5 / 255 + 1e-9)
    # compare composited on white (colour is undefined where alpha is 0)
    comp = got[..., :3] * got[..., 3:] + 1 - got[..., 3:]
    np.testing.assert_allclose(comp, want[..., :3] + 1 - want[..., 3:], atol=1.5 / 255)


def test_rolled_image_matches_rolled_pose(x64):
    """A dot drawn where a 3D point projects lands, after roll_image, where the point
    projects through roll_pose (sign and centre included)."""
    w = h = 64
    p = np.array([[0.35, -0.25, 0.2]])
    uv = project(C2W, p, w, h)[0]
    rows, cols = np.mgrid[0:h, 0:w]
    blob = np.exp(-((cols + 0.5 - uv[0]) ** 2 + (rows + 0.5 - uv[1]) ** 2) / (2 * 1.5 ** 2))
    img = np.zeros((h, w, 4))
    img[..., 0], img[..., 3] = 1.0, blob
    for angle in (0.9, -2.2):
        rolled, c2w = roll_view(img, C2W, angle)
        a = rolled[..., 3]
        centroid = np.array([(a * (cols + 0.5)).sum(), (a * (rows + 0.5)).sum()]) / a.sum()
        np.testing.assert_allclose(centroid, project(c2w, p, w, h)[0], atol=0.05)


def test_masks_and_inscribed_circle():
    m = np.zeros((20, 20), np.uint8)
    m[3:6, 9:12] = 255
    r = roll_mask(m, math.pi)
    assert set(np.unique(r)) <= {0, 255}
    np.testing.assert_array_equal(r, m[::-1, ::-1])  # 180 degrees about the centre
    np.testing.assert_array_equal(roll_mask(roll_mask(m, 0.5), -0.5)[m > 0] > 0, True)
    assert fits_inscribed_circle(m)
    m[0, 0] = 1
    assert not fits_inscribed_circle(m)


def test_bad_shapes():
    with pytest.raises(ValueError, match="RGBA"):
        roll_image(np.zeros((4, 4, 3)), 0.1)
    with pytest.raises(ValueError, match="4 x 4"):
        roll_pose(np.eye(3), 0.1)
