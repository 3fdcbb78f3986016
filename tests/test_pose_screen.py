"""Screening of pose hypotheses (splatjax.pose.screen) and its place in estimate_poses, on the
tiny synthetic scene of test_pose (32 x 32, reference renderer)."""

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from splatjax import pose, stack_cameras
from splatjax.errors import ConfigError
from splatjax.image import resize_to_width
from splatjax.metrics import pose_errors
from splatjax.pose import PoseConfig

from test_pose import _queries_near, perturbation, scene  # noqa: F401  (the module fixture)

FAST = dict(coarse="render", coarse_resolution=16, steps=20, batch_size=4, inplane_rotations=0,
            backend="reference", screen_resolution=16, screen_steps=15, screen_gaussians=1.0)


def _far_then_near(qcams, far: float = 1.2):
    """A polish whose candidate 0 of every query is thrown ``far`` rad away (and given the
    most inliers) while the others land near the truth: inlier ranking keeps the far one."""

    def polish(gaussians, qs, starts, k, config):
        n = pose.cameras.num_cameras(starts)
        moved = [pose.moved_camera(pose.index_cameras(qcams, i // k),
                                   perturbation(80 + i, far if i % k == 0 else 0.08, 0.05), exact_exp=True)
                 for i in range(n)]
        return stack_cameras(moved), np.array([9 if i % k == 0 else 1 for i in range(n)])

    return polish


def test_screening_is_a_short_low_resolution_refinement(scene):
    """screen_hypotheses equals refine_poses_detailed run by hand on the scaled cameras and
    resized queries with screen_config (its slow, obvious twin); cameras come back at full size."""
    g, cams, _, _ = scene
    qcams, queries = _queries_near(g, cams, [2, 6], 50)
    starts = pose.index_cameras(cams, jnp.asarray([1, 2, 5, 6]))
    config = PoseConfig(**FAST, screen_halving_step=0)
    key = jax.random.key(3)
    got, losses = pose.screen_hypotheses(g, starts, queries, 2, config, key=key)
    small = resize_to_width(queries, 16)
    twin = pose.refine_poses_detailed(g, starts.scaled(16, 16), jnp.repeat(small, 2, axis=0),
                                      pose.screen_config(config), key=key)
    np.testing.assert_array_equal(losses, np.asarray(twin.loss).reshape(2, 2))
    np.testing.assert_array_equal(got.R, twin.cameras.R)
    assert (got.width, got.height) == (32, 32)
    np.testing.assert_allclose(got.fx, np.asarray(twin.cameras.fx) * 2, rtol=1e-6)
    assert pose.screen_config(config).steps == 15 and pose.screen_config(config).lr == config.screen_lr


def test_screening_finds_the_basin_inlier_ranking_misses(scene):
    g, cams, _, _ = scene
    qcams, queries = _queries_near(g, cams, [1, 7], 40)
    truth = pose.camera_to_c2w(qcams)
    polish = _far_then_near(qcams)
    plain = pose.estimate_poses(g, queries, cams, PoseConfig(**{**FAST, "keypoint_candidates": 3, "screen_steps": 0}),
                                key=jax.random.key(1), polish=polish)
    screened = pose.estimate_poses(g, queries, cams, PoseConfig(**{**FAST, "keypoint_candidates": 3,
                                                                   "screen_candidates": 3}),
                                   key=jax.random.key(1), polish=polish)
    assert plain.screen_losses is None and screened.screen_losses.shape == (2, 3)
    assert np.all(pose_errors(plain.coarse_c2w, truth)["rotation_rad"] > 1.0)  # the inlier pick is the far one
    assert np.all(np.argmin(screened.screen_losses, axis=1) > 0)
    assert np.all(pose_errors(screened.c2w, truth)["rotation_rad"] < 0.1)  # in the right basin
    assert "screen" in screened.seconds and "screen" in plain.seconds
    # the reported coarse pose is the polished (pre-screening) candidate that won
    assert np.all(pose_errors(screened.coarse_c2w, truth)["rotation_rad"] < 0.2)


def test_screening_is_the_same_for_queries_estimated_in_slices(scene):
    """evaluate estimates queries in batches with slices of the run's keys: the screening
    keys come from each query's own key, so a slice gets the numbers of the whole."""
    g, cams, _, _ = scene
    _, queries = _queries_near(g, cams, [1, 7, 4], 60)
    config = PoseConfig(**FAST, keypoints=False, screen_candidates=3)
    whole = pose.estimate_poses(g, queries, cams, config, key=jax.random.key(5))
    part = pose.estimate_poses(g, queries[1:], cams, config, key=jax.random.split(jax.random.key(5), 3)[1:])
    np.testing.assert_allclose(part.screen_losses, whole.screen_losses[1:], rtol=1e-5)
    np.testing.assert_allclose(part.c2w, whole.c2w[1:], atol=1e-5)
    assert whole.hypothesis_index.shape == (3, 1) and np.all(whole.inliers == -1)


def test_the_screening_model_keeps_the_most_opaque_gaussians_in_their_order(scene):
    g = scene[0]
    assert pose.screen_model(g, 1.0) is g
    logits = jnp.asarray(np.linspace(-3.0, 3.0, g.num)[np.random.default_rng(0).permutation(g.num)], jnp.float32)
    g = replace(g, opacity_logits=logits)
    assert g.num < pose.screen.SCREEN_MIN_GAUSSIANS and pose.screen_model(g, 0.3) is g  # a small model: all
    kept = pose.screen_model(g, 0.3, minimum=0)
    k = int(np.ceil(0.3 * g.num))
    top = np.sort(np.argsort(-np.asarray(logits))[:k])  # the slow twin: k highest opacities, original order
    assert kept.num == k
    np.testing.assert_array_equal(kept.opacity_logits, logits[top])
    np.testing.assert_array_equal(kept.means, g.means[top])
    np.testing.assert_array_equal(kept.sh0, g.sh0[top])
    assert pose.screen_model(g, 1e-9, minimum=0).num == 1  # never empty
    assert pose.screen_model(g, 0.3, minimum=k + 2).num == k + 2


def test_screening_a_share_of_the_gaussians_drops_the_faint_ones(scene, monkeypatch):
    """A model padded with invisible Gaussians (opacity ~ 1e-9, scattered in front of the
    object) screened with the share of its visible ones gives the numbers of the model
    without them: the screening renders exactly the visible part."""
    g, cams, _, _ = scene
    _, queries = _queries_near(g, cams, [2, 6], 50)
    starts = pose.index_cameras(cams, jnp.asarray([1, 2, 5, 6]))
    config = PoseConfig(**FAST)
    key = jax.random.key(3)
    faint = jax.tree_util.tree_map(lambda a: a[: g.num // 2], g)
    faint = replace(faint, opacity_logits=jnp.full((faint.num,), -21.0, jnp.float32),
                    means=faint.means * 0.5 + jnp.asarray([0.0, 0.0, 0.3]))
    padded = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), faint, g)
    share = g.num / padded.num
    monkeypatch.setattr(pose.screen, "SCREEN_MIN_GAUSSIANS", 0)  # the tiny scene is below the floor
    want_cams, want = pose.screen_hypotheses(g, starts, queries, 2, config, key=key)
    got_cams, got = pose.screen_hypotheses(padded, starts, queries, 2, replace(config, screen_gaussians=share),
                                           key=key)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got_cams.R, want_cams.R, atol=1e-5)


