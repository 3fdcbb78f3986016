"""3DGS fitting, the engine: optimiser, buffer growth without silent drops, compilation
counts, validation, stopping and continuing from a state (tiny scenes, reference renderer).
Schedules: test_fitting_schedule.py; density control: test_fitting_densify.py; run
folders, resuming and interrupts: test_app_fit_run.py."""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scenes import look_at_c2w, random_scene

import splatjax as sj
from splatjax.data.types import PosedViews
from splatjax.fitting import FitConfig, fit, make_optimizer, scene_extent, train_view_indices
from splatjax.errors import ConfigError
from splatjax.fitting import train as train_mod

# One small schedule shared by the tests, so compilations are reused between them:
# densification after steps 10, 20, 30 and 40 (none after 42 = 70 % of 60), opacity resets
# after steps 20 and 40 (then pruning below opacity 0.012 at steps 30 and 40), size pruning
# after step 20; the buffer starts at 64 slots for 48 points and must grow.
TOY = FitConfig(
    iterations=60, resolution=None, init_points=48, init_extent=0.7, capacity=64, chunk_steps=10,
    densify_from=0, densify_every=10, densify_until=50, densify_grad_threshold=2e-4,
    opacity_reset_every=20, prune_opacity=0.012, checkpoint_every=20, val_every=20, log_every=10,
    backend="reference",
)


def toy_views(n_views: int = 6, size: int = 24, seed: int = 0) -> PosedViews:
    """Views of 24 random Gaussians from cameras on a sphere of radius 3 (reference renderer)."""
    g = random_scene(seed, 24, spread=0.5)
    c2w = []
    for i in range(n_views):
        a = 2 * np.pi * i / n_views
        el = 0.5 * np.sin(3 * a)
        c2w.append(look_at_c2w(3.0 * np.array([np.cos(a) * np.cos(el), np.sin(a) * np.cos(el), np.sin(el)])))
    c2w = np.stack(c2w)
    fov = 0.8
    images = [np.asarray(sj.render(g, sj.camera_from_blender(m, fov, size, size), backend="reference")[0])
              for m in c2w]
    return PosedViews(images=np.clip(np.stack(images), 0, 1).astype(np.float32), c2w=c2w, camera_angle_x=fov,
                      paths=tuple(f"r_{i}.png" for i in range(n_views)))


# ----------------------------------------------------------------------------- optimiser
def test_scene_extent_and_position_lr_schedule():
    c2w = np.tile(np.eye(4), (3, 1, 1))
    c2w[:, :3, 3] = [[1, 0, 0], [-1, 0, 0], [0, 0, 0]]
    assert scene_extent(c2w) == pytest.approx(1.1)
    opt = make_optimizer(FitConfig(iterations=1000), extent=2.0)
    p = sj.Gaussians(means=jnp.zeros((1, 3)), log_scales=jnp.zeros((1, 3)), quats=jnp.zeros((1, 4)),
                     opacity_logits=jnp.zeros((1,)), sh0=jnp.zeros((1, 3)))
    g = jax.tree_util.tree_map(jnp.ones_like, p)
    state = opt.init(p)
    update = jax.jit(opt.update)
    lrs, others = [], []
    for _ in range(1001):  # Adam's first update is -lr * sign(g); with constant g |update| = lr
        upd, state = update(g, state, p)
        lrs.append(-float(upd.means[0, 0]))
        others.append([-float(x.ravel()[0]) for x in (upd.log_scales, upd.quats, upd.opacity_logits, upd.sh0)])
    assert lrs[0] == pytest.approx(1.6e-4 * 2.0, rel=1e-3)
    assert lrs[500] == pytest.approx(1.6e-5 * 2.0, rel=1e-2)  # log-linear midpoint
    assert lrs[1000] == pytest.approx(1.6e-6 * 2.0, rel=1e-2)
    np.testing.assert_allclose(others[0], [5e-3, 1e-3, 5e-2, 2.5e-3], rtol=1e-4)
    np.testing.assert_allclose(others[-1], others[0], rtol=1e-4)  # only the means decay


