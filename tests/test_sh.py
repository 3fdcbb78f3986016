"""View-dependent colour: the SH basis (against scipy's spherical harmonics), sh_to_rgb
(against an explicit per-term loop), Gaussians.colors_for, and rendering with SH on every
backend (image, Gaussian and pose gradients against the reference; camera stacks under
vmap / jit / grad; degree 0 exactly as before)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64
from scenes import look_at_c2w, random_scene
from scipy.special import sph_harm_y

import splatjax as sj
from splatjax.render import ffi
from splatjax.sh import num_sh_coeffs, sh_basis, sh_degree_of, sh_to_rgb

PLATFORMS = ["cpu", "cuda-emu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _scipy_basis(dirs: np.ndarray, degree: int) -> np.ndarray:
    """The INRIA basis from scipy's complex harmonics (Condon-Shortley phase included):
    sqrt(2) Re Y_l^m for m > 0, sqrt(2) Im Y_l^|m| for m < 0, Y_l^0 for m = 0, on the
    normalised direction; index l^2 + l + m."""
    d = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    theta = np.arccos(np.clip(d[:, 2], -1, 1))
    phi = np.arctan2(d[:, 1], d[:, 0])
    out = []
    for l in range(degree + 1):
        for m in range(-l, l + 1):
            y = sph_harm_y(l, abs(m), theta, phi)
            out.append(np.sqrt(2) * y.real if m > 0 else np.sqrt(2) * y.imag if m < 0 else y.real)
    return np.stack(out, -1)


def _dirs(n=64, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    return d * rng.uniform(0.01, 30.0, (n, 1))  # any length


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_basis_matches_scipy(degree):
    d = _dirs()
    unit = d / np.linalg.norm(d, axis=-1, keepdims=True)
    with enable_x64(True):
        ours = np.asarray(sh_basis(jnp.asarray(unit, jnp.float64), degree))
    assert ours.shape == (64, num_sh_coeffs(degree))
    np.testing.assert_allclose(ours, _scipy_basis(d, degree), rtol=0, atol=1e-12)
    # the INRIA signs of degree 1: -C1 y, C1 z, -C1 x
    if degree >= 1:
        np.testing.assert_allclose(ours[:, 1:4], 0.4886025119029199 * unit[:, [1, 2, 0]] * [-1, 1, -1], atol=1e-12)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_to_rgb_matches_per_term_loop(degree):
    rng = np.random.default_rng(degree)
    n = 64
    sh = rng.normal(scale=0.8, size=(n, 16, 3))
    d = _dirs(n, seed=degree + 10)
    basis = _scipy_basis(d, 3)
    want = np.full((n, 3), 0.5)
    for k in range(num_sh_coeffs(degree)):  # one term at a time
        want += basis[:, k:k + 1] * sh[:, k]
    want = np.maximum(want, 0.0)
    assert (want == 0).any() and (want > 0).any()  # the clamp is exercised
    with enable_x64(True):
        got = sh_to_rgb(jnp.asarray(sh[:, :num_sh_coeffs(degree)]), jnp.asarray(d), degree)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-12)
        # a lower degree of a longer expansion, and the traced mask, give the same colour
        np.testing.assert_allclose(np.asarray(sh_to_rgb(jnp.asarray(sh), jnp.asarray(d), degree)), want, atol=1e-12)
        masked = jax.jit(lambda a: sh_to_rgb(jnp.asarray(sh), jnp.asarray(d), 3, active_degree=a))(degree)
        np.testing.assert_allclose(np.asarray(masked), want, atol=1e-12)


def test_degree_bookkeeping():
    assert [sh_degree_of(k) for k in (1, 4, 9, 16)] == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        sh_degree_of(5)
    with pytest.raises(ValueError):
        sh_to_rgb(jnp.zeros((2, 4, 3)), jnp.ones((2, 3)), 2)


def _with_sh(g: sj.Gaussians, degree: int, seed: int = 0, scale: float = 0.4) -> sj.Gaussians:
    rng = np.random.default_rng(seed)
    rest = rng.normal(scale=scale, size=(g.num, num_sh_coeffs(degree) - 1, 3)).astype(np.float32)
    return sj.Gaussians(g.means, g.log_scales, g.quats, g.opacity_logits, g.sh0, jnp.asarray(rest))


def test_colors_for():
    g0 = random_scene(0, 30)
    assert g0.sh_degree == 0 and g0.sh_rest is None
    np.testing.assert_array_equal(g0.colors_for(jnp.ones(3)), g0.colors)  # degree 0: view-independent
    g = _with_sh(g0, 3)
    assert g.sh_degree == 3 and g.sh.shape == (30, 16, 3)
    center = jnp.asarray([0.3, -2.0, 1.0])
    want = sh_to_rgb(g.sh, g.means - center, 3)
    np.testing.assert_allclose(g.colors_for(center), want, rtol=1e-6)
    np.testing.assert_array_equal(g.colors_for(center, degree=0), g.colors)
    np.testing.assert_allclose(g.colors_for(center, degree=1), sh_to_rgb(g.sh, g.means - center, 1), rtol=1e-6)
    np.testing.assert_allclose(g.colors_for(center, degree=7), want, rtol=1e-6)  # capped at the stored degree
    stack = g.colors_for(jnp.stack([center, -center]))
    assert stack.shape == (2, 30, 3)
    np.testing.assert_allclose(stack[1], g.colors_for(-center), rtol=1e-6)
    # the stored degree can be changed (zeros added, coefficients dropped)
    assert g0.with_sh_degree(2).sh_rest.shape == (30, 8, 3) and float(jnp.abs(g0.with_sh_degree(2).sh_rest).max()) == 0
    np.testing.assert_array_equal(g.with_sh_degree(1).sh_rest, g.sh_rest[:, :3])
    assert g.with_sh_degree(0).sh_rest is None


# ----------------------------------------------------------------------------- rendering
SIZE = 32


def _camera(eye=(0.4, -2.6, 1.1)):
    return sj.camera_from_blender(look_at_c2w(np.asarray(eye)), 0.9, SIZE, SIZE)


def _need(platform):
    if platform not in ffi.available_platforms(include_emulation=True):
        pytest.skip(f"the {platform} rasterizer is not built or there is no {platform} device")


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def _loss(backend, weights):
    def f(g, R, t):
        cam = _camera()
        cam = cam.with_pose(R, t)
        rgb, alpha = sj.render(g, cam, backend=backend)
        return jnp.sum(rgb * weights) + jnp.sum(alpha)
    return f


@pytest.mark.parametrize("platform", PLATFORMS)
def test_render_with_sh_matches_reference(platform):
    """Degree-3 colour: image and the gradients of every Gaussian field and of the pose
    (R, t: also through the view direction) equal the reference renderer's."""
    _need(platform)
    g = _with_sh(random_scene(3, 60), 3)
    cam = _camera()
    w = jnp.asarray(np.random.default_rng(5).normal(size=(SIZE, SIZE, 3)), jnp.float32)
    rgb, _ = sj.render(g, cam, backend=platform)
    rgb0, _ = sj.render(g, cam, backend="reference")
    assert _rel(rgb, rgb0) <= 1e-5
    # the view-dependent part matters here: degree 0 renders differently
    assert float(jnp.max(jnp.abs(rgb - sj.render(g, cam, backend=platform, sh_degree=0)[0]))) > 1e-2
    grads = jax.grad(_loss(platform, w), argnums=(0, 1, 2))(g, cam.R, cam.t)
    ref = jax.grad(_loss("reference", w), argnums=(0, 1, 2))(g, cam.R, cam.t)
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh0", "sh_rest"):
        assert _rel(getattr(grads[0], name), getattr(ref[0], name)) <= 2e-4, name
    assert _rel(grads[1], ref[1]) <= 2e-4 and _rel(grads[2], ref[2]) <= 2e-4
    # pose only (the kernel's pose backward plus the colour cotangent)
    pose = jax.jit(jax.grad(_loss(platform, w), argnums=(1, 2)))(g, cam.R, cam.t)
    assert _rel(pose[0], ref[1]) <= 2e-4 and _rel(pose[1], ref[2]) <= 2e-4


