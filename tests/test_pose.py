"""Coarse and fine pose (splatjax.pose) on a tiny synthetic scene with the reference
renderer (32 x 32, 300 Gaussians)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from splatjax import Gaussians, available_backends, render, se3, stack_cameras
from dataclasses import replace

from splatjax import pose
from splatjax.errors import ConfigError
from splatjax.pose import PoseConfig
from splatjax.gaussians import rgb_to_sh0
from splatjax.metrics import pose_errors
from script_modules import load_script

RES = 32
FOV = 0.69


def tiny_scene(seed: int = 0, n: int = 300) -> Gaussians:
    """A cube of Gaussians coloured by position (every view looks different)."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-0.8, 0.8, (n, 3)).astype(np.float32)
    cols = np.clip(0.5 + 0.5 * pts / 0.8, 0.0, 1.0)
    return Gaussians(
        means=jnp.asarray(pts),
        log_scales=jnp.full((n, 3), np.log(0.12), jnp.float32),
        quats=jnp.tile(jnp.array([1.0, 0.0, 0.0, 0.0]), (n, 1)),
        opacity_logits=jnp.full((n,), 2.0),
        sh0=rgb_to_sh0(jnp.asarray(cols, jnp.float32)),
    )


@pytest.fixture(scope="module")
def scene():
    g = tiny_scene()
    cams, c2w = pose.sphere_cameras(12, 4.0, FOV, RES, RES)
    images = jax.vmap(lambda c: render(g, c, backend="reference")[0])(cams)
    return g, cams, c2w, images


def perturbation(seed: int, angle: float = 0.05, shift: float = 0.1) -> dict:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=3)
    v = rng.normal(size=3)
    return {"w": jnp.asarray(w / np.linalg.norm(w), jnp.float32),
            "v": jnp.asarray(shift * v / np.linalg.norm(v), jnp.float32),
            "theta": jnp.asarray(angle, jnp.float32)}


def test_lr_schedule_values_and_adam_steps():
    s = pose.fine_lr_schedule
    assert float(s(0)) == pytest.approx(1e-3)
    for i in (0, 1, 99, 174):  # the rate used after step i is 0.01 * 0.8^((i + 1) / 100)
        assert float(s(i + 1)) == pytest.approx(0.01 * 0.8 ** ((i + 1) / 100), rel=1e-6)
    # Adam's first moves are +-lr: the schedule is consumed one value per update
    opt = pose.fine._optimizer()
    p = {"x": jnp.zeros(())}
    state = opt.init(p)
    moves = []
    for _ in range(3):
        upd, state = opt.update({"x": jnp.ones(())}, state, p)
        moves.append(-float(upd["x"]))
    np.testing.assert_allclose(moves, [1e-3, 0.01 * 0.8 ** 0.01, 0.01 * 0.8 ** 0.02], rtol=1e-4)
    assert isinstance(optax.adam(pose.fine_lr_schedule), optax.GradientTransformation)


def test_init_screw_is_tiny_gaussian_and_keyed():
    a = pose.init_screw(key=jax.random.key(1))
    b = pose.init_screw(key=jax.random.key(1))
    c = pose.init_screw(key=jax.random.key(2))
    assert a["w"].shape == (3,) and a["v"].shape == (3,) and a["theta"].shape == ()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["w"], c["w"])
    many = jax.vmap(lambda k: pose.init_screw(key=k))(jax.random.split(jax.random.key(3), 4000))
    sample = np.concatenate([np.asarray(many["w"]).ravel(), np.asarray(many["v"]).ravel(), np.asarray(many["theta"])])
    assert abs(sample.mean()) < 1e-7
    assert sample.std() == pytest.approx(1e-6, rel=0.05)