def test_state_surgery_moves_moments_and_resizes():
    g = random_scene(1, 6)
    state = train_mod.init_state(g, TOY, 1.0, 8)
    opt = make_optimizer(TOY, 1.0)
    grads = jax.tree_util.tree_map(lambda x: jnp.ones_like(x) * jnp.arange(1.0, 9.0).reshape((-1,) + (1,) * (x.ndim - 1)),
                                   state.params)
    _, opt_state = opt.update(grads, state.opt_state, state.params)
    state = dataclasses.replace(state, opt_state=opt_state) if dataclasses.is_dataclass(state) else \
        train_mod.TrainState(params=state.params, opt_state=opt_state, active=state.active, stats=state.stats,
                             step=state.step)
    big = train_mod.resize_state(state, 16, TOY, 1.0)
    mu = big.opt_state.inner_states["sh0"].inner_state[0].mu.sh0
    assert mu.shape == (16, 3) and float(jnp.abs(mu[8:]).sum()) == 0
    np.testing.assert_allclose(np.asarray(mu[:8, 0]), 0.1 * np.arange(1.0, 9.0), rtol=1e-6)
    assert big.capacity == 16 and not bool(big.active[8:].any()) and int(big.opt_state.inner_states["sh0"].inner_state[0].count) == 1
    reset = train_mod.reset_state(big, strategy=sj.fitting.strategy_for(TOY), config=TOY, extent=1.0)
    assert float(jnp.abs(reset.opt_state.inner_states["opacity_logits"].inner_state[0].mu.opacity_logits).sum()) == 0
    assert float(jnp.abs(reset.opt_state.inner_states["sh0"].inner_state[0].mu.sh0).sum()) > 0
    with pytest.raises(ValueError, match="cannot shrink"):
        train_mod.resize_state(reset, 4, TOY, 1.0)


# ----------------------------------------------------------------------------- fitting
@pytest.fixture(scope="module")
def views():
    return toy_views()


def test_fit_grows_the_buffer_and_recompiles_only_at_growth(views, caplog):
    for fn in (train_mod.train_chunk, train_mod.densify_state, train_mod.reset_state, train_mod.densify_demand):
        fn.clear_cache()  # count from a cold start, whatever ran before
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        result = fit(views, TOY)
    compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling ")]
    densify = [e for e in result.events if "densify" in e]
    resizes = [e for e in result.events if "resize" in e]
    assert [e["step"] for e in densify] == [10, 20, 30, 40]
    assert [e["step"] for e in result.events if "reset_opacity" in e] == [20, 40]
    capacities = {64} | {e["resize"] for e in resizes}
    assert resizes and resizes[0]["resize"] > 64 and resizes[0]["needed"] > 64  # grew
    assert all(e["resize"] & (e["resize"] - 1) == 0 for e in resizes)  # powers of two
    assert sum("jit(train_chunk)" in m for m in compiled) == len(capacities), compiled
    assert all(e["densify"]["dropped"] == 0 for e in densify)  # never silently dropped
    counts = [TOY.init_points] + [e["densify"]["active"] for e in densify]
    assert counts[1] > counts[0] and sum(e["densify"]["cloned"] + e["densify"]["split"] for e in densify) > 0
    assert densify[2]["densify"]["pruned"] > 0  # opacity reset at 20, pruned at 30
    assert result.num_gaussians == counts[-1] and result.state.capacity >= counts[-1]
    assert result.steps == 60 and result.completed and np.isfinite(result.final_loss)


