"""The suite's guard against the per-process memory-map limit (conftest's
``_release_compiled_programs``): compiled XLA:CPU programs hold memory mappings until
``jax.clear_caches()``, which gives them back."""

from __future__ import annotations

import gc
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

MAPS = Path("/proc/self/maps")


def _mappings() -> int:
    with MAPS.open() as f:
        return sum(1 for _ in f)


@pytest.mark.skipif(not MAPS.is_file(), reason="needs /proc/self/maps (Linux)")
def test_clear_caches_gives_back_the_mappings_of_compiled_programs():
    jax.clear_caches()
    gc.collect()
    before = _mappings()
    for n in range(1, 61):  # 60 distinct programs (one per shape)
        jax.jit(lambda x: jnp.sin(x) * 2.0 + x**2)(jnp.ones((n,))).block_until_ready()
    grown = _mappings()
    assert grown - before >= 60, (before, grown)  # each program holds mappings of its code
    jax.clear_caches()
    gc.collect()
    assert grown - _mappings() > (grown - before) / 2, (before, grown, _mappings())  # most given back
