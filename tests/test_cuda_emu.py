"""The CUDA kernels run without a GPU: the emulator of ``cuda_ffi/emu`` and what it found.

``test_kernels.py`` runs every kernel case on the "cuda-emu" platform (``cuda_ffi/cuda.cu``
compiled for the CPU against the emulator, called by XLA's CPU runtime through real FFI call
frames). This file checks
- the emulator itself: its self-test (launch validation, barriers, warp operations, atomics,
  shared memory, CUB stand-ins), that thread order does not change the results, that it
  catches a deleted ``__syncthreads()`` and a barrier reached by only some threads at every
  barrier of cuda.cu, and that XLA's scratch-allocation rules hold;
- the faults the emulation found in the CUDA driver, each fixed: 256-byte scratch alignment
  (XLA allows at most 16), N = 0, overflow leaving the pose gradients finite, int32
  intersection totals, unchecked CUDA calls;
- the backward's reuse of the forward's lists (also under vmap) and its warp-summed atomics.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_kernels import H, W, _loss, _loss_weights, _rel, make_scene

ffi = pytest.importorskip("splatjax.render.ffi")

EMU = "cuda-emu"
ORDERS = ("forward", "reversed", "shuffled")


class Emulator:
    """The emulation library's test controls (sjemu_set / sjemu_report / sjemu_selftest)."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))  # the same handle ffi.py loaded: same state

    def set(self, key, value):
        assert self.lib.sjemu_set(key.encode(), str(value).encode()) == 0, (key, value)

    def reset(self):
        self.lib.sjemu_reset_stats()

    def report(self):
        buf = ctypes.create_string_buffer(1 << 20)
        self.lib.sjemu_report(buf, len(buf))
        return json.loads(buf.value.decode())

    def selftest(self):
        buf = ctypes.create_string_buffer(1 << 16)
        n = self.lib.sjemu_selftest(buf, len(buf))
        return n, buf.value.decode()

    @contextlib.contextmanager
    def configured(self, **settings):
        try:
            for k, v in settings.items():
                self.set(k, v)
            yield self
        finally:
            for k, v in dict(order="forward", seed=0, mutate="", fail="", shared_fill="poison").items():
                self.set(k, v)


@pytest.fixture(scope="module")
def emu():
    if EMU not in ffi.available_platforms(include_emulation=True):
        pytest.skip("the CUDA emulation library (libsplatjax_cuda_emu.so) is not built")
    return Emulator(ffi.kernel_library(EMU))


def _render(platform, w=W, h=H, capacity=ffi.DEFAULT_CAPACITY):
    return functools.partial(ffi.rasterize_ffi, width=w, height=h, platform=platform, capacity=capacity)


def _images_and_grads(platform, scene, seed, w=W, h=H):
    """rgb, alpha and the gradients of a random linear loss with respect to every input."""
    rng = np.random.default_rng(seed + 1000)
    C = scene[5].shape[0] if scene[5].ndim == 3 else None
    shape = (C,) if C else ()
    wr = rng.normal(size=shape + (h, w, 3)).astype(np.float32)
    wa = rng.normal(size=shape + (h, w)).astype(np.float32)
    render = _render(platform, w, h)
    rgb, alpha = render(*scene)
    grads = jax.grad(_loss(render, wr, wa), argnums=tuple(range(9)))(*map(jnp.asarray, scene))
    return [np.asarray(rgb), np.asarray(alpha)] + [np.asarray(g) for g in grads]


def _worst(a, b):
    """(worst image error, worst gradient error) between two _images_and_grads results."""
    img = max(_rel(x, y, 1.0) for x, y in zip(a[:2], b[:2]))
    grad = max(_rel(x, y) for x, y in zip(a[2:], b[2:]))
    return img, grad


