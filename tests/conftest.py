"""Shared fixtures: float64 mode, random scenes, the shared lego data location; compiled
programs released after every test module."""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path

import jax
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LEGO = SHARED_DATA / "nerf_synthetic_lego_400"


@contextlib.contextmanager
def x64_mode():
    """Enable float64 inside the block (jax.enable_x64 on jax >= 0.10)."""
    ctx = getattr(jax, "enable_x64", None)
    if ctx is None:  # older jax
        from jax.experimental import enable_x64 as ctx  # type: ignore
        with ctx():
            yield
    else:
        with ctx(True):
            yield


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Every XLA:CPU executable keeps about three memory mappings of JIT code until its cache
    entry goes; the whole suite compiles enough programs to pass the kernel's limit of
    65,530 mappings per process (vm.max_map_count), and XLA then crashes with a
    segmentation fault in compilation. Clearing the caches between modules keeps the count
    at what one module needs (see tests/test_memory_maps.py)."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def x64():
    with x64_mode():
        yield


@pytest.fixture
def lego_path():
    if not (LEGO / "transforms_train.json").is_file():
        pytest.skip("shared lego data (../shared/data/nerf_synthetic_lego_400) not present")
    return LEGO
