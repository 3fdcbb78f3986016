"""Fine-pose objectives as values (splatjax.pose.objectives) on the tiny 32 x 32 scene of
test_pose (the CPU kernel when built, else the reference renderer), 30 steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_pose import FOV, RES, perturbation, tiny_scene

from splatjax import available_backends, render, stack_cameras
from splatjax import pose
from splatjax.app import cli
from splatjax.errors import ConfigError
from splatjax.losses import photometric_loss
from splatjax.metrics import pose_errors
from splatjax.pose import PoseConfig, PoseRender, objectives

BACKEND = "cpu" if "cpu" in available_backends() else "reference"
CONFIG = PoseConfig(steps=30, batch_size=3, backend=BACKEND)


@pytest.fixture(scope="module")
def scene():
    g = tiny_scene()
    cams, c2w = pose.sphere_cameras(12, 4.0, FOV, RES, RES)
    images = jax.vmap(lambda c: render(g, c, backend=BACKEND)[0])(cams)
    starts = stack_cameras([pose.moved_camera(pose.index_cameras(cams, i), perturbation(40 + i), exact_exp=True)
                            for i in range(3)])
    return g, cams, c2w, images[:3], starts


def mse(r: PoseRender, query):
    """A custom objective in one line: the mean squared error of the render."""
    return jnp.mean(jnp.square(r.rgb - query))


def _same(a: pose.Refinement, b: pose.Refinement):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_default_objective_is_photometric_by_name_and_by_value(scene):
    g, _, _, queries, starts = scene
    key = jax.random.key(0)
    base = pose.refine_poses_detailed(g, starts, queries, CONFIG, key=key)
    _same(base, pose.refine_poses_detailed(g, starts, queries, CONFIG, key=key, objective="photometric"))
    _same(base, pose.refine_poses_detailed(g, starts, queries, CONFIG, key=key, objective=objectives.photometric))
    # the traces are photometric_loss at the iterates: the first one at the start's screw
    params0 = pose.init_screw(key=jax.random.split(key, 3)[0], std=CONFIG.init_std)
    rgb0 = render(g, pose.moved_camera(pose.index_cameras(starts, 0), params0), backend=BACKEND)[0]
    assert float(base.traces[0, 0]) == pytest.approx(float(photometric_loss(rgb0, queries[0])), rel=1e-4)
    assert not np.asarray(base.diverged).any()


def test_a_custom_objective_refines_a_batch_and_traces_its_own_loss(scene):
    g, cams, c2w, queries, starts = scene
    key = jax.random.key(1)
    ref = pose.refine_poses_detailed(g, starts, queries, CONFIG, key=key, objective=mse)
    params0 = jax.vmap(lambda k: pose.init_screw(key=k, std=CONFIG.init_std))(jax.random.split(key, 3))
    for i in range(3):
        p0 = jax.tree_util.tree_map(lambda x: x[i], params0)
        rgb0 = render(g, pose.moved_camera(pose.index_cameras(starts, i), p0), backend=BACKEND)[0]
        assert float(ref.traces[i, 0]) == pytest.approx(float(mse(PoseRender(rgb0, None, None, None), queries[i])),
                                                        rel=1e-4)
    assert _closer(starts, ref.cameras, c2w) == 3
    assert np.all(np.asarray(ref.loss) < 0.5 * np.asarray(ref.traces[:, 0]))
    assert not np.asarray(ref.diverged).any()
    compiled = pose.fine._batch_jit._cache_size()
    again = pose.refine_poses_detailed(g, starts, queries, CONFIG, key=jax.random.key(9), objective=mse)
    assert pose.fine._batch_jit._cache_size() == compiled  # the same function: no new compilation
    assert again.traces.shape == (3, CONFIG.steps)
    photo = pose.refine_poses_detailed(g, starts, queries, CONFIG, key=key)
    assert not np.allclose(np.asarray(ref.traces), np.asarray(photo.traces))  # MSE's numbers, not L1 + SSIM's


def _closer(starts, cameras, c2w):
    for i in range(num := len(starts.t)):
        before = pose_errors(pose.camera_to_c2w(pose.index_cameras(starts, i)), c2w[i])
        after = pose_errors(pose.camera_to_c2w(pose.index_cameras(cameras, i)), c2w[i])
        assert after["rotation_rad"] < 0.5 * before["rotation_rad"], i
        assert after["translation"] < 0.5 * before["translation"], i
    return num


@pytest.mark.parametrize("name", ["masked_photometric", "charbonnier"])
def test_builtin_objectives_refine_through_the_config(scene, name):
    g, _, c2w, queries, starts = scene
    ref = pose.refine_poses_detailed(g, starts, queries, PoseConfig(steps=30, batch_size=3, backend=BACKEND,
                                                                    objective=name), key=jax.random.key(2))
    assert _closer(starts, ref.cameras, c2w) == 3
    assert np.all(np.asarray(ref.loss) < np.asarray(ref.traces[:, 0])) and not np.asarray(ref.diverged).any()


def test_masked_photometric_ignores_clutter_outside_the_silhouette(scene):
    g, cams, _, images, _ = scene
    rgb, alpha = render(g, pose.index_cameras(cams, 0), backend=BACKEND)
    r = PoseRender(rgb, alpha, pose.index_cameras(cams, 0), jnp.ones(3))
    outside = jnp.asarray(alpha < 1e-4)[..., None]
    assert bool(outside.any())
    clutter = jnp.where(outside, jnp.zeros(3), images[0])  # black clutter where the model renders nothing
    assert float(objectives.masked_photometric(r, images[0])) == pytest.approx(0.0, abs=1e-5)
    masked, whole = float(objectives.masked_photometric(r, clutter)), float(objectives.photometric(r, clutter))
    assert whole > 0.05 and masked < 0.1 * whole  # only the silhouette's edge (alpha < 1) sees the clutter


def test_a_registered_name_works_through_the_config(scene):
    g, _, _, queries, starts = scene
    objectives.register_objective("test_mse", mse, "mean squared error (test)")
    try:
        assert objectives.get_objective("test_mse") is mse and "test_mse" in objectives.objective_names()
        key = jax.random.key(3)
        by_name = pose.refine_poses_detailed(g, starts, queries, PoseConfig(
            steps=CONFIG.steps, batch_size=3, backend=BACKEND, objective="test_mse"), key=key)
        _same(by_name, pose.refine_poses_detailed(g, starts, queries, CONFIG, key=key, objective=mse))
        with pytest.raises(ValueError, match="already registered"):
            objectives.register_objective("test_mse", objectives.charbonnier)
    finally:
        objectives.OBJECTIVES.pop("test_mse", None)


def test_an_unknown_name_is_a_one_line_config_error(scene):
    with pytest.raises(ConfigError) as e:
        PoseConfig(objective="nope")
    msg = str(e.value)
    assert "\n" not in msg and "'nope'" in msg and "photometric, masked_photometric, charbonnier" in msg
    assert e.value.flag == "--pose-objective"
    g, _, _, queries, starts = scene
    with pytest.raises(ConfigError, match="nope"):
        pose.refine_poses(g, starts, queries, CONFIG, key=jax.random.key(0), objective="nope")


def test_a_nan_objective_is_flagged_diverged_alone(scene):
    # NaN only for query 1 (marked by one negative pixel): it keeps its finite start; the others refine
    g, _, _, queries, starts = scene

    def nan_on_marked(r, query):
        return mse(r, query) + jnp.where(jnp.any(query < 0), jnp.nan, 0.0)

    marked = queries.at[1, 0, 0, 0].set(-1.0)
    ref = pose.refine_poses_detailed(g, starts, marked, CONFIG, key=jax.random.key(4), objective=nan_on_marked)
    np.testing.assert_array_equal(np.asarray(ref.diverged), [False, True, False])
    assert np.isnan(ref.traces[1]).all() and np.isinf(ref.loss[1])
    assert np.isfinite(ref.cameras.R).all() and np.isfinite(ref.cameras.t).all()
    np.testing.assert_allclose(ref.cameras.t[1], starts.t[1], atol=1e-4)
    assert np.all(np.asarray(ref.loss)[[0, 2]] < np.asarray(ref.traces)[[0, 2], 0])


def test_objective_with_fine_levels_sees_the_reduced_images(scene):
    g, _, _, queries, starts = scene
    sizes = set()

    def recording(r, query):
        sizes.add((r.rgb.shape, r.alpha.shape, query.shape, r.camera.width))
        return mse(r, query)

    config = PoseConfig(steps=6, batch_size=3, backend=BACKEND, fine_levels=2, fine_level_steps=3)
    ref = pose.refine_poses_detailed(g, starts, queries, config, key=jax.random.key(5), objective=recording)
    assert sizes == {((16, 16, 3), (16, 16), (16, 16, 3), 16), ((32, 32, 3), (32, 32), (32, 32, 3), 32)}
    assert ref.traces.shape == (3, 6) and np.isfinite(np.asarray(ref.loss)).all()


def test_estimate_poses_takes_the_objective(scene):
    g, cams, _, queries, _ = scene
    config = PoseConfig(steps=4, batch_size=3, coarse="render", coarse_resolution=16, inplane_rotations=0,
                        keypoints=False, backend=BACKEND)
    est = pose.estimate_poses(g, queries, cams, config, key=jax.random.key(6), objective=mse)
    ref = pose.refine_poses_detailed(g, est.coarse_cameras, queries, config, key=jax.random.key(6), objective=mse)
    np.testing.assert_array_equal(est.loss_traces, np.asarray(ref.traces))


def test_the_cli_flag(capsys):
    parser = cli.build_parser()
    from splatjax.app.flags import config_from_flags
    for cmd in (["evaluate", "D", "--out", "O"], ["detect", "--model", "R", "x.png"]):
        args = parser.parse_args(cmd + ["--pose-objective", "charbonnier"])
        assert config_from_flags(PoseConfig, args).objective == "charbonnier"
    sub = next(a for a in parser._actions if a.dest == "command")
    assert "--pose-objective NAME" in sub.choices["evaluate"].format_help()
    assert cli.main(["detect", "--model", "R", "x.png", "--pose-objective", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pose-objective: unknown pose objective 'nope'" in err[0]
