"""The FFI tile rasterizer (cuda_ffi/) against the dense reference renderer.

Error measures (stated so the tolerances mean something):
- images: ``max|kernel - ref| / max(1, max|ref|)`` over every pixel and channel, <= 1e-5;
- gradients: per argument ``max|kernel - ref| / max|ref|`` (max over all entries), <= 1e-4.
The reference runs in float64 on the same (float32-representable) inputs; the kernel computes
in float32. Every case runs on the CPU kernel, on "cuda-emu" (``cuda_ffi/cuda.cu`` itself run
by the CUDA emulator of ``cuda_ffi/emu`` on the CPU: the CUDA handlers and the CUDA paths of
``ffi.py`` without a GPU) and on "cuda" where there is a GPU; each skips cleanly where its
library (or the GPU) is missing.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from splatjax.errors import ConfigError
from splatjax.render.reference import rasterize_reference

ffi = pytest.importorskip("splatjax.render.ffi")

W, H = 64, 48
IMG_TOL, GRAD_TOL = 1e-5, 1e-4
PLATFORMS = ["cpu", "cuda-emu", pytest.param("cuda", marks=pytest.mark.gpu)]
ARG_NAMES = ("means", "scales", "quats", "opacities", "colors", "R", "t", "intrinsics", "background")


def _need(platform):
    try:
        avail = ffi.available_platforms(include_emulation=True)
    except ImportError:
        avail = []
    if platform not in avail:
        pytest.skip(f"the {platform} rasterizer is not built or there is no {platform} device")


def _random_rotation(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def make_scene(seed, n=240):
    """Random Gaussians at camera depths 1.5 to 4.5 in front of a 64 x 48 camera: some behind
    the camera or at the near plane, some partly off-screen, some very thin (one axis 1e-4),
    some very large (scales 0.7 to 1.6, tens of pixels), some too faint to ever reach alpha
    1/255, some opaque enough to hit the 0.99 alpha clamp; quaternions not normalised; a
    general (slightly non-orthonormal) world-to-camera matrix."""
    rng = np.random.default_rng(seed)
    intr = np.array([rng.uniform(50, 70), rng.uniform(50, 70), W / 2 + rng.uniform(-4, 4), H / 2 + rng.uniform(-4, 4)])
    # camera-space points: mostly in view at depth 1.5..4.5
    z = rng.uniform(1.5, 4.5, n)
    u = rng.uniform(-4, W + 4, n)
    v = rng.uniform(-4, H + 4, n)
    u[n // 10: n // 5] = rng.choice([-12.0, W + 12.0], n // 10)      # partly off-screen
    z[: n // 10] = rng.uniform(-2.0, 0.25, n // 10)                   # behind / at the near plane
    p = np.stack([(u - intr[2]) / intr[0] * np.abs(z), (v - intr[3]) / intr[1] * np.abs(z), z], -1)
    log_s = rng.uniform(-3.5, -1.5, (n, 3))
    log_s[n // 5: n // 4, 0] = np.log(1e-4)                           # very thin
    log_s[n // 4: n // 4 + 4] = rng.uniform(-0.3, 0.5, (4, 3))          # very large
    quats = rng.normal(size=(n, 4))
    quats *= rng.uniform(0.5, 2.0, (n, 1)) / np.linalg.norm(quats, axis=1, keepdims=True)
    opac = rng.uniform(0.02, 0.98, n)
    opac[:3] = 0.003                                                   # never reaches 1/255
    opac[n // 2: n // 2 + 6] = 0.995                                   # alpha clamped at 0.99
    colors = rng.uniform(0.0, 1.0, (n, 3))
    Rc = _random_rotation(rng) @ (np.eye(3) + 0.03 * rng.normal(size=(3, 3)))  # general 3x3
    t = rng.normal(scale=0.3, size=3)
    means = np.linalg.solve(Rc, (p - t).T).T                           # world points
    bg = rng.uniform(0, 1, 3)
    arrs = [means, np.exp(log_s), quats, opac, colors, Rc, t, intr, bg]
    return [np.asarray(a, np.float32) for a in arrs]


def _loss_weights(seed):
    rng = np.random.default_rng(seed + 1000)
    return rng.normal(size=(H, W, 3)), rng.normal(size=(H, W))


def _loss(render, wr, wa):
    def f(*args):
        rgb, alpha = render(*args)
        return jnp.sum(rgb * wr) + jnp.sum(alpha * wa)
    return f


def _kernel(platform, offset=False):
    def f(*args):
        if offset:
            *args, off = args
            return ffi.rasterize_ffi(*args, width=W, height=H, platform=platform, means2d_offset=off)
        return ffi.rasterize_ffi(*args, width=W, height=H, platform=platform)
    return f


def _reference(offset=False):
    def f(*args):
        if offset:
            *args, off = args
            return rasterize_reference(*args, width=W, height=H, means2d_offset=off)
        return rasterize_reference(*args, width=W, height=H)
    return f


@jax.jit
def _jit_reference(*args):
    return _reference(True)(*args)


@jax.jit
def _jit_reference_grad(*args):
    *args, wr, wa = args
    return jax.grad(_loss(_reference(True), wr, wa), argnums=tuple(range(10)))(*args)


def _rel(a, b, floor=0.0):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(floor, float(np.max(np.abs(b))), 1e-30))


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("seed", list(range(12)))
def test_matches_reference(platform, seed):
    _need(platform)
    scene = make_scene(seed)
    n = scene[0].shape[0]
    offset = np.random.default_rng(seed + 7).normal(scale=0.3, size=(n, 2)).astype(np.float32)
    wr, wa = _loss_weights(seed)
    args = [*scene, offset]
    rgb, alpha = _kernel(platform, True)(*args)
    grads = jax.grad(_loss(_kernel(platform, True), wr.astype(np.float32), wa.astype(np.float32)),
                     argnums=tuple(range(10)))(*map(jnp.asarray, args))
    with enable_x64(True):
        args64 = [jnp.asarray(a, jnp.float64) for a in args]
        rgb0, alpha0 = _jit_reference(*args64)
        grads0 = _jit_reference_grad(*args64, wr, wa)
        grads0 = [np.asarray(g) for g in grads0]
    assert _rel(rgb, rgb0, 1.0) <= IMG_TOL
    assert _rel(alpha, alpha0, 1.0) <= IMG_TOL
    for name, g, g0 in zip(ARG_NAMES + ("means2d_offset",), grads, grads0):
        assert np.all(np.isfinite(np.asarray(g))), name
        assert _rel(g, g0) <= GRAD_TOL, (name, _rel(g, g0))


@pytest.mark.parametrize("platform", ["cpu"])
def test_depth_order_over_many_magnitudes_and_exact_ties(platform):
    """The kernel orders each tile's Gaussians by depth, equal depths by index (as the
    reference's stable sort): 3000 overlapping Gaussians at depths from 0.3 to 400 (every byte
    of the depth's bits varies, so every pass of the CPU kernel's radix sort works), a third
    of them in groups that share one depth exactly, each with its own colour."""
    _need(platform)
    rng = np.random.default_rng(11)
    n = 3000
    z = np.exp(rng.uniform(np.log(0.3), np.log(400.0), n))
    z[: n // 3] = np.repeat(rng.uniform(1.0, 5.0, n // 30), 10)  # groups of 10 at one depth, exactly
    intr = np.array([60.0, 60.0, W / 2, H / 2])
    u, v = rng.uniform(0, W, n), rng.uniform(0, H, n)
    means = np.stack([(u - intr[2]) / intr[0] * z, (v - intr[3]) / intr[1] * z, z], -1)
    scales = np.repeat(z[:, None] * 0.04, 3, axis=1) * rng.uniform(0.5, 2.0, (n, 3))  # a few pixels each
    quats = rng.normal(size=(n, 4))
    scene = [means, scales, quats, rng.uniform(0.05, 0.9, n), rng.uniform(0, 1, (n, 3)), np.eye(3), np.zeros(3),
             intr, np.array([0.2, 0.4, 0.6])]
    scene = [np.asarray(a, np.float32) for a in scene]
    rgb, alpha = _kernel(platform)(*scene)
    with enable_x64(True):
        rgb0, alpha0 = rasterize_reference(*[jnp.asarray(a, jnp.float64) for a in scene], width=W, height=H)
    assert _rel(rgb, rgb0, 1.0) <= IMG_TOL and _rel(alpha, alpha0, 1.0) <= IMG_TOL
    # the ties matter: with the tied groups' order reversed the image differs
    flip = np.concatenate([np.arange(n // 3).reshape(-1, 10)[:, ::-1].reshape(-1), np.arange(n // 3, n)])
    rgb_f, _ = _kernel(platform)(*[a[flip] for a in scene[:5]], *scene[5:])
    assert _rel(rgb_f, rgb0, 1.0) > 100 * IMG_TOL


def _camera_stack(seed, c=8):
    rng = np.random.default_rng(seed)
    Rs, ts, Ks, bgs = [], [], [], []
    for _ in range(c):
        Rs.append(_random_rotation(rng) @ (np.eye(3) + 0.02 * rng.normal(size=(3, 3))))
        ts.append(np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), rng.uniform(2.5, 3.5)]))
        Ks.append(np.array([60.0, 62.0, W / 2, H / 2]))
        bgs.append(rng.uniform(0, 1, 3))
    return [np.asarray(np.stack(a), np.float32) for a in (Rs, ts, Ks, bgs)]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_vmap_jit_grad_over_cameras(platform):
    _need(platform)
    scene = make_scene(100, n=200)
    gauss = [jnp.asarray(a) for a in scene[:5]]
    Rs, ts, Ks, bgs = map(jnp.asarray, _camera_stack(101))
    render = _kernel(platform)

    single = [render(*gauss, Rs[c], ts[c], Ks[c], bgs[c]) for c in range(8)]
    batched = jax.jit(jax.vmap(render, in_axes=(None,) * 5 + (0, 0, 0, 0)))(*gauss, Rs, ts, Ks, bgs)
    stacked = render(*gauss, Rs, ts, Ks, bgs)  # the camera axis passed directly
    for c in range(8):
        np.testing.assert_allclose(batched[0][c], single[c][0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(batched[1][c], single[c][1], rtol=0, atol=1e-6)
        np.testing.assert_allclose(stacked[0][c], single[c][0], rtol=0, atol=1e-6)

    # grad of a loss summed over the vmapped cameras equals the sum of single-camera grads
    def loss_b(g, Rs, ts):
        rgb, alpha = jax.vmap(render, in_axes=(None,) * 5 + (0, 0, 0, 0))(*g, Rs, ts, Ks, bgs)
        return jnp.sum(rgb ** 2) + jnp.sum(alpha)

    def loss_1(g, R, t, K, bg):
        rgb, alpha = render(*g, R, t, K, bg)
        return jnp.sum(rgb ** 2) + jnp.sum(alpha)

    gb = jax.jit(jax.grad(loss_b, argnums=(0, 1, 2)))(gauss, Rs, ts)
    g1 = [jax.grad(loss_1, argnums=(0, 1, 2))(gauss, Rs[c], ts[c], Ks[c], bgs[c]) for c in range(8)]
    for k in range(5):
        ref = sum(g[0][k] for g in g1)
        assert _rel(gb[0][k], ref) <= 1e-5, k
    assert _rel(gb[1], np.stack([g[1] for g in g1])) <= 1e-5
    assert _rel(gb[2], np.stack([g[2] for g in g1])) <= 1e-5

    # per-camera Gaussian gradients through vmap(grad)
    per = jax.vmap(jax.grad(loss_1), in_axes=(None, 0, 0, 0, 0))(gauss, Rs, ts, Ks, bgs)
    for c in (0, 5):
        assert _rel(per[0][c], g1[c][0][0]) <= 1e-5


@jax.jit
def _jit_reference_stack_grad(*args):
    *args, wr, wa = args
    return jax.grad(_loss(_reference(True), wr, wa), argnums=tuple(range(10)))(*args)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("shared", [True, False], ids=["shared-offset", "per-camera-offset"])
def test_camera_stack_with_screen_offsets(platform, shared):
    """A camera stack in one launch with a screen-space offset shared by the cameras
    ([N, 2]) or one per camera ([C, N, 2]): every camera's image and the gradients of a loss
    over all cameras equal the reference's (camera by camera, gradients summed)."""
    _need(platform)
    c, n = 3, 160
    scene = make_scene(500, n=n)
    Rs, ts, Ks, bgs = _camera_stack(501, c=c)
    rng = np.random.default_rng(502)
    off = rng.normal(scale=0.4, size=(n, 2) if shared else (c, n, 2)).astype(np.float32)
    wr, wa = rng.normal(size=(c, H, W, 3)), rng.normal(size=(c, H, W))
    args = [*scene[:5], Rs, ts, Ks, bgs, off]
    kern = _kernel(platform, True)
    rgb, alpha = kern(*args)
    grads = jax.grad(_loss(kern, wr.astype(np.float32), wa.astype(np.float32)), argnums=tuple(range(10)))(
        *map(jnp.asarray, args))
    with enable_x64(True):
        ref_g = [np.zeros(np.shape(a)) for a in args]
        for k in range(c):
            one = [jnp.asarray(a, jnp.float64) for a in
                   (*scene[:5], Rs[k], ts[k], Ks[k], bgs[k], off if shared else off[k])]
            rgb0, alpha0 = _jit_reference(*one)
            assert _rel(rgb[k], rgb0, 1.0) <= IMG_TOL and _rel(alpha[k], alpha0, 1.0) <= IMG_TOL
            gk = [np.asarray(g) for g in _jit_reference_stack_grad(*one, wr[k], wa[k])]
            for i in (0, 1, 2, 3, 4):
                ref_g[i] += gk[i]
            for i in (5, 6, 7, 8):
                ref_g[i][k] = gk[i]
            if shared:
                ref_g[9] += gk[9]
            else:
                ref_g[9][k] = gk[9]
    for name, g, g0 in zip(ARG_NAMES + ("means2d_offset",), grads, ref_g):
        assert np.all(np.isfinite(np.asarray(g))), name
        assert _rel(g, g0) <= GRAD_TOL, (name, _rel(g, g0))


