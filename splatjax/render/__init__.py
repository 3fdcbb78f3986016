"""One ``render`` entry with several backends (see :mod:`.api`): the dense pure-JAX reference (:mod:`.reference`) and the tile rasterizer through the JAX FFI (:mod:`.ffi`)."""

from __future__ import annotations

from . import ffi
from .backends import USER_BACKENDS
from .ffi import DEFAULT_CAPACITY, KernelCapacity
from .reference import rasterize_reference
from .api import (
    BACKENDS,
    available_backends,
    resolve_backend,
    placement,
    rasterize,
    render,
)

__all__ = [
    "render",
    "rasterize",
    "resolve_backend",
    "available_backends",
    "placement",
    "BACKENDS",
    "USER_BACKENDS",
    "KernelCapacity",
]
