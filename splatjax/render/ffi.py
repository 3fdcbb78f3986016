"""The tile rasterizer of ``cuda_ffi/`` called through the JAX FFI (CPU and CUDA).

Semantics are exactly those of :mod:`splatjax.render.reference`. Inputs are activated
parameters (scales > 0, opacities in (0, 1), colours >= 0); quaternions are normalised
inside the kernel (the gradient chains through the normalisation, as the reference's).
Computation is float32 (other dtypes are cast and the results cast back).

Camera axis: the kernel renders one Gaussian set from C cameras in one launch.
:func:`rasterize_ffi` takes a single camera (``R [3, 3]``) or a camera stack
(``R [C, 3, 3]``, ``t [C, 3]``, ``intrinsics [C, 4]``, ``background [3]`` or ``[C, 3]``);
colours are shared (``[N, 3]``) or per camera (``[C, N, 3]``: view-dependent colour).
``jax.vmap`` over camera arguments and colours (nested too) is mapped onto that axis
without copying the Gaussians' geometry. ``jit`` and ``grad`` work through ``jax.custom_vjp``; when the Gaussians are
not being differentiated (pose refinement) the backward skips the Gaussian gradients.
(Under ``vmap`` with Gaussian gradients the backward runs once per mapped element, since
per-element Gaussian cotangents are required; differentiate a camera stack directly to get
the single-launch backward.) Colour gradients are computed whenever the colours are
differentiated (also in a pose-only backward, where view-dependent colours depend on the
camera). Every array argument is differentiable, the intrinsics and the background
included. ``antialiased`` (static) is gsplat's antialiased mode (see
:mod:`splatjax.render.reference`).

Capacity: the (tile, Gaussian) intersection lists have a static capacity (an FFI
attribute) chosen from levels described by :class:`KernelCapacity`, a static option of
:func:`rasterize_ffi` (and of ``render`` / ``rasterize``). The first launch uses the
smallest level; when the kernel reports that more intersections are needed, a
``lax.switch`` re-runs at the smallest level that fits. A scene beyond the largest level
raises a clear error (and renders NaN): splats are never dropped. The CPU kernel, whose lists
grow as needed, gets one level, the largest (the same bound, no re-run).

Lists reused by the backward (CUDA): the CUDA forward returns its depth-sorted tile lists
when they fit the first level, and the backward walks them instead of binning again (it
re-bins at a larger level, or under ``vmap`` when its launches do not match the forward's).
The CPU kernel keeps its lists in its own storage and bins again.

Platforms: "cpu", "cuda" and "cuda-emu": the CUDA source (``cuda_ffi/cuda.cu``) compiled
for the CPU against the CUDA emulator of ``cuda_ffi/emu`` and run by XLA's CPU runtime, so
that the tests exercise the CUDA handlers and this module's CUDA paths without a GPU. It
is slow and for tests only ("auto" never picks it).

Libraries: ``libsplatjax_cpu.so`` / ``libsplatjax_cuda.so`` / ``libsplatjax_cuda_emu.so``
are looked up in ``$SPLATJAX_KERNEL_DIR``, ``splatjax/_kernels`` (wheel), the development
build ``build/dev`` of the repository
(``cmake -S cuda_ffi -B build/dev && cmake --build build/dev -j``) and the installed
distribution.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
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

from ..errors import ConfigError
from ..validation import require_ints

__all__ = ["KernelCapacity", "DEFAULT_CAPACITY", "PLATFORMS", "available_platforms", "rasterize_ffi", "kernel_library",
           "target_names", "kernel_device", "device_context"]

_LIBS = {"cpu": "libsplatjax_cpu.so", "cuda": "libsplatjax_cuda.so", "cuda-emu": "libsplatjax_cuda_emu.so"}
_SYMBOLS = {"cpu": ("SplatjaxRenderFwdCpu", "SplatjaxRenderBwdCpu"),
            "cuda": ("SplatjaxRenderFwdCuda", "SplatjaxRenderBwdCuda"),
            "cuda-emu": ("SplatjaxRenderFwdCudaEmu", "SplatjaxRenderBwdCudaEmu")}
_XLA_PLATFORM = {"cpu": "cpu", "cuda": "CUDA", "cuda-emu": "cpu"}


def target_names(platform: str) -> tuple[str, str]:
    """The FFI target names (forward, backward) of ``platform``'s handlers. Every platform
    has its own names: a program compiled for one platform can never resolve a call meant
    for another platform's handler (which has another result signature), it fails to
    compile instead ("no registered implementation")."""
    suffix = platform.replace("-", "_")
    return f"splatjax_render_fwd_{suffix}", f"splatjax_render_bwd_{suffix}"


_TARGETS = {p: target_names(p) for p in _LIBS}

#: Kernel platforms: the two real ones and the CUDA emulation (tests only).
PLATFORMS = ("cpu", "cuda", "cuda-emu")
_CUDA_FAMILY = ("cuda", "cuda-emu")  # same handlers, same capacity rules, lists reused by the backward


@dataclasses.dataclass(frozen=True)
class KernelCapacity:
    """Capacity levels of the kernels' (tile, Gaussian) intersection lists (a static option).

    Level k holds ``base * growth**k`` entries with
    ``base = max(min, next_pow2(per_gaussian * n))``, n being the Gaussians (times the cameras
    of a launch on CUDA, whose lists hold every camera at once; per camera on the CPU);
    there are at most ``levels`` levels, the last capped by the largest possible count
    (every Gaussian on every tile) and by 2^31 - 1. A scene beyond the last level raises an
    error: raise ``levels`` or ``growth``. Frozen and hashable: pass it as
    ``render(..., capacity=KernelCapacity(levels=8))``; it is part of the compiled program.
    """

    min: int = 1 << 16
    per_gaussian: int = 4
    growth: int = 4
    levels: int = 6

    def __post_init__(self):
        for name, low in (("min", 1), ("per_gaussian", 0), ("growth", 2), ("levels", 1)):
            require_ints(self, (name,), low, report_as="capacity")


DEFAULT_CAPACITY = KernelCapacity()


def _kernel_dirs() -> list[Path]:
    # an explicit directory first, then the libraries next to this package (a wheel), the
    # development build of the source tree this package was imported from, and last the
    # installed distribution (an editable install keeps its libraries there)
    dirs = []
    env = os.environ.get("SPLATJAX_KERNEL_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(Path(__file__).resolve().parents[1] / "_kernels")
    dirs.append(Path(__file__).resolve().parents[2] / "build" / "dev")
    try:
        from importlib.metadata import distribution

        dirs.append(Path(distribution("splatjax").locate_file("splatjax/_kernels")))
    except Exception:  # not installed as a distribution
        pass
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
    for target, sym in zip(_TARGETS[platform], (fwd, bwd)):
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, sym)), platform=_XLA_PLATFORM[platform])
    return True


def _has_device(platform: str) -> bool:
    try:
        return len(jax.devices("gpu" if platform == "cuda" else "cpu")) > 0
    except RuntimeError:
        return False


def available_platforms(include_emulation: bool = False) -> list[str]:
    """Platforms ("cpu", "cuda") whose kernel library is built and whose device exists;
    with ``include_emulation`` also "cuda-emu" (the CUDA source run by the CPU emulator of
    ``cuda_ffi/emu``, for tests) when it is built."""
    names = PLATFORMS if include_emulation else ("cpu", "cuda")
    return [p for p in names if kernel_library(p) is not None and _has_device(p) and _register(p)]


def _require(platform: str) -> None:
    if platform not in _LIBS:
        raise ValueError(f"unknown kernel platform {platform!r}; choose one of {', '.join(PLATFORMS)}")
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


def _levels(platform: str, n: int, cams: int, width: int, height: int, capacity: KernelCapacity) -> tuple[int, ...]:
    ntiles = _tiles(width, height)
    per = n * (cams if platform in _CUDA_FAMILY else 1)
    most = max(1, per * ntiles)
    base = max(capacity.min, 1 << max(0, math.ceil(math.log2(max(1, capacity.per_gaussian * per)))))
    out = []
    for k in range(capacity.levels):
        cap = min(base * capacity.growth ** k, most, _INT32_MAX)
        if not out or cap > out[-1]:
            out.append(cap)
        if cap >= most or cap >= _INT32_MAX:
            break
    # the CPU kernel's lists live in its own growing storage, so the levels only bound the
    # count: one launch at the largest one renders the same, with no conditional re-run (whose
    # outputs XLA's CPU runtime copies; BENCHMARKS.md, "Compilations in the pose stages' glue")
    return (out[-1],) if platform == "cpu" else tuple(out)


def _level_of(levels, needed):
    """Index of the smallest level holding `needed` (the last level when none does)."""
    return jnp.minimum(jnp.searchsorted(jnp.asarray(levels, jnp.int32), needed), len(levels) - 1).astype(jnp.int32)


def _attrs(cap: int, **kw):
    # `capacity` bounds the intersection lists (CPU: per camera, in the kernel's own storage;
    # CUDA: all cameras of the launch, in XLA's scratch allocator)
    return {k: np.int64(v) for k, v in dict(kw, capacity=cap).items()}


def _tiles(width, height):
    return -(-width // 16) * -(-height // 16)


def _fwd_call(platform, width, height, antialiased, cap, list_len, args):
    """One forward launch at capacity `cap`: (rgb, alpha, tfinal, ncontrib, needed, res) with
    res = (sorted ids [list_len], tile ranges [C * tiles, 2]) on CUDA (the ids are only
    written when list_len >= cap) and () on the CPU."""
    C = args[_R].shape[0]
    f32, i32 = jnp.float32, jnp.int32
    shapes = [
        jax.ShapeDtypeStruct((C, height, width, 3), f32),
        jax.ShapeDtypeStruct((C, height, width), f32),
        jax.ShapeDtypeStruct((C, height, width), f32),
        jax.ShapeDtypeStruct((C, height, width), i32),
        jax.ShapeDtypeStruct((1,), i32),
    ]
    if platform in _CUDA_FAMILY:
        shapes += [jax.ShapeDtypeStruct((list_len,), jnp.uint32),
                   jax.ShapeDtypeStruct((C * _tiles(width, height), 2), i32)]
    out = jax.ffi.ffi_call(_TARGETS[platform][0], shapes)(
        *args, **_attrs(cap, width=width, height=height, antialiased=int(antialiased)))
    return (*out[:4], out[4][0], tuple(out[5:]))


def _bwd_call(platform, width, height, antialiased, cap, grads, args, img, needed, res, reuse):
    """One backward launch at capacity `cap` (CUDA: on the forward's lists `res` when
    `reuse`, else binning again); `grads` = (gaussian_grads, color_grads). Returns the 9
    gradients and the intersection count."""
    N, C = args[0].shape[0], args[_R].shape[0]
    f32 = jnp.float32
    shapes = (
        jax.ShapeDtypeStruct((N, 3), f32), jax.ShapeDtypeStruct((N, 3), f32), jax.ShapeDtypeStruct((N, 4), f32),
        jax.ShapeDtypeStruct((N,), f32), jax.ShapeDtypeStruct(args[_COLORS].shape, f32),
        jax.ShapeDtypeStruct(args[_OFFSET].shape, f32),
        jax.ShapeDtypeStruct((C, 3, 3), f32), jax.ShapeDtypeStruct((C, 3), f32), jax.ShapeDtypeStruct((C, 4), f32),
        jax.ShapeDtypeStruct((1,), jnp.int32),
    )
    kw = dict(width=width, height=height, gaussian_grads=int(grads[0]), color_grads=int(grads[1]),
              antialiased=int(antialiased))
    extra = ()
    if platform in _CUDA_FAMILY:
        if not reuse:  # the lists are not read
            res = _no_lists(2)
        extra = (*res, jnp.reshape(needed, (1,)).astype(jnp.int32))
        kw["reuse"] = int(reuse)
    out = jax.ffi.ffi_call(_TARGETS[platform][1], shapes)(*args, *img, *extra, **_attrs(cap, **kw))
    return tuple(out[:9]), out[9][0]


def _overflow_error(needed, largest):
    if int(np.asarray(needed)) > int(largest):
        raise RuntimeError(
            f"splatjax rasterizer: the scene needs {int(np.asarray(needed))} tile intersections, more than the "
            f"largest capacity level ({int(largest)}); pass a larger capacity, e.g. "
            "render(..., capacity=splatjax.render.KernelCapacity(levels=8)) or a larger `growth` "
            "(nothing was rendered: the output is NaN)")


def _raise_on_overflow(needed, largest):
    _overflow_error(needed, largest)
    return np.zeros((), np.float32)


def _guard_overflow(values, needed, largest):
    """`values` unchanged, or the overflow error when needed > largest. The error comes from
    a host callback whose (zero) result is added to every value, so that it reaches whoever
    waits for the values (a debug callback's error could surface later, or only be logged)."""
    def fail(vs):
        z = jax.pure_callback(_raise_on_overflow, jax.ShapeDtypeStruct((), jnp.float32), needed,
                              jnp.asarray(largest, jnp.int32), vmap_method="sequential")
        return tuple(v + z.astype(v.dtype) for v in vs)

    return jax.lax.cond(needed > largest, fail, lambda vs: tuple(vs), tuple(values))


# ----------------------------------------------------------------------------- primitives
# args = (means, scales, quats, opacities, colors [Cc, N, 3], offset [Co, No, 2], R [C,3,3],
#         t [C,3], intrinsics [C,4], background [C,3]); all float32. Cc, Co: 1 (shared) or C.
_GEOM = range(4)  # the Gaussians' geometry and opacity: shared by every camera of a launch
_COLORS = 4
_OFFSET = 5
_R = 6  # the first camera argument (its leading axis counts the cameras)
_CAMS = slice(6, 10)  # R, t, intrinsics, background
_INPUTS = slice(0, 10)  # every forward input
# the backward's arguments: the forward inputs, then the forward's image residuals (tfinal,
# ncontrib) and the cotangents (rgb, alpha), the intersection count, and the lists (CUDA)
_IMG = slice(10, 14)
_NEEDED = 14
_RES = slice(15, None)


def _n_res(platform):
    return 2 if platform in _CUDA_FAMILY else 0


def _no_lists(nres):
    """Empty stand-ins for the forward's lists where a launch does not read them."""
    return (jnp.zeros((0,), jnp.uint32), jnp.zeros((0, 2), jnp.int32))[:nres]


def _forward_unbatched(platform, width, height, capacity, antialiased, args):
    levels = _levels(platform, args[0].shape[0], args[_R].shape[0], width, height, capacity)
    call = functools.partial(_fwd_call, platform, width, height, antialiased)
    first = call(levels[0], levels[0], args)
    needed = first[4]
    if len(levels) == 1:
        out = first
    else:
        branches = [functools.partial(call, cap, levels[0], args) for cap in levels[1:]]
        out = jax.lax.cond(needed <= levels[0], lambda: first,
                           lambda: jax.lax.switch(jnp.maximum(_level_of(levels, needed) - 1, 0), branches))
    rgb, alpha, tf, nc, needed, res = out
    rgb, alpha = _guard_overflow((rgb, alpha), needed, levels[-1])
    return (rgb, alpha, tf, nc, needed, *res)


def _backward_unbatched(platform, width, height, grads, capacity, reuse, antialiased, args, img, needed, res):
    levels = _levels(platform, args[0].shape[0], args[_R].shape[0], width, height, capacity)
    call = functools.partial(_bwd_call, platform, width, height, antialiased)
    # the first level walks the forward's lists when they are valid for this launch
    branches = [functools.partial(call, cap, grads, args, img, needed, res, reuse and k == 0)
                for k, cap in enumerate(levels)]
    level = _level_of(levels, needed)
    grads, bneeded = branches[0]() if len(branches) == 1 else jax.lax.switch(level, branches)
    # the backward's level holds what the forward counted, so this does not happen; but never silently
    return _guard_overflow(grads, bneeded, jnp.asarray(levels, jnp.int32)[level])


def _fold_per_camera(x, batched, axis_size, C, expand=False):
    """A per-camera-or-shared input ([1 or C, ...], batched: [B, 1 or C, ...]) on the folded
    camera axis: [B*C, ...], or kept shared [1, ...] when it is unbatched and shared (unless
    `expand`)."""
    if batched:
        return jnp.broadcast_to(x, (axis_size, C) + x.shape[2:]).reshape((axis_size * C,) + x.shape[2:])
    if x.shape[0] != 1 or expand:
        return jnp.broadcast_to(x[None], (axis_size, C) + x.shape[1:]).reshape((axis_size * C,) + x.shape[1:])
    return x


def _camera_batched_args(axis_size, in_batched, args, expand_colors=False):
    """Fold a vmapped camera axis B into the kernel's camera axis: [B, C, ...] -> [B*C, ...]
    (per-camera colours and offsets too; shared ones stay shared unless `expand_colors`)."""
    cams, cams_batched = args[_CAMS], in_batched[_CAMS]
    C = next(a.shape[1] for a, b in zip(cams, cams_batched) if b) if any(cams_batched) else args[_R].shape[0]
    out = list(args[:4])
    out.append(_fold_per_camera(args[_COLORS], in_batched[_COLORS], axis_size, C, expand_colors))
    out.append(_fold_per_camera(args[_OFFSET], in_batched[_OFFSET], axis_size, C))
    for a, b in zip(cams, cams_batched):
        a = a if b else jnp.broadcast_to(a[None], (axis_size,) + a.shape)
        out.append(a.reshape((axis_size * a.shape[1],) + a.shape[2:]))
    return out, C


def _broadcast(args, batched, axis_size):
    return [a if b else jnp.broadcast_to(a[None], (axis_size,) + jnp.shape(a)) for a, b in zip(args, batched)]


@functools.cache
def _forward_prim(platform: str, width: int, height: int, capacity: KernelCapacity, antialiased: bool):
    nres = _n_res(platform)

    @custom_vmap
    def fwd(*args):
        return _forward_unbatched(platform, width, height, capacity, antialiased, args)

    @fwd.def_vmap
    def rule(axis_size, in_batched, *args):
        if any(in_batched[i] for i in _GEOM):  # a batch of Gaussian sets: one launch each
            out = jax.lax.map(lambda xs: fwd(*xs), _broadcast(args, in_batched, axis_size))
            return tuple(out), (True,) * (5 + nres)
        flat, C = _camera_batched_args(axis_size, in_batched, args)
        rgb, alpha, tf, nc, needed, *res = fwd(*flat)
        unfold = lambda x: x.reshape((axis_size, C) + x.shape[1:])  # noqa: E731
        # the count and the lists describe the one folded launch
        return ((unfold(rgb), unfold(alpha), unfold(tf), unfold(nc), needed, *res),
                (True, True, True, True, False) + (False,) * nres)

    return fwd


@functools.cache
def _backward_prim(platform: str, width: int, height: int, grads: tuple[bool, bool], capacity: KernelCapacity,
                   reuse: bool, antialiased: bool):
    """The backward launch; grads = (gaussian_grads, color_grads): which Gaussian-side
    cotangents are computed (the pose's always are)."""
    nres = _n_res(platform)
    gaussian_grads, color_grads = grads

    @custom_vmap
    def bwd(*args):
        inputs, (tf, nc, g_rgb, g_alpha), needed, res = args[_INPUTS], args[_IMG], args[_NEEDED], args[_RES]
        return _backward_unbatched(platform, width, height, grads, capacity, reuse, antialiased, inputs,
                                   (tf, nc, g_rgb, g_alpha), needed, res)

    @bwd.def_vmap
    def rule(axis_size, in_batched, *args):
        ib = in_batched
        if gaussian_grads or any(ib[i] for i in _GEOM) or ib[_OFFSET] or ib[_NEEDED]:
            # per-element Gaussian cotangents are needed: one launch per mapped element. Each
            # element's launch matches a forward launch only when the forward also ran per
            # element (its lists are batched); otherwise the elements bin again.
            per_elem_reuse = reuse and nres > 0 and all(ib[_RES]) and ib[_NEEDED]
            prim = _backward_prim(platform, width, height, grads, capacity, per_elem_reuse, antialiased)
            mapped = _broadcast(args[:_NEEDED + 1], ib[:_NEEDED + 1], axis_size)
            if per_elem_reuse:
                out = jax.lax.map(lambda xs: prim(*xs), mapped + list(args[_RES]))
            else:  # the lists are not read
                out = jax.lax.map(lambda xs: prim(*xs, *_no_lists(nres)), mapped)
            return tuple(out), (True,) * 9
        return _folded_backward(axis_size, ib, args)

    def _folded_backward(axis_size, ib, args):
        # geometry shared and not differentiated: fold the mapped cameras into one launch. It
        # matches the forward's launch when the forward was folded the same way (a camera
        # input or the colours batched).
        inputs, img_in, needed, res = args[_INPUTS], args[_IMG], args[_NEEDED], args[_RES]
        folded_like_forward = (any(ib[_CAMS]) or ib[_COLORS]) and not any(ib[_RES])
        prim = _backward_prim(platform, width, height, grads, capacity, reuse and folded_like_forward, antialiased)
        # colour cotangents are per element: shared colours get one row per folded camera
        flat, C = _camera_batched_args(axis_size, ib[_INPUTS], inputs, expand_colors=color_grads)
        img = []
        for a, b in zip(img_in, ib[_IMG]):
            a = a if b else jnp.broadcast_to(a[None], (axis_size,) + a.shape)
            img.append(a.reshape((axis_size * C,) + a.shape[2:]))
        out = prim(*flat, *img, needed, *res)
        g_R, g_t = out[6].reshape(axis_size, C, 3, 3), out[7].reshape(axis_size, C, 3)
        g_K = out[8].reshape(axis_size, C, 4)
        # geometry and offset gradients were not requested: zeros, hence unbatched
        outs = [jnp.zeros_like(a) for a in inputs[:6]]
        batched = [False] * 6
        if color_grads:
            g_c = out[_COLORS].reshape((axis_size, C) + out[_COLORS].shape[1:])
            per_elem_rows = inputs[_COLORS].shape[1 if ib[_COLORS] else 0]
            outs[_COLORS] = g_c if per_elem_rows == C else jnp.sum(g_c, axis=1, keepdims=True)
            batched[_COLORS] = True
        return (*outs, g_R, g_t, g_K), (*batched, True, True, True)

    return bwd


# ----------------------------------------------------------------------------- custom_vjp
@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4))
def _render(platform, width, height, capacity, antialiased, *args):
    rgb, alpha = _forward_prim(platform, width, height, capacity, antialiased)(*args)[:2]
    return rgb, alpha


