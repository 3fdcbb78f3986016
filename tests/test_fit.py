"""3DGS fitting: schedules, adaptive density control on the static buffer, compilation
counts, run folders and the command-line options (tiny scenes, reference renderer)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scenes import look_at_c2w, random_scene

import splatjax as sj
from splatjax.data.types import PosedViews
from splatjax.fitting.densify import (
    INACTIVE_LOGIT,
    DensityStats,
    densify_and_prune,
    pad_gaussians,
    reset_opacity,
    screen_radii,
    update_stats,
)
from splatjax.fitting import (
    FitConfig,
    add_fit_arguments,
    config_from_args,
    fit,
    make_optimizers,
    run_fit,
    scene_extent,
)

# One small schedule shared by the tests, so the compiled chunk is reused between them:
# densification after steps 10, 20 and 30, an opacity reset after step 20 (then pruning
# below opacity 0.012 at step 30), size pruning after step 20.
TOY = FitConfig(
    iterations=40, resolution=None, init_points=48, init_extent=0.7, capacity=256, chunk_steps=10,
    densify_from=0, densify_every=10, densify_until=40, densify_grad_threshold=2e-4,
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


# ----------------------------------------------------------------------------- config, schedules
def test_defaults_match_reference():
    c = FitConfig()
    assert c.iterations == 30_000 and c.background == (1.0, 1.0, 1.0)
    assert (c.lr_means, c.lr_means_final, c.lr_colors, c.lr_opacity, c.lr_scales, c.lr_quats) == (
        1.6e-4, 1.6e-6, 2.5e-3, 5e-2, 5e-3, 1e-3)
    assert c.adam_eps == 1e-15 and c.ssim_weight == 0.2
    assert (c.densify_from, c.densify_until, c.densify_every) == (500, 15_000, 100)
    assert (c.densify_grad_threshold, c.percent_dense, c.prune_opacity) == (2e-4, 0.01, 0.005)
    assert (c.prune_screen_size, c.prune_world_size, c.opacity_reset_every) == (20.0, 0.1, 3000)
    assert (c.init_points, c.init_extent, c.init_opacity) == (100_000, 1.3, 0.1)


def test_config_rejects_misaligned_chunks():
    with pytest.raises(ValueError, match="multiple of chunk_steps"):
        FitConfig(chunk_steps=300)
    with pytest.raises(ValueError, match="train_fraction"):
        FitConfig(train_fraction=0.0)


def test_scene_extent_and_position_lr_schedule():
    c2w = np.tile(np.eye(4), (3, 1, 1))
    c2w[:, :3, 3] = [[1, 0, 0], [-1, 0, 0], [0, 0, 0]]
    assert scene_extent(c2w) == pytest.approx(1.1)
    cfg = FitConfig(iterations=1000)
    opt = make_optimizers(cfg, extent=2.0)["means"]
    p = jnp.zeros((1, 3))
    state = opt.init(p)
    lrs = []
    for _ in range(1001):  # Adam's first update is -lr * sign(g); |update| = lr
        upd, state = opt.update(jnp.ones((1, 3)), state, p)
        lrs.append(-float(upd[0, 0]))
    assert lrs[0] == pytest.approx(1.6e-4 * 2.0, rel=1e-3)
    assert lrs[500] == pytest.approx(1.6e-5 * 2.0, rel=1e-2)  # log-linear midpoint
    assert lrs[1000] == pytest.approx(1.6e-6 * 2.0, rel=1e-2)


# ----------------------------------------------------------------------------- density control
def _six_gaussians():
    """Six active Gaussians in a buffer of 10 (extent 1: clone if max scale <= 0.01)."""
    scales = np.array([0.005, 0.05, 0.05, 0.05, 0.2, 0.05])
    opac = np.array([0.5, 0.5, 0.001, 0.5, 0.5, 0.5])
    g = sj.Gaussians(
        means=jnp.asarray(np.arange(18, dtype=np.float32).reshape(6, 3) * 0.1),
        log_scales=jnp.asarray(np.log(np.repeat(scales[:, None], 3, 1)), jnp.float32),
        quats=jnp.asarray(np.tile([1.0, 0, 0, 0], (6, 1)), jnp.float32),
        opacity_logits=jnp.asarray(np.log(opac / (1 - opac)), jnp.float32),
        sh0=jnp.asarray(np.arange(18, dtype=np.float32).reshape(6, 3)),
    )
    params, active = pad_gaussians(g, 10)
    grads = np.zeros(10, np.float32)
    grads[:2] = 1e-3  # 0: small -> clone; 1: large -> split
    radii = np.zeros(10, np.float32)
    radii[5] = 30.0  # 5: big on screen
    stats = DensityStats(grad_accum=jnp.asarray(grads * 2), denom=jnp.full((10,), 2.0), max_radii=jnp.asarray(radii))
    opt_state = {"m": jnp.arange(10, dtype=jnp.float32) + 1.0, "count": jnp.asarray(7)}
    return params, active, stats, opt_state


def _densify(params, active, stats, opt_state, *, size_prune, grad_threshold=2e-4):
    return densify_and_prune(params, opt_state, active, stats, key=jax.random.PRNGKey(3), extent=1.0,
                             grad_threshold=grad_threshold, percent_dense=0.01, min_opacity=0.005,
                             size_prune=size_prune, max_screen_size=20.0, max_world_size=0.1)


def test_densify_clone_split_prune_counts():
    params, active, stats, opt_state = _six_gaussians()
    new, opt, act, st, counts = _densify(params, active, stats, opt_state, size_prune=True)
    # kept old: 0, 3 (2 low opacity, 4 world-big, 5 screen-big pruned; 1 replaced by its split)
    assert (int(counts.cloned), int(counts.split), int(counts.pruned), int(counts.dropped)) == (1, 1, 3, 0)
    assert int(counts.active) == 5 and np.asarray(act).tolist() == [True] * 5 + [False] * 5
    m = np.asarray(new.means)
    np.testing.assert_array_equal(m[0], np.asarray(params.means[0]))  # kept, compacted in order
    np.testing.assert_array_equal(m[1], np.asarray(params.means[3]))
    np.testing.assert_array_equal(m[2], np.asarray(params.means[0]))  # the clone
    np.testing.assert_allclose(np.exp(np.asarray(new.log_scales[3:5])), 0.05 / 1.6, rtol=1e-5)  # split children
    assert np.all(np.abs(m[3:5] - np.asarray(params.means[1])) < 0.05 * 6)  # sampled around the parent
    assert not np.allclose(m[3], m[4])
    np.testing.assert_array_equal(np.asarray(new.sh0[3]), np.asarray(params.sh0[1]))
    # free slots are inactive (invisible); moments follow their Gaussian, new ones start at zero
    assert np.all(np.asarray(new.opacity_logits[5:]) == INACTIVE_LOGIT)
    np.testing.assert_array_equal(np.asarray(opt["m"]), [1, 4, 0, 0, 0, 0, 0, 0, 0, 0])
    assert int(opt["count"]) == 7
    assert all(float(jnp.abs(x).sum()) == 0 for x in (st.grad_accum, st.denom, st.max_radii))


def test_densify_without_size_pruning_keeps_large():
    params, active, stats, opt_state = _six_gaussians()
    *_, counts = _densify(params, active, stats, opt_state, size_prune=False)
    assert (int(counts.cloned), int(counts.split), int(counts.pruned)) == (1, 1, 1)
    assert int(counts.active) == 7  # 6 - 1 pruned - 1 split parent + 1 clone + 2 children


def test_densify_capacity_priority():
    params, active, stats, opt_state = _six_gaussians()
    # Fill the buffer: 10 active, candidates 0 (clone, grad 1e-3) and 6 (clone, grad 5e-3).
    params = jax.tree_util.tree_map(lambda x: x.at[6:].set(x[0]), params)
    active = jnp.ones(10, bool)
    grads = np.zeros(10, np.float32)
    grads[0], grads[6] = 1e-3, 5e-3
    stats = DensityStats(grad_accum=jnp.asarray(grads), denom=jnp.ones(10), max_radii=jnp.zeros(10))
    # Without size pruning only Gaussian 2 (low opacity) goes: one free slot for two clones.
    new, _, act, _, counts = _densify(params, active, stats, opt_state, size_prune=False)
    assert (int(counts.cloned), int(counts.dropped), int(counts.candidates), int(counts.active)) == (1, 1, 2, 10)
    np.testing.assert_array_equal(np.asarray(new.sh0[9]), np.asarray(params.sh0[6]))  # larger gradient won


def test_reset_opacity_and_visibility_of_inactive():
    params, active, stats, _ = _six_gaussians()
    moments = {"mu": jnp.ones(10), "count": jnp.asarray(3)}
    new, m = reset_opacity(params, moments, active, value=0.01)
    op = np.asarray(jax.nn.sigmoid(new.opacity_logits))
    np.testing.assert_allclose(op[:6], np.minimum(np.asarray(params.opacities[:6]), 0.01), rtol=1e-5)
    assert np.all(np.asarray(new.opacity_logits[6:]) == INACTIVE_LOGIT)
    assert float(m["mu"].sum()) == 0 and int(m["count"]) == 3
    # inactive slots are invisible: never counted, and they leave the image unchanged
    cam = sj.camera_from_blender(look_at_c2w([0.0, -3.0, 0.5]), 0.8, 16, 16)
    radii, visible = screen_radii(params, cam, active)
    assert not np.any(np.asarray(visible[6:])) and np.all(np.asarray(radii[6:]) == 0)
    full, _ = sj.render(params, cam, backend="reference")
    only, _ = sj.render(params.take(jnp.arange(6)), cam, backend="reference")
    np.testing.assert_allclose(np.asarray(full), np.asarray(only), atol=1e-6)


def test_stats_use_ndc_gradient_units_and_visible_steps():
    stats = DensityStats.zeros(3)
    g2d = jnp.asarray([[2e-6, 0.0], [0.0, 1e-6], [5.0, 5.0]])
    radii = jnp.asarray([4.0, 9.0, 30.0])
    visible = jnp.asarray([True, True, False])
    for _ in range(2):
        stats = update_stats(stats, g2d, radii, visible, 200, 100)
    # pixel gradients times (W/2, H/2), as the INRIA rasterizer reports screen-space gradients
    np.testing.assert_allclose(np.asarray(stats.grad_accum), [4e-4, 1e-4, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(stats.denom), [2, 2, 0])
    np.testing.assert_array_equal(np.asarray(stats.max_radii), [4, 9, 0])


# ----------------------------------------------------------------------------- fitting
@pytest.fixture(scope="module")
def views():
    return toy_views()


def test_fit_grows_prunes_without_recompiling(views, caplog):
    fit_module = importlib.import_module("splatjax.fitting")

    cfg = TOY
    for fn in (fit_module._train_chunk, fit_module._densify, fit_module._reset_opacity):
        fn.clear_cache()  # count from a cold start, whatever ran before
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        g, info = fit(views, cfg, progress=False)
    compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling ")]
    for name in ("_train_chunk", "_densify", "_reset_opacity"):
        assert sum(f"jit({name})" in msg for msg in compiled) == 1, (name, compiled)
    events = info["densify_events"]
    assert [e["step"] for e in events] == [10, 20, 30]
    counts = [cfg.init_points] + [e["num_gaussians"] for e in events]
    assert counts[1] > counts[0]  # grows
    assert sum(e["cloned"] + e["split"] for e in events) > 0
    assert events[-1]["pruned"] > 0  # opacity reset at 20, then pruned at 30
    assert len(set(counts)) == len(counts)  # the active count changed at every event
    assert info["num_gaussians"] == g.num == counts[-1] and info["capacity"] == cfg.capacity
    assert info["steps"] == 40 and info["completed"] and np.isfinite(info["final_loss"])


def test_fit_learns_and_validates(views):
    cfg = dataclasses.replace(TOY, densify_until=0)  # no densification or opacity reset
    g, info = fit(views, cfg, val=views, progress=False)
    hist = info["history"]
    assert [h["step"] for h in hist] == [10, 20, 30, 40]
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert hist[-1]["val_psnr"] > hist[1]["val_psnr"] > 14.0 and 0.0 < info["val_ssim"] <= 1.0
    assert {"val_psnr", "val_ssim"} <= set(hist[1]) and "val_psnr" not in hist[0]
    assert info["steps_per_second"] > 0


def test_capacity_overflow_warns(views):
    cfg = dataclasses.replace(TOY, capacity=50)
    with pytest.warns(RuntimeWarning, match="capacity 50"):
        g, info = fit(views, cfg, progress=False)
    assert info["overflow_events"] and g.num <= 50


def test_train_fraction_subset(views):
    from splatjax.fitting import _train_view_indices

    a = _train_view_indices(10, 0.4, seed=3)
    assert len(a) == 4 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, _train_view_indices(10, 0.4, seed=3))
    assert not np.array_equal(a, _train_view_indices(10, 0.4, seed=4))
    np.testing.assert_array_equal(_train_view_indices(10, 1.0, seed=3), np.arange(10))


def _write_blender(root, views: PosedViews, split: str):
    from PIL import Image

    (root / split).mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (img, m) in enumerate(zip(views.images, views.c2w)):
        rgba = np.concatenate([np.round(img * 255), np.full(img.shape[:2] + (1,), 255.0)], -1)
        Image.fromarray(rgba.astype(np.uint8), "RGBA").save(root / split / f"r_{i}.png")
        frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": m.tolist()})
    (root / f"transforms_{split}.json").write_text(
        json.dumps({"camera_angle_x": views.camera_angle_x, "frames": frames}))


def test_run_fit_writes_run_folder(views, tmp_path):
    data = tmp_path / "scene"
    _write_blender(data, views, "train")
    _write_blender(data, views.subset([0, 3]), "val")
    run = tmp_path / "run"
    g, info = run_fit(data, run, TOY, progress=False)
    assert (run / "model.ply").is_file() and (run / "info.json").is_file()
    loaded = sj.load_ply(run / "model.ply")
    np.testing.assert_array_equal(np.asarray(loaded.means), np.asarray(g.means))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["fit_config"]["iterations"] == 40 and cfg["image_size"] == [24, 24]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [10, 20, 30, 40]
    assert {"loss", "psnr", "num_gaussians", "steps_per_second"} <= set(lines[0])
    assert "val_psnr" in lines[-1] and info["val_psnr"] == lines[-1]["val_psnr"]
    with pytest.raises(ValueError, match="inside the dataset folder"):
        run_fit(data, data / "run", TOY, progress=False)
    with pytest.raises(FileNotFoundError, match="transforms_train.json"):
        run_fit(tmp_path / "run", tmp_path / "run2", TOY, progress=False)


def test_run_fit_mad_class_folder(views, tmp_path):
    from PIL import Image

    data = tmp_path / "01Toy"
    (data / "train" / "good").mkdir(parents=True)
    frames = []
    for i, (img, m) in enumerate(zip(views.images, views.c2w)):
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(data / "train" / "good" / f"{i}.png")
        frames.append({"file_path": f"train/good/{i}.png", "transform_matrix": m.tolist()})
    (data / "transforms.json").write_text(json.dumps({"camera_angle_x": views.camera_angle_x, "frames": frames}))
    g, info = run_fit(data, tmp_path / "run", TOY, progress=False)
    assert info["completed"] and "val_psnr" not in info and g.num == info["num_gaussians"]
    assert (tmp_path / "run" / "model.ply").is_file()


def test_cli_arguments_map_to_config():
    parser = add_fit_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["DATA", "--out", "RUN", "--iterations", "7000", "--resolution", "200",
                              "--capacity", "300000", "--train-fraction", "0.4", "--backend", "reference",
                              "--val-views", "none", "--background", "0", "0", "0", "--resume"])
    cfg = config_from_args(args)
    assert (cfg.iterations, cfg.resolution, cfg.capacity, cfg.train_fraction) == (7000, 200, 300000, 0.4)
    assert cfg.background == (0.0, 0.0, 0.0) and cfg.backend == "reference" and cfg.val_views is None
    assert args.resume and args.data == "DATA" and args.out == "RUN"
    assert config_from_args(parser.parse_args(["D", "--out", "R"])) == FitConfig()


@pytest.mark.slow
def test_lego_reduced_schedule_reaches_24db(lego_path, tmp_path):
    """The documented reduced CPU schedule (scripts/fit_lego_cpu.py; ~3-5 min on 2 cores)."""
    if "cpu" not in sj.available_backends() and "cuda" not in sj.available_backends():
        pytest.skip("needs an FFI kernel backend")
    cfg = FitConfig(iterations=3000, resolution=200, init_points=10_000, capacity=80_000, densify_until=2000,
                    checkpoint_every=1000, val_every=1000, val_views=10)
    g, info = run_fit(lego_path, tmp_path / "run", cfg, progress=False)
    assert info["val_psnr"] >= 24.0 and g.num == info["num_gaussians"] > 10_000
