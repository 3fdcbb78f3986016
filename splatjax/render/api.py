"""One ``render`` entry with several backends.

- ``"reference"``: dense pure-JAX renderer (:mod:`splatjax.render.reference`), the oracle.
- ``"cpu"`` / ``"cuda"``: the tile rasterizer compiled from ``cuda_ffi/`` and called through
  the JAX FFI (:mod:`splatjax.render.ffi`).
- ``"auto"``: the FFI kernel for the platform the arrays live on when it is built, else
  the reference renderer.
- ``"cuda-emu"`` (tests only; never picked by "auto"): the CUDA kernel source compiled for
  the CPU against the CUDA emulator in ``cuda_ffi/emu``, so the CUDA handlers run without a
  GPU. Slow.

The FFI kernels take a static :class:`KernelCapacity` (``capacity=``) describing their
intersection-list capacity levels; the default suits scenes up to millions of
intersections per Gaussian-camera pair and the error on overflow says how to raise it.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..camera import Camera
from ..errors import ConfigError
from ..gaussians import Gaussians
from ..image import box_downsample
from . import ffi
from .backends import BACKENDS, MAX_SUPERSAMPLE, TEST_ONLY, valid_supersample
from .ffi import DEFAULT_CAPACITY, KernelCapacity
from .reference import rasterize_reference

__all__ = ["BACKENDS", "available_backends", "resolve_backend", "placement", "rasterize", "render"]


def available_backends() -> list[str]:
    """Backends that can run here: always "reference", plus each FFI kernel that was built
    and whose platform has a device (the test-only "cuda-emu" is not listed)."""
    return ["reference", *ffi.available_platforms()]


def _available(backend: str) -> bool:
    if backend in TEST_ONLY:
        return backend in ffi.available_platforms(include_emulation=True)
    return backend in available_backends()


def _default_platform() -> str:
    return jax.default_backend()


def resolve_backend(backend: str) -> str:
    """The concrete backend ("reference", "cpu", "cuda" or "cuda-emu") that ``backend``
    stands for here.

    The one place backends are chosen: "auto" is the FFI kernel for JAX's default platform
    when it is built, else the reference ("cuda-emu", the emulated CUDA kernel for tests, is
    only used when named). An unknown name raises :class:`ConfigError` (option
    ``backend``); a known but unavailable kernel raises :class:`ConfigError` saying how to
    build it.
    """
    if backend not in BACKENDS:
        raise ConfigError("backend", f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        platform = "cuda" if _default_platform() in ("gpu", "cuda") else "cpu"
        return platform if platform in available_backends() else "reference"
    if backend != "reference" and not _available(backend):
        raise ConfigError(
            "backend",
            f"render backend {backend!r} is not available: the {backend} kernel library was not built "
            "or this machine has no such device. Rebuild with `pip install .` (the CUDA library needs "
            "nvcc at build time), or use backend='reference'.",
        )
    return backend


def placement(backend: str):
    """The context programs using ``backend`` run in: ``jax.default_device`` of the CPU
    for the CPU kernel on a machine whose default device is a GPU (so that jitted
    programs are compiled for the CPU, where its FFI target is registered), else no change.
    An unknown or unavailable backend changes nothing here (it fails where it is used)."""
    try:
        concrete = resolve_backend(backend)
    except ConfigError:
        return contextlib.nullcontext()
    return ffi.device_context(concrete) if concrete in ffi.PLATFORMS else contextlib.nullcontext()


def rasterize(
    means: Float[Array, "N 3"],
    scales: Float[Array, "N 3"],
    quats: Float[Array, "N 4"],
    opacities: Float[Array, " N"],
    colors: Float[Array, "*C N 3"],
    R: Float[Array, "3 3"],
    t: Float[Array, " 3"],
    intrinsics: Float[Array, " 4"],
    background: Float[Array, " 3"],
    *,
    width: int,
    height: int,
    backend: str = "auto",
    means2d_offset: Float[Array, "N 2"] | None = None,
    capacity: KernelCapacity | None = None,
    antialiased: bool = False,
) -> tuple[Float[Array, "H W 3"], Float[Array, "H W"]]:
    """Render activated parameters (see :mod:`splatjax.render.reference` for the exact
    conventions, which every backend shares). Differentiable in every array argument.
    ``capacity`` (FFI kernels; static) sets the intersection-list capacity levels.
    ``antialiased`` (static): gsplat's antialiased mode (opacity times
    sqrt(det(cov2d - 0.3 I) / det(cov2d))). ``colors`` may be per camera ([C, N, 3]) with a
    camera stack on the FFI kernels."""
    backend = resolve_backend(backend)
    kw = dict(width=width, height=height, means2d_offset=means2d_offset, antialiased=bool(antialiased))
    if backend == "reference":
        return rasterize_reference(means, scales, quats, opacities, colors, R, t, intrinsics, background, **kw)
    return ffi.rasterize_ffi(means, scales, quats, opacities, colors, R, t, intrinsics, background,
                                platform=backend, capacity=DEFAULT_CAPACITY if capacity is None else capacity, **kw)


def render(
    gaussians: Gaussians,
    camera: Camera,
    *,
    background=(1.0, 1.0, 1.0),
    backend: str = "auto",
    means2d_offset: Float[Array, "N 2"] | None = None,
    capacity: KernelCapacity | None = None,
    sh_degree=None,
    antialiased: bool = False,
    supersample: int = 1,
) -> tuple[Float[Array, "H W 3"], Float[Array, "H W"]]:
    """Render ``gaussians`` seen by ``camera`` (OpenCV world-to-camera) over ``background``.

    Returns (rgb [H, W, 3] float, alpha [H, W]). Differentiable with respect to every
    Gaussian parameter and to ``camera.R`` / ``camera.t`` (also through the view-dependent
    colour); works under ``jit``, and ``vmap`` over a camera batch (see
    :func:`splatjax.camera.stack_cameras`; view-dependent colours then become per-camera
    colours of one kernel launch).
    Colours: :meth:`Gaussians.colors_for` at ``camera.center`` with ``sh_degree`` (None:
    the stored degree; an int is capped there; a traced scalar masks the higher degrees).
    ``capacity``: the FFI kernels' intersection-list levels (a static
    :class:`KernelCapacity`; default ``KernelCapacity()``). ``antialiased`` (static):
    gsplat's antialiased mode (see :mod:`splatjax.render.reference`). ``supersample``
    (static int k >= 1): each pixel is the mean of k x k samples on a regular grid (the
    image rendered at k times the size, intrinsics scaled, then
    :func:`splatjax.image.box_downsample`), the box-filtered pixel a camera sensor or a
    path tracer integrates; ``means2d_offset`` stays in output pixels."""
    k = _supersample(supersample)
    dtype = gaussians.means.dtype
    bg = jnp.broadcast_to(jnp.asarray(background, dtype), (3,))
    colors = gaussians.colors_for(camera.center.astype(dtype), sh_degree)
    cam = camera if k == 1 else camera.scaled(camera.width * k, camera.height * k)
    rgb, alpha = rasterize(
        gaussians.means, gaussians.scales, gaussians.unit_quats, gaussians.opacities, colors,
        cam.R.astype(dtype), cam.t.astype(dtype), cam.intrinsics.astype(dtype), bg,
        width=cam.width, height=cam.height, backend=backend,
        means2d_offset=means2d_offset if means2d_offset is None or k == 1 else means2d_offset * k,
        capacity=capacity, antialiased=antialiased,
    )
    if k == 1:
        return rgb, alpha
    return box_downsample(rgb, k), box_downsample(alpha[..., None], k)[..., 0]


def _supersample(k) -> int:
    if not valid_supersample(k):
        raise ValueError(f"render: supersample must be an int in 1..{MAX_SUPERSAMPLE} (got {k!r})")
    return int(k)