def _render_fwd(platform, width, height, capacity, antialiased, *args):
    values = tuple(a.value for a in args)
    # the offset's gradient is per Gaussian too, so it counts as a Gaussian gradient here
    gaussian_grads = any(args[i].perturbed for i in (*_GEOM, _OFFSET))
    color_grads = args[_COLORS].perturbed
    rgb, alpha, tf, nc, needed, *res = _forward_prim(platform, width, height, capacity, antialiased)(*values)
    # static flags, carried in the residual's structure
    flags = (() if gaussian_grads else None, () if color_grads else None)
    return (rgb, alpha), (values, tf, nc, needed, tuple(res), flags)


def _render_bwd(platform, width, height, capacity, antialiased, residuals, cts):
    values, tf, nc, needed, res, flags = residuals
    grads = (flags[0] is not None, flags[1] is not None)
    g_rgb, g_alpha = cts
    if isinstance(g_rgb, SymbolicZero):
        g_rgb = jnp.zeros(g_rgb.shape, g_rgb.dtype)
    if isinstance(g_alpha, SymbolicZero):
        g_alpha = jnp.zeros(g_alpha.shape, g_alpha.dtype)
    bwd = _backward_prim(platform, width, height, grads, capacity, True, antialiased)
    g = bwd(*values, tf, nc, g_rgb, g_alpha, needed, *res)
    g_bg = jnp.einsum("chw,chwk->ck", tf, g_rgb)
    return (*g[:9], g_bg)