@pytest.mark.parametrize("n", [200, 12000])
def test_cpu_camera_parallel_split_is_exact(n):
    """The CPU kernel runs floor(C / P) * P of a launch's C cameras whole, one per worker
    thread (P threads), and the rest with tiles spread over the threads. Every camera of a
    stacked launch must equal its own single-camera launch bit for bit: images and the
    pose-only gradients (R, t, intrinsics, background). n = 12000 also takes the parallel
    depth sort in the tile-parallel path."""
    _need("cpu")
    scene = make_scene(400 + n, n=n)
    gauss = [jnp.asarray(a) for a in scene[:5]]
    render = _kernel("cpu")
    rng = np.random.default_rng(n)
    wr = jnp.asarray(rng.normal(size=(H, W, 3)), jnp.float32)
    wa = jnp.asarray(rng.normal(size=(H, W)), jnp.float32)

    def loss(R, t, K, bg):
        rgb, alpha = render(*gauss, R, t, K, bg)
        return jnp.sum(rgb * wr) + jnp.sum(alpha * wa)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
    for c in (2, 3, 5):
        Rs, ts, Ks, bgs = map(jnp.asarray, _camera_stack(401, c=c))
        rgb, alpha = jax.jit(render)(*gauss, Rs, ts, Ks, bgs)
        g_stack = grad(Rs, ts, Ks, bgs)
        for k in range(c):
            rgb1, alpha1 = jax.jit(render)(*gauss, Rs[k], ts[k], Ks[k], bgs[k])
            np.testing.assert_array_equal(rgb[k], rgb1)
            np.testing.assert_array_equal(alpha[k], alpha1)
            g1 = grad(Rs[k], ts[k], Ks[k], bgs[k])
            for a, b in zip(g_stack, g1):
                np.testing.assert_array_equal(a[k], b)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_nested_vmap_and_pose_only_grads(platform):
    _need(platform)
    scene = make_scene(200, n=200)
    gauss = [jnp.asarray(a) for a in scene[:5]]
    Rs, ts, Ks, bgs = map(jnp.asarray, _camera_stack(201))
    Rs, ts = Rs.reshape(2, 4, 3, 3), ts.reshape(2, 4, 3)
    render = _kernel(platform)

    def pose_loss(R, t, K, bg, g):
        rgb, alpha = render(*g, R, t, K, bg)
        return jnp.mean((rgb - 0.5) ** 2) + jnp.mean(alpha)

    inner = jax.vmap(jax.value_and_grad(pose_loss, argnums=(0, 1)), in_axes=(0, 0, None, None, None))
    nested = jax.jit(jax.vmap(inner, in_axes=(0, 0, None, None, None)))
    vals, (gR, gt) = nested(Rs, ts, Ks[0], bgs[0], gauss)
    assert vals.shape == (2, 4) and gR.shape == (2, 4, 3, 3)

    # full-gradient path (Gaussians differentiated too) gives the same pose gradients
    full = jax.grad(pose_loss, argnums=(0, 1, 4))
    for i, j in ((0, 0), (1, 3)):
        fR, ft, _ = full(Rs[i, j], ts[i, j], Ks[0], bgs[0], gauss)
        np.testing.assert_allclose(gR[i, j], fR, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gt[i, j], ft, rtol=1e-5, atol=1e-6)
        v1 = pose_loss(Rs[i, j], ts[i, j], Ks[0], bgs[0], gauss)
        np.testing.assert_allclose(vals[i, j], v1, rtol=1e-6)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_capacity_overflow_rerenders(platform):
    _need(platform)
    scene = make_scene(300, n=200)

    def render(*args, capacity=ffi.DEFAULT_CAPACITY):
        return ffi.rasterize_ffi(*args, width=W, height=H, platform=platform, capacity=capacity)

    ref_rgb, ref_alpha = render(*scene)
    levels_before = ffi._levels(platform, 200, 1, W, H, ffi.DEFAULT_CAPACITY)
    # a tiny first level: the scene overflows it and must be re-run at a larger level
    tiny = ffi.KernelCapacity(min=16, per_gaussian=0, growth=2, levels=12)
    levels = ffi._levels(platform, 200, 1, W, H, tiny)
    if platform == "cpu":  # its lists grow as needed: one launch at the largest level, no re-run
        assert levels == ffi._levels("cuda-emu", 200, 1, W, H, tiny)[-1:]
    else:
        assert levels[0] == 16 and levels != levels_before
    rgb, alpha = jax.jit(functools.partial(render, capacity=tiny))(*scene)
    np.testing.assert_array_equal(rgb, ref_rgb)
    np.testing.assert_array_equal(alpha, ref_alpha)
    g = jax.grad(lambda m: jnp.sum(render(m, *scene[1:], capacity=tiny)[0]))(jnp.asarray(scene[0]))
    g0 = jax.grad(lambda m: jnp.sum(render(m, *scene[1:])[0]))(jnp.asarray(scene[0]))
    if platform == "cpu":  # the CPU backward reduces in a fixed order: bitwise reproducible
        np.testing.assert_array_equal(g, g0)
    else:  # CUDA accumulates with atomics
        assert _rel(g, g0) <= 1e-6

    # beyond the largest level: a clear error that says how to raise the capacity, never a
    # silent drop
    with pytest.raises(Exception, match="tile intersections.*KernelCapacity"):
        out = render(*scene, capacity=ffi.KernelCapacity(min=16, per_gaussian=0, growth=2, levels=2))
        jax.block_until_ready(out)


