"""A second try for untrusted poses (splatjax.pose.retry) on the tiny synthetic scene of
test_pose (32 x 32, reference renderer): the retry against refining the chosen alternative
by hand, and the choice of distinct alternatives against hand-made rotations."""

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from splatjax import pose
from splatjax.errors import ConfigError
from splatjax.metrics import pose_errors
from splatjax.pose import PoseConfig
from splatjax.pose.estimate import derived_keys

from test_pose import _queries_near, scene  # noqa: F401  (the module fixture)
from test_pose_screen import FAST, _far_then_near


def _rz(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_rotation_angles_of_known_rotations():
    a = np.stack([_rz(0.0), _rz(0.4), _rz(3.0)])
    np.testing.assert_allclose(pose.rotation_angles(a, np.stack([_rz(0.0)] * 3)), [0.0, 0.4, 3.0], atol=1e-7)
    np.testing.assert_allclose(pose.rotation_angles(_rz(0.2), _rz(-0.5)), 0.7, atol=1e-7)


def test_distinct_alternatives_skip_the_kept_basin_and_each_other():
    kept = _rz(0.0)[None]
    alts = np.stack([_rz(a) for a in (0.0, 0.1, 1.0, 1.05, 2.0, 0.5)])[None]
    assert pose.distinct_alternatives(kept, alts, 1, 2, 0.3).tolist() == [[2, 4]]
    assert pose.distinct_alternatives(kept, alts, 1, 3, 0.3).tolist() == [[2, 4, 5]]
    assert pose.distinct_alternatives(kept, alts, 3, 4, 0.3).tolist() == [[3, 4, 5, -1]]  # from rank 3 on
    assert pose.distinct_alternatives(kept, alts, 1, 2, 2.5).tolist() == [[-1, -1]]  # none far enough


def test_retry_config_is_validated():
    with pytest.raises(ConfigError, match="pose_retries"):
        PoseConfig(pose_retries=-1)
    with pytest.raises(ConfigError, match="retry_angle"):
        PoseConfig(retry_angle=0.0)


@pytest.fixture(scope="module")
def flipped(scene):
    """Two queries whose kept pose starts 1.2 rad off (the polish ranks the far candidate
    first and the screening skips queries with 5 inliers or more): a wrong basin, with two
    near candidates behind it."""
    g, cams, _, _ = scene
    qcams, queries = _queries_near(g, cams, [1, 7], 40)
    # the screened alternatives alone (the half-turns first: test_retry_tries_the_half_turns_first)
    config = PoseConfig(**{**FAST, "keypoint_candidates": 3, "screen_candidates": 3, "screen_skip_inliers": 5,
                           "retry_half_turns": False})
    key = jax.random.key(1)
    est = pose.estimate_poses(g, queries, cams, config, key=key, polish=_far_then_near(qcams))
    return g, qcams, queries, config, key, est, cams


def test_retry_equals_refining_the_next_distinct_candidate_by_hand(flipped):
    g, qcams, queries, config, key, est, _ = flipped
    truth = pose.camera_to_c2w(qcams)
    assert np.all(pose_errors(est.c2w, truth)["rotation_rad"] > 1.0)  # both in the wrong basin
    alt = est.alternatives
    assert alt.index.shape == (2, 3) and np.all(alt.inliers[:, 0] == 9)
    config = replace(config, retry_round=2)  # rounds of 2: chunks of 2, the last padded
    got = pose.retry_poses(g, queries, est, np.array([True, False]), config, key=key)
    ranks = pose.distinct_alternatives(np.asarray(est.cameras.R)[:1], np.asarray(alt.cameras.R).reshape(2, 3, 3, 3)[:1],
                                       1, config.pose_retries, config.retry_angle)
    assert ranks[0, 0] == 1 and np.all(ranks[0, 1:] == -1)  # the two near candidates lie in one basin: one is tried
    keys = derived_keys(key, 2, 1, config.pose_retries, 2).reshape(2, -1)[0, :1]
    # a round runs in chunks of 2 (retry_round), the last padded with copies: its twin is that chunk by hand
    twin = pose.refine_poses_detailed(g, pose.index_cameras(alt.cameras, jnp.asarray([1] * 2)),
                                      jnp.repeat(queries[:1], 2, axis=0), replace(config, batch_size=2),
                                      key=jnp.repeat(keys, 2))
    assert got.retried.tolist() == [1, 0] and got.retry_rank.tolist() == [1, -1]
    np.testing.assert_array_equal(np.asarray(got.cameras.R)[0], np.asarray(twin.cameras.R)[0])
    np.testing.assert_array_equal(got.loss[0], np.asarray(twin.loss)[0])
    np.testing.assert_array_equal(got.loss_traces[0], np.asarray(twin.traces)[0])
    alone = pose.refine_poses_detailed(g, pose.index_cameras(alt.cameras, jnp.asarray([1])), queries[:1], config,
                                       key=keys)  # unpadded: the same up to the vmap width's float rounding
    np.testing.assert_allclose(np.asarray(got.cameras.R)[0], np.asarray(alone.cameras.R)[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.loss[0], np.asarray(alone.loss)[0], rtol=1e-4)
    assert got.fine_steps[0] == int(np.asarray(twin.steps)[0]) and got.best_step[0] == int(twin.best_step[0])
    assert got.loss[0] < est.loss[0] and pose_errors(got.c2w, truth)["rotation_rad"][0] < 0.1
    assert got.coarse_index[0] == alt.index[0, 1] and got.inliers[0] == alt.inliers[0, 1]
    np.testing.assert_array_equal(np.asarray(got.coarse_cameras.R)[0], np.asarray(alt.starts.R)[1])
    for field in ("loss", "loss_traces", "c2w", "coarse_c2w", "best_step", "fine_steps", "coarse_index"):
        np.testing.assert_array_equal(getattr(got, field)[1], getattr(est, field)[1])  # row 1 was not asked
    assert "retry" in got.seconds


def test_alternatives_with_half_turns_append_the_kept_pose_turned(flipped):
    g, _, _, _, _, est, _ = flipped
    alt = est.alternatives
    aug = pose.alternatives_with_half_turns(g, est)
    assert aug.index.shape == (2, 6) and aug.inliers.shape == aug.score.shape == (2, 6)
    R, aR, sR = (np.asarray(c.R).reshape(2, -1, 3, 3) for c in (alt.cameras, aug.cameras, aug.starts))
    np.testing.assert_array_equal(aR[:, :3], R)  # the screened candidates first, as they were
    np.testing.assert_array_equal(sR[:, :3], np.asarray(alt.starts.R).reshape(2, -1, 3, 3))
    np.testing.assert_array_equal(aug.index[:, :3], alt.index)
    turns, centre = pose.principal_half_turns(g)
    for j, turn in enumerate(turns):
        want = pose.turn_cameras(est.cameras, turn, centre)
        np.testing.assert_allclose(aR[:, 3 + j], np.asarray(want.R), atol=1e-6)
        np.testing.assert_allclose(np.asarray(aug.cameras.t).reshape(2, -1, 3)[:, 3 + j], np.asarray(want.t),
                                   atol=1e-6)
        np.testing.assert_array_equal(sR[:, 3 + j], aR[:, 3 + j])  # a turn starts where it is
        assert aug.index[:, 3 + j].tolist() == est.coarse_index.tolist()
        assert aug.inliers[:, 3 + j].tolist() == alt.inliers[:, 0].tolist()
        np.testing.assert_allclose(pose.rotation_angles(aR[:, 3 + j], np.asarray(est.cameras.R)), np.pi, atol=1e-2)


def test_retry_refines_the_half_turns_after_the_screened_candidates(flipped):
    """With retry_half_turns, a query kept half a turn from its true pose (about the model's
    first principal axis) and no other screened candidate (only the refined hypothesis, rank
    0) is retried from that turn of its pose: the truth. The retry equals refining it by hand
    (the first slot's keys) and the returned estimate carries the alternatives with the turns,
    which its retry_rank indexes."""
    from splatjax.pose.estimate import Alternatives

    g, qcams, queries, config, key, est, _ = flipped
    turns, centre = pose.principal_half_turns(g)
    wrong = pose.turn_cameras(qcams, turns[0], centre)  # the truth turned: its own turn 0 is the truth again
    alt, first = est.alternatives, jnp.asarray([0, 3])  # rank 0 of each query's three
    alt = Alternatives(cameras=pose.index_cameras(alt.cameras, first), starts=pose.index_cameras(alt.starts, first),
                       index=alt.index[:, :1], score=alt.score[:, :1], inliers=alt.inliers[:, :1])
    est = replace(est, cameras=wrong, c2w=pose.camera_to_c2w(wrong), alternatives=alt)
    config = replace(config, retry_half_turns=True, pose_retries=1)
    got = pose.retry_poses(g, queries, est, np.array([True, False]), config, key=key)
    aug = pose.alternatives_with_half_turns(g, est)
    np.testing.assert_allclose(np.asarray(aug.cameras.R)[1], np.asarray(qcams.R)[0], atol=1e-5)
    keys = derived_keys(key, 2, 1, config.pose_retries, 2).reshape(2, -1)[0, :1]
    twin = pose.refine_poses_detailed(g, pose.index_cameras(aug.cameras, jnp.asarray([1])), queries[:1],
                                      replace(config, batch_size=1), key=keys)
    assert got.retried.tolist() == [1, 0] and got.retry_rank.tolist() == [1, -1]
    assert got.alternatives.index.shape == (2, 4)
    np.testing.assert_array_equal(got.loss[0], np.asarray(twin.loss)[0])
    np.testing.assert_array_equal(np.asarray(got.cameras.R)[0], np.asarray(twin.cameras.R)[0])
    assert got.loss[0] < est.loss[0]
    assert pose_errors(got.c2w[:1], pose.camera_to_c2w(qcams)[:1])["rotation_rad"][0] < 0.05
    off = pose.retry_poses(g, queries, est, np.array([True, False]), replace(config, retry_half_turns=False), key=key)
    assert off.retried.tolist() == [0, 0] and off.alternatives.index.shape == (2, 1)  # nothing else to try
    assert PoseConfig().retry_half_turns and PoseConfig().pose_retries == 10
    with pytest.raises(ConfigError, match="retry_half_turns"):
        PoseConfig(retry_half_turns=1)


def test_retry_rounds_stop_once_trusted_and_otherwise_match_one_round(flipped):
    """With retry_angle 0.01 the two near candidates are distinct alternatives (ranks 1 and
    2). In rounds of one, a query the trust callback accepts after its first round stops
    there; one it keeps distrusting tries both and ends as one round of all would (up to the
    float rounding of another vmap width), as it does without a callback."""
    g, _, queries, config, key, est, _ = flipped
    config = replace(config, retry_angle=0.01, pose_retries=3)
    rows = np.array([True, False])
    whole = pose.retry_poses(g, queries, est, rows, replace(config, retry_round=0), key=key)
    assert whole.retried.tolist() == [2, 0] and whole.retry_rank[0] in (1, 2)
    asked = []

    def distrust(answer):
        def still_distrusted(estimate, moved):
            asked.append(moved.tolist())
            np.testing.assert_array_equal(estimate.retry_rank, est.retry_rank)  # set only at the end
            assert np.all(estimate.loss[moved] < est.loss[moved])
            return np.full(moved.size, answer)
        return still_distrusted

    rounds = replace(config, retry_round=1)
    stop = pose.retry_poses(g, queries, est, rows, rounds, key=key, still_distrusted=distrust(False))
    assert asked == [[0]] and stop.retried.tolist() == [1, 0] and stop.retry_rank.tolist() == [1, -1]
    for callback in (distrust(True), None):
        go_on = pose.retry_poses(g, queries, est, rows, rounds, key=key, still_distrusted=callback)
        assert go_on.retried.tolist() == [2, 0] and go_on.retry_rank.tolist() == whole.retry_rank.tolist()
        np.testing.assert_allclose(go_on.loss, whole.loss, rtol=1e-4)
        np.testing.assert_allclose(np.asarray(go_on.cameras.R), np.asarray(whole.cameras.R), rtol=1e-4, atol=1e-5)
        assert go_on.coarse_index.tolist() == whole.coarse_index.tolist()
    assert asked[0] == [0] and len(asked) in (2, 3)  # the second round is asked only if it moved the pose
    with pytest.raises(ConfigError, match="retry_round"):
        PoseConfig(retry_round=-1)
    assert PoseConfig().retry_round == 1  # the default: one candidate per round, chunks of one, no padding


def test_retry_keeps_the_pose_when_no_try_is_lower(flipped):
    """Screened, the queries keep a near candidate; the retry's distinct alternative is the
    far one, which ends at a higher loss: the pose stays as it was."""
    g, qcams, queries, config, key, _, cams = flipped
    config = replace(config, screen_skip_inliers=0)
    est = pose.estimate_poses(g, queries, cams, config, key=key, polish=_far_then_near(qcams))
    assert np.all(pose_errors(est.c2w, pose.camera_to_c2w(qcams))["rotation_rad"] < 0.1)
    got = pose.retry_poses(g, queries, est, np.array([True, True]), config, key=key)
    assert got.retried.tolist() == [1, 1] and got.retry_rank.tolist() == [-1, -1]
    np.testing.assert_array_equal(got.loss, est.loss)
    np.testing.assert_array_equal(got.c2w, est.c2w)


def test_no_retry_leaves_the_estimate_as_it_is(flipped):
    g, _, queries, config, key, est, _ = flipped
    for rows, cfg in ((np.array([False, False]), config), (np.array([True, True]), replace(config, pose_retries=0))):
        got = pose.retry_poses(g, queries, est, rows, cfg, key=key)
        assert got.retried.tolist() == [0, 0] and got.retry_rank.tolist() == [-1, -1]
        np.testing.assert_array_equal(got.c2w, est.c2w)
        np.testing.assert_array_equal(got.loss, est.loss)
    with pytest.raises(ValueError, match="3 rows for 2 queries"):
        pose.retry_poses(g, queries, est, np.ones(3, bool), config, key=key)


def test_run_stages_retries_distrusted_poses_and_renders_the_kept_ones(flipped):
    """With a calibration, run_stages retries the queries the trust rules distrust (here by
    the silhouette: the flipped poses cover other pixels) and its renders are those of the
    returned poses; without one, nothing is retried."""
    from splatjax.anomaly import MapCalibration, MapConfig
    from splatjax.app.stages import pose_trust, run_stages

    g, qcams, queries, config, key, est, cams = flipped
    config = replace(config, min_silhouette_iou=0.95)  # the flipped renders overlap the toy's silhouette 0.84-0.87
    cal = MapCalibration(threshold=1.0, vmin=0.0, vmax=1.0, features="weights-free", map_size=16, map_sigma=1.0,
                         score="max", views=1, train_score_max=1.0, train_score_median=0.5)
    maps = MapConfig(features="weights-free", map_size=16)
    kw = dict(key=key, extractor=None, polish=_far_then_near(qcams))
    plain = run_stages(g, queries, cams, config, maps, **kw)
    assert plain.poses.retried.tolist() == [0, 0] and "retry" not in plain.seconds
    assert not pose_trust(plain.renders, queries, config, plain.poses.loss, cal).trusted.any()
    det = run_stages(g, queries, cams, config, maps, calibration=cal, **kw)
    assert det.poses.retry_rank.tolist() == [1, 1] and "retry" in det.seconds
    assert pose_trust(det.renders, queries, config, det.poses.loss, cal).trusted.all()
    np.testing.assert_array_equal(det.renders, np.asarray(pose.render_views(g, det.poses.cameras, batch_size=config.batch_size,
                                                                            backend=config.backend)))
    assert np.all(pose_errors(det.poses.c2w, pose.camera_to_c2w(qcams))["rotation_rad"] < 0.1)
