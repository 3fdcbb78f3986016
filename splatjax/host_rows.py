"""Row selection and concatenation of arrays that live in host memory, without compiling.

Outside ``jit`` every ``x[index]``, ``x[:k]`` or ``jnp.concatenate`` on a ``jax.Array`` is an
XLA program compiled for its shapes; the pose stages select and join rows of many sizes
(screened candidates, retried queries, padded chunks), so an evaluation on the CPU compiled
several hundred such programs, a tenth of a second each (BENCHMARKS.md, "Compilations in the
pose stages' glue"). An array on one CPU device is already in host memory: numpy does the
same copy exactly (the values are the same bits) with nothing to compile. Anything else (a
tracer, an array on a GPU or over several devices, a PRNG key array, a weakly typed array)
takes the ``jax.numpy`` path as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

try:
    from jax.core import Tracer
except ImportError:  # moved in some releases
    from jax._src.core import Tracer

__all__ = ["on_host", "take_rows", "concat_rows", "set_rows"]


def on_host(x) -> bool:
    """Whether ``x`` is a concrete ``jax.Array`` on one CPU device with a plain dtype (numpy
    can read it in place and a result can go back to that device unchanged)."""
    if not isinstance(x, jax.Array) or isinstance(x, Tracer):
        return False
    if getattr(x, "weak_type", False) or jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended):
        return False
    devices = x.devices()
    return len(devices) == 1 and next(iter(devices)).platform == "cpu"


def _index(index):
    if isinstance(index, Tracer):
        return None
    if isinstance(index, (jax.Array, np.ndarray, list)):
        return np.asarray(index)
    if isinstance(index, (int, np.integer, slice)):
        return index
    return None


def _back(value: np.ndarray, like: jax.Array) -> jax.Array:
    # committed to its device where ``like`` is (as jax.numpy's result would be), else free to
    # move into a program over other devices
    if getattr(like, "committed", True):
        return jax.device_put(value, next(iter(like.devices())))
    return jax.device_put(value)


def take_rows(x, index):
    """``x[index]`` (an integer, a slice, or an integer or boolean index array or list), computed by
    numpy when ``x`` is :func:`on_host` and ``index`` is concrete; a numpy array stays numpy."""
    if isinstance(x, np.ndarray):
        return x[index]
    idx = _index(index)
    if idx is None or not on_host(x):
        return x[jnp.asarray(index) if isinstance(index, list) else index]
    return _back(np.asarray(x)[idx], x)


def concat_rows(xs: Sequence):
    """``jnp.concatenate(xs)`` along the first axis, by numpy when every part is :func:`on_host`
    on the same device with one dtype."""
    if all(on_host(x) for x in xs) and len({x.dtype for x in xs}) == 1 \
            and len({next(iter(x.devices())) for x in xs}) == 1:
        return _back(np.concatenate([np.asarray(x) for x in xs]), xs[0])
    return jnp.concatenate(xs)


def set_rows(x, index, values):
    """``x.at[index].set(values)`` (``x`` unchanged), by numpy when ``x`` and ``values`` are
    :func:`on_host` (or numpy) and ``index`` is concrete."""
    idx = _index(index)
    if idx is not None and on_host(x) and (on_host(values) or isinstance(values, np.ndarray)):
        new = np.asarray(values)
        if new.dtype == x.dtype:
            out = np.array(x)
            out[idx] = new
            return _back(out, x)
    return jnp.asarray(x).at[jnp.asarray(index)].set(values)
