"""Batched (vmap) vs one-by-one fine-pose refinement: agreement and cost per query.

Refines the same Q queries (views of a model from perturbed starting poses) once under
``jax.vmap`` in chunks of ``--batch-sizes`` and once one query at a time with
``refine_pose`` (the same per-query keys), after a warm-up call of each (compilation not
timed). Prints the largest pose difference and the seconds per query of each (wall and
process CPU time, the latter load-independent on a shared machine), and the ratios
one-by-one / batched (> 1: batching is cheaper per query).

Model: ``--model RUN`` (a run folder or .ply with cameras.json / transforms beside it), or,
by default, the toy object fitted briefly (a few hundred steps), which is enough for timing.

    python scripts/bench_pose.py --queries 16 --steps 30 --batch-sizes 4 16

Accuracy and cost of fine-pose settings (``--data``, a Blender folder with train and val
splits, and ``--model``): ``--queries`` validation views evenly spaced over the split at
width ``--image-size`` (default 400), coarse pose by render-and-compare retrieval against
the training cameras (compiled once before timing), then the whole pose stage
(``estimate_poses``, batch = the first ``--batch-sizes``) once per ``--settings`` entry,
each a comma-separated list of PoseConfig fields (``fine_levels=3,fine_level_steps=25``;
``default`` = PoseConfig's defaults). Prints per setting the fine-stage seconds per query
(wall, compilation subtracted), the process CPU seconds per query of the whole pose stage,
median / max rotation (rad) and translation errors against the true poses, diverged
queries, and how many queries kept a hypothesis other than the best coarse candidate:

    python scripts/bench_pose.py --model RUN_LEGO --data LEGO --queries 20 --image-size 400 \
        --batch-sizes 4 --settings default fine_levels=3,fine_level_steps=25 hypotheses=2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

import splatjax as sj
from splatjax import pose


def _toy_model(workdir: Path, resolution: int, iterations: int):
    from splatjax.data import load_mad_class, make_toy_dataset
    from splatjax.fitting import FitConfig, fit

    data = make_toy_dataset(workdir / "toy", resolution=resolution, num_train=60, num_test_per_type=4)
    cls = load_mad_class(data, None)
    ply = workdir / "model.ply"
    if ply.is_file():
        return sj.load_ply(ply), cls.train
    cfg = FitConfig(iterations=iterations, init_points=4000, densify_from=200, densify_until=iterations,
                    capacity=30000, checkpoint_every=10**6, val_every=10**6, resolution=None)
    g = fit(cls.train, cfg).gaussians
    sj.save_ply(g, ply)
    return g, cls.train


def _perturb(cam, seed, angle, shift):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=3)
    v = rng.normal(size=3)
    params = {"w": jnp.asarray(w / np.linalg.norm(w), jnp.float32),
              "v": jnp.asarray(shift * v / np.linalg.norm(v), jnp.float32),
              "theta": jnp.asarray(angle, jnp.float32)}
    return pose.moved_camera(cam, params, exact_exp=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="run folder or .ply (default: a briefly fitted toy object)")
    ap.add_argument("--workdir", default="/tmp/splatjax_bench_pose", help="where the toy model is kept")
    ap.add_argument("--resolution", type=int, default=96, help="toy image width (default 96)")
    ap.add_argument("--image-size", type=int, default=None,
                    help="with --model: render the queries at this width and height (default: the model's cameras)")
    ap.add_argument("--fit-iterations", type=int, default=600)
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16])
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--data", default=None, help="Blender folder (train + val): accuracy table of --settings")
    ap.add_argument("--settings", nargs="+", default=["default"],
                    help="with --data: PoseConfig settings, each 'field=value,field=value' or 'default'")
    args = ap.parse_args(argv)
    if args.data:
        return accuracy_table(args)

    if args.model:
        from splatjax.app.runs import load_cameras, resolve_model

        ply = resolve_model(args.model)
        g = sj.load_ply(ply)
        info = load_cameras(ply.parent)
        if info is None:
            raise SystemExit(f"{ply.parent}: no cameras.json; cannot choose query poses")
        size = (args.image_size, args.image_size) if args.image_size else (info["width"], info["height"])
        cams = pose.cameras_from_c2w(info["c2w"], info["camera_angle_x"], *size)
    else:
        g, train = _toy_model(Path(args.workdir), args.resolution, args.fit_iterations)
        cams = train.cameras
    n_cams = cams.R.shape[0]
    q = args.queries
    idx = np.linspace(0, n_cams - 1, q).astype(int)
    true = pose.index_cameras(cams, idx)
    render = jax.jit(jax.vmap(lambda c: sj.render(g, c, backend=args.backend)[0]))
    queries = render(true)
    starts = sj.stack_cameras([_perturb(pose.index_cameras(true, i), 100 + i, 0.05, 0.1) for i in range(q)])
    key = jax.random.key(0)
    keys = jax.random.split(key, q)
    backend = args.backend

    # one by one
    config = pose.PoseConfig(steps=args.steps, backend=backend, stop_patience=0)  # the same work for every query
    one = lambda i: pose.refine_pose(g, pose.index_cameras(starts, i), queries[i], config, key=keys[i])
    jax.block_until_ready(one(0))
    t0, c0 = time.perf_counter(), time.process_time()
    # one query at a time, as the reference does: each result is waited for before the next
    # starts (without the wait, async dispatch would overlap consecutive calls)
    singles = [jax.block_until_ready(one(i)) for i in range(q)]
    t_one, c_one = (time.perf_counter() - t0) / q, (time.process_time() - c0) / q
    R1 = np.stack([np.asarray(c.R) for c, _ in singles])
    t1 = np.stack([np.asarray(c.t) for c, _ in singles])

    results = {"machine": f"{platform.machine()}, {jax.devices()[0].platform}, {jax.device_count()} device(s), "
                          f"{__import__('os').cpu_count()} CPU cores",
               "backend": backend, "num_gaussians": int(g.num), "image": [int(cams.width), int(cams.height)],
               "queries": q, "steps": args.steps, "one_by_one_s_per_query": t_one,
               "one_by_one_cpu_s_per_query": c_one, "batched": {}}
    print(f"{g.num} Gaussians, {cams.width}x{cams.height}, {q} queries x {args.steps} steps, backend {backend}")
    print(f"one by one: {t_one:.3f} s / query (process CPU {c_one:.3f} s / query)")
    for bs in args.batch_sizes:
        run = lambda: pose.refine_poses(g, starts, queries, replace(config, batch_size=bs), key=key)
        jax.block_until_ready(run())
        t0, c0 = time.perf_counter(), time.process_time()
        cams_b, _ = run()
        jax.block_until_ready(cams_b)
        t_b, c_b = (time.perf_counter() - t0) / q, (time.process_time() - c0) / q
        diff = max(float(np.abs(np.asarray(cams_b.R) - R1).max()), float(np.abs(np.asarray(cams_b.t) - t1).max()))
        results["batched"][bs] = {"s_per_query": t_b, "cpu_s_per_query": c_b, "speedup_vs_one_by_one": t_one / t_b,
                                  "cpu_ratio_one_by_one_over_batched": c_one / c_b, "max_pose_diff": diff}
        print(f"batch {bs:3d}: {t_b:.3f} s / query (process CPU {c_b:.3f}), one-by-one / batched = "
              f"{t_one / t_b:.2f} wall, {c_one / c_b:.2f} CPU; max |pose difference| = {diff:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def _setting(text: str, base: "pose.PoseConfig") -> "pose.PoseConfig":
    """PoseConfig ``base`` with the fields of 'name=value,name=value' ('default': unchanged)."""
    if text == "default":
        return base
    fields = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        kind = type(getattr(base, name))
        fields[name] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return replace(base, **fields)


def _compile_seconds() -> list:
    """A list that collects the duration of every JAX tracing / lowering / compilation."""
    events: list = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: events.append(secs) if name.startswith("/jax/core/compile/") else None)
    return events


def accuracy_table(args) -> int:
    """The ``--data`` mode: pose errors and fine-stage cost of every ``--settings`` entry."""
    from splatjax.app.runs import resolve_model
    from splatjax.data import load_blender
    from splatjax.metrics import pose_errors

    g = sj.load_ply(resolve_model(args.model))
    width = args.image_size or 400
    train, val = load_blender(Path(args.data), "train", width), load_blender(Path(args.data), "val", width)
    qidx = np.linspace(0, len(val) - 1, args.queries).round().astype(int)
    queries, true_c2w = jnp.asarray(val.images[qidx]), val.c2w[qidx]
    base = pose.PoseConfig(coarse="render", batch_size=args.batch_sizes[0], backend=args.backend)
    pose.coarse_pose_render(g, train.cameras, queries, resolution=base.coarse_resolution, backend=args.backend)
    compiles = _compile_seconds()
    print(f"{g.num} Gaussians; {len(qidx)} val queries at {val.width}x{val.height}; batch {base.batch_size}; "
          f"backend {args.backend}", flush=True)
    rows = []
    for text in args.settings:
        config = _setting(text, base)
        compiles.clear()
        c0 = time.process_time()
        est = pose.estimate_poses(g, queries, train.cameras, replace(config, background=train.background),
                                  key=jax.random.key(0))
        cpu = time.process_time() - c0  # the whole pose stage (coarse retrieval, compiled already, included)
        e0, e1 = pose_errors(est.coarse_c2w, true_c2w), pose_errors(est.c2w, true_c2w)
        fine = est.seconds["fine"] + est.seconds["polish"]
        row = {"setting": text, "fine_s_per_query": (fine - sum(compiles)) / len(qidx),
               "stage_s_per_query": {k: v / len(qidx) for k, v in est.seconds.items()},
               "compile_s": sum(compiles), "stage_cpu_s_per_query_incl_compile": cpu / len(qidx),
               "rot_median": float(np.median(e1["rotation_rad"])), "rot_max": float(np.max(e1["rotation_rad"])),
               "trans_median": float(np.median(e1["translation"])), "trans_max": float(np.max(e1["translation"])),
               "coarse_rot_median": float(np.median(e0["rotation_rad"])), "diverged": int(est.diverged.sum()),
               "other_hypothesis": int((est.chosen > 0).sum()), "per_query_rot": e1["rotation_rad"].tolist(),
               "per_query_trans": e1["translation"].tolist()}
        rows.append(row)
        print(f"{text:40s} fine {row['fine_s_per_query']:6.2f} s/query (compile {row['compile_s']:5.1f} s; whole "
              f"stage CPU {row['stage_cpu_s_per_query_incl_compile']:.2f} s/query incl. compile) | rotation median "
              f"{row['rot_median']:.4f} max {row['rot_max']:.4f} rad | translation median {row['trans_median']:.4f} "
              f"max {row['trans_max']:.4f} | diverged {row['diverged']} | other hypothesis kept "
              f"{row['other_hypothesis']}", flush=True)
        print("  seconds per query by stage (compilation included): "
              + ", ".join(f"{k} {v:.3f}" for k, v in row["stage_s_per_query"].items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"image": [val.width, val.height], "queries": qidx.tolist(),
                                               "num_gaussians": int(g.num), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