_render.defvjp(_render_fwd, _render_bwd, symbolic_zeros=True)


# ----------------------------------------------------------------------------- placement
def kernel_device(platform: str) -> jax.Device | None:
    """The device a ``platform`` kernel must run on when JAX's default device is of
    another platform (the CPU kernel on a GPU machine: the CPU device), else None."""
    if _XLA_PLATFORM[platform] != "cpu" or jax.default_backend() == "cpu":
        return None
    chosen = jax.config.jax_default_device  # a Device, a platform name or None
    if chosen is not None and getattr(chosen, "platform", chosen) == "cpu":
        return None  # already inside jax.default_device(<a CPU device>)
    return jax.devices("cpu")[0]


def device_context(platform: str):
    """``jax.default_device(kernel_device(platform))`` when there is such a device, else a
    context that changes nothing."""
    device = kernel_device(platform)
    return contextlib.nullcontext() if device is None else jax.default_device(device)


def _placed(platform: str, arrays):
    """``arrays`` moved to :func:`kernel_device` when there is one (eagerly, and under
    ``grad`` / ``vmap``: the move is differentiable, the cotangents go back to where the
    inputs were). Inside ``jit`` the compiled program's own placement decides: run it
    under ``jax.default_device(kernel_device(platform))`` (the application does) or a
    CPU-backend call in a GPU program fails to compile, naming the CPU target."""
    device = kernel_device(platform)
    if device is None:
        return arrays
    return tuple(jax.device_put(a, device) for a in arrays)


