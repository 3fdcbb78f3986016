"""The tile rasterizer of ``cuda_ffi/`` called through the JAX FFI (CPU and CUDA).

Semantics are exactly those of :mod:`splatjax.render.reference`. Inputs are activated
parameters (scales > 0, opacities in (0, 1), colours >= 0); quaternions are normalised
inside the kernel (the gradient chains through the normalisation, as the reference's).
Computation is float32 (other dtypes are cast and the results cast back).

Camera axis: the kernel renders one Gaussian set from C cameras in one launch.
:func:`rasterize_ffi` takes a single camera (``R [3, 3]``) or a camera stack
(``R [C, 3, 3]``, ``t [C, 3]``, ``intrinsics [C, 4]``, ``background [3]`` or ``[C, 3]``);
``jax.vmap`` over camera arguments (nested too) is mapped onto that axis without copying
the Gaussians. ``jit`` and ``grad`` work through ``jax.custom_vjp``; when the Gaussians are
not being differentiated (pose refinement) the backward skips the Gaussian gradients.
(Under ``vmap`` with Gaussian gradients the backward runs once per mapped element, since
per-element Gaussian cotangents are required; differentiate a camera stack directly to get
the single-launch backward.) Every array argument is differentiable, the intrinsics and
the background included.

Capacity: the (tile, Gaussian) intersection lists have a static capacity (an FFI
attribute). The first launch uses the smallest capacity level; when the kernel reports that
more intersections are needed, a ``lax.switch`` re-runs at the smallest level that fits.
A scene beyond the largest level raises a clear error (and renders NaN): splats are never
dropped.

Libraries: ``libsplatjax_cpu.so`` / ``libsplatjax_cuda.so`` are looked up in
``splatjax/_kernels`` (wheel), the installed distribution, ``$SPLATJAX_KERNEL_DIR`` and the
development build ``build/dev`` of the repository
(``cmake -S cuda_ffi -B build/dev && cmake --build build/dev -j``).
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Float

__all__ = ["available_platforms", "rasterize_ffi", "kernel_library", "CAPACITY"]

_LIBS = {"cpu": "libsplatjax_cpu.so", "cuda": "libsplatjax_cuda.so"}
_SYMBOLS = {"cpu": ("SplatjaxRenderFwdCpu", "SplatjaxRenderBwdCpu"),
            "cuda": ("SplatjaxRenderFwdCuda", "SplatjaxRenderBwdCuda")}
_XLA_PLATFORM = {"cpu": "cpu", "cuda": "CUDA"}
_TARGET_FWD, _TARGET_BWD = "splatjax_render_fwd", "splatjax_render_bwd"

#: Intersection-capacity levels. Level k holds ``base * growth**k`` entries with
#: ``base = max(min, next_pow2(per_gaussian * n))`` (n: Gaussians, times cameras on CUDA,
#: whose workspace holds every camera's list at once); at most ``levels`` levels, the last
#: one capped by the largest possible count (every Gaussian on every tile).
CAPACITY = {"min": 1 << 16, "per_gaussian": 4, "growth": 4, "levels": 6}


def _kernel_dirs() -> list[Path]:
    dirs = [Path(__file__).resolve().parents[1] / "_kernels"]
    try:
        from importlib.metadata import distribution

        dirs.append(Path(distribution("splatjax").locate_file("splatjax/_kernels")))
    except Exception:  # not installed as a distribution
        pass
    env = os.environ.get("SPLATJAX_KERNEL_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(Path(__file__).resolve().parents[2] / "build" / "dev")
    return dirs


def kernel_library(platform: str) -> Path | None:
    """Path of the built kernel library for ``platform`` ("cpu" or "cuda"), or None."""
    for d in _kernel_dirs():
        p = d / _LIBS[platform]
        if p.is_file():
            return p
    return None


@functools.cache
def _register(platform: str) -> bool:
    path = kernel_library(platform)
    if path is None:
        return False
    try:
        lib = ctypes.cdll.LoadLibrary(str(path))
    except OSError:
        return False
    fwd, bwd = _SYMBOLS[platform]
    for target, sym in ((_TARGET_FWD, fwd), (_TARGET_BWD, bwd)):
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, sym)), platform=_XLA_PLATFORM[platform])
    return True


def _has_device(platform: str) -> bool:
    try:
        return len(jax.devices("gpu" if platform == "cuda" else "cpu")) > 0
    except RuntimeError:
        return False


def available_platforms() -> list[str]:
    """Platforms ("cpu", "cuda") whose kernel library is built and whose device exists."""
    return [p for p in ("cpu", "cuda") if kernel_library(p) is not None and _has_device(p) and _register(p)]


def _require(platform: str) -> None:
    if platform not in _LIBS:
        raise ValueError(f"unknown kernel platform {platform!r}; choose 'cpu' or 'cuda'")
    if kernel_library(platform) is None:
        raise RuntimeError(
            f"the {platform} rasterizer library {_LIBS[platform]} was not found (looked in "
            f"{', '.join(str(d) for d in _kernel_dirs())}); build it with `pip install .`"
            + (" on a machine with nvcc" if platform == "cuda" else "")
            + " or `cmake -S cuda_ffi -B build/dev && cmake --build build/dev -j`")
    if not _has_device(platform):
        raise RuntimeError(f"the {platform} rasterizer is built but JAX sees no {platform} device")
    if not _register(platform):
        raise RuntimeError(f"could not load {kernel_library(platform)}")


# ----------------------------------------------------------------------------- capacity
_INT32_MAX = 2**31 - 1


def _levels(platform: str, n: int, cams: int, width: int, height: int) -> tuple[int, ...]:
    ntiles = -(-width // 16) * -(-height // 16)
    per = n * (cams if platform == "cuda" else 1)
    most = max(1, per * ntiles)
    base = max(CAPACITY["min"], 1 << max(0, math.ceil(math.log2(max(1, CAPACITY["per_gaussian"] * per)))))
    out = []
    for k in range(CAPACITY["levels"]):
        cap = min(base * CAPACITY["growth"] ** k, most, _INT32_MAX)
        if not out or cap > out[-1]:
            out.append(cap)
        if cap >= most:
            break
    return tuple(out)


def _attrs(cap: int, **kw):
    # `capacity` bounds the intersection lists (CPU: per camera, in the kernel's own storage;
    # CUDA: all cameras, in XLA's scratch allocator)
    return {k: np.int64(v) for k, v in dict(kw, capacity=cap).items()}


def _fwd_call(width, height, cap, args):
    C = args[6].shape[0]
    f32 = jnp.float32
    shapes = (
        jax.ShapeDtypeStruct((C, height, width, 3), f32),
        jax.ShapeDtypeStruct((C, height, width), f32),
        jax.ShapeDtypeStruct((C, height, width), f32),
        jax.ShapeDtypeStruct((C, height, width), jnp.int32),
        jax.ShapeDtypeStruct((1,), jnp.int32),
    )
    return tuple(jax.ffi.ffi_call(_TARGET_FWD, shapes)(*args, **_attrs(cap, width=width, height=height)))


def _bwd_call(width, height, cap, gaussian_grads, args, img):
    N, C = args[0].shape[0], args[6].shape[0]
    f32 = jnp.float32
    shapes = (
        jax.ShapeDtypeStruct((N, 3), f32), jax.ShapeDtypeStruct((N, 3), f32), jax.ShapeDtypeStruct((N, 4), f32),
        jax.ShapeDtypeStruct((N,), f32), jax.ShapeDtypeStruct((N, 3), f32),
        jax.ShapeDtypeStruct(args[5].shape, f32),
        jax.ShapeDtypeStruct((C, 3, 3), f32), jax.ShapeDtypeStruct((C, 3), f32), jax.ShapeDtypeStruct((C, 4), f32),
        jax.ShapeDtypeStruct((1,), jnp.int32),
    )
    out = jax.ffi.ffi_call(_TARGET_BWD, shapes)(
        *args, *img, **_attrs(cap, width=width, height=height, gaussian_grads=int(gaussian_grads)))
    return tuple(out[:9])


def _overflow_error(needed, largest):
    if int(np.asarray(needed)) > int(largest):
        raise RuntimeError(
            f"splatjax rasterizer: the scene needs {int(np.asarray(needed))} tile intersections, more than the "
            f"largest capacity level ({int(largest)}); raise splatjax.render.ffi.CAPACITY['levels'] or "
            "['growth'] (nothing was rendered: the output is NaN)")


# ----------------------------------------------------------------------------- primitives
# args = (means, scales, quats, opacities, colors, offset [Co, No, 2], R [C,3,3], t [C,3],
#         intrinsics [C,4], background [C,3]); all float32.
_GAUSS = range(5)
_OFFSET = 5
_CAMS = range(6, 10)


def _forward_unbatched(platform, width, height, args):
    levels = _levels(platform, args[0].shape[0], args[6].shape[0], width, height)
    first = _fwd_call(width, height, levels[0], args)
    needed = first[4][0]
    if len(levels) == 1:
        out, level = first, jnp.int32(0)
    else:
        level = jnp.minimum(jnp.searchsorted(jnp.asarray(levels, jnp.int32), needed), len(levels) - 1).astype(jnp.int32)
        branches = [functools.partial(_fwd_call, width, height, cap, args) for cap in levels[1:]]
        out = jax.lax.cond(needed <= levels[0], lambda: first,
                           lambda: jax.lax.switch(jnp.maximum(level - 1, 0), branches))
    jax.lax.cond(needed > levels[-1], lambda: jax.debug.callback(_overflow_error, needed, levels[-1]), lambda: None)
    return out[0], out[1], out[2], out[3], level


def _backward_unbatched(platform, width, height, gaussian_grads, args, img, level):
    levels = _levels(platform, args[0].shape[0], args[6].shape[0], width, height)
    branches = [functools.partial(_bwd_call, width, height, cap, gaussian_grads, args, img) for cap in levels]
    if len(branches) == 1:
        return branches[0]()
    return jax.lax.switch(level, branches)


def _camera_batched_args(axis_size, in_batched, args):
    """Fold a vmapped camera axis B into the kernel's camera axis: [B, C, ...] -> [B*C, ...]."""
    C = next(a.shape[1] for a, b in zip(args[6:], in_batched[6:]) if b) if any(in_batched[6:]) else args[6].shape[0]
    out = list(args[:5])
    off, ob = args[_OFFSET], in_batched[_OFFSET]
    if ob:
        off = jnp.broadcast_to(off, (axis_size, C) + off.shape[2:]).reshape((axis_size * C,) + off.shape[2:])
    elif off.shape[0] != 1:
        off = jnp.broadcast_to(off[None], (axis_size,) + off.shape).reshape((axis_size * C,) + off.shape[1:])
    out.append(off)
    for a, b in zip(args[6:], in_batched[6:]):
        a = a if b else jnp.broadcast_to(a[None], (axis_size,) + a.shape)
        out.append(a.reshape((axis_size * a.shape[1],) + a.shape[2:]))
    return out, C