def test_roomy_buffer_grows_with_headroom_and_never_shrinks(views):
    """buffer="roomy" (the GPU default): every growth leaves room for twice the demand, no
    shrink, so no more distinct buffer sizes (= compilations of the training chunk) than the
    compact policy; both fits see the same schedule of densifications."""
    from splatjax.fitting import buffer_is_roomy

    assert buffer_is_roomy(TOY, "cuda") and not buffer_is_roomy(TOY, "cpu") and not buffer_is_roomy(TOY, "reference")
    assert buffer_is_roomy(dataclasses.replace(TOY, buffer="roomy"), "cpu")
    assert not buffer_is_roomy(dataclasses.replace(TOY, buffer="compact"), "cuda")
    runs = {b: fit(views, dataclasses.replace(TOY, buffer=b)) for b in ("compact", "roomy")}
    sizes = {}
    for b, result in runs.items():
        caps = [64] + [e["resize"] for e in result.events if "resize" in e]
        sizes[b] = caps
        assert [e["step"] for e in result.events if "densify" in e] == [10, 20, 30, 40]
    roomy = [e for e in runs["roomy"].events if "resize" in e]
    assert roomy and all(e["resize"] >= 2 * e["needed"] for e in roomy)
    assert all(a < b for a, b in zip(sizes["roomy"], sizes["roomy"][1:]))  # only grows
    assert len(set(sizes["roomy"])) <= len(set(sizes["compact"]))
    with pytest.raises(ConfigError):
        dataclasses.replace(TOY, buffer="huge")


def test_unguarded_chunk_equals_the_guarded_one(views):
    """A chunk compiled without the per-step iteration test (a GPU round trip per step)
    computes the same state and losses when it ends before ``iterations``."""
    cfg = train_mod.compiled_config(TOY)
    images, cams = jnp.asarray(views.images), views.cameras
    outs = []
    for guarded in (True, False):
        s = train_mod.init_state(random_scene(4, 24), TOY, 1.0, 32)
        s, losses, psnrs = train_mod.train_chunk(s, images, cams, jax.random.PRNGKey(1), jnp.int32(1000), 1000,
                                                 config=cfg, extent=1.0, guarded=guarded)
        outs.append((s.params.means, s.step, losses, psnrs))
    for a, b in zip(*outs):  # the same up to float rounding (the two programs fuse differently)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    assert int(outs[0][1]) == TOY.chunk_steps and np.all(np.isfinite(np.asarray(outs[0][2])))


def test_fit_learns_and_validates(views):
    cfg = dataclasses.replace(TOY, densify_until=0)  # no densification or opacity reset
    result = fit(views, cfg, val=views)
    hist = result.history
    assert [h["step"] for h in hist] == [10, 20, 30, 40, 50, 60]
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert hist[-1]["val_psnr"] > hist[1]["val_psnr"] > 14.0 and 0.0 < result.val_ssim <= 1.0
    assert result.val_psnr == hist[-1]["val_psnr"]
    assert {"val_psnr", "val_ssim"} <= set(hist[1]) and "val_psnr" not in hist[0]


