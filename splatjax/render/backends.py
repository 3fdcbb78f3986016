"""The render backends' names: the one list every config and the resolver use."""

from __future__ import annotations

from ..validation import is_int

__all__ = ["BACKENDS", "TEST_ONLY", "USER_BACKENDS", "MAX_SUPERSAMPLE", "valid_supersample"]

#: every name ``render(backend=...)`` resolves: "auto", the dense pure-JAX "reference", the
#: FFI kernels "cpu" and "cuda", and "cuda-emu" (the CUDA source on the CPU emulator, tests only)
BACKENDS = ("auto", "reference", "cpu", "cuda", "cuda-emu")
#: resolvable by name, never picked by "auto", not listed as available, not a CLI choice
TEST_ONLY = ("cuda-emu",)
#: the choices offered to users (configs, command-line flags)
USER_BACKENDS = tuple(b for b in BACKENDS if b not in TEST_ONLY)

#: the largest ``supersample`` (samples per pixel side) a fit or a render accepts
MAX_SUPERSAMPLE = 4


def valid_supersample(value) -> bool:
    """Whether ``value`` is a ``supersample`` a fit or a render accepts: an integer (not a
    bool) in 1..:data:`MAX_SUPERSAMPLE`."""
    return is_int(value) and 1 <= value <= MAX_SUPERSAMPLE
