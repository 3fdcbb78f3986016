"""The half-turn check (splatjax.pose.half_turn) on a hand-made part that looks the same
after half a turn about its vertical axis except for its colours (32 x 32, reference
renderer): the turns against scipy's rotations and the weighted covariance, the turned
camera against projecting the turned point, and the check finding the right basin."""

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from splatjax import Gaussians, pose, render
from splatjax.errors import ConfigError
from splatjax.gaussians import rgb_to_sh0
from splatjax.metrics import pose_errors
from splatjax.pose import PoseConfig

from test_pose_screen import FAST

RES, FOV = 32, 0.69


def car(colours: bool = True) -> Gaussians:
    """A flat slab (x: 2, y: 0.8 long) with a ridge on top along x; red front (x > 0), blue
    back: half a turn about z maps the shape onto itself and swaps the colours, a turn about
    x or y puts the ridge underneath."""
    slab = [(x, y, 0.0) for x in np.linspace(-1.0, 1.0, 9) for y in (-0.4, 0.0, 0.4)]
    ridge = [(x, 0.0, 0.3) for x in np.linspace(-0.75, 0.75, 7)]
    pts = np.asarray(slab + ridge, np.float32) + np.float32([0.2, -0.1, 0.05])  # off the origin
    side = np.sign(pts[:, 0] - 0.2)[:, None]
    cols = np.where(side > 0, [0.9, 0.2, 0.2], np.where(side < 0, [0.2, 0.3, 0.9], [0.5, 0.5, 0.5]))
    if not colours:
        cols = np.full_like(cols, 0.6)
    n = len(pts)
    return Gaussians(means=jnp.asarray(pts), log_scales=jnp.full((n, 3), np.log(0.16), jnp.float32),
                     quats=jnp.tile(jnp.array([1.0, 0.0, 0.0, 0.0]), (n, 1)), opacity_logits=jnp.full((n,), 2.0),
                     sh0=rgb_to_sh0(jnp.asarray(cols, jnp.float32)))


def views(n: int = 6):
    cams, _ = pose.sphere_cameras(n, 4.0, FOV, RES, RES)
    return cams


def test_principal_half_turns_against_scipy_and_the_weighted_covariance():
    g = car()
    turns, centre = pose.principal_half_turns(g)
    w = np.asarray(g.opacities, np.float64)
    means = np.asarray(g.means, np.float64)
    np.testing.assert_allclose(centre, np.average(means, axis=0, weights=w), atol=1e-9)
    spread, axes = np.linalg.eigh(np.cov(means.T, aweights=w, bias=True))
    assert np.all(np.diff(spread) > 0)  # distinct axes: z (smallest spread), y, x
    for s, a in zip(turns, axes.T):
        np.testing.assert_allclose(s, Rotation.from_rotvec(np.pi * a).as_matrix(), atol=1e-9)
        np.testing.assert_allclose(s @ s, np.eye(3), atol=1e-12)
    assert abs(axes[2, 0]) > 0.99 and abs(axes[0, 2]) > 0.99  # the first turn is about z, the last about x
    with pytest.raises(ValueError, match="opacity"):
        pose.principal_half_turns(replace(g, opacity_logits=jnp.full((g.means.shape[0],), -jnp.inf)))


def test_a_turned_camera_sees_the_turned_point_where_the_camera_saw_the_point():
    cams = views(3)
    rng = np.random.default_rng(0)
    turn = Rotation.from_rotvec(np.pi * np.array([0.0, 0.6, 0.8])).as_matrix()
    centre = np.array([0.3, -0.2, 0.1])
    turned = pose.turn_cameras(cams, turn, centre)
    x = rng.normal(size=(5, 3))
    moved = (x - centre) @ turn.T + centre  # the world motion x -> turn (x - centre) + centre
    R, t = np.asarray(cams.R, np.float64), np.asarray(cams.t, np.float64)
    Rt, tt = np.asarray(turned.R, np.float64), np.asarray(turned.t, np.float64)
    for i in range(3):
        np.testing.assert_allclose(moved @ Rt[i].T + tt[i], x @ R[i].T + t[i], atol=1e-5)
    twice = pose.turn_cameras(turned, turn, centre)  # a half-turn is its own inverse
    np.testing.assert_allclose(np.asarray(twice.R), np.asarray(cams.R), atol=1e-5)
    np.testing.assert_allclose(np.asarray(twice.t), np.asarray(cams.t), atol=1e-5)


def test_interleave_and_set_cameras_against_indexing():
    cams = views(6)
    a, b = pose.index_cameras(cams, jnp.arange(3)), pose.index_cameras(cams, jnp.arange(3, 6))
    mixed = pose.interleave_cameras([a, b])  # query-major: a0 b0 a1 b1 a2 b2
    np.testing.assert_array_equal(np.asarray(mixed.R), np.asarray(cams.R)[[0, 3, 1, 4, 2, 5]])
    np.testing.assert_array_equal(np.asarray(mixed.t), np.asarray(cams.t)[[0, 3, 1, 4, 2, 5]])
    put = pose.set_cameras(a, np.array([2, 0]), pose.index_cameras(b, jnp.asarray([0, 1])))
    np.testing.assert_array_equal(np.asarray(put.R), np.asarray(cams.R)[[4, 1, 3]])
    np.testing.assert_array_equal(np.asarray(put.t), np.asarray(cams.t)[[4, 1, 3]])