def test_screening_options_are_validated():
    for bad in (dict(screen_candidates=0), dict(screen_steps=-1), dict(screen_resolution=0), dict(screen_lr=0.0),
                dict(screen_gaussians=0.0), dict(screen_gaussians=1.5), dict(screen_gaussians="all")):
        with pytest.raises(ConfigError):
            PoseConfig(**bad)
    assert PoseConfig(screen_steps=0).screen_steps == 0


def test_queries_whose_keypoint_pose_has_enough_inliers_are_not_screened(scene):
    """The polish gives the far candidate 9 inliers: with screen_skip_inliers 5 the keypoint
    pose is taken as it is (no screening, losses NaN); with 10 (or 0: always) it is screened."""
    g, cams, _, _ = scene
    qcams, queries = _queries_near(g, cams, [1, 7], 40)
    truth = pose.camera_to_c2w(qcams)
    polish = _far_then_near(qcams)
    base = {**FAST, "keypoint_candidates": 3, "screen_candidates": 3}
    trusted = pose.estimate_poses(g, queries, cams, PoseConfig(**base, screen_skip_inliers=5), key=jax.random.key(1),
                                  polish=polish)
    assert np.isnan(trusted.screen_losses).all() and np.all(trusted.inliers == 9)
    assert np.all(pose_errors(trusted.coarse_c2w, truth)["rotation_rad"] > 1.0)
    for skip in (10, 0):
        est = pose.estimate_poses(g, queries, cams, PoseConfig(**base, screen_skip_inliers=skip),
                                  key=jax.random.key(1), polish=polish)
        assert np.isfinite(est.screen_losses).all()
        assert np.all(pose_errors(est.c2w, truth)["rotation_rad"] < 0.1)


