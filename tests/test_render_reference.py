"""The reference renderer: gradients (float64), vmap, jit, pose equivalence, semantics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import splatjax as sj
from splatjax import se3
from splatjax.render.reference import rasterize_reference

from scenes import look_at_c2w, random_scene

W, H = 20, 16


def _camera(eye, dtype=jnp.float32, w=W, h=H):
    return sj.camera_from_blender(look_at_c2w(eye), 0.9, w, h, dtype=dtype)


def test_renders_object_in_view_and_background_elsewhere():
    g = random_scene(0, 30)
    rgb, alpha = sj.render(g, _camera((0, -3, 0.5), w=48, h=40), backend="reference")
    assert rgb.shape == (40, 48, 3) and alpha.shape == (40, 48)
    assert float(alpha.max()) > 0.5
    # a camera looking away sees only the white background
    away = sj.camera_from_blender(look_at_c2w((0, -3, 0.5), target=(0, -6, 0.5)), 0.9, W, H)
    rgb2, alpha2 = sj.render(g, away, backend="reference")
    assert float(alpha2.max()) == 0.0
    np.testing.assert_allclose(np.asarray(rgb2), 1.0)


def test_single_gaussian_matches_closed_form():
    """One isotropic Gaussian straight ahead: alpha at each pixel is o * exp(-d^2 / (2 s'^2))
    with s'^2 = (f s / z)^2 + 0.3 (alphas below 1/255 skipped, clamp 0.99)."""
    z, s, o, f = 4.0, 0.05, 0.7, 30.0
    g = sj.Gaussians(
        means=jnp.array([[0.0, 0.0, 0.0]]), log_scales=jnp.full((1, 3), np.log(s)),
        quats=jnp.array([[1.0, 0, 0, 0]]), opacity_logits=jnp.array([np.log(o / (1 - o))]),
        sh0=jnp.zeros((1, 3)),
    )
    cam = sj.Camera(R=jnp.eye(3), t=jnp.array([0.0, 0.0, z]), fx=jnp.array(f), fy=jnp.array(f),
                    cx=jnp.array(W / 2), cy=jnp.array(H / 2), width=W, height=H)
    _, alpha = sj.render(g, cam, backend="reference")
    var = (f * s / z) ** 2 + 0.3
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    expect = o * np.exp(-((jj - W / 2) ** 2 + (ii - H / 2) ** 2) / (2 * var))
    expect = np.where(expect >= 1 / 255, np.minimum(expect, 0.99), 0.0)
    np.testing.assert_allclose(np.asarray(alpha), expect, atol=1e-6)


def test_early_stop_keeps_transmittance_above_threshold():
    """Gaussians of alpha 0.95 stacked on one pixel centre: T goes 0.05, 2.5e-3, 1.25e-4,
    and the fourth (6.25e-6 < 1e-4) is not blended."""
    n = 12
    g = sj.Gaussians(
        means=jnp.stack([jnp.zeros(n), jnp.zeros(n), jnp.linspace(0, 1, n)], -1),
        log_scales=jnp.full((n, 3), -1.0), quats=jnp.tile(jnp.array([1.0, 0, 0, 0]), (n, 1)),
        opacity_logits=jnp.full((n,), float(np.log(0.95 / 0.05))), sh0=jnp.zeros((n, 3)),
    )
    cam = sj.Camera(R=jnp.eye(3), t=jnp.array([0.0, 0.0, 4.0]), fx=jnp.array(20.0), fy=jnp.array(20.0),
                    cx=jnp.array(W / 2 + 0.5), cy=jnp.array(H / 2 + 0.5), width=W, height=H)
    _, alpha = sj.render(g, cam, backend="reference")
    t_final = 1 - float(alpha[H // 2, W // 2])
    assert t_final == pytest.approx(0.05**3, rel=1e-4)


@pytest.mark.parametrize("seed", [1, 2])
def test_gradients_float64_all_parameters_and_pose(x64, seed):
    g = random_scene(seed, 12, dtype=np.float64)
    cam = _camera((0.3, -2.5, 0.8), dtype=jnp.float64)
    rng = np.random.default_rng(seed + 100)
    w_rgb = jnp.asarray(rng.normal(size=(H, W, 3)))
    w_a = jnp.asarray(rng.normal(size=(H, W)))
    bg = jnp.array([0.2, 0.5, 0.9])

    def loss(means, log_scales, quats, opacity_logits, sh0, R, t):
        gg = sj.Gaussians(means, log_scales, quats, opacity_logits, sh0)
        rgb, alpha = sj.render(gg, cam.with_pose(R, t), background=bg, backend="reference")
        return jnp.sum(rgb * w_rgb) + jnp.sum(alpha * w_a)

    args = (g.means, g.log_scales, g.quats, g.opacity_logits, g.sh0, cam.R, cam.t)
    check_grads(loss, args, order=1, modes=["rev"], eps=1e-6, atol=1e-5, rtol=1e-5)
    # every parameter actually receives gradient signal
    grads = jax.grad(loss, argnums=tuple(range(7)))(*args)
    for name, gr in zip(["means", "log_scales", "quats", "opacity", "sh0", "R", "t"], grads):
        assert float(jnp.abs(gr).max()) > 0, name


def test_means2d_offset_gradient_is_screen_space_gradient(x64):
    g = random_scene(3, 10, dtype=np.float64)
    cam = _camera((0, -2.5, 0.5), dtype=jnp.float64)

    def loss(offset):
        rgb, _ = sj.render(g, cam, backend="reference", means2d_offset=offset)
        return jnp.sum(rgb ** 2)

    check_grads(loss, (jnp.zeros((10, 2)),), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-5)


def test_vmap_over_cameras_equals_loop_and_jit():
    g = random_scene(4, 25)
    cams = [_camera(e) for e in [(0, -3, 0.5), (3, 0, 1), (-2, 2, 1.5), (0.5, 2.5, -1)]]
    batch = sj.stack_cameras(cams)
    f = jax.jit(jax.vmap(lambda c: sj.render(g, c, backend="reference"), in_axes=(0,)))
    rgb_b, alpha_b = f(batch)
    for i, c in enumerate(cams):
        rgb, alpha = sj.render(g, c, backend="reference")
        np.testing.assert_allclose(np.asarray(rgb_b[i]), np.asarray(rgb), atol=1e-6)
        np.testing.assert_allclose(np.asarray(alpha_b[i]), np.asarray(alpha), atol=1e-6)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_moving_gaussians_equals_moving_camera(seed):
    rng = np.random.default_rng(seed)
    g = random_scene(seed, 30)
    cam = _camera((0.2, -3.0, 0.7), w=40, h=32)
    A = se3.so3_exp(jnp.asarray(rng.normal(0, 0.3, 3), jnp.float32))
    b = jnp.asarray(rng.normal(0, 0.2, 3), jnp.float32)
    rgb1, a1 = sj.render(se3.transform_gaussians(g, A, b), cam, backend="reference")
    rgb2, a2 = sj.render(g, se3.transform_camera(cam, A, b), backend="reference")
    np.testing.assert_allclose(np.asarray(rgb1), np.asarray(rgb2), atol=2e-4)
    np.testing.assert_allclose(np.asarray(a1), np.asarray(a2), atol=2e-4)
    assert float(a1.max()) > 0.3  # the object is in view


def test_gaussians_behind_camera_are_culled():
    g = random_scene(8, 10)
    cam = _camera((0, -3, 0))
    behind = sj.Gaussians(g.means + jnp.array([0.0, -6.0, 0.0]), g.log_scales, g.quats, g.opacity_logits, g.sh0)
    _, alpha = sj.render(behind, cam, backend="reference")
    assert float(alpha.max()) == 0.0


def test_low_level_matches_render_entry():
    g = random_scene(9, 15)
    cam = _camera((1, -2.5, 0.4))
    rgb, alpha = rasterize_reference(g.means, g.scales, g.unit_quats, g.opacities, g.colors, cam.R, cam.t,
                                     cam.intrinsics, jnp.ones(3), width=W, height=H, max_chunk_elements=64)
    rgb2, alpha2 = sj.render(g, cam, backend="reference")
    np.testing.assert_allclose(np.asarray(rgb), np.asarray(rgb2), atol=1e-6)
    np.testing.assert_allclose(np.asarray(alpha), np.asarray(alpha2), atol=1e-6)
