"""Host-side row selection (splatjax.host_rows): the same values as jax.numpy, no compilation
for arrays on the CPU, the jax.numpy path for anything else."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import monitoring

from splatjax.host_rows import concat_rows, on_host, set_rows, take_rows

COMPILES = []
monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: COMPILES.append(event) if event == "/jax/core/compile/backend_compile_duration"
    else None)


def _compiles(fn):
    before = len(COMPILES)
    out = jax.block_until_ready(fn())
    return out, len(COMPILES) - before


def test_same_values_as_jax_numpy_without_compiling():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(7, 5, 3)).astype(np.float32))
    y = jnp.asarray(np.arange(7 * 5 * 3, dtype=np.int32).reshape(7, 5, 3))
    assert on_host(x) and on_host(y)
    for index in (np.array([6, 0, 0, 3]), [2, 5], jnp.asarray([1, 1]), slice(1, 4), 3, np.arange(7) % 2 == 0):
        for a in (x, y):
            got, n = _compiles(lambda: take_rows(a, index))
            assert n == 0 and isinstance(got, jax.Array) and got.dtype == a.dtype
            np.testing.assert_array_equal(got, a[jnp.asarray(index) if isinstance(index, list) else index])
    parts = [x[:2], x[3:], x]
    got, n = _compiles(lambda: concat_rows(parts))
    assert n == 0
    np.testing.assert_array_equal(got, jnp.concatenate(parts))
    new = x[:2] * 2
    got, n = _compiles(lambda: set_rows(x, np.array([4, 1]), new))
    assert n == 0
    np.testing.assert_array_equal(got, x.at[jnp.asarray([4, 1])].set(new))
    assert not np.array_equal(np.asarray(got), np.asarray(x))  # x itself unchanged
    # committed where x is committed, free to move where it is not (as jax.numpy's results)
    placed = jax.device_put(x, jax.devices()[0])
    assert take_rows(placed, [0]).committed and not take_rows(x, [0]).committed


def test_other_arrays_take_the_jax_path():
    keys = jax.random.split(jax.random.key(0), 4)
    weak = jnp.asarray(1.0) * jnp.ones(3)
    assert not on_host(keys) and not on_host(np.ones(3))
    np.testing.assert_array_equal(jax.random.key_data(take_rows(keys, [3, 0])),
                                  jax.random.key_data(keys[jnp.asarray([3, 0])]))
    if getattr(weak, "weak_type", False):
        assert not on_host(weak) and take_rows(weak, [0]).weak_type
    # under jit the index and the array are tracers: the jax.numpy gather, traced into the program
    f = jax.jit(lambda a, i: take_rows(a, i))
    np.testing.assert_array_equal(f(jnp.arange(5.0), jnp.asarray([4, 2])), [4.0, 2.0])
    # a numpy array stays numpy
    assert isinstance(take_rows(np.arange(4), [1]), np.ndarray)
    with pytest.raises(IndexError):
        take_rows(jnp.arange(3.0), np.array([5]))