@functools.cache
def _forward_prim(platform: str, width: int, height: int):
    @custom_vmap
    def fwd(*args):
        return _forward_unbatched(platform, width, height, args)

    @fwd.def_vmap
    def rule(axis_size, in_batched, *args):
        if any(in_batched[i] for i in _GAUSS):  # a batch of Gaussian sets: one launch each
            full = [a if b else jnp.broadcast_to(a[None], (axis_size,) + a.shape) for a, b in zip(args, in_batched)]
            out = jax.lax.map(lambda xs: fwd(*xs), full)
            return tuple(out), (True,) * 5
        flat, C = _camera_batched_args(axis_size, in_batched, args)
        rgb, alpha, tf, nc, level = fwd(*flat)
        unfold = lambda x: x.reshape((axis_size, C) + x.shape[1:])  # noqa: E731
        return (unfold(rgb), unfold(alpha), unfold(tf), unfold(nc), level), (True, True, True, True, False)

    return fwd


@functools.cache
def _backward_prim(platform: str, width: int, height: int, gaussian_grads: bool):
    @custom_vmap
    def bwd(*args):
        *inputs, tf, nc, g_rgb, g_alpha, level = args
        return _backward_unbatched(platform, width, height, gaussian_grads, inputs, (tf, nc, g_rgb, g_alpha), level)

    @bwd.def_vmap
    def rule(axis_size, in_batched, *args):
        *inputs, tf, nc, g_rgb, g_alpha, level = args
        ib = in_batched
        if gaussian_grads or any(ib[i] for i in _GAUSS) or ib[_OFFSET] or ib[-1]:
            # per-element Gaussian cotangents are needed: one launch per mapped element
            full = [a if b else jnp.broadcast_to(a[None], (axis_size,) + jnp.shape(a)) for a, b in zip(args, ib)]
            out = jax.lax.map(lambda xs: bwd(*xs), full)
            return tuple(out), (True,) * 9
        flat, C = _camera_batched_args(axis_size, ib[:10], inputs)
        img = []
        for a, b in zip((tf, nc, g_rgb, g_alpha), ib[10:14]):
            a = a if b else jnp.broadcast_to(a[None], (axis_size,) + a.shape)
            img.append(a.reshape((axis_size * C,) + a.shape[2:]))
        out = bwd(*flat, *img, level)
        g_R, g_t = out[6].reshape(axis_size, C, 3, 3), out[7].reshape(axis_size, C, 3)
        g_K = out[8].reshape(axis_size, C, 4)
        # Gaussian and offset gradients were not requested: zeros, hence unbatched
        zeros = [jnp.zeros_like(a) for a in inputs[:6]]
        return (*zeros, g_R, g_t, g_K), (False,) * 6 + (True, True, True)

    return bwd


