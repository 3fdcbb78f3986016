"""Pose acceptance run on the NeRF-synthetic lego scene.

Queries: ``--queries`` (20) validation views, evenly spaced over the 100 (known poses,
never seen by the fit). Coarse pose: render-and-compare retrieval against the training
cameras (or LoFTR with ``--coarse loftr`` and its weights). Fine pose: the reference
objective (175 steps, Adam, the reference screw map; ``--exact-exp`` for the corrected
one), batched. Reports median / mean translation and rotation errors (full angle and the
reference's half angle) for coarse and fine, the fraction of queries where fine improves
on coarse (both errors smaller), and the seconds, and writes them as JSON.

Acceptance targets (issue 5): fine median rotation <= 0.005 rad, median translation <= 0.02
scene units, fine better than coarse for >= 90 % of the queries.

    python scripts/lego_pose.py --model RUN [--resolution 400] [--out lego_pose.json]

Without ``--model`` the scene is fitted first with ``--fit-iterations`` steps at
``--fit-resolution`` (the reduced CPU schedule of the fit module's lego script).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import splatjax as sj
from splatjax import pose
from splatjax.data import load_blender
from splatjax.metrics import pose_errors, summarize_pose_errors

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nerf_synthetic_lego_400"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="Blender lego folder (train + val splits)")
    ap.add_argument("--model", default=None, help="fitted run folder or .ply (default: fit first)")
    ap.add_argument("--fit-out", default="runs/lego_pose_fit", help="run folder when fitting here")
    ap.add_argument("--fit-iterations", type=int, default=3000)
    ap.add_argument("--fit-resolution", type=int, default=200)
    ap.add_argument("--resolution", type=int, default=400, help="query / refinement image width (default 400)")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--steps", type=int, default=pose.PoseConfig().steps)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--coarse", choices=("render", "loftr", "auto"), default="render")
    ap.add_argument("--coarse-resolution", type=int, default=64)
    ap.add_argument("--exact-exp", action="store_true")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="lego_pose.json", help="results JSON")
    args = ap.parse_args(argv)

    data = Path(args.data)
    if not (data / "transforms_train.json").is_file():
        raise SystemExit(f"{data}: lego data not found (transforms_train.json missing)")
    t_start = time.perf_counter()
    if args.model is None:
        from splatjax.app.fit_run import run_fit
        from splatjax.fitting import FitConfig

        cfg = FitConfig(iterations=args.fit_iterations, resolution=args.fit_resolution, init_points=20000,
                        densify_until=max(600, (2 * args.fit_iterations // 3) // 100 * 100), capacity=200000)
        run_fit(data, args.fit_out, cfg)
        ply = Path(args.fit_out) / "model.ply"
    else:
        from splatjax.app.runs import resolve_model

        ply = resolve_model(args.model)
    g = sj.load_ply(ply)
    train = load_blender(data, "train", args.resolution)
    val = load_blender(data, "val", args.resolution)
    qidx = np.linspace(0, len(val) - 1, args.queries).round().astype(int)
    queries = jnp.asarray(val.images[qidx])
    true_c2w = val.c2w[qidx]
    print(f"model {ply}: {g.num} Gaussians; {len(qidx)} val queries at {val.width}x{val.height}; "
          f"{len(train)} training cameras as coarse candidates", flush=True)

    from splatjax.app.logs import console_context

    config = pose.PoseConfig(coarse=args.coarse, coarse_resolution=args.coarse_resolution, steps=args.steps,
                             batch_size=args.batch_size, exact_exp=args.exact_exp, backend=args.backend)
    est = pose.estimate_poses(g, queries, train.cameras, config, key=jax.random.key(args.seed),
                              candidate_images=train.images, context=console_context())
    e0 = pose_errors(est.coarse_c2w, true_c2w)
    e1 = pose_errors(est.c2w, true_c2w)
    better = (e1["rotation_rad"] < e0["rotation_rad"]) & (e1["translation"] < e0["translation"])
    s0, s1 = summarize_pose_errors(e0), summarize_pose_errors(e1)
    result = {
        "model": str(ply), "num_gaussians": int(g.num), "queries": [int(i) for i in qidx],
        "resolution": [val.width, val.height], "steps": args.steps, "coarse_method": est.method,
        "exact_exp": args.exact_exp, "batch_size": args.batch_size,
        "coarse": s0, "fine": s1, "fine_better_fraction": float(better.mean()),
        "per_query": {k: {"coarse": e0[k].tolist(), "fine": e1[k].tolist()} for k in e0},
        "final_loss": est.loss_traces[:, -1].tolist(),
        "seconds": {**est.seconds, "total": time.perf_counter() - t_start},
        "machine": f"{platform.machine()}, {jax.devices()[0].platform}, {__import__('os').cpu_count()} CPU cores",
        "targets": {"fine_median_rotation_rad": 0.005, "fine_median_translation": 0.02, "fine_better_fraction": 0.9},
    }
    result["passed"] = bool(s1["rotation_rad"]["median"] <= 0.005 and s1["translation"]["median"] <= 0.02
                            and result["fine_better_fraction"] >= 0.9)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for name, s in (("coarse", s0), ("fine", s1)):
        print(f"{name:6s}: translation median {s['translation']['median']:.4f} mean {s['translation']['mean']:.4f}; "
              f"rotation median {s['rotation_rad']['median']:.4f} rad mean {s['rotation_rad']['mean']:.4f} rad "
              f"(half angle median {s['rotation_half_rad']['median']:.4f})")
    print(f"fine better than coarse for {100 * result['fine_better_fraction']:.0f}% of queries; "
          f"coarse {est.seconds['coarse']:.1f} s, fine {est.seconds['fine']:.1f} s; "
          f"{'PASSED' if result['passed'] else 'NOT reached'}; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
