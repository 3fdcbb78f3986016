"""Small scene builders shared by tests (import as `from scenes import ...`)."""

from __future__ import annotations

import numpy as np


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


def look_at_c2w(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Blender/OpenGL camera-to-world looking from eye at target."""
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-8:
        right = np.cross(np.array([0.0, 1.0, 0.0]), back)
    right /= np.linalg.norm(right)
    cam_up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, back, eye
    return c2w