# ----------------------------------------------------------------------------- custom_vjp
@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _render(platform, width, height, *args):
    rgb, alpha, _, _, _ = _forward_prim(platform, width, height)(*args)
    return rgb, alpha


def _render_fwd(platform, width, height, *args):
    values = tuple(a.value for a in args)
    # the offset's gradient is per Gaussian too, so it counts as a Gaussian gradient here
    gaussian_grads = any(args[i].perturbed for i in (*_GAUSS, _OFFSET))
    rgb, alpha, tf, nc, level = _forward_prim(platform, width, height)(*values)
    flag = () if gaussian_grads else None  # static, carried in the residual's structure
    return (rgb, alpha), (values, tf, nc, level, flag)


def _render_bwd(platform, width, height, res, cts):
    values, tf, nc, level, flag = res
    gaussian_grads = flag is not None
    g_rgb, g_alpha = cts
    if isinstance(g_rgb, SymbolicZero):
        g_rgb = jnp.zeros(g_rgb.shape, g_rgb.dtype)
    if isinstance(g_alpha, SymbolicZero):
        g_alpha = jnp.zeros(g_alpha.shape, g_alpha.dtype)
    g = _backward_prim(platform, width, height, gaussian_grads)(*values, tf, nc, g_rgb, g_alpha, level)
    g_bg = jnp.einsum("chw,chwk->ck", tf, g_rgb)
    return (*g[:9], g_bg)


