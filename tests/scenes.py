"""Small scene builders shared by tests (import as `from scenes import ...`)."""

from __future__ import annotations

import numpy as np

from splatjax.camera import look_at_c2w  # noqa: F401  (re-exported for the tests)


def random_scene(seed: int, n: int = 40, *, dtype=np.float32, spread: float = 0.6):
    """Random Gaussians around the origin (numpy arrays, pre-activation) for tests."""
    import splatjax as sj
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    g = sj.Gaussians(
        means=jnp.asarray(rng.uniform(-spread, spread, (n, 3)), dtype),
        log_scales=jnp.asarray(rng.uniform(-2.6, -1.4, (n, 3)), dtype),
        quats=jnp.asarray(rng.normal(size=(n, 4)), dtype),
        opacity_logits=jnp.asarray(rng.uniform(-1.0, 2.5, n), dtype),
        sh0=jnp.asarray(rng.normal(0, 1.0, (n, 3)), dtype),
    )
    return g
