"""Throughput of the sharded batched fine-pose refinement against the device count.

For each count n of ``--devices`` a fresh Python is started with n devices (on the CPU:
``XLA_FLAGS=--xla_force_host_platform_device_count=n``, which must be set before JAX
starts; on a GPU machine: the first n GPUs), and refines the same ``--queries`` queries
with :func:`splatjax.sharding.shard_over_queries` over a 1-D mesh of the n devices
(``jax.vmap`` of ``refine_pose`` inside ``jax.shard_map``). The first call compiles; the
median of ``--repeats`` further calls is timed (wall and process CPU time). The n = 1
child also times the plain ``refine_poses`` (no shard_map) on the same queries, so the
cost of the sharding layer shows.

Scene: ``--gaussians`` Gaussians in a cube coloured by position, ``--resolution`` square
images from cameras on a sphere of radius 4, queries rendered from perturbed poses.

    python scripts/bench_devices.py --devices 1 2 4 --queries 8 --steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's splatjax


def _scene(n: int, seed: int = 0):
    import jax.numpy as jnp

    from splatjax import Gaussians
    from splatjax.gaussians import rgb_to_sh0

    rng = np.random.default_rng(seed)
    pts = rng.uniform(-0.8, 0.8, (n, 3)).astype(np.float32)
    return Gaussians(
        means=jnp.asarray(pts),
        log_scales=jnp.full((n, 3), np.log(0.6 / n ** (1 / 3)), jnp.float32),
        quats=jnp.tile(jnp.array([1.0, 0.0, 0.0, 0.0]), (n, 1)),
        opacity_logits=jnp.full((n,), 1.0),
        sh0=rgb_to_sh0(jnp.asarray(np.clip(0.5 + 0.6 * pts, 0.0, 1.0), jnp.float32)),
    )


def _problem(args):
    import jax
    import jax.numpy as jnp

    import splatjax as sj
    from splatjax import pose

    g = _scene(args.gaussians)
    cams, _ = pose.sphere_cameras(args.queries, 4.0, 0.69, args.resolution, args.resolution)
    queries = jax.vmap(lambda c: sj.render(g, c)[0])(cams)
    rng = np.random.default_rng(1)
    starts = []
    for i in range(args.queries):
        w, v = rng.normal(size=3), rng.normal(size=3)
        params = {"w": jnp.asarray(w / np.linalg.norm(w), jnp.float32),
                  "v": jnp.asarray(0.05 * v / np.linalg.norm(v), jnp.float32), "theta": jnp.asarray(0.03)}
        starts.append(pose.moved_camera(pose.index_cameras(cams, i), params, exact_exp=True))
    return g, sj.stack_cameras(starts), queries


def _timed(fn, repeats: int) -> tuple[float, float]:
    import jax

    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return float(np.median(walls)), float(np.median(cpus))


def child(args) -> dict:
    """One measurement in this process (its devices fixed by the parent's XLA_FLAGS)."""
    import jax

    from splatjax import pose
    from splatjax.sharding import ParallelConfig, shard_over_queries

    g, starts, queries = _problem(args)
    keys = jax.random.split(jax.random.key(0), args.queries)
    steps = args.steps

    def refine(g, c, q, k):
        return jax.vmap(lambda c, q, k: pose.refine_pose(g, c, q, key=k, steps=steps))(c, q, k)

    config = ParallelConfig(devices=args.child)
    run = lambda: shard_over_queries(refine, g, starts, queries, keys, in_axes=(None, 0, 0, 0), config=config)  # noqa: E731
    t0 = time.perf_counter()
    jax.block_until_ready(run())
    out = {"devices": args.child, "device_kind": jax.local_devices()[0].device_kind,
           "first_call_s": time.perf_counter() - t0}
    out["wall_s"], out["cpu_s"] = _timed(run, args.repeats)
    if args.child == 1:
        plain = lambda: pose.refine_poses(g, starts, queries, key=jax.random.key(0), steps=steps,  # noqa: E731
                                          batch_size=args.queries)
        jax.block_until_ready(plain())
        out["plain_wall_s"], out["plain_cpu_s"] = _timed(plain, args.repeats)
    return out


def _run_child(n: int, args) -> dict:
    env = dict(os.environ)
    if args.platform == "cpu":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip()
        env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, os.path.abspath(__file__), "--child", str(n)] + [
        f"--{k}={getattr(args, k)}" for k in ("queries", "steps", "resolution", "gaussians", "repeats")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child with {n} devices failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--platform", choices=("cpu", "gpu"), default="cpu",
                    help="cpu: forced host devices; gpu: the first n GPUs")
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--gaussians", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args)))
        return 0
    rows = [_run_child(n, args) for n in args.devices]
    print(f"# {args.queries} queries x {args.steps} steps, {args.resolution}^2 px, {args.gaussians} Gaussians; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| devices | queries/s | per device | speed-up vs first row | wall s | process CPU s | first call s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        qps = args.queries / r["wall_s"]
        print(f"| {r['devices']} ({r['device_kind']}) | {qps:.2f} | {qps / r['devices']:.2f} | "
              f"{rows[0]['wall_s'] / r['wall_s']:.2f}x | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
              f"{r['first_call_s']:.1f} |")
    for r in rows:
        if "plain_wall_s" in r:
            print(f"\nplain refine_poses (no shard_map), 1 device: {args.queries / r['plain_wall_s']:.2f} queries/s "
                  f"(wall {r['plain_wall_s']:.2f} s, process CPU {r['plain_cpu_s']:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