def test_stop_and_continue_equals_uninterrupted(views):
    """A callback stops the fit after step 30 (after densifications at 10, 20, 30, a reset at
    20 and a growth); continuing from the returned state gives the same parameters."""
    full = fit(views, TOY)
    seen = []

    def stop_at_30(report):
        seen.append((report.step, report.record is not None, report.completed))
        return report.step >= 30

    part = fit(views, TOY, callback=stop_at_30)
    assert not part.completed and part.steps == 30 and part.val_psnr is None
    assert seen == [(10, True, False), (20, True, False), (30, True, False)]
    rest = fit(views, TOY, state=part.state)
    assert rest.completed and rest.steps_run == 30 and [e["step"] for e in rest.events if "densify" in e] == [40]
    assert rest.num_gaussians == full.num_gaussians
    for a, b in zip(jax.tree_util.tree_leaves(rest.state), jax.tree_util.tree_leaves(full.state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_train_fraction_subset():
    a = train_view_indices(10, 0.4, seed=3)
    assert len(a) == 4 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, train_view_indices(10, 0.4, seed=3))
    assert not np.array_equal(a, train_view_indices(10, 0.4, seed=4))
    np.testing.assert_array_equal(train_view_indices(10, 1.0, seed=3), np.arange(10))


def test_fit_from_a_point_cloud(views):
    pts = np.concatenate([np.random.default_rng(0).uniform(-0.5, 0.5, (30, 3)), np.full((30, 3), 0.5)], 1)
    result = fit(views, dataclasses.replace(TOY, iterations=10, densify_until=0), init=pts)
    assert result.state.capacity == 64 and result.num_gaussians == 30
    with pytest.raises(ValueError, match=r"\[M, 3\]"):
        fit(views, TOY, init=np.zeros((4, 2)))


def test_sh_rest_learning_rate_and_active_degree(views):
    """sh_rest learns at lr_colors / 20; coefficients above the active degree get no update
    (the schedule's warm-up), those within it do."""
    cfg = dataclasses.replace(TOY, sh_degree=2, densify_until=0)
    opt = make_optimizer(cfg, 1.0)
    g = random_scene(2, 5).with_sh_degree(2)
    upd, _ = opt.update(jax.tree_util.tree_map(jnp.ones_like, g), opt.init(g), g)
    np.testing.assert_allclose(-np.asarray(upd.sh_rest), 2.5e-3 / 20, rtol=1e-4)
    state = train_mod.init_state(random_scene(3, 24), cfg, 1.0, 32)
    assert state.params.sh_rest.shape == (32, 8, 3) and float(jnp.abs(state.params.sh_rest).max()) == 0.0
    images, cams = jnp.asarray(views.images), views.cameras

    def run(every):
        s = train_mod.init_state(random_scene(3, 24), cfg, 1.0, 32)
        s, _, _ = train_mod.train_chunk(s, images, cams, jax.random.PRNGKey(0), jnp.int32(10), jnp.int32(every),
                                        config=train_mod.compiled_config(cfg), extent=1.0)
        return np.abs(np.asarray(s.params.sh_rest[:24]))

    frozen, degree1 = run(1000), run(6)  # steps 1-10: degree 0 throughout / degree 1 from step 6
    assert frozen.max() == 0.0
    assert degree1[:, :3].max() > 0.0 and degree1[:, 3:].max() == 0.0


@pytest.mark.slow  # resume is tested at degree 0 (test_fit_resume), degree-3 training in test_sh_rest_learning_rate...
def test_fit_with_sh_degree_3_saves_and_resumes(views, tmp_path):
    """A degree-3 fit: the degree rises, the model saves with 45 f_rest values, and a fit
    stopped, checkpointed, restored and continued equals the uninterrupted one."""
    from plyfile import PlyData

    from splatjax.app.checkpoint import RunCheckpointer
    from splatjax.fitting import new_state

    cfg = dataclasses.replace(TOY, sh_degree=3, iterations=40)
    full = fit(views, cfg)
    assert full.gaussians.sh_degree == 3 and [h["sh_degree"] for h in full.history] == [3, 3, 3, 3]
    assert float(jnp.abs(full.gaussians.sh_rest).max()) > 0.0
    sj.save_ply(full.gaussians, tmp_path / "m.ply")
    names = [p.name for p in PlyData.read(str(tmp_path / "m.ply"))["vertex"].properties]
    assert sum(n.startswith("f_rest_") for n in names) == 45
    part = fit(views, cfg, callback=lambda r: r.step >= 20)
    with RunCheckpointer(tmp_path / "ck") as ck:
        ck.save(20, {"state": part.state})
    with RunCheckpointer(tmp_path / "ck") as ck:
        tree, _, _ = ck.restore({"state": new_state(views, cfg, capacity=part.state.capacity)})
    restored = jax.tree_util.tree_map(jnp.asarray, tree["state"])
    rest = fit(views, cfg, state=restored)
    for a, b in zip(jax.tree_util.tree_leaves(rest.state), jax.tree_util.tree_leaves(full.state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_lego_default_3000_steps(lego_path):
    """The plain `splatjax fit LEGO --resolution 200 --iterations 3000` schedule (a few minutes)."""
    if "cpu" not in sj.available_backends() and "cuda" not in sj.available_backends():
        pytest.skip("needs an FFI kernel backend")
    cfg = FitConfig(iterations=3000, resolution=200, val_views=10)
    train = sj.load_blender(lego_path, "train", 200)
    val = sj.load_blender(lego_path, "val", 200)
    result = fit(train, cfg, val=val)
    assert result.val_psnr >= 29.0 and result.num_gaussians > 10_000