# ----------------------------------------------------------------------------- entry point
def rasterize_ffi(
    means: Float[Array, "N 3"],
    scales: Float[Array, "N 3"],
    quats: Float[Array, "N 4"],
    opacities: Float[Array, " N"],
    colors: Float[Array, "*C N 3"],
    R: Float[Array, "*C 3 3"],
    t: Float[Array, "*C 3"],
    intrinsics: Float[Array, "*C 4"],
    background: Float[Array, "*C 3"],
    *,
    width: int,
    height: int,
    platform: str,
    means2d_offset: Float[Array, "*C N 2"] | None = None,
    capacity: KernelCapacity = DEFAULT_CAPACITY,
    antialiased: bool = False,
) -> tuple[Float[Array, "*C H W 3"], Float[Array, "*C H W"]]:
    """Render activated Gaussians with the FFI kernel on ``platform`` ("cpu", "cuda", or
    "cuda-emu" for tests).

    One camera (``R [3, 3]``, ``t [3]``, ``intrinsics [4]``) gives ``(rgb [H, W, 3], alpha [H, W])``;
    a camera stack (``R [C, 3, 3]``, ...) gives ``[C, H, W, 3]`` and ``[C, H, W]`` in one launch.
    ``means2d_offset`` ([N, 2] shared, or [C, N, 2] per camera) is added to the projected means;
    its gradient is the screen-space mean gradient. ``colors`` are shared ([N, 3]) or per
    camera ([C, N, 3] with a camera stack). ``capacity`` sets the intersection-list
    capacity levels (:class:`KernelCapacity`); ``antialiased`` (static) gsplat's
    antialiased mode."""
    _require(platform)
    if not isinstance(capacity, KernelCapacity):
        raise ConfigError("capacity", f"expected a KernelCapacity, got {type(capacity).__name__}")
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
    cols = jnp.asarray(colors, f32)
    if cols.shape[-2:] != (n, 3) or cols.ndim not in (2, 3) or (cols.ndim == 3 and cols.shape[0] != C):
        raise ValueError(f"colors must be [N, 3] or [C, N, 3] with N={n}, C={C}; got {cols.shape}")
    cols = cols[None] if cols.ndim == 2 else cols
    gauss = [jnp.asarray(x, f32) for x in (means, scales, quats, opacities)]
    arrays = _placed(platform, (*gauss, cols, offset, *cams))
    with device_context(platform):
        rgb, alpha = _render(platform, int(width), int(height), capacity, bool(antialiased), *arrays)
    if single:
        rgb, alpha = rgb[0], alpha[0]
    return rgb.astype(dtype), alpha.astype(dtype)