@pytest.mark.parametrize("exact_exp", [False, True])
def test_zero_screw_is_identity(scene, exact_exp):
    _, cams, _, _ = scene
    cam = pose.index_cameras(cams, 3)
    zero = {"w": jnp.zeros(3), "v": jnp.zeros(3), "theta": jnp.zeros(())}
    A, b = pose.screw_motion(zero, exact_exp=exact_exp)
    np.testing.assert_allclose(A, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(b, 0.0, atol=1e-6)
    moved = pose.moved_camera(cam, zero, exact_exp=exact_exp)
    np.testing.assert_allclose(moved.R, cam.R, atol=1e-6)
    np.testing.assert_allclose(moved.t, cam.t, atol=1e-6)


def test_screw_motion_is_the_reference_row_vector_form(scene):
    g, cams, _, _ = scene
    params = perturbation(4, angle=0.3, shift=0.2)
    params_raw = dict(params, w=params["w"] * 1.3)  # reference map: w not normalised
    R, t = se3.screw_to_transform_reference(params_raw["w"], params_raw["v"], params_raw["theta"])
    A, b = pose.screw_motion(params_raw)
    x = g.means[:5]
    np.testing.assert_allclose(x @ A.T + b, x @ R + t, atol=1e-6)  # reference: x @ R + t
    # moving the camera == moving the Gaussians (proper rotation: corrected map)
    cam = pose.index_cameras(cams, 0)
    A, b = pose.screw_motion(params, exact_exp=True)
    moved_object = render(se3.transform_gaussians(g, A, b), cam, backend="reference")[0]
    moved_camera = render(g, pose.moved_camera(cam, params, exact_exp=True), backend="reference")[0]
    np.testing.assert_allclose(moved_object, moved_camera, atol=2e-4)


@pytest.mark.parametrize("exact_exp", [False, True])
def test_refinement_recovers_true_pose(scene, exact_exp):
    g, cams, c2w, images = scene
    true = pose.index_cameras(cams, 0)
    start = pose.moved_camera(true, perturbation(0), exact_exp=True)
    before = pose_errors(pose.camera_to_c2w(start), c2w[0])
    cam, trace = pose.refine_pose(g, start, images[0], PoseConfig(steps=60, exact_exp=exact_exp, backend="reference"),
                                  key=jax.random.key(0))
    after = pose_errors(pose.camera_to_c2w(cam), c2w[0])
    assert trace.shape == (60,)
    assert float(trace[-1]) < 0.1 * float(trace[0])
    assert after["translation"] < 0.1 * before["translation"]
    assert after["rotation_rad"] < 0.1 * before["rotation_rad"]


@pytest.mark.parametrize("backend", [pytest.param("reference", marks=pytest.mark.slow), "cpu"])
def test_batched_equals_one_by_one(backend):
    # a smaller scene (16 x 16 px, 100 Gaussians): 16 queries one by one and batched
    if backend not in available_backends():
        pytest.skip(f"{backend} kernel not built")
    g = tiny_scene(seed=1, n=100)
    cams, _ = pose.sphere_cameras(12, 4.0, FOV, 16, 16)
    images = jax.vmap(lambda c: render(g, c, backend=backend)[0])(cams)
    b = 16
    idx = np.arange(b) % 12
    starts = stack_cameras([pose.moved_camera(pose.index_cameras(cams, int(i)), perturbation(10 + j, 0.03, 0.05),
                                                   exact_exp=True) for j, i in enumerate(idx)])
    queries = images[idx]
    key = jax.random.key(7)
    steps = 5
    config = PoseConfig(steps=steps, batch_size=16, backend=backend)
    batched, traces = pose.refine_poses(g, starts, queries, config, key=key)
    chunked, traces_c = pose.refine_poses(g, starts, queries, replace(config, batch_size=5), key=key)
    keys = jax.random.split(key, b)
    for i in range(b):
        cam, tr = pose.refine_pose(g, pose.index_cameras(starts, i), queries[i], config, key=keys[i])
        np.testing.assert_allclose(batched.R[i], cam.R, atol=1e-4)
        np.testing.assert_allclose(batched.t[i], cam.t, atol=1e-4)
        np.testing.assert_allclose(traces[i], tr, atol=1e-4)
    np.testing.assert_allclose(chunked.R, batched.R, atol=1e-4)
    np.testing.assert_allclose(chunked.t, batched.t, atol=1e-4)
    assert traces.shape == traces_c.shape == (b, steps)


def test_camera_to_c2w_round_trip(scene):
    _, cams, c2w, _ = scene
    np.testing.assert_allclose(pose.camera_to_c2w(cams), c2w, atol=1e-5)
    back = pose.cameras_from_c2w(c2w, FOV, RES, RES)
    np.testing.assert_allclose(back.R, cams.R, atol=1e-6)


def test_render_and_compare_picks_the_right_candidate(scene):
    g, cams, c2w, images = scene
    # queries: slightly perturbed views of candidates 5, 2, 9
    truth = np.array([5, 2, 9])
    qcams = stack_cameras([pose.moved_camera(pose.index_cameras(cams, int(i)), perturbation(20 + i, 0.02, 0.03),
                                                  exact_exp=True) for i in truth])
    queries = jax.vmap(lambda c: render(g, c, backend="reference")[0])(qcams)
    idx, score = pose.coarse_pose_render(g, cams, queries, resolution=16, backend="auto")
    np.testing.assert_array_equal(idx, truth)
    assert score.shape == (3,) and np.all(score >= 0)
    # from images instead of renders
    idx2, _ = pose.coarse_pose_render(None, cams, queries, resolution=16, candidate_images=images)
    np.testing.assert_array_equal(idx2, truth)


def test_inplane_rotation_candidates(scene):
    g, cams, _, _ = scene
    rolled = pose.inplane_rotations(pose.index_cameras(cams, 4), [0.0, 0.5, 1.0])
    query = render(g, pose.index_cameras(rolled, 2), backend="reference")[0][None]
    cands = pose.inplane_rotations(cams, [0.0, 0.5, 1.0])
    assert cands.R.shape == (36, 3, 3)
    idx, _ = pose.coarse_pose_render(g, cands, query, resolution=16, backend="auto")
    assert int(idx[0]) == 4 * 3 + 2
    # the roll keeps the camera centre
    np.testing.assert_allclose(rolled.center, np.repeat(np.asarray(cams.center[4])[None], 3, 0), atol=1e-5)


def test_estimate_poses_render_path(scene):
    g, cams, c2w, images = scene
    truth = np.array([1, 7])
    qcams = stack_cameras([pose.moved_camera(pose.index_cameras(cams, int(i)), perturbation(30 + i, 0.03, 0.05),
                                                  exact_exp=True) for i in truth])
    queries = jax.vmap(lambda c: render(g, c, backend="reference")[0])(qcams)
    config = PoseConfig(coarse="render", coarse_resolution=16, steps=25, batch_size=2, inplane_rotations=0,
                        keypoints=False)
    est = pose.estimate_poses(g, queries, cams, config, key=jax.random.key(0))
    np.testing.assert_array_equal(est.coarse_index, truth)
    np.testing.assert_array_equal(est.inliers, [-1, -1])
    assert est.method == "render" and est.loss_traces.shape == (2, 25)
    true_c2w = pose.camera_to_c2w(qcams)
    e0 = pose_errors(est.coarse_c2w, true_c2w)
    e1 = pose_errors(est.c2w, true_c2w)
    assert np.all(e1["rotation_rad"] < e0["rotation_rad"])
    assert np.all(e1["translation"] < e0["translation"])


def test_candidates_rendered_once_give_the_same_poses(scene):
    g, cams, c2w, images = scene
    _, queries = _queries_near(g, cams, [2, 9], 40)
    config = PoseConfig(coarse="render", coarse_resolution=16, steps=5, batch_size=2, inplane_rotations=2,
                        keypoints=False, backend="reference")
    rendered = pose.render_candidates(g, cams, config)
    assert rendered.images.shape == (12 * 3, 16, 16, 3) and rendered.cameras.R.shape == (36, 3, 3)
    a = pose.estimate_poses(g, queries, cams, config, key=jax.random.key(0))
    b = pose.estimate_poses(g, queries, rendered, config, key=jax.random.key(0))
    np.testing.assert_array_equal(a.hypothesis_index, b.hypothesis_index)
    np.testing.assert_array_equal(a.hypothesis_score, b.hypothesis_score)
    np.testing.assert_array_equal(a.c2w, b.c2w)
    with pytest.raises(ValueError, match="do not serve"):  # rendered for other settings: a clear error
        pose.estimate_poses(g, queries, rendered, replace(config, coarse_resolution=8), key=jax.random.key(0))


def test_bad_query_shape_is_a_clear_error(scene):
    g, cams, _, images = scene
    with pytest.raises(ValueError, match="query images are 16x16"):
        pose.refine_pose(g, pose.index_cameras(cams, 0), images[0, :16, :16], PoseConfig(steps=2, backend="reference"),
                         key=jax.random.key(0))
    with pytest.raises(ValueError, match="coarse must be"):
        pose.resolve_coarse("sift")


def test_pose_config_validates_and_names_the_field():
    with pytest.raises(ConfigError, match=r"PoseConfig.steps: must be an integer >= 1 \(got 0\)") as err:
        PoseConfig(steps=0)
    assert err.value.flag == "--steps"
    for bad in (dict(coarse="sift"), dict(batch_size=-3), dict(lr_decay=1.5), dict(backend="gpu"),
                dict(sphere_views=-1), dict(lr=0.0)):
        with pytest.raises(ConfigError):
            PoseConfig(**bad)
    hash(PoseConfig())  # frozen and hashable (static under jit)


def test_lr_schedule_follows_the_config():
    s = pose.fine_lr_schedule
    assert float(s(0, lr_first=2e-3)) == pytest.approx(2e-3)
    assert float(s(100, lr=0.1, lr_decay=0.5)) == pytest.approx(0.05, rel=1e-6)


def test_candidate_cameras_add_sphere_views(scene):
    _, cams, _, _ = scene
    assert pose.candidate_cameras(cams, PoseConfig()).R.shape == (12, 3, 3)
    more = pose.candidate_cameras(cams, PoseConfig(sphere_views=5))
    assert more.R.shape == (17, 3, 3)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(more.center[12:]), axis=-1), 4.0, rtol=1e-5)
    np.testing.assert_allclose(more.fx[12:], cams.fx[0], rtol=1e-5)


