"""Throughput of the sharded evaluation stages against the device count.

For each count n of ``--devices`` a fresh Python is started with n devices (on the CPU:
``XLA_FLAGS=--xla_force_host_platform_device_count=n``, which must be set before JAX
starts; on a GPU machine: the first n GPUs).

``--stage fine`` (default): the child refines the same ``--queries`` queries with
:func:`splatjax.pose.refine_poses` sharded over a 1-D mesh of the n devices
(``parallel=ParallelConfig(devices=n)``: ``jax.vmap`` of the refinement inside
``jax.shard_map``, one launch). The first call compiles; the median of ``--repeats``
further calls is timed (wall and process CPU time). On one device ``refine_poses`` runs
its plain jitted ``vmap`` (no ``shard_map``), so the n = 1 row is the unsharded baseline. Scene:
``--gaussians`` Gaussians in a cube coloured by position, ``--resolution`` square images
from cameras on a sphere of radius 4, queries rendered from perturbed poses.

``--stage evaluate``: the child runs :func:`splatjax.app.evaluate.evaluate` on the toy
object (``--resolution`` px, ``--test-per-type`` test images per defect type) with a fixed
model of ``--gaussians`` Gaussians, weights-free maps and ``--devices n``: once to compile,
then ``--repeats`` times, and reports the median of the report's ``parallel.queries_per_s``
(fine pose + renders + maps, the sharded stages) and of ``queries_per_second`` (with the
unsharded coarse pose).

    python scripts/bench_devices.py --devices 1 2 4 --queries 8 --steps 50
    python scripts/bench_devices.py --stage evaluate --devices 1 2 4 --resolution 64 --steps 50
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
    if args.stage == "evaluate":
        return _child_evaluate(args)
    import jax

    from splatjax import pose
    from splatjax.sharding import ParallelConfig

    g, starts, queries = _problem(args)
    config = pose.PoseConfig(steps=args.steps, batch_size=args.queries, backend="auto")
    parallel = ParallelConfig(devices=args.child)

    def run():
        return pose.refine_poses(g, starts, queries, config, key=jax.random.key(0), parallel=parallel)

    t0 = time.perf_counter()
    jax.block_until_ready(run())
    out = {"devices": args.child, "device_kind": jax.local_devices()[0].device_kind,
           "first_call_s": time.perf_counter() - t0}
    out["wall_s"], out["cpu_s"] = _timed(run, args.repeats)
    return out


def _toy_and_model(args, root: Path) -> tuple[Path, Path]:
    """The toy object and a fixed model of ``args.gaussians`` Gaussians (a run folder)."""
    from splatjax.app.runs import save_cameras
    from splatjax.data import load_mad_train, make_toy_dataset
    from splatjax.gaussians import save_ply

    toy = make_toy_dataset(root / "toy", seed=0, resolution=args.resolution, num_train=12,
                           num_test_per_type=args.test_per_type)
    run = root / "model"
    run.mkdir(parents=True, exist_ok=True)
    save_ply(_scene(args.gaussians), run / "model.ply")
    save_cameras(run, load_mad_train(toy, None))
    return toy, run


def _child_evaluate(args) -> dict:
    import jax

    from splatjax.anomaly import MapConfig
    from splatjax.app.evaluate import evaluate
    from splatjax.context import QUIET
    from splatjax.pose import PoseConfig
    from splatjax.sharding import ParallelConfig

    root = Path(args.workdir)
    kw = dict(model=root / "model", pose_config=PoseConfig(steps=args.steps, coarse="render"),
              map_config=MapConfig(features="weights-free"), heatmaps=False, context=QUIET,
              parallel=ParallelConfig(devices=args.child))
    t0 = time.perf_counter()
    evaluate(root / "toy", root / f"out_{args.child}_warm", **kw)
    first = time.perf_counter() - t0
    reports = [evaluate(root / "toy", root / f"out_{args.child}_{i}", **kw)[0] for i in range(args.repeats)]
    return {"devices": args.child, "device_kind": jax.local_devices()[0].device_kind, "first_call_s": first,
            "queries": reports[0]["num_test_images"],
            "sharded_qps": float(np.median([r["parallel"]["queries_per_s"] for r in reports])),
            "qps": float(np.median([r["queries_per_second"] for r in reports])),
            "image_auroc": reports[0]["image_auroc"]}


def _run_child(n: int, args) -> dict:
    env = dict(os.environ)
    if args.platform == "cpu":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip()
        env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, os.path.abspath(__file__), "--child", str(n)] + [
        f"--{k.replace('_', '-')}={getattr(args, k)}"
        for k in ("stage", "queries", "steps", "resolution", "gaussians", "repeats", "test_per_type", "workdir")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child with {n} devices failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("fine", "evaluate"), default="fine")
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--platform", choices=("cpu", "gpu"), default="cpu",
                    help="cpu: forced host devices; gpu: the first n GPUs")
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--gaussians", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--test-per-type", type=int, default=4, help="evaluate: test images per defect type")
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args)))
        return 0
    if args.stage == "evaluate":
        return _main_evaluate(args)
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
    return 0


def _main_evaluate(args) -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench_devices_") as tmp:
        args.workdir = tmp
        _toy_and_model(args, Path(tmp))
        rows = [_run_child(n, args) for n in args.devices]
    print(f"# evaluate on the toy object: {rows[0]['queries']} queries, {args.resolution}^2 px, {args.steps} fine "
          f"steps, {args.gaussians} Gaussians, weights-free maps; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| devices | queries/s, sharded stages | per device | queries/s, with coarse | first run s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['devices']} ({r['device_kind']}) | {r['sharded_qps']:.2f} | {r['sharded_qps'] / r['devices']:.2f} "
              f"| {r['qps']:.2f} | {r['first_call_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
