"""Benchmark the renderers: forward and forward+backward time per rendered image.

Scene (documented in BENCHMARKS.md): N Gaussians uniform in the cube [-1, 1]^3, log-scales
uniform in [-4.5, -3.5], random rotations, opacities uniform in [0.1, 0.9], random colours;
C cameras on a sphere of radius 4 looking at the origin, 400 x 400 pixels, fx = fy = 550.
The loss for forward+backward is sum(rgb * w) + sum(alpha * w') with fixed random weights,
differentiated with respect to every Gaussian parameter and the poses.

Each backend renders all C cameras of a size in one call (the kernels' camera axis; the
reference maps over cameras). Times are medians over --repeats runs after one warm-up
(compilation excluded), divided by C. The reference renderer only runs where it fits
(N <= --ref-max, C = 1). On a GPU machine where gsplat imports, gsplat renders the same
Gaussians and cameras in the same run (torch, CUDA events).

  python scripts/bench_render.py                       # full table, writes BENCHMARKS.md section
  python scripts/bench_render.py --quick               # N=10k, C=1 only
  python scripts/bench_render.py --sizes 50000 --cameras 1 --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import platform as pyplatform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from splatjax.render import available_backends, placement, rasterize  # noqa: E402

W = H = 400
FOCAL = 550.0


def make_gaussians(n, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return [np.asarray(a, np.float32) for a in (
        rng.uniform(-1, 1, (n, 3)), np.exp(rng.uniform(-4.5, -3.5, (n, 3))), q,
        rng.uniform(0.1, 0.9, n), rng.uniform(0, 1, (n, 3)))]


def make_cameras(c, seed=1):
    rng = np.random.default_rng(seed)
    Rs, ts = [], []
    for _ in range(c):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        eye = 4.0 * d
        fwd = -d
        up = np.array([0.0, 0.0, 1.0]) if abs(fwd[2]) < 0.95 else np.array([0.0, 1.0, 0.0])
        right = np.cross(fwd, up)
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        R = np.stack([right, down, fwd])  # OpenCV: x right, y down, z forward
        Rs.append(R)
        ts.append(-R @ eye)
    K = np.tile([FOCAL, FOCAL, W / 2, H / 2], (c, 1))
    bg = np.ones((c, 3))
    return [np.asarray(a, np.float32) for a in (np.stack(Rs), np.stack(ts), K, bg)]


def _timeit(fn, repeats):
    """(median wall seconds, median process CPU seconds) over `repeats` runs after a warm-up;
    a single run when one call takes over 3 s."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())  # compile + warm-up
    if time.perf_counter() - t0 > 3.0:
        repeats = 1
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def jax_backend_fns(backend, gauss, cams):
    wr = jnp.asarray(np.random.default_rng(5).normal(size=(cams[0].shape[0], H, W, 3)), jnp.float32)
    wa = jnp.asarray(np.random.default_rng(6).normal(size=(cams[0].shape[0], H, W)), jnp.float32)
    gauss = [jnp.asarray(a) for a in gauss]
    cams = [jnp.asarray(a) for a in cams]
    if backend == "reference":
        wr, wa = wr[0], wa[0]

    def render_all(g, R, t):
        if backend == "reference":  # C = 1 only
            return rasterize(*g, R[0], t[0], cams[2][0], cams[3][0], width=W, height=H, backend=backend)
        return rasterize(*g, R, t, cams[2], cams[3], width=W, height=H, backend=backend)

    def loss(g, R, t):
        rgb, alpha = render_all(g, R, t)
        return jnp.sum(rgb * wr) + jnp.sum(alpha * wa)

    fwd = jax.jit(render_all)
    both = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    return (lambda: fwd(gauss, cams[0], cams[1])), (lambda: both(gauss, cams[0], cams[1]))