# --- multi-hypothesis fine pose, best iterate and divergence, coarse-to-fine levels ---


def _queries_near(g, cams, truth, seed0):
    qcams = stack_cameras([pose.moved_camera(pose.index_cameras(cams, int(i)), perturbation(seed0 + i, 0.03, 0.05),
                                             exact_exp=True) for i in truth])
    return qcams, jax.vmap(lambda c: render(g, c, backend="reference")[0])(qcams)


def test_coarse_top_k_extends_the_best(scene):
    g, cams, _, _ = scene
    _, queries = _queries_near(g, cams, [5, 2, 9], 20)
    idx1, s1 = pose.coarse_pose_render(g, cams, queries, resolution=16)
    idx, s = pose.coarse_pose_render(g, cams, queries, resolution=16, top_k=4)
    assert idx.shape == s.shape == (3, 4)
    np.testing.assert_array_equal(idx[:, 0], idx1)
    np.testing.assert_array_equal(s[:, 0], s1)
    assert np.all(np.diff(s, axis=1) >= 0) and all(len(set(row)) == 4 for row in idx)
    with pytest.raises(ValueError, match="top_k"):
        pose.coarse_pose_render(g, cams, queries, resolution=16, top_k=13)


def test_one_hypothesis_is_the_plain_path(scene):
    # K = 1: the best coarse candidate refined by refine_poses, exactly
    g, cams, _, _ = scene
    _, queries = _queries_near(g, cams, [1, 7, 4], 30)
    config = PoseConfig(coarse="render", coarse_resolution=16, steps=12, batch_size=2, backend="reference",
                        inplane_rotations=0, keypoints=False, screen_steps=0)
    est = pose.estimate_poses(g, queries, cams, config, key=jax.random.key(0))
    idx, score = pose.coarse_pose_render(g, cams, queries, resolution=16, backend="reference")
    start = pose.index_cameras(cams, jnp.asarray(idx))
    ref = pose.refine_poses_detailed(g, start, queries, config, key=jax.random.key(0))
    np.testing.assert_array_equal(est.coarse_index, idx)
    np.testing.assert_array_equal(est.coarse_score, score)
    np.testing.assert_array_equal(est.cameras.R, ref.cameras.R)
    np.testing.assert_array_equal(est.cameras.t, ref.cameras.t)
    np.testing.assert_array_equal(est.loss_traces, ref.traces)
    np.testing.assert_array_equal(est.loss, ref.loss)
    np.testing.assert_array_equal(est.coarse_cameras.R, start.R)
    assert est.hypothesis_losses.shape == (3, 1) and np.all(est.chosen == 0) and not est.diverged.any()


