"""Keypoint coarse pose (splatjax.pose.keypoints) on a textured synthetic cube: rendered
depth, SIFT + PnP-RANSAC recovery of a perturbed and of a rolled pose, the fallback."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from splatjax import Gaussians, available_backends, render, stack_cameras
from splatjax.camera import camera_from_blender, look_at_c2w
from splatjax.errors import ConfigError
from splatjax.gaussians import rgb_to_sh0
from splatjax.metrics import pose_errors
from splatjax.pose.cameras import camera_to_c2w, index_cameras, inplane_rotations
from splatjax.context import Context
from splatjax.pose.keypoints import KeypointConfig, keypoint_pose, keypoint_poses, render_depth

RES = 160
FOV = 0.69
EYE = np.array([2.5, -2.0, 1.8])


def textured_cube(seed: int = 0, n: int = 4000, half: float = 0.7) -> Gaussians:
    """Small opaque Gaussians of random colours on the faces of a cube (texture for SIFT,
    several planes so PnP is well posed)."""
    rng = np.random.default_rng(seed)
    axis = rng.integers(0, 3, n)
    pts = rng.uniform(-half, half, (n, 3))
    pts[np.arange(n), axis] = half * rng.choice([-1.0, 1.0], n)
    return Gaussians(
        means=jnp.asarray(pts, jnp.float32),
        log_scales=jnp.full((n, 3), np.log(0.03), jnp.float32),
        quats=jnp.tile(jnp.array([1.0, 0.0, 0.0, 0.0]), (n, 1)),
        opacity_logits=jnp.full((n,), 3.0),
        sh0=rgb_to_sh0(jnp.asarray(rng.uniform(0.0, 1.0, (n, 3)), jnp.float32)),
    )


def camera(eye, roll: float = 0.0, res: int = RES):
    return camera_from_blender(look_at_c2w(eye, roll=roll), FOV, res, res)


def errors(est, truth) -> tuple[float, float]:
    e = pose_errors(camera_to_c2w(est), camera_to_c2w(truth))
    return float(e["rotation_rad"]), float(e["translation"])


@pytest.fixture(scope="module")
def cube():
    g = textured_cube()
    truth = camera(EYE)
    candidate = camera(EYE + np.array([0.25, 0.15, -0.1]), roll=0.15)
    return g, truth, candidate


def test_candidate_is_off_by_the_intended_amount(cube):
    _, truth, candidate = cube
    rot, tr = errors(candidate, truth)
    assert 0.15 < rot < 0.3 and 0.2 < tr < 0.4


def test_recovers_perturbed_pose(cube):
    g, truth, candidate = cube
    query = render(g, truth)[0]
    est, n = keypoint_pose(g, query, candidate, KeypointConfig(width=RES, rounds=1))
    rot, tr = errors(est, truth)
    assert n >= 50
    assert rot < 5e-3 and tr < 0.02
    # the second round starts at the first's pose, where depth errors no longer matter
    est2, n2 = keypoint_pose(g, query, candidate, KeypointConfig(width=RES, rounds=2))
    rot2, tr2 = errors(est2, truth)
    assert n2 >= 50 and rot2 < 1e-3 and tr2 < 3e-3
    # the returned camera keeps the candidate's intrinsics and size
    assert (est2.width, est2.height) == (candidate.width, candidate.height)
    assert float(est2.fx) == float(candidate.fx)


def test_recovers_rolled_query_from_unrolled_candidate(cube):
    g, truth, candidate = cube
    rolled = index_cameras(inplane_rotations(truth, [np.pi / 2]), 0)
    query = render(g, rolled)[0]
    est, n = keypoint_pose(g, query, candidate, KeypointConfig(width=RES, rounds=2))
    rot, tr = errors(est, rolled)
    assert n >= 50 and rot < 2e-3 and tr < 5e-3


def test_query_at_other_resolution_than_matching(cube):
    g, truth, candidate = cube
    big = camera(EYE, res=2 * RES)
    query = render(g, big)[0]  # 320 px query, candidate at 160 px, matching at 200 px
    est, n = keypoint_pose(g, query, candidate, KeypointConfig(width=200, rounds=2))
    rot, tr = errors(est, truth)
    assert n >= 50 and rot < 2e-3 and tr < 5e-3
    assert est.width == RES


def test_blank_query_falls_back_to_candidate(cube):
    g, _, candidate = cube
    est, n = keypoint_pose(g, jnp.ones((RES, RES, 3)), candidate, KeypointConfig(width=RES))
    assert n == 0
    np.testing.assert_array_equal(np.asarray(est.R), np.asarray(candidate.R))
    np.testing.assert_array_equal(np.asarray(est.t), np.asarray(candidate.t))


def test_keypoint_poses_is_query_major(cube):
    g, truth, candidate = cube
    other = camera(np.array([-2.2, 2.4, 1.5]))
    queries = jnp.stack([render(g, truth)[0], jnp.ones((RES, RES, 3))])
    cams = stack_cameras([candidate, other, candidate, other])  # k = 2 per query
    seen = []
    est, inl = keypoint_poses(g, queries, cams, 2, KeypointConfig(width=RES, rounds=2),
                              context=Context(progress=lambda stage, i, n: seen.append((i, n))))
    assert inl.shape == (4,) and inl[0] >= 50 and inl[2] == 0 and inl[3] == 0
    assert errors(index_cameras(est, 0), truth)[1] < 5e-3
    np.testing.assert_array_equal(np.asarray(est.R[3]), np.asarray(other.R))
    assert seen[-1] == (4, 4)
    with pytest.raises(ValueError, match="k=3"):
        keypoint_poses(g, queries, cams, 3)


def test_keypoint_poses_stop_once_enough_candidates_have_inliers(cube):
    g, truth, candidate = cube
    near = camera(EYE + np.array([-0.2, 0.1, 0.1]), roll=-0.1)
    queries = jnp.stack([render(g, truth)[0], jnp.ones((RES, RES, 3))])
    cams = stack_cameras([candidate, near, candidate, near])
    cfg = KeypointConfig(width=RES, rounds=1)
    full, inl_full = keypoint_poses(g, queries, cams, 2, cfg)
    assert inl_full[0] >= 50 and inl_full[1] >= 50  # both candidates of query 0 would be polished
    est, inl = keypoint_poses(g, queries, cams, 2, cfg, stop=(1, 12))
    # query 0: its first candidate has enough inliers, the second is left as retrieved
    assert inl[0] == inl_full[0] and inl[1] == 0
    np.testing.assert_array_equal(np.asarray(est.R[0]), np.asarray(full.R[0]))
    np.testing.assert_array_equal(np.asarray(est.R[1]), np.asarray(near.R))
    # query 1 (blank) never reaches the count: every candidate is tried, as without a stop
    assert inl[2] == inl[3] == 0
    two, inl_two = keypoint_poses(g, queries, cams, 2, cfg, stop=(2, 12))  # m = 2: both polished
    np.testing.assert_array_equal(inl_two, inl_full)


def test_render_depth_of_one_large_gaussian():
    z0 = 3.0
    g = Gaussians(
        means=jnp.array([[0.0, 0.0, 0.0]]), log_scales=jnp.full((1, 3), np.log(0.5)),
        quats=jnp.array([[1.0, 0.0, 0.0, 0.0]]), opacity_logits=jnp.array([8.0]),
        sh0=jnp.zeros((1, 3)))
    cam = camera(np.array([0.0, -z0, 0.0]), res=64)
    depth, alpha = render_depth(g, cam)
    assert depth.shape == alpha.shape == (64, 64)
    assert float(depth[32, 32]) == pytest.approx(z0, rel=1e-5)
    assert float(alpha[32, 32]) > 0.98
    assert np.isnan(np.asarray(depth[0, 0])) and float(alpha[0, 0]) < 0.5  # corner: off the Gaussian


@pytest.mark.skipif("cpu" not in available_backends(), reason="CPU kernel not built")
def test_render_depth_matches_reference_backend():
    g = textured_cube(seed=3, n=300)
    cam = camera(EYE, res=40)
    fn = jax.jit(render_depth, static_argnames="backend")  # jitted: the eager reference is slow
    fast, a_fast = fn(g, cam, backend="cpu")
    slow, a_slow = fn(g, cam, backend="reference")
    np.testing.assert_allclose(np.asarray(a_fast), np.asarray(a_slow), atol=1e-4)
    # a pixel whose alpha is within float noise of the threshold may differ in validity
    clear = np.abs(np.asarray(a_slow) - 0.5) > 1e-3
    fast, slow = np.asarray(fast)[clear], np.asarray(slow)[clear]
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
    assert np.isfinite(slow).sum() > 300
    np.testing.assert_allclose(fast[np.isfinite(slow)], slow[np.isfinite(slow)], rtol=1e-4)


@pytest.mark.parametrize("option, value", [
    ("features", 0), ("ratio", 1.5), ("ransac_threshold", 0.0), ("iterations", 0), ("min_inliers", 3),
    ("width", 8), ("confidence", 1.0), ("min_alpha", 0.0), ("refine", 1), ("rounds", 0), ("features", True),
])
def test_config_validation(option, value):
    with pytest.raises(ConfigError, match=f"KeypointConfig.{option}"):
        KeypointConfig(**{option: value})


def test_bad_query_shape(cube):
    g, _, candidate = cube
    with pytest.raises(ValueError, match="aspect"):
        keypoint_pose(g, jnp.ones((RES, RES // 2, 3)), candidate)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        keypoint_pose(g, jnp.ones((RES, RES)), candidate)


def test_missing_opencv_names_the_package(monkeypatch):
    import sys

    from splatjax.pose import keypoints

    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(ImportError, match="pip install opencv-python-headless"):
        keypoints._cv2()