def gsplat_fns(gauss, cams):
    import torch
    from gsplat import rasterization

    dev = "cuda"
    t = lambda a, grad=False: torch.tensor(a, device=dev, requires_grad=grad)  # noqa: E731
    means, scales, quats, opac, colors = (t(a, True) for a in gauss)
    C = cams[0].shape[0]
    view = np.tile(np.eye(4, dtype=np.float32), (C, 1, 1))
    view[:, :3, :3], view[:, :3, 3] = cams[0], cams[1]
    viewmats = t(view, True)
    Ks = np.zeros((C, 3, 3), np.float32)
    Ks[:, 0, 0], Ks[:, 1, 1], Ks[:, 0, 2], Ks[:, 1, 2], Ks[:, 2, 2] = cams[2][:, 0], cams[2][:, 1], cams[2][:, 2], cams[2][:, 3], 1
    Ks = t(Ks)
    bg = t(cams[3])
    wr = torch.randn(C, H, W, 3, device=dev)
    wa = torch.randn(C, H, W, 1, device=dev)

    def run(backward):
        rgb, alpha, _ = rasterization(means, quats, scales, opac, colors, viewmats, Ks, W, H,
                                      near_plane=0.2, eps2d=0.3, backgrounds=bg, packed=False)
        if backward:
            ((rgb * wr).sum() + (alpha * wa).sum()).backward()
        return rgb

    def timed(backward):
        def f():
            torch.cuda.synchronize()
            run(backward)
            torch.cuda.synchronize()
            return jnp.zeros(())
        return f

    return timed(False), timed(True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--backends", nargs="+", default=None, help="default: every available one")
    ap.add_argument("--ref-max", type=int, default=10_000, help="largest N for the reference renderer's forward")
    ap.add_argument("--ref-bwd-max", type=int, default=1_000,
                    help="largest N for the reference's forward+backward (its memory grows as N x pixels: "
                         "about 9 MB per Gaussian at 400 x 400)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="N=10k, C=1 only")
    ap.add_argument("--no-write", action="store_true", help="do not append to BENCHMARKS.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.cameras = [10_000], [1]

    backends = args.backends or available_backends()
    try:
        import gsplat  # noqa: F401
        import torch

        has_gsplat = torch.cuda.is_available()
    except Exception:
        has_gsplat = False
    if has_gsplat and "gsplat" not in backends:
        backends = list(backends) + ["gsplat"]

    rows = []
    for n in args.sizes:
        gauss = make_gaussians(n)
        for c in args.cameras:
            cams = make_cameras(c)
            res = {}
            for b in backends:
                if b == "reference" and (n > args.ref_max or c > 1):
                    continue
                # the CPU kernel on a GPU machine runs on the CPU device (placement)
                with contextlib.nullcontext() if b == "gsplat" else placement(b):
                    fwd, both = gsplat_fns(gauss, cams) if b == "gsplat" else jax_backend_fns(b, gauss, cams)
                    reps = 1 if b == "reference" else args.repeats
                    (wf, cf) = _timeit(fwd, reps)
                    skip_bwd = b == "reference" and n > args.ref_bwd_max
                    (wb, cb) = (float("nan"), float("nan")) if skip_bwd else _timeit(both, reps)
                res[b] = (wf / c, wb / c, cf / c, cb / c)
                print(f"N={n:>7} C={c:>3} {b:>9}: forward {1e3 * wf / c:9.2f} ms  fwd+bwd {1e3 * wb / c:9.2f} ms "
                      f"per image (CPU time {1e3 * cf / c:.1f} / {1e3 * cb / c:.1f} ms)", flush=True)
            rows.append((n, c, res))

    base = "reference"
    lines = ["| N | C | backend | forward ms/image | fwd+bwd ms/image | process CPU ms/image (fwd, fwd+bwd) "
             "| fwd speed-up vs reference | fwd+bwd speed-up vs reference | fwd+bwd time / gsplat's |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, c, res in rows:
        for b, (tf, tb, cf, cb) in res.items():
            ref = res.get(base)
            gs = res.get("gsplat")
            ms = lambda v: "-" if math.isnan(v) else f"{1e3 * v:.2f}"  # noqa: E731
            ratio = lambda a, b: "-" if math.isnan(a) or math.isnan(b) else f"{a / b:.1f}x"  # noqa: E731
            lines.append(f"| {n} | {c} | {b} | {ms(tf)} | {ms(tb)} | {ms(cf)}, {ms(cb)} | "
                         f"{ratio(ref[0], tf) if ref else '-'} | {ratio(ref[1], tb) if ref else '-'} | "
                         f"{f'{tb / gs[1]:.2f}' if gs else '-'} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        cpu = subprocess.run(["bash", "-c", "lscpu | grep 'Model name' | head -1 | cut -d: -f2"],
                             capture_output=True, text=True).stdout.strip()
        devices = ", ".join(str(d) for d in jax.devices())
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        section = (f"\n## bench_render ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
                   f"Command: `python scripts/bench_render.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
                   f"Machine: {cpu or pyplatform.processor()}, {os.cpu_count()} CPU cores, {jax.local_device_count()} JAX "
                   f"device(s) ({devices}), "
                   f"jax {jax.__version__}, python {pyplatform.python_version()}; load average at the end {load} "
                   f"(other processes share the machine: wall times are inflated by that load, the process CPU "
                   f"time column is not)\n\n{table}\n")
        with open(ROOT / "BENCHMARKS.md", "a") as f:
            f.write(section)


if __name__ == "__main__":
    main()
