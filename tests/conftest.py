"""Shared fixtures: float64 mode, random scenes, the shared lego data location; compiled
programs released after every test module, and kept on disk for the next one."""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path

import jax
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LEGO = SHARED_DATA / "nerf_synthetic_lego_400"


def _persistent_compilation_cache() -> None:
    """JAX's persistent compilation cache for the test run (and the CLI subprocesses it
    starts, through the environment): every module clears the in-memory caches when it
    ends (below), and many modules compile the same programs (the pose stage, the maps,
    the training chunk on the same toy shapes); reading an executable back from disk is a
    fraction of compiling it again. In ``.pytest_cache/jax/<xdist worker>`` of the checkout
    (ignored by git; a fresh clone starts empty); ``SPLATJAX_TEST_JAX_CACHE=DIR`` puts it
    elsewhere, ``=off`` turns it off. One folder per pytest-xdist worker: JAX writes an
    entry in place without a lock (unless the cache has a size limit, whose eviction scans
    the whole folder on every write), so two workers sharing one could read an entry half
    written. Results do not depend on the cache: an entry is keyed on the program, the
    compile options and the jax/jaxlib versions."""
    default = Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax"
    where = os.environ.get("SPLATJAX_TEST_JAX_CACHE", str(default))
    if where.lower() in ("off", "0", ""):
        return
    where = str(Path(where) / os.environ.get("PYTEST_XDIST_WORKER", "main"))
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", where)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


_persistent_compilation_cache()


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