def test_capacity_option_is_validated_and_static():
    assert ffi.KernelCapacity() == ffi.DEFAULT_CAPACITY
    assert hash(ffi.KernelCapacity(levels=8)) == hash(ffi.KernelCapacity(levels=8))
    for bad in (dict(min=0), dict(growth=1), dict(levels=0), dict(per_gaussian=-1), dict(levels=2.5)):
        with pytest.raises(ConfigError, match="capacity"):
            ffi.KernelCapacity(**bad)
    with pytest.raises(ConfigError, match="capacity"):
        ffi.rasterize_ffi(*make_scene(0, n=10), width=W, height=H, platform="cpu", capacity={"levels": 8})


@pytest.mark.parametrize("platform", PLATFORMS)
def test_partial_tiles_and_empty_scene(platform):
    """Image sizes that are not multiples of the 16-pixel tile, and zero Gaussians."""
    _need(platform)
    w, h = 61, 37
    scene = make_scene(400, n=150)
    scene[7] = np.asarray([55.0, 57.0, w / 2, h / 2], np.float32)
    wr = np.random.default_rng(1).normal(size=(h, w, 3))
    wa = np.random.default_rng(2).normal(size=(h, w))
    kern = lambda *a: ffi.rasterize_ffi(*a, width=w, height=h, platform=platform)  # noqa: E731
    refr = lambda *a: rasterize_reference(*a, width=w, height=h)  # noqa: E731
    rgb, alpha = kern(*scene)
    grads = jax.grad(_loss(kern, wr.astype(np.float32), wa.astype(np.float32)), argnums=tuple(range(9)))(
        *map(jnp.asarray, scene))
    with enable_x64(True):
        s64 = [jnp.asarray(a, jnp.float64) for a in scene]
        rgb0, alpha0 = refr(*s64)
        grads0 = jax.grad(_loss(refr, wr, wa), argnums=tuple(range(9)))(*s64)
    assert _rel(rgb, rgb0, 1.0) <= IMG_TOL and _rel(alpha, alpha0, 1.0) <= IMG_TOL
    for name, g, g0 in zip(ARG_NAMES, grads, grads0):
        assert _rel(g, g0) <= GRAD_TOL, name

    empty = [a[:0] for a in scene[:5]] + scene[5:]
    rgb, alpha = kern(*empty)
    np.testing.assert_allclose(rgb, np.broadcast_to(scene[8], (h, w, 3)))
    np.testing.assert_array_equal(alpha, 0.0)
    g = jax.grad(lambda R: jnp.sum(kern(*empty[:5], R, *empty[6:])[0]))(jnp.asarray(scene[5]))
    np.testing.assert_array_equal(g, 0.0)


