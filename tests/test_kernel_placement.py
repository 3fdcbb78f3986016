"""Where the FFI kernels run: each platform's handlers under their own target names, and the
CPU kernel on the CPU device when JAX's default device is a GPU (issue: ``backend="cpu"``
on a GPU machine resolved to the CUDA handler and failed with "Wrong number of results")."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from splatjax.render import placement
from splatjax.render import ffi


def _scene(seed=0, n=300, w=40, h=32):
    rng = np.random.default_rng(seed)
    args = [rng.uniform(-1, 1, (n, 3)), np.exp(rng.uniform(-3.0, -2.0, (n, 3))), rng.normal(size=(n, 4)),
            rng.uniform(0.1, 0.9, n), rng.uniform(0, 1, (n, 3)), np.eye(3), np.array([0.0, 0.0, 4.0]),
            np.array([40.0, 40.0, w / 2, h / 2]), np.array([1.0, 1.0, 1.0])]
    return [jnp.asarray(a, jnp.float32) for a in args], w, h


def test_every_platform_has_its_own_target_names():
    names = [n for p in ffi.PLATFORMS for n in ffi.target_names(p)]
    assert len(set(names)) == len(names) == 2 * len(ffi.PLATFORMS)
    for p in ffi.PLATFORMS:
        fwd, bwd = ffi.target_names(p)
        assert fwd.endswith(p.replace("-", "_")) and bwd.endswith(p.replace("-", "_"))


def test_registration_uses_the_platforms_names(monkeypatch):
    if ffi.kernel_library("cpu") is None:
        pytest.skip("CPU kernel not built")
    seen = []
    monkeypatch.setattr(jax.ffi, "register_ffi_target", lambda name, capsule, platform: seen.append((name, platform)))
    assert ffi._register.__wrapped__("cpu")
    assert seen == [(n, "cpu") for n in ffi.target_names("cpu")]


def test_compiled_program_names_the_cpu_target_only():
    if "cpu" not in ffi.available_platforms():
        pytest.skip("CPU kernel not built")
    args, w, h = _scene()

    def loss(*a):
        rgb, alpha = ffi.rasterize_ffi(*a, width=w, height=h, platform="cpu")
        return jnp.sum(rgb) + jnp.sum(alpha)

    text = jax.jit(jax.grad(loss, argnums=(5, 6))).lower(*args).as_text()
    fwd, bwd = ffi.target_names("cpu")
    assert fwd in text and bwd in text
    for other in ("cuda", "cuda-emu"):
        assert not any(n in text for n in ffi.target_names(other))


def test_cpu_kernel_is_placed_on_the_cpu_when_the_default_is_a_gpu(monkeypatch):
    """On a CPU-only machine nothing moves; with the default backend reported as a GPU the
    CPU kernel's inputs go to the CPU device (a no-op copy here) and the result is the same."""
    if "cpu" not in ffi.available_platforms():
        pytest.skip("CPU kernel not built")
    args, w, h = _scene(1)
    assert ffi.kernel_device("cpu") is None
    assert isinstance(placement("cpu"), type(placement("reference")))
    plain = ffi.rasterize_ffi(*args, width=w, height=h, platform="cpu")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert ffi.kernel_device("cpu") == jax.devices("cpu")[0]
    assert ffi.kernel_device("cuda") is None
    moved = ffi.rasterize_ffi(*args, width=w, height=h, platform="cpu")
    for a, b in zip(plain, moved):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    g = jax.grad(lambda t: jnp.sum(ffi.rasterize_ffi(*args[:6], t, *args[7:], width=w, height=h,
                                                        platform="cpu")[0]))(args[6])
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.max(jnp.abs(g))) > 0
    with placement("cpu"):
        assert jnp.zeros(2).devices() == {jax.devices("cpu")[0]}


def _has_gpu() -> bool:
    try:
        return len(jax.devices("gpu")) > 0
    except RuntimeError:
        return False


@pytest.mark.skipif(not _has_gpu(), reason="needs a GPU (runs in scripts/gpu_check.sh)")
def test_cpu_backend_on_a_gpu_machine_matches_cuda():
    if not {"cpu", "cuda"} <= set(ffi.available_platforms()):
        pytest.skip("both kernels needed")
    args, w, h = _scene(2)  # arrays on the GPU (the default device)

    def loss(platform):
        def f(*a):
            rgb, alpha = ffi.rasterize_ffi(*a, width=w, height=h, platform=platform)
            return jnp.sum(rgb * jnp.linspace(-1, 1, rgb.size).reshape(rgb.shape)) + jnp.sum(alpha ** 2)
        return f

    outs = {p: [ffi.rasterize_ffi(*args, width=w, height=h, platform=p)[0],
                *jax.grad(loss(p), argnums=(0, 5, 6))(*args)] for p in ("cpu", "cuda")}
    for a, b in zip(outs["cpu"], outs["cuda"]):
        a, b = np.asarray(a), np.asarray(b)
        assert np.max(np.abs(a - b)) <= 1e-4 * max(1e-6, np.max(np.abs(b)))
    with placement("cpu"):  # a jitted program on the CPU device
        rgb = jax.jit(lambda *a: ffi.rasterize_ffi(*a, width=w, height=h, platform="cpu")[0])(*args)
    np.testing.assert_allclose(np.asarray(rgb), np.asarray(outs["cuda"][0]), atol=1e-4)