_render.defvjp(_render_fwd, _render_bwd, symbolic_zeros=True)


# ----------------------------------------------------------------------------- entry point
def rasterize_ffi(
    means: Float[Array, "N 3"],
    scales: Float[Array, "N 3"],
    quats: Float[Array, "N 4"],
    opacities: Float[Array, " N"],
    colors: Float[Array, "N 3"],
    R: Float[Array, "*C 3 3"],
    t: Float[Array, "*C 3"],
    intrinsics: Float[Array, "*C 4"],
    background: Float[Array, "*C 3"],
    *,
    width: int,
    height: int,
    platform: str,
    means2d_offset: Float[Array, "*C N 2"] | None = None,
) -> tuple[Float[Array, "*C H W 3"], Float[Array, "*C H W"]]:
    """Render activated Gaussians with the FFI kernel on ``platform`` ("cpu" or "cuda").

    One camera (``R [3, 3]``, ``t [3]``, ``intrinsics [4]``) gives ``(rgb [H, W, 3], alpha [H, W])``;
    a camera stack (``R [C, 3, 3]``, ...) gives ``[C, H, W, 3]`` and ``[C, H, W]`` in one launch.
    ``means2d_offset`` ([N, 2] shared, or [C, N, 2] per camera) is added to the projected means;
    its gradient is the screen-space mean gradient."""
    _require(platform)
    dtype = jnp.result_type(means)
    f32 = jnp.float32
    R = jnp.asarray(R, f32)
    single = R.ndim == 2
    C = 1 if single else R.shape[0]
    if R.shape[-2:] != (3, 3) or R.ndim not in (2, 3):
        raise ValueError(f"R must be [3, 3] or [C, 3, 3], got {R.shape}")
    n = means.shape[0]
    cams = [R.reshape(C, 3, 3), jnp.asarray(t, f32).reshape(C, 3), jnp.asarray(intrinsics, f32).reshape(C, 4),
            jnp.broadcast_to(jnp.asarray(background, f32), (C, 3))]
    if means2d_offset is None:
        offset = jnp.zeros((1, 0, 2), f32)
    else:
        offset = jnp.asarray(means2d_offset, f32)
        if offset.shape[-2:] != (n, 2) or offset.ndim not in (2, 3) or (offset.ndim == 3 and offset.shape[0] != C):
            raise ValueError(f"means2d_offset must be [N, 2] or [C, N, 2] with N={n}, C={C}; got {offset.shape}")
        offset = offset.reshape((-1, n, 2))
    gauss = [jnp.asarray(x, f32) for x in (means, scales, quats, opacities, colors)]
    rgb, alpha = _render(platform, int(width), int(height), *gauss, offset, *cams)
    if single:
        rgb, alpha = rgb[0], alpha[0]
    return rgb.astype(dtype), alpha.astype(dtype)