def test_unknown_platform_is_clear():
    with pytest.raises(ValueError, match="unknown kernel platform"):
        ffi.rasterize_ffi(*make_scene(0, n=10), width=W, height=H, platform="tpu")


# ----------------------------------------------------------------------------- antialiased mode
@jax.jit
def _jit_reference_aa(*args):
    return rasterize_reference(*args, width=W, height=H, antialiased=True)


@jax.jit
def _jit_reference_aa_grad(*args):
    *args, wr, wa = args
    ref = functools.partial(rasterize_reference, width=W, height=H, antialiased=True)
    return jax.grad(_loss(ref, wr, wa), argnums=tuple(range(9)))(*args)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("seed", [0, 3, 7])
def test_antialiased_matches_reference(platform, seed):
    """gsplat's antialiased mode (opacity times sqrt(det(cov2d - 0.3 I) / det(cov2d))): the
    image and every gradient equal the reference's; the mode changes the image."""
    _need(platform)
    scene = make_scene(seed)
    wr, wa = _loss_weights(seed)
    kern = functools.partial(ffi.rasterize_ffi, width=W, height=H, platform=platform, antialiased=True)
    rgb, alpha = kern(*scene)
    grads = jax.grad(_loss(kern, wr.astype(np.float32), wa.astype(np.float32)), argnums=tuple(range(9)))(
        *map(jnp.asarray, scene))
    with enable_x64(True):
        args64 = [jnp.asarray(a, jnp.float64) for a in scene]
        rgb0, alpha0 = _jit_reference_aa(*args64)
        grads0 = [np.asarray(g) for g in _jit_reference_aa_grad(*args64, wr, wa)]
    assert _rel(rgb, rgb0, 1.0) <= IMG_TOL and _rel(alpha, alpha0, 1.0) <= IMG_TOL
    for name, g, g0 in zip(ARG_NAMES, grads, grads0):
        assert np.all(np.isfinite(np.asarray(g))), name
        assert _rel(g, g0) <= GRAD_TOL, (name, _rel(g, g0))
    plain = _kernel(platform)(*scene)[1]
    assert float(np.max(np.abs(np.asarray(plain) - np.asarray(alpha)))) > 1e-2