def test_pose_gradient_with_sh_matches_finite_differences():
    """The reference renderer's translation gradient with degree-3 colour against central
    differences (float64)."""
    with enable_x64(True):
        g = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), _with_sh(random_scene(4, 40), 3, scale=0.8))
        cam = _camera()
        R, t = cam.R.astype(jnp.float64), cam.t.astype(jnp.float64)
        w = jnp.asarray(np.random.default_rng(6).normal(size=(SIZE, SIZE, 3)))
        f = _loss("reference", w)
        gt = np.asarray(jax.grad(f, argnums=2)(g, R, t))
        eps = 1e-6
        fd = [(float(f(g, R, t.at[i].add(eps))) - float(f(g, R, t.at[i].add(-eps)))) / (2 * eps) for i in range(3)]
        np.testing.assert_allclose(gt, fd, rtol=1e-4, atol=1e-6)
        # and the colour alone carries part of it: the same gradient at degree 0 differs
        f0 = lambda g, R, t: jnp.sum(sj.render(g, _camera().with_pose(R, t), backend="reference",  # noqa: E731
                                               sh_degree=0)[0] * w)
        assert np.max(np.abs(np.asarray(jax.grad(f0, argnums=2)(g, R, t)) - gt)) > 1e-3


@pytest.mark.parametrize("platform", PLATFORMS)
def test_camera_stack_with_sh_under_vmap(platform):
    """vmap of render over a camera stack: per-camera colours [C, N, 3] in one kernel launch;
    images, pose gradients (vmap of grad) and the summed Gaussian gradients (grad of the
    vmapped loss) equal the reference's; nested vmap too."""
    _need(platform)
    g = _with_sh(random_scene(7, 50), 3)
    eyes = [(0.4, -2.6, 1.1), (2.5, 0.5, 0.8), (-1.0, 2.4, -0.6), (0.2, 0.3, 2.8)]
    cams = sj.stack_cameras([_camera(e) for e in eyes])
    w = jnp.asarray(np.random.default_rng(8).normal(size=(SIZE, SIZE, 3)), jnp.float32)

    def loss(backend):
        def f(g, R, t):
            rgb, alpha = sj.render(g, cams_one.with_pose(R, t), backend=backend)
            return jnp.sum(rgb * w) + jnp.sum(alpha)
        return f

    cams_one = _camera()
    imgs = jax.jit(jax.vmap(lambda c: sj.render(g, c, backend=platform)[0]))(cams)
    imgs0 = jax.jit(jax.vmap(lambda c: sj.render(g, c, backend="reference")[0]))(cams)
    assert _rel(imgs, imgs0) <= 1e-5
    pose = jax.jit(jax.vmap(jax.grad(loss(platform), argnums=(1, 2)), in_axes=(None, 0, 0)))(g, cams.R, cams.t)
    pose0 = jax.jit(jax.vmap(jax.grad(loss("reference"), argnums=(1, 2)), in_axes=(None, 0, 0)))(g, cams.R, cams.t)
    assert _rel(pose[0], pose0[0]) <= 2e-4 and _rel(pose[1], pose0[1]) <= 2e-4

    def total(backend):
        return lambda g: jnp.sum(jax.vmap(loss(backend), in_axes=(None, 0, 0))(g, cams.R, cams.t))

    gg = jax.jit(jax.grad(total(platform)))(g)
    gg0 = jax.jit(jax.grad(total("reference")))(g)
    for name in ("means", "sh0", "sh_rest", "opacity_logits"):
        assert _rel(getattr(gg, name), getattr(gg0, name)) <= 2e-4, name
    R2, t2 = cams.R.reshape(2, 2, 3, 3), cams.t.reshape(2, 2, 3)
    nested = jax.jit(jax.vmap(jax.vmap(jax.grad(loss(platform), argnums=2), in_axes=(None, 0, 0)),
                              in_axes=(None, 0, 0)))(g, R2, t2)
    assert _rel(nested.reshape(4, 3), pose0[1]) <= 2e-4


@pytest.mark.parametrize("platform", ["reference", "cpu"])
def test_degree_zero_is_unchanged(platform):
    """Gaussians without sh_rest, and any degree rendered at degree 0, give exactly the
    view-independent render of the colour activations."""
    if platform != "reference":
        _need(platform)
    g0 = random_scene(9, 40)
    cam = _camera()
    from splatjax.render import rasterize

    dtype = g0.means.dtype
    plain = rasterize(g0.means, g0.scales, g0.unit_quats, g0.opacities, g0.colors, cam.R, cam.t,
                      cam.intrinsics, jnp.ones(3, dtype), width=SIZE, height=SIZE, backend=platform)[0]
    np.testing.assert_array_equal(sj.render(g0, cam, backend=platform)[0], plain)
    np.testing.assert_array_equal(sj.render(_with_sh(g0, 2), cam, backend=platform, sh_degree=0)[0], plain)
