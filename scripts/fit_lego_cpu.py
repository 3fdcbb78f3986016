"""Fit the shared NeRF-synthetic lego scene and report validation PSNR / SSIM and speed.

Three schedules:

- default (the reduced recipe, hand-tuned for a small CPU before the schedule scaled with
  ``--iterations``): 200 x 200 images, 3000 steps, 10k initial random points, a buffer of
  80k slots, densification every 100 steps from 500 to 2/3 of the run (step 2000), one
  opacity reset at 500 (white background), the position learning rate decaying over the
  3000 steps; validation on 10 val views every 1000 steps and on all 100 at the end.
- ``--plain``: exactly what ``splatjax fit DATA --resolution R --iterations N`` does (every
  other setting at its default: the 30k schedule scaled to N steps, 100k initial points,
  the self-growing buffer); validation on all val views at the end.
- ``--full``: the 3DGS / SplatPose defaults (400 x 400, 30k steps, 100k initial points,
  densification to 15k), for a GPU machine (backend "auto" picks the CUDA kernel).

Usage (from the repository root)::

    python scripts/fit_lego_cpu.py --out runs/lego_cpu
    python scripts/fit_lego_cpu.py --plain --iterations 6000 --out runs/lego_6000
    python scripts/fit_lego_cpu.py --full --out runs/lego_full
    python scripts/fit_lego_cpu.py --iterations 3000 --resolution 200 --out runs/x

Writes the run folder (model.ply, config.json, metrics.jsonl, checkpoints/, info.json) and
prints one summary line (wall time includes data loading and compilation).
"""

from __future__ import annotations

import argparse
import json
import dataclasses
import os
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "nerf_synthetic_lego_400"


def reduced_config(iterations: int = 3000, resolution: int = 200, **overrides):
    """The reduced CPU schedule (see the module docstring)."""
    from splatjax.fitting import FitConfig

    until = max(600, (iterations * 2 // 3) // 100 * 100)
    base = dict(
        iterations=iterations, resolution=resolution, init_points=10_000, capacity=80_000,
        densify_from=500, densify_until=until, densify_every=100, opacity_reset_every=3000,
        chunk_steps=100, checkpoint_every=1000, val_every=1000, val_views=10, log_every=100,
    )
    base.update(overrides)
    return FitConfig(**base)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="Blender/NeRF lego folder")
    p.add_argument("--out", default=str(REPO / "runs" / "lego_cpu"), help="run folder")
    p.add_argument("--full", action="store_true", help="the full 3DGS schedule (400 x 400, 30k steps)")
    p.add_argument("--plain", action="store_true", help="the plain `splatjax fit` defaults at --iterations/--resolution")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--init-points", type=int, default=None)
    p.add_argument("--capacity", type=int, default=None)
    p.add_argument("--backend", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    import jax

    import splatjax
    from splatjax.files import write_json
    from splatjax.app.fit_run import run_fit
    from splatjax.context import Context
    from splatjax.fitting import FitConfig

    over = {k: v for k, v in dict(init_points=args.init_points, capacity=args.capacity).items() if v is not None}
    if args.plain:
        cfg = FitConfig(iterations=args.iterations or 3000, resolution=args.resolution or 200,
                        backend=args.backend, seed=args.seed, **over)
    elif args.full:
        cfg = FitConfig(backend=args.backend, seed=args.seed, **over)
        if args.iterations or args.resolution:
            cfg = dataclasses.replace(cfg, **{k: v for k, v in dict(
                iterations=args.iterations, resolution=args.resolution).items() if v})
    else:
        cfg = reduced_config(iterations=args.iterations or 3000, resolution=args.resolution or 200,
                             backend=args.backend, seed=args.seed, **over)
    print(f"backends available: {splatjax.available_backends()}; jax devices: {jax.devices()}")
    t0 = time.perf_counter()
    log = (lambda m: None) if args.quiet else print
    info = run_fit(args.data, args.out, cfg, resume=args.resume, context=Context(log=log))
    wall = time.perf_counter() - t0
    summary = {
        "schedule": "full" if args.full else "plain" if args.plain else "reduced",
        "resolution": cfg.resolution, "iterations": cfg.iterations, "init_points": cfg.init_points,
        "capacity": info["capacity"], "backend": info["backend"], "wall_seconds": wall,
        "fit_seconds": info["seconds"], "steps_per_second": info["steps_per_second"],
        "steady_steps_per_second": info["steady_steps_per_second"], "num_gaussians": info["num_gaussians"],
        "val_psnr": info.get("val_psnr"), "val_ssim": info.get("val_ssim"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} {jax.default_backend()}",
    }
    write_json(Path(args.out) / "benchmark.json", summary)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