# ----------------------------------------------------------------------------- per-camera colours
@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("antialiased", [False, True], ids=["classic", "antialiased"])
def test_camera_stack_with_per_camera_colors(platform, antialiased):
    """A camera stack with colours [C, N, 3] (view-dependent colour): every camera's image
    equals the reference with that camera's colours; the colour gradient is [C, N, 3] (one
    row block per camera), the others summed over the cameras."""
    _need(platform)
    c, n = 3, 160
    scene = make_scene(600, n=n)
    Rs, ts, Ks, bgs = _camera_stack(601, c=c)
    rng = np.random.default_rng(602)
    cols = rng.uniform(0, 1, (c, n, 3)).astype(np.float32)
    wr, wa = rng.normal(size=(c, H, W, 3)), rng.normal(size=(c, H, W))
    args = [*scene[:4], cols, Rs, ts, Ks, bgs]
    kern = functools.partial(ffi.rasterize_ffi, width=W, height=H, platform=platform, antialiased=antialiased)
    rgb, alpha = kern(*args)
    grads = jax.grad(_loss(kern, wr.astype(np.float32), wa.astype(np.float32)), argnums=tuple(range(9)))(
        *map(jnp.asarray, args))
    ref = jax.jit(functools.partial(rasterize_reference, width=W, height=H, antialiased=antialiased))
    with enable_x64(True):
        ref_g = [np.zeros(np.shape(a)) for a in args]
        for k in range(c):
            one = [jnp.asarray(a, jnp.float64) for a in (*scene[:4], cols[k], Rs[k], ts[k], Ks[k], bgs[k])]
            rgb0, alpha0 = ref(*one)
            assert _rel(rgb[k], rgb0, 1.0) <= IMG_TOL and _rel(alpha[k], alpha0, 1.0) <= IMG_TOL
            gk = jax.grad(_loss(ref, wr[k], wa[k]), argnums=tuple(range(9)))(*one)
            for i in range(4):
                ref_g[i] += np.asarray(gk[i])
            for i in range(4, 9):
                ref_g[i][k] = np.asarray(gk[i])
    assert grads[4].shape == (c, n, 3)
    for name, g, g0 in zip(ARG_NAMES, grads, ref_g):
        assert np.all(np.isfinite(np.asarray(g))), name
        assert _rel(g, g0) <= GRAD_TOL, (name, _rel(g, g0))