def test_screened_and_unscreened_queries_in_one_batch(scene):
    """Query 0's first candidate is near with 20 inliers (kept unscreened), query 1's is far
    with none (screened): each gets the numbers it gets alone."""
    g, cams, _, _ = scene
    qcams, queries = _queries_near(g, cams, [1, 7], 40)
    truth = pose.camera_to_c2w(qcams)

    def polish(gaussians, qs, starts, k, config):
        n = pose.cameras.num_cameras(starts)
        own = [int(np.argmin([float(jnp.abs(qs[i] - queries[j]).mean()) for j in range(2)]))
               for i in range(qs.shape[0])]
        moved = [pose.moved_camera(pose.index_cameras(qcams, own[i // k]),
                                   perturbation(90 + own[i // k] * k + i % k,
                                                1.2 if (i % k == 0 and own[i // k] == 1) else 0.08, 0.05),
                                   exact_exp=True) for i in range(n)]
        inl = [(20 if own[i // k] == 0 else 0) if i % k == 0 else 1 for i in range(n)]
        return stack_cameras(moved), np.array(inl)

    config = PoseConfig(**{**FAST, "keypoint_candidates": 3, "screen_candidates": 3})
    both = pose.estimate_poses(g, queries, cams, config, key=jax.random.key(2), polish=polish)
    assert np.isnan(both.screen_losses[0]).all() and np.isfinite(both.screen_losses[1]).all()
    assert np.all(pose_errors(both.c2w, truth)["rotation_rad"] < 0.1)
    keys = jax.random.split(jax.random.key(2), 2)
    for i in range(2):
        alone = pose.estimate_poses(g, queries[i:i + 1], cams, config, key=keys[i:i + 1], polish=polish)
        np.testing.assert_allclose(alone.c2w[0], both.c2w[i], atol=1e-5)


def test_halving_stops_the_worse_half_and_leaves_the_better_half_as_it_was(scene):
    """With screen_halving_step 5 of 15 steps, screen_hypotheses equals its twin built from
    plain refinements: each query's better half (2 of 3 by the loss of a 5-step refinement)
    ends exactly as the 15-step screening without halving, the dropped candidate as the
    5-step refinement; a dropped loss is never below a kept one's."""
    g, cams, _, _ = scene
    qcams, queries = _queries_near(g, cams, [2, 6], 50)
    starts = pose.index_cameras(cams, jnp.asarray([1, 2, 3, 5, 6, 7]))
    config = PoseConfig(**FAST, screen_halving_step=5)
    assert pose.halving_split(config, 3) == 5 and pose.halving_split(config, 1) == 0
    assert pose.halving_split(PoseConfig(**FAST, screen_halving_step=15), 3) == 0  # not before the last step
    key = jax.random.key(3)
    got, losses = pose.screen_hypotheses(g, starts, queries, 3, config, key=key)
    full, full_losses = pose.screen_hypotheses(g, starts, queries, 3, PoseConfig(**FAST, screen_halving_step=0),
                                               key=key)
    small = jnp.repeat(resize_to_width(queries, 16), 3, axis=0)
    short = pose.refine_poses_detailed(g, starts.scaled(16, 16), small,
                                       pose.screen_config(PoseConfig(**{**FAST, "screen_steps": 5})), key=key)
    short_losses = np.asarray(short.loss).reshape(2, 3)
    dropped = np.argsort(short_losses, axis=1, kind="stable")[:, 2]
    for q in range(2):
        for j in range(3):
            i = 3 * q + j
            want_loss, want_R = ((short_losses[q, j], short.cameras.R[i]) if j == dropped[q]
                                 else (full_losses[q, j], full.R[i]))
            np.testing.assert_allclose(losses[q, j], want_loss, rtol=1e-5)
            np.testing.assert_allclose(got.R[i], want_R, atol=1e-5)
        assert losses[q, dropped[q]] >= np.delete(losses[q], dropped[q]).max()
    assert (got.width, got.height) == (32, 32)


def test_a_refinement_scanned_in_two_parts_is_the_refinement(scene):
    """scan_poses for 6 steps from start_scan, then 9 more from its state, gives the numbers
    of refine_poses_detailed with 15 steps (one level, no early stop): cameras, losses,
    traces, best steps; the first part alone ends as a 6-step refinement."""
    g, cams, _, _ = scene
    qcams, queries = _queries_near(g, cams, [2, 6, 4], 50)
    config = PoseConfig(**{**FAST, "steps": 15, "stop_patience": 0})
    key = jax.random.key(7)
    whole = pose.refine_poses_detailed(g, qcams, queries, config, key=key)
    six = pose.refine_poses_detailed(g, qcams, queries, replace(config, steps=6), key=key)
    state, first = pose.scan_poses(g, qcams, queries, pose.start_scan(config, key=key, b=3),
                                   replace(config, steps=6), 0)
    _, second = pose.scan_poses(g, qcams, queries, state, replace(config, steps=9), 6)
    for got, want in ((first, six), (second, whole)):
        np.testing.assert_allclose(got.loss, want.loss, rtol=1e-6)
        np.testing.assert_allclose(got.cameras.R, want.cameras.R, atol=1e-6)
        np.testing.assert_array_equal(got.best_step, want.best_step)
        np.testing.assert_array_equal(got.diverged, want.diverged)
    np.testing.assert_allclose(np.concatenate([first.traces, second.traces], axis=1), whole.traces, rtol=1e-6)