def test_a_grey_car_renders_alike_after_its_symmetric_turn_only():
    g = car(colours=False)
    turns, centre = pose.principal_half_turns(g)
    cam = pose.index_cameras(views(), 1)
    image = render(g, cam, backend="reference")[0]
    about_z = render(g, pose.turn_cameras(cam, turns[0], centre), backend="reference")[0]
    about_x = render(g, pose.turn_cameras(cam, turns[2], centre), backend="reference")[0]
    assert float(jnp.abs(about_z - image).max()) < 1e-4
    assert float(jnp.abs(about_x - image).max()) > 0.1  # the ridge underneath


CONFIG = PoseConfig(**FAST)


@pytest.fixture(scope="module")
def back_to_front():
    """Two queries of the coloured car: the first converged (by a full fine pose) half a
    turn off about z, the second at its true pose."""
    g = car()
    turns, centre = pose.principal_half_turns(g)
    truth = pose.index_cameras(views(), jnp.asarray([1, 4]))
    queries = jax.vmap(lambda c: render(g, c, backend="reference")[0])(truth)
    starts = jax.tree_util.tree_map(lambda a, b: a.at[0].set(b[0]), truth, pose.turn_cameras(truth, turns[0], centre))
    kept = pose.refine_poses_detailed(g, starts, queries, CONFIG, key=jax.random.key(2))
    return g, truth, queries, kept


def test_the_check_turns_a_pose_converged_back_to_front(back_to_front):
    g, truth, queries, kept = back_to_front
    c2w = pose.camera_to_c2w(truth)
    before = pose_errors(pose.camera_to_c2w(kept.cameras), c2w)["rotation_rad"]
    assert before[0] > 3.0 and before[1] < 0.01
    found = pose.check_half_turns(g, queries, kept.cameras, np.asarray(kept.loss), np.array([True, True]), CONFIG,
                                  screen_keys=jax.random.split(jax.random.key(3), 8),
                                  refine_keys=jax.random.split(jax.random.key(4), 2))
    assert found.turn.tolist() == [0, -1] and found.rows.tolist() == [0]
    assert found.ratio[0] < 1.0 < found.ratio[1]
    assert float(found.refinement.loss[0]) < float(kept.loss[0])
    after = pose_errors(pose.camera_to_c2w(found.refinement.cameras), c2w[:1])["rotation_rad"]
    assert after[0] < 0.02
    none = pose.check_half_turns(g, queries, kept.cameras, np.asarray(kept.loss), np.array([False, False]), CONFIG,
                                 screen_keys=jax.random.split(jax.random.key(3), 8),
                                 refine_keys=jax.random.split(jax.random.key(4), 2))
    assert none.turn.tolist() == [-1, -1] and np.isnan(none.ratio).all() and none.refinement is None


def test_estimate_poses_applies_the_check_to_unpinned_queries(back_to_front):
    """estimate_poses with a polish that puts the first query's only candidate half a turn
    off: the check turns it (into the right basin: the test's 20 fine steps leave < 0.2 rad);
    with the check off,
    or with the query pinned by enough inliers, it stays back to front."""
    g, truth, queries, _ = back_to_front
    turns, centre = pose.principal_half_turns(g)
    flipped = jax.tree_util.tree_map(lambda a, b: a.at[0].set(b[0]), truth, pose.turn_cameras(truth, turns[0], centre))

    def polish(gaussians, qs, starts, k, config, inliers=3):
        return flipped, np.full(2, inliers)

    config = replace(CONFIG, keypoint_candidates=1, screen_candidates=1)  # no screening of candidates
    c2w, key = pose.camera_to_c2w(truth), jax.random.key(5)
    est = pose.estimate_poses(g, queries, views(), config, key=key, polish=polish)
    assert est.half_turn.tolist() == [0, -1] and "half_turn" in est.seconds
    assert np.all(pose_errors(est.c2w, c2w)["rotation_rad"] < 0.2)
    off = pose.estimate_poses(g, queries, views(), replace(config, half_turns=False), key=key, polish=polish)
    assert off.half_turn.tolist() == [-1, -1] and np.isnan(off.half_turn_ratio).all()
    assert pose_errors(off.c2w, c2w)["rotation_rad"][0] > 3.0
    pinned = pose.estimate_poses(g, queries, views(), config, key=key,
                                 polish=lambda *a: polish(*a, inliers=config.screen_skip_inliers))
    assert pinned.half_turn.tolist() == [-1, -1] and pose_errors(pinned.c2w, c2w)["rotation_rad"][0] > 3.0


def test_half_turn_flag_is_validated():
    with pytest.raises(ConfigError, match="half_turns"):
        PoseConfig(half_turns="yes")
