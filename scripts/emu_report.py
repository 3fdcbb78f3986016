"""The CUDA kernel under the CPU emulator against the CPU kernel, in numbers.

Runs the random scenes of tests/test_kernels.py (12 seeds, 64 x 48, 240 Gaussians with
Gaussians behind the camera, off-screen, very thin, very large, clamped) and a camera stack
through the "cuda-emu" platform (cuda_ffi/cuda.cu compiled for the CPU, see cuda_ffi/emu)
and the "cpu" platform, and prints
- the worst image and gradient differences, CUDA-emu vs CPU (relative to the largest
  magnitude, as in the tests);
- the backward's atomics: per contributing (pixel, Gaussian) pair (the emulator counts the
  pairs as the true lanes of the backward's __any_sync votes; the old backward did 9 atomics
  per pair), and the sorts per forward + backward (1: the backward reuses the lists).

  python scripts/emu_report.py
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_kernels import H, W, _camera_stack, _loss, _loss_weights, _rel, make_scene  # noqa: E402

from splatjax.render import ffi  # noqa: E402


def run(platform, args, wr, wa):
    render = lambda *a: ffi.rasterize_ffi(*a, width=W, height=H, platform=platform)  # noqa: E731
    rgb, alpha = render(*args)
    grads = jax.grad(_loss(render, wr, wa), argnums=tuple(range(len(args))))(*map(jnp.asarray, args))
    return [np.asarray(rgb), np.asarray(alpha)], [np.asarray(g) for g in grads]


def main():
    if "cuda-emu" not in ffi.available_platforms(include_emulation=True):
        raise SystemExit("the CUDA emulation library is not built (cmake -S cuda_ffi -B build/dev && cmake --build build/dev)")
    lib = ctypes.CDLL(str(ffi.kernel_library("cuda-emu")))
    cases = []
    for seed in range(12):
        wr, wa = (w.astype(np.float32) for w in _loss_weights(seed))
        cases.append((f"seed {seed}", make_scene(seed), wr, wa))
    scene = make_scene(100, n=200)
    cams = _camera_stack(101)
    rng = np.random.default_rng(3)
    cases.append(("8-camera stack", [*scene[:5], *cams], rng.normal(size=(8, H, W, 3)).astype(np.float32),
                  rng.normal(size=(8, H, W)).astype(np.float32)))
    worst_img = worst_grad = 0.0
    atomics = pairs = votes = 0
    sorts = []
    for name, args, wr, wa in cases:
        img0, g0 = run("cpu", args, wr, wa)
        lib.sjemu_reset_stats()
        img1, g1 = run("cuda-emu", args, wr, wa)
        buf = ctypes.create_string_buffer(1 << 20)
        lib.sjemu_report(buf, len(buf))
        rep = json.loads(buf.value.decode())
        bk = rep["kernels"]["backward_kernel"]
        atomics += bk["atomics"]
        pairs += bk["vote_lanes_true"]
        votes += bk["votes_true"]
        sorts.append(rep["api"]["cub::DeviceRadixSort::SortPairs"] // 2 - 1)  # minus the plain forward's
        img = max(_rel(a, b, 1.0) for a, b in zip(img1, img0))
        grad = max(_rel(a, b) for a, b in zip(g1, g0))
        worst_img, worst_grad = max(worst_img, img), max(worst_grad, grad)
        print(f"{name:16s} image {img:.2e}  gradients {grad:.2e}  backward atomics per contributing pair "
              f"{bk['atomics'] / max(1, bk['vote_lanes_true']):.3f}")
    print(f"worst over {len(cases)} scenes: image {worst_img:.2e}, gradients {worst_grad:.2e} (CUDA-emu vs CPU)")
    print(f"backward: {atomics} global atomics for {pairs} contributing (pixel, Gaussian) pairs = "
          f"{atomics / pairs:.3f} per pair (the old backward: 9 per pair, {9 * pairs}); "
          f"{pairs / max(1, votes):.1f} contributing pixels per warp-Gaussian on average")
    print(f"radix sorts per forward + backward: {sorted(set(sorts))}")


if __name__ == "__main__":
    main()