def test_hypotheses_keep_the_lowest_loss_and_polish_moves_the_starts(scene):
    # polish: hypothesis 0 of every query is thrown 0.4 rad away, hypothesis 1 lands near the
    # truth; the fine pose of all 2 x 2 hypotheses runs at once and each query keeps hypothesis 1
    g, cams, _, _ = scene
    qcams, queries = _queries_near(g, cams, [1, 7], 40)
    seen = {}

    def polish(gaussians, qs, starts, k, config):
        seen.update(n=pose.cameras.num_cameras(starts), k=k, q=qs.shape[0])
        moved = [pose.moved_camera(pose.index_cameras(qcams, i // k) if i % k else pose.index_cameras(starts, i),
                                   perturbation(60 + i, 0.4 if i % k == 0 else 0.02, 0.02), exact_exp=True)
                 for i in range(seen["n"])]
        return stack_cameras(moved), np.zeros(seen["n"])

    config = PoseConfig(coarse="render", coarse_resolution=16, steps=20, batch_size=4, hypotheses=2,
                        inplane_rotations=0, keypoint_candidates=2, screen_steps=0,
                        backend="reference")
    est = pose.estimate_poses(g, queries, cams, config, key=jax.random.key(1), polish=polish)
    assert seen == {"n": 4, "k": 2, "q": 2}
    assert est.hypothesis_index.shape == est.hypothesis_losses.shape == (2, 2)
    np.testing.assert_array_equal(est.chosen, [1, 1])
    np.testing.assert_array_equal(est.loss, est.hypothesis_losses.min(axis=1))
    np.testing.assert_array_equal(est.coarse_index, est.hypothesis_index[:, 1])
    assert np.all(pose_errors(est.c2w, pose.camera_to_c2w(qcams))["rotation_rad"] < 0.03)
    # the kept camera is the chosen hypothesis' refinement (flat index i * K + chosen, its own key)
    keys = jax.random.split(jax.random.key(1), 4)
    start3 = pose.index_cameras(polish(g, queries, pose.index_cameras(cams, jnp.asarray(
        est.hypothesis_index.reshape(-1))), 2, config)[0], 3)
    cam, _ = pose.refine_pose(g, start3, queries[1], config, key=keys[3])
    np.testing.assert_allclose(est.cameras.R[1], cam.R, atol=1e-5)
    np.testing.assert_allclose(est.coarse_cameras.t[1], start3.t, atol=1e-6)


def _loop_twin(g, camera, query, params, config):
    """The slow twin of the fine pose: a Python loop over the levels and steps with the
    same Adam, best iterate tracked on the full-resolution level (plus the start and the
    last iterate), divergence as documented."""
    from splatjax.image import resize
    from splatjax.losses import photometric_loss

    opt = pose.fine._optimizer(config.lr_first, config.lr, config.lr_decay)
    state = opt.init(params)

    @jax.jit  # one compiled loss per level (the loop itself stays in Python)
    def loss_fn(p, cam, target):
        return photometric_loss(render(g, pose.moved_camera(cam, p), backend="reference")[0], target)

    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    plan = pose.fine_level_plan(camera.width, camera.height, config.steps, config.fine_levels, config.fine_level_steps)
    best, best_loss, best_step, trace, step, bad = params, np.inf, 0, [], 0, False
    first = None if len(plan) == 1 else float(loss_fn(params, camera, query))
    if first is not None and first < best_loss:
        best_loss = first
    for level, (w, h, n) in enumerate(plan):
        full = level == len(plan) - 1
        cam, target = (camera, query) if full else (camera.scaled(w, h), resize(query, h, w))
        for _ in range(n):
            loss, grad = value_and_grad(params, cam, target)
            trace.append(float(loss))
            if full and float(loss) < best_loss:
                best, best_loss, best_step = params, float(loss), step
            if np.isfinite(float(loss)):
                upd, state = opt.update(grad, state, params)
                params = optax.apply_updates(params, upd)
            else:
                bad = True
            step += 1
    last = float(loss_fn(params, camera, query))
    if last < best_loss:
        best, best_loss, best_step = params, last, step
    first = trace[0] if first is None else first
    return pose.moved_camera(camera, best), np.asarray(trace), best_loss, best_step, bad or last > 1.01 * first


@pytest.mark.parametrize("levels", [1, 2])
def test_refinement_matches_its_loop_twin(scene, levels):
    g, cams, _, images = scene
    start = pose.moved_camera(pose.index_cameras(cams, 2), perturbation(3, 0.08, 0.1), exact_exp=True)
    config = PoseConfig(steps=9, fine_levels=levels, fine_level_steps=4, backend="reference")
    key = jax.random.key(5)
    ref = pose.refine_poses_detailed(g, start, images[2][None], config, key=key)
    params = pose.init_screw(key=jax.random.split(key, 1)[0], std=config.init_std)
    cam, trace, loss, step, diverged = _loop_twin(g, start, images[2], params, config)
    np.testing.assert_allclose(ref.traces[0], trace, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ref.cameras.R[0], cam.R, atol=1e-5)
    np.testing.assert_allclose(ref.cameras.t[0], cam.t, atol=1e-5)
    assert float(ref.loss[0]) == pytest.approx(loss, rel=1e-4)
    assert int(ref.best_step[0]) == step
    assert not bool(ref.diverged[0]) and not diverged
    if levels == 2:  # the first 4 losses are at half resolution: a different scale
        assert ref.traces.shape == (1, 9) and trace[0] != pytest.approx(trace[4], rel=1e-3)


def test_fine_level_plan():
    assert pose.fine_level_plan(400, 300, 175) == ((400, 300, 175),)
    assert pose.fine_level_plan(400, 300, 175, 3, 25) == ((100, 75, 25), (200, 150, 25), (400, 300, 125))
    with pytest.raises(ValueError, match="no full-resolution step"):
        pose.fine_level_plan(400, 300, 50, 3, 25)


def test_a_diverging_query_is_flagged_alone_and_keeps_its_best_iterate(scene):
    # query 1 is NaN pixels: NaN losses from the first step; queries 0 and 2 refine as alone
    g, cams, _, images = scene
    starts = stack_cameras([pose.moved_camera(pose.index_cameras(cams, i), perturbation(70 + i), exact_exp=True)
                            for i in (0, 1, 2)])
    queries = images[:3].at[1].set(jnp.nan)
    config = PoseConfig(steps=10, batch_size=3, backend="reference")
    key = jax.random.key(2)
    ref = pose.refine_poses_detailed(g, starts, queries, config, key=key)
    np.testing.assert_array_equal(np.asarray(ref.diverged), [False, True, False])
    assert np.isnan(ref.traces[1]).all() and np.isinf(ref.loss[1]) and int(ref.best_step[1]) == 0
    assert np.isfinite(ref.cameras.R).all() and np.isfinite(ref.cameras.t).all()
    np.testing.assert_allclose(ref.cameras.t[1], starts.t[1], atol=1e-4)  # NaN never moved it: the start
    keys = jax.random.split(key, 3)
    for i in (0, 2):
        cam, tr = pose.refine_pose(g, pose.index_cameras(starts, i), queries[i], config, key=keys[i])
        np.testing.assert_allclose(ref.cameras.R[i], cam.R, atol=1e-5)
        np.testing.assert_allclose(ref.traces[i], tr, atol=1e-5)


def test_a_huge_learning_rate_diverges_and_the_best_iterate_is_returned(scene):
    g, cams, _, images = scene
    starts = stack_cameras([pose.moved_camera(pose.index_cameras(cams, i), perturbation(80 + i), exact_exp=True)
                            for i in (3, 4)])
    config = PoseConfig(steps=8, batch_size=2, lr=30.0, lr_first=30.0, backend="reference")
    ref = pose.refine_poses_detailed(g, starts, images[3:5], config, key=jax.random.key(3))
    assert np.all(np.asarray(ref.diverged))
    assert np.all(np.asarray(ref.loss) <= np.asarray(ref.traces[:, 0]))
    assert np.all(np.asarray(ref.loss) < np.asarray(ref.traces[:, -1]))
    calm = pose.refine_poses_detailed(g, starts, images[3:5], replace(config, lr=0.01, lr_first=1e-3),
                                      key=jax.random.key(3))
    assert not np.asarray(calm.diverged).any()  # here the loss wobbles by < 1 % in 8 steps: not diverged


def test_pose_config_new_options_are_validated():
    for bad in (dict(hypotheses=0), dict(fine_levels=0), dict(fine_levels=5), dict(fine_level_steps=0),
                dict(steps=50, fine_levels=3, fine_level_steps=25)):
        with pytest.raises(ConfigError):
            PoseConfig(**bad)
    assert PoseConfig(steps=51, fine_levels=3, fine_level_steps=25).fine_levels == 3


def test_polish_keeps_the_candidates_with_most_inliers(scene):
    """keypoint_candidates = 3 retrieval candidates are polished; the hypotheses = 2 with the
    most inliers (retrieval order on ties) go on to the fine pose."""
    g, cams, c2w, images = scene
    truth = np.array([1, 7])
    queries = jax.vmap(lambda c: render(g, c, backend="reference")[0])(pose.index_cameras(cams, jnp.asarray(truth)))
    seen = {}

    def polish(gaussians, qs, starts, k, config):
        seen["k"], seen["n"] = k, int(starts.R.shape[0])
        return starts, np.array([5, 9, 9, 0, 0, 2])  # query 0: 1 and 2 tie above 0; query 1: 2 first

    config = PoseConfig(coarse="render", coarse_resolution=16, steps=5, batch_size=4, inplane_rotations=0,
                        hypotheses=2, keypoint_candidates=3, screen_steps=0)
    est = pose.estimate_poses(g, queries, cams, config, key=jax.random.key(0), polish=polish)
    assert seen == {"k": 3, "n": 6}
    r = np.asarray(pose.coarse_pose_render(g, cams, queries, resolution=16, top_k=3)[0])
    np.testing.assert_array_equal(est.hypothesis_index, [[r[0, 1], r[0, 2]], [r[1, 2], r[1, 0]]])
    assert est.inliers[0] == 9 and est.inliers[1] in (2, 0)


def test_default_config_polishes_with_keypoints(scene):
    """The default PoseConfig runs the keypoint polish (inliers recorded, >= 0) and still
    returns finite poses."""
    g, cams, c2w, images = scene
    queries = jax.vmap(lambda c: render(g, c, backend="reference")[0])(pose.index_cameras(cams, jnp.asarray([3])))
    config = PoseConfig(coarse="render", coarse_resolution=16, steps=5, batch_size=1, keypoint_candidates=2)
    assert config.keypoints and config.inplane_rotations == 8
    est = pose.estimate_poses(g, queries, cams, config, key=jax.random.key(0))
    assert est.inliers.shape == (1,) and est.inliers[0] >= 0
    assert np.all(np.isfinite(est.c2w))


# --- early stop (stop_patience) ---


def _stall_config(**kw):
    return PoseConfig(steps=40, batch_size=3, backend="reference", stop_patience=5, stop_tolerance=0.02, **kw)


def test_early_stop_returns_what_a_shorter_run_returns(scene):
    # a query that stops after s steps gets the camera of a plain run of s steps (the same
    # iterates, each step's and the last), and a patience the run never reaches changes nothing
    g, cams, _, _ = scene
    qcams, queries = _queries_near(g, cams, [3, 8, 10], 70)
    starts = pose.index_cameras(cams, jnp.asarray([3, 8, 10]))
    config = _stall_config()
    ref = pose.refine_poses_detailed(g, starts, queries, config, key=jax.random.key(5))
    steps = np.asarray(ref.steps)
    assert np.all(steps < 40) and np.all(steps > 5)  # it stopped, each query on its own
    keys = jax.random.split(jax.random.key(5), 3)
    for i in (int(np.argmin(steps)),):  # one query against its plain run (one more compilation each)
        assert np.all(np.isnan(ref.traces[i, steps[i]:])) and np.all(np.isfinite(ref.traces[i, :steps[i]]))
        plain = replace(config, steps=int(steps[i]), stop_patience=0)
        cam, trace = pose.refine_pose(g, pose.index_cameras(starts, i), queries[i], plain, key=keys[i])
        np.testing.assert_allclose(ref.cameras.R[i], cam.R, atol=2e-5)  # vmapped vs single: rounding
        np.testing.assert_allclose(ref.cameras.t[i], cam.t, atol=2e-5)
        np.testing.assert_allclose(ref.traces[i, :steps[i]], trace, rtol=1e-4, atol=2e-6)
    never = pose.refine_poses_detailed(g, starts, queries, replace(config, stop_patience=40), key=jax.random.key(5))
    full = pose.refine_poses_detailed(g, starts, queries, replace(config, stop_patience=0), key=jax.random.key(5))
    np.testing.assert_array_equal(np.asarray(never.steps), [40, 40, 40])
    np.testing.assert_allclose(never.cameras.R, full.cameras.R, atol=2e-5)
    np.testing.assert_allclose(never.traces, full.traces, rtol=1e-4, atol=2e-6)


def test_early_stop_reaches_the_estimate(scene):
    g, cams, _, _ = scene
    qcams, queries = _queries_near(g, cams, [1, 7], 80)
    config = _stall_config(coarse="render", coarse_resolution=16, inplane_rotations=0, keypoints=False,
                           screen_steps=0)
    est = pose.estimate_poses(g, queries, cams, config, key=jax.random.key(0))
    assert est.fine_steps.shape == (2,) and np.all(est.fine_steps < 40)
    assert np.all(est.best_step <= est.fine_steps)
    with pytest.raises(ConfigError, match="stop_patience"):
        PoseConfig(stop_patience=-1)


def _late_start_loss(idle):
    # x moves by -0.01 a step under SGD (the gradient is 1 everywhere); the value stays just above
    # the start's (1.001, rising) until x passes -0.3 (step 31), then falls 1 % a step down to a floor at
    # x = -0.8 (step 80): a query that needs more than the patience to leave its start
    def loss(p):
        x = p["x"]
        value = 1.0 + jnp.where(x > -0.3, 0.001 - 1e-4 * x, jnp.maximum(x + 0.3, -0.5))
        return x + jax.lax.stop_gradient(value - x)
    return loss


def test_stall_counts_from_the_first_step_that_beats_the_start():
    # the saddle case (beetle-5 Burrs/8): a stall counted from step 0 ended the query on its start
    opt = optax.sgd(0.01)
    params = {"x": jnp.zeros(())}
    carry = (params, opt.init(params), params, jnp.asarray(jnp.inf), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    run = jax.jit(lambda c: pose.fine._level_until_stall(_late_start_loss, opt, c, 0, 150, 5, 1e-3))
    out, trace, taken = run(carry)
    trace, taken = np.asarray(trace), int(taken)
    best_loss, best_step = float(out[3]), int(out[4])
    assert np.all(trace[1:31] >= trace[0]) and trace[31] < trace[0]  # 30 steps without beating the start
    assert best_loss == pytest.approx(0.5, abs=1e-4) and 80 <= best_step < taken  # it went on to the floor
    assert 85 <= taken <= 90 and np.all(np.isnan(trace[taken:]))  # and stopped once the floor stalled
    # the study's offline rule (scripts/fine_schedule_study.py) stops the same trace at the same step
    study = load_script("fine_schedule_study")
    full = np.asarray(jax.lax.scan(pose.fine._step_fn(_late_start_loss(False), opt, True), carry,
                                   jnp.arange(151))[1])
    np.testing.assert_allclose(full[:taken], trace[:taken], rtol=1e-6)
    assert study._rule_index(full, ("stall", 5, 1e-3))[1] == taken - 1
    # a query that never beats its start (its loss rises) runs every step
    rising = lambda idle: lambda p: p["x"] + jax.lax.stop_gradient(1.0 - 2.0 * p["x"])  # noqa: E731
    _, trace, taken = pose.fine._level_until_stall(rising, opt, carry, 0, 40, 5, 1e-3)
    assert int(taken) == 40 and np.all(np.isfinite(np.asarray(trace)))
    assert study._rule_index(np.ones(41), ("stall", 5, 1e-3)) == (0, 40)


@pytest.mark.parametrize("backend", available_backends())
def test_idle_camera_sees_nothing(scene, backend):
    g, cams, _, images = scene
    cam = pose.index_cameras(cams, 0)
    same = pose.fine._idle_camera(cam, jnp.asarray(False))
    np.testing.assert_array_equal(same.t, cam.t)
    rgb, alpha = render(g, pose.fine._idle_camera(cam, jnp.asarray(True)), backend=backend)
    assert float(jnp.max(alpha)) == 0.0 and float(jnp.min(rgb)) == 1.0  # the background only


def test_init_theta_starts_the_screw_at_theta(scene):
    s = pose.init_screw(key=jax.random.key(1), theta=1.0)
    assert float(s["theta"]) == pytest.approx(1.0, abs=1e-5) and float(jnp.max(jnp.abs(s["w"]))) < 1e-5
    g, cams, _, _ = scene
    qcams, queries = _queries_near(g, cams, [4], 90)
    start = pose.index_cameras(cams, 4)
    base = PoseConfig(steps=15, backend="reference")
    # theta 1: the screw moves the pose from the first steps (about linear in w, v), theta 0 barely
    errs = {}
    for theta in (0.0, 1.0):
        cam, _ = pose.refine_pose(g, start, queries[0], replace(base, init_theta=theta), key=jax.random.key(2))
        errs[theta] = float(pose_errors(pose.camera_to_c2w(cam), pose.camera_to_c2w(pose.index_cameras(qcams, 0)))
                            ["rotation_rad"])
    assert errs[1.0] < errs[0.0]
    # the exact exponential ignores it (theta is its rotation angle)
    a, _ = pose.refine_pose(g, start, queries[0], replace(base, exact_exp=True, init_theta=1.0), key=jax.random.key(2))
    b, _ = pose.refine_pose(g, start, queries[0], replace(base, exact_exp=True), key=jax.random.key(2))
    np.testing.assert_array_equal(a.R, b.R)
    with pytest.raises(ConfigError, match="init_theta"):
        PoseConfig(init_theta=7.0)
