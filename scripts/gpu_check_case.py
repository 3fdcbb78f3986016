"""One forward + backward of the CUDA rasterizer on a small scene, for compute-sanitizer
(scripts/gpu_check.sh): a camera stack of 4 views, every gradient requested, then the
pose-only backward and a re-run at a larger capacity level (the backward that bins again).
Exits non-zero if the results are not finite or disagree with the CPU kernel."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splatjax.render import ffi  # noqa: E402


def scene(n=2000, c=4, w=96, h=80, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    gauss = [rng.uniform(-1, 1, (n, 3)), np.exp(rng.uniform(-3.5, -2.0, (n, 3))), q, rng.uniform(0.05, 0.95, n),
             rng.uniform(0, 1, (n, 3))]
    Rs, ts = [], []
    for k in range(c):
        a = 0.4 * k
        Rs.append([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
        ts.append([0.0, 0.0, 4.0])
    cams = [np.array(Rs), np.array(ts), np.tile([110.0, 110.0, w / 2, h / 2], (c, 1)), rng.uniform(0, 1, (c, 3))]
    return [jnp.asarray(a, jnp.float32) for a in gauss + cams], w, h


def main():
    args, w, h = scene()
    results = {}
    for platform in ("cuda", "cpu"):
        for name, cap in (("first level", ffi.DEFAULT_CAPACITY), ("larger level", ffi.KernelCapacity(min=256, per_gaussian=0))):
            render = lambda *a: ffi.rasterize_ffi(*a, width=w, height=h, platform=platform, capacity=cap)  # noqa: E731

            def loss(*a):
                rgb, alpha = render(*a)
                return jnp.sum(rgb * jnp.linspace(-1, 1, rgb.size).reshape(rgb.shape)) + jnp.sum(alpha ** 2)

            full = jax.grad(loss, argnums=tuple(range(9)))(*args)
            pose = jax.grad(loss, argnums=(5, 6))(*args)
            results[platform, name] = [np.asarray(x) for x in (*render(*args), *full, *pose)]
    worst = 0.0
    for name in ("first level", "larger level"):
        for a, b in zip(results["cuda", name], results["cpu", name]):
            if not np.all(np.isfinite(a)):
                print("non-finite CUDA result", name)
                return 1
            worst = max(worst, float(np.max(np.abs(a - b)) / max(1e-30, float(np.max(np.abs(b))))))
    print(f"CUDA vs CPU, worst relative difference over images and gradients: {worst:.3g}")
    return 0 if worst <= 1e-4 else 2


if __name__ == "__main__":
    sys.exit(main())