@pytest.mark.parametrize("platform", PLATFORMS)
def test_vmap_over_cameras_and_colors(platform):
    """vmap over (colours, camera) with the geometry shared: one folded launch whose
    images, per-element gradients (pose and colours only: the folded backward; all
    arguments: one launch per element) and nested vmaps equal single-camera launches."""
    _need(platform)
    c, n = 4, 150
    scene = make_scene(700, n=n)
    geom = [jnp.asarray(a) for a in scene[:4]]
    Rs, ts, Ks, bgs = map(jnp.asarray, _camera_stack(701, c=c))
    cols = jnp.asarray(np.random.default_rng(702).uniform(0, 1, (c, n, 3)), jnp.float32)
    render = _kernel(platform)

    def loss(col, R, t, g):
        rgb, alpha = render(*g, col, R, t, Ks[0], bgs[0])
        return jnp.sum((rgb - 0.3) ** 2) + jnp.sum(alpha)

    single = [render(*geom, cols[k], Rs[k], ts[k], Ks[0], bgs[0]) for k in range(c)]
    batched = jax.jit(jax.vmap(lambda col, R, t: render(*geom, col, R, t, Ks[0], bgs[0])))(cols, Rs, ts)
    for k in range(c):
        np.testing.assert_allclose(batched[0][k], single[k][0], rtol=0, atol=1e-6)
    g1 = [jax.grad(loss, argnums=(0, 1, 2, 3))(cols[k], Rs[k], ts[k], geom) for k in range(c)]
    # pose + per-camera colour gradients: the folded backward
    pose_col = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1, 2)), in_axes=(0, 0, 0, None)))(cols, Rs, ts, geom)
    for i in range(3):
        assert _rel(pose_col[i], np.stack([g[i] for g in g1])) <= 1e-5, i
    # shared colours differentiated per element: expanded per camera, summed back
    shared = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(None, 0, 0, None)))(cols[0], Rs, ts, geom)
    for k in range(c):
        gk = jax.grad(loss, argnums=(0, 1))(cols[0], Rs[k], ts[k], geom)
        assert _rel(shared[0][k], gk[0]) <= 1e-5 and _rel(shared[1][k], gk[1]) <= 1e-5
    # everything differentiated: per-element launches
    full = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1, 2, 3)), in_axes=(0, 0, 0, None)))(cols, Rs, ts, geom)
    for k in (0, 3):
        for i in range(3):
            assert _rel(full[i][k], g1[k][i]) <= 1e-5, i
        for j in range(4):
            assert _rel(full[3][j][k], g1[k][3][j]) <= 1e-5, j
    # grad of a loss summed over the mapped cameras (the geometry's gradient summed)
    gsum = jax.jit(jax.grad(lambda cl, R, t, g: jnp.sum(jax.vmap(loss, in_axes=(0, 0, 0, None))(cl, R, t, g)),
                            argnums=(0, 3)))(cols, Rs, ts, geom)
    assert _rel(gsum[0], np.stack([g[0] for g in g1])) <= 1e-5
    for j in range(4):
        assert _rel(gsum[1][j], sum(g[3][j] for g in g1)) <= 1e-5, j
    # nested vmap over a 2 x 2 grid of (colours, camera)
    nested = jax.jit(jax.vmap(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1)), in_axes=(0, 0, 0, None)),
                              in_axes=(0, 0, 0, None)))
    vals, (gc, gR) = nested(cols.reshape(2, 2, n, 3), Rs.reshape(2, 2, 3, 3), ts.reshape(2, 2, 3), geom)
    for k in range(c):
        np.testing.assert_allclose(vals.reshape(-1)[k], loss(cols[k], Rs[k], ts[k], geom), rtol=1e-6)
        assert _rel(gc.reshape(c, n, 3)[k], g1[k][0]) <= 1e-5
        assert _rel(gR.reshape(c, 3, 3)[k], g1[k][1]) <= 1e-5


def test_colors_shape_is_checked():
    _need("cpu")
    scene = make_scene(0, n=10)
    with pytest.raises(ValueError, match="colors must be"):
        ffi.rasterize_ffi(*scene[:4], np.zeros((2, 10, 3), np.float32), *scene[5:], width=W, height=H,
                          platform="cpu")