def dense_scene(seed=7, n=300, w=16, h=16):
    """Many faint Gaussians on one 16 x 16 tile: the tile lists hold more than one 256-entry
    batch, every pixel keeps blending (no early stop), every kernel and barrier is used."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(2.0, 4.0, n)
    u, v = rng.uniform(0, w, n), rng.uniform(0, h, n)
    f = 20.0
    p = np.stack([(u - w / 2) / f * z, (v - h / 2) / f * z, z], -1)
    q = rng.normal(size=(n, 4))
    arrs = [p, np.exp(rng.uniform(-2.2, -1.4, (n, 3))), q, rng.uniform(0.01, 0.06, n), rng.uniform(0, 1, (n, 3)),
            np.eye(3), np.zeros(3), np.array([f, f, w / 2, h / 2]), rng.uniform(0, 1, 3)]
    return [np.asarray(a, np.float32) for a in arrs]


# ----------------------------------------------------------------------------- the emulator
def test_emulator_selftest(emu):
    n, failures = emu.selftest()
    assert n == 0, failures


@pytest.mark.parametrize("order", ORDERS)
def test_thread_order_does_not_change_results(emu, order):
    scene = make_scene(3)
    cpu = _images_and_grads("cpu", scene, 3)
    with emu.configured(order=order, seed=11):
        got = _images_and_grads(EMU, scene, 3)
    img, grad = _worst(got, cpu)
    assert img <= 1e-6 and grad <= 1e-4, (order, img, grad)


def _barrier_sites(emu, scene):
    emu.reset()
    _images_and_grads(EMU, scene, 0, 16, 16)
    return emu.report()["barrier_sites"]


def test_harness_catches_a_deleted_or_partial_barrier(emu):
    """Every __syncthreads of cuda.cu is needed, and the emulator shows it: with the barrier
    deleted, some thread order gives a different result (or an error); with the barrier
    reached by only half of each block, the launch fails with a barrier error."""
    scene = dense_scene()
    sites = _barrier_sites(emu, scene)
    assert len(sites) >= 7, sites  # forward 2, backward 4, projection backward 1
    with emu.configured(shared_fill=0):  # unwritten shared memory reads as zeros (no wild indices)
        base = _images_and_grads(EMU, scene, 0, 16, 16)
        for site in sites:
            file, line, *kind = site.split(":")
            if not kind:  # a plain __syncthreads: delete it
                caught = []
                for order in ("forward", "reversed"):
                    emu.set("order", order)
                    emu.set("mutate", f"{file}:{line}:delete")
                    try:
                        got = _images_and_grads(EMU, scene, 0, 16, 16)
                        img, grad = _worst(got, base)
                        caught.append(not (img <= 1e-6 and grad <= 1e-4))
                    except Exception:  # noqa: BLE001  a barrier error is a catch too
                        caught.append(True)
                    finally:
                        emu.set("mutate", "")
                emu.set("order", "forward")
                assert any(caught), f"deleting the barrier at {site} went unnoticed"
            emu.set("mutate", f"{file}:{line}:partial")
            try:
                with pytest.raises(Exception, match="barrier|threads of block"):
                    _images_and_grads(EMU, scene, 0, 16, 16)
            finally:
                emu.set("mutate", "")


def test_scratch_requests_follow_xla_rules(emu):
    """Regression (fault 1): cuda.cu asked XLA's scratch allocator for 256-byte alignment,
    which XLA rejects (at most 16), so every call failed with "scratch allocation failed"."""
    emu.reset()
    _images_and_grads(EMU, make_scene(1), 1)
    rep = emu.report()
    assert rep["scratch_allocations"] > 0
    assert 1 <= rep["max_alignment"] <= 16


# ----------------------------------------------------------------------------- the faults
def test_zero_gaussians_with_a_camera_stack(emu):
    """Regression (fault 2): N = 0 launched zero-block grids ("invalid configuration
    argument") and read ends[CN - 1] with CN = 0."""
    scene = make_scene(5)
    rng = np.random.default_rng(0)
    cams = [np.stack([scene[5]] * 3), np.stack([scene[6] + 0.1 * k for k in range(3)]), np.stack([scene[7]] * 3),
            rng.uniform(0, 1, (3, 3)).astype(np.float32)]
    empty = [a[:0] for a in scene[:5]] + cams
    for platform in ("cpu", EMU):
        out = _images_and_grads(platform, empty, 5)
        np.testing.assert_allclose(out[0], np.broadcast_to(cams[3][:, None, None, :], out[0].shape))
        np.testing.assert_array_equal(out[1], 0.0)
        for g in out[2:8]:  # Gaussians (empty), R, t, intrinsics
            np.testing.assert_array_equal(g, 0.0)


def _raw_backward(platform, scene, cap, *, reuse=False, fwd_cap=None):
    """The forward FFI call at capacity `fwd_cap` (default: the first level), then the
    backward at capacity `cap` on a plain loss (every gradient requested)."""
    n, C = scene[0].shape[0], 1
    args = [jnp.asarray(a) for a in scene[:4]] + [jnp.asarray(scene[4])[None], jnp.zeros((1, 0, 2), jnp.float32)]
    args += [jnp.asarray(scene[5])[None], jnp.asarray(scene[6])[None], jnp.asarray(scene[7])[None],
             jnp.asarray(scene[8])[None]]
    levels = ffi._levels(platform, n, C, W, H, ffi.DEFAULT_CAPACITY)
    fcap = fwd_cap or levels[0]
    rgb, alpha, tf, nc, needed, res = ffi._fwd_call(platform, W, H, False, fcap, fcap, args)
    assert np.all(np.isfinite(rgb)) == (int(needed) <= fcap)
    g_rgb, g_alpha = jnp.ones_like(rgb), jnp.ones_like(alpha)
    grads, bneeded = ffi._bwd_call(platform, W, H, False, cap, (True, True), args, (tf, nc, g_rgb, g_alpha), needed,
                                   res, reuse)
    return [np.asarray(g) for g in grads], int(needed), int(bneeded)


@pytest.mark.parametrize("platform", ["cpu", EMU])
def test_backward_overflow_makes_every_gradient_nan(emu, platform):
    """Regression (fault 3): at an overflow the CUDA backward set only the mean gradients to
    NaN; the pose gradients (R, t) stayed finite, so pose refinement silently took a wrong
    step. Now every gradient is NaN (CPU and CUDA)."""
    scene = make_scene(8)
    grads, needed, _ = _raw_backward(platform, scene, cap=8)
    assert needed > 8
    names = ("means", "scales", "quats", "opacities", "colors", "offset", "R", "t", "intrinsics")
    for name, g in zip(names, grads):
        if g.size:
            assert np.all(np.isnan(g)), name
    if platform == EMU:  # the reused lists of an overflowed forward are never walked either
        grads, needed, _ = _raw_backward(platform, scene, cap=8, reuse=True, fwd_cap=64)
        # the forward at 64 overflowed: its count says so, and the backward makes everything NaN
        for name, g in zip(names, grads):
            if g.size:
                assert np.all(np.isnan(g)), name


def _huge_scene(n):
    """n identical Gaussians each covering every tile of a 1024 x 1024 image (4096 tiles)."""
    one = lambda *v: np.tile(np.asarray(v, np.float32), (n, 1))  # noqa: E731
    return [one(0.0, 0.0, 0.0), one(1.0, 1.0, 1.0), one(1.0, 0.0, 0.0, 0.0), np.full(n, 0.9, np.float32),
            one(0.5, 0.5, 0.5), np.eye(3, dtype=np.float32), np.array([0.0, 0.0, 4.0], np.float32),
            np.array([1000.0, 1000.0, 512.0, 512.0], np.float32), np.ones(3, np.float32)]


def test_intersection_total_beyond_int32_is_an_overflow(emu):
    """Regression (fault 4): the intersection total was an int32 scan, so past 2^31 it went
    negative, `needed` looked small and no error was raised (past 2^32 the writes went out
    of bounds). 2^19 + 1 Gaussians on 4096 tiles need 2^31 + 4096 intersections."""
    n = (1 << 19) + 1
    scene = _huge_scene(n)
    cap = ffi.KernelCapacity(min=4096, per_gaussian=0, growth=2, levels=1)
    with pytest.raises(Exception, match="tile intersections.*KernelCapacity"):
        jax.block_until_ready(ffi.rasterize_ffi(*scene, width=1024, height=1024, platform=EMU, capacity=cap))
    args = [jnp.asarray(a) for a in scene[:4]] + [jnp.asarray(scene[4])[None], jnp.zeros((1, 0, 2), jnp.float32)]
    args += [jnp.asarray(a)[None] for a in scene[5:]]
    rgb, alpha, tf, nc, needed, res = ffi._fwd_call(EMU, 1024, 1024, False, 4096, 4096, args)
    assert int(needed) == 2**31 - 1  # saturated, never wrapped
    assert np.all(np.isnan(np.asarray(alpha)))


def _api_calls(emu, run):
    emu.reset()
    run()
    return {k: v for k, v in emu.report()["api"].items()}


def test_every_cuda_error_is_an_ffi_error_naming_the_step(emu):
    """Regression (fault 5): return codes of CUB and cudaMemsetAsync were never checked.
    Each CUDA call of a forward + backward is made to fail in turn: the FFI call fails with
    an error naming the step (never a silent success)."""
    scene = make_scene(9, n=40)
    run = functools.partial(_images_and_grads, EMU, scene, 9)
    calls = _api_calls(emu, run)
    assert calls.get("cub::DeviceRadixSort::SortPairs", 0) >= 2 and calls.get("cudaMemsetAsync", 0) >= 5
    for api, count in sorted(calls.items()):
        for k in range(count):
            with emu.configured(fail=f"{api}:{k}"):
                with pytest.raises(Exception) as info:
                    run()
            msg = str(info.value)
            if api == "XLA_FFI_DeviceMemory_Allocate":
                assert re.search(r"splatjax (forward|backward): scratch allocation of \d+ bytes failed", msg), msg
            else:
                assert re.search(r"splatjax (forward|backward): [\w ,\-]+ failed: cudaError\w+", msg), (api, k, msg)
    run()  # and the emulator is fine afterwards


# ----------------------------------------------------------------------------- the backward
def test_backward_reuses_the_forward_lists_and_sums_warps_before_atomics(emu):
    """One radix sort per forward + backward (the backward walks the forward's lists), the
    results equal the CPU kernel's, and the per-Gaussian atomics are per warp, not per pixel."""
    scene = make_scene(4)
    wr, wa = (w.astype(np.float32) for w in _loss_weights(4))
    grads = {}
    for platform in ("cpu", EMU):
        emu.reset()
        grads[platform] = jax.block_until_ready(  # dispatch is asynchronous: the report must follow the kernels
            jax.grad(_loss(_render(platform), wr, wa), argnums=tuple(range(9)))(*map(jnp.asarray, scene)))
    rep = emu.report()
    for a, b in zip(grads[EMU], grads["cpu"]):
        assert _rel(a, b) <= 1e-4
    assert rep["api"]["cub::DeviceRadixSort::SortPairs"] == 2  # the forward's size query and sort
    assert rep["kernels"]["emit_kernel"]["launches"] == 1  # binned once
    assert rep["kernels"]["project_kernel"]["launches"] == 2  # the backward only re-projects
    bk = rep["kernels"]["backward_kernel"]
    # lane 0 adds the warp's sum: 9 atomics per (warp, Gaussian) with a contributing pixel
    assert bk["atomics"] == 9 * bk["votes_true"]
    per_pixel = bk["atomics"] / bk["vote_lanes_true"]  # atomics per contributing (pixel, Gaussian)
    assert per_pixel < 9 / 4, per_pixel


def test_sorted_ids_from_either_sort_buffer(emu):
    """The radix sort ping-pongs between two buffers and ends in either, depending on its
    pass count (the key width grows with the tile count); both endings give the CPU's
    result. 256 tiles: an even pass count here, the ids are copied into the kept lists."""
    scene = dense_scene(seed=11, n=400, w=256, h=256)
    scene[7] = np.asarray([300.0, 300.0, 128.0, 128.0], np.float32)
    emu.reset()
    got = _images_and_grads(EMU, scene, 11, 256, 256)
    assert emu.report()["api"].get("cudaMemcpyAsync", 0) >= 1
    img, grad = _worst(got, _images_and_grads("cpu", scene, 11, 256, 256))
    assert img <= 1e-6 and grad <= 1e-4, (img, grad)


def test_backward_bins_again_beyond_the_first_level(emu):
    """At a larger capacity level the forward's lists were not kept: the backward bins again
    and agrees with the CPU kernel."""
    scene = make_scene(6)
    tiny = ffi.KernelCapacity(min=64, per_gaussian=0, growth=4, levels=6)
    rng = np.random.default_rng(6)
    wr, wa = rng.normal(size=(H, W, 3)).astype(np.float32), rng.normal(size=(H, W)).astype(np.float32)
    out = {}
    for platform in ("cpu", EMU):
        render = _render(platform, capacity=tiny)
        emu.reset()
        out[platform] = jax.block_until_ready(jax.grad(_loss(render, wr, wa), argnums=tuple(range(9)))(
            *map(jnp.asarray, scene)))  # the report below must follow the kernels
        if platform == EMU:
            assert emu.report()["api"]["cub::DeviceRadixSort::SortPairs"] >= 4  # the backward sorted too
    for a, b in zip(out[EMU], out["cpu"]):
        assert _rel(a, b) <= 1e-4


def test_vmap_paths_reuse_or_rebin_correctly(emu):
    """vmap over Gaussian sets (per-element launches reuse their own lists), and vmap over
    cotangents only (the forward ran once: the folded backward must bin again)."""
    sets = [make_scene(20 + k, n=120) for k in range(3)]
    cams = sets[0][5:]
    wr, wa = _loss_weights(20)
    wr, wa = wr.astype(np.float32), wa.astype(np.float32)

    def loss(platform, *gauss):
        return _loss(_render(platform), wr, wa)(*gauss, *cams)

    stacked = [jnp.stack([s[i] for s in sets]) for i in range(5)]
    for platform in (EMU,):
        batched = jax.vmap(jax.grad(functools.partial(loss, platform), argnums=(0, 1, 2, 3, 4)))(*stacked)
        for k, s in enumerate(sets):
            single = jax.grad(functools.partial(loss, "cpu"), argnums=(0, 1, 2, 3, 4))(*map(jnp.asarray, s[:5]))
            for a, b in zip(batched, single):
                assert _rel(a[k], b) <= 1e-4

    scene = [jnp.asarray(a) for a in make_scene(30)]
    cts = jnp.asarray(np.random.default_rng(1).normal(size=(4, H, W, 3)), jnp.float32)

    def pullbacks(platform):
        f = lambda R, t: _render(platform)(*scene[:5], R, t, *scene[7:])[0]  # noqa: E731
        _, vjp = jax.vjp(f, scene[5], scene[6])
        return jax.vmap(vjp)(cts)

    def gaussian_pullbacks(platform):
        f = lambda m: _render(platform)(m, *scene[1:])[0]  # noqa: E731
        _, vjp = jax.vjp(f, scene[0])
        return jax.vmap(vjp)(cts)

    for fn in (pullbacks, gaussian_pullbacks):
        got, want = fn(EMU), fn("cpu")
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert _rel(a, b) <= 1e-4, fn.__name__


def test_cuda_emu_is_a_test_only_backend(emu):
    """Resolvable by name (render(..., backend="cuda-emu")), never chosen by "auto", not
    listed among the available backends."""
    from splatjax.render import available_backends, resolve_backend

    assert resolve_backend("cuda-emu") == "cuda-emu"
    assert resolve_backend("auto") != "cuda-emu"
    assert "cuda-emu" not in available_backends()
