"""Where the time goes: the fine pose's step taken apart, and a fit's wall time split into
compiled training, compilation and the work between chunks. Runs on whatever device JAX
picks (CPU here, the GPU in scripts/gpu_check.sh) and prints one JSON object (also
written to ``--json``).

Fine pose (``--model`` .ply or run folder, ``--data`` a Blender folder whose val views are
the queries, at ``--image-size``, in batches of ``--batch``), milliseconds per batch, each
part compiled before timing and timed as the median of ``--repeats`` runs:

- ``render``: the forward render of the batch's cameras (one kernel launch);
- ``render_grad``: forward + pose-only backward of a plain sum of the renders;
- ``loss_grad``: the photometric loss (L1 + SSIM) and its gradient on given images;
- ``step``: one whole refinement step (render, loss, backward, Adam, best-iterate tracking);
- ``scan_per_step``: the compiled refinement of ``--steps`` steps, per step.

``--sweep-batches`` / ``--sweep-sizes``: the refinement's cost per query against the batch
size and the image size (cost against work).

``scan_per_step - step`` is the loop's own cost; ``step - render_grad - loss_grad`` the
optimiser and bookkeeping. The optimised HLO of the refinement is counted for
``conditional`` and ``while`` instructions (each is a device-to-host round trip per
execution on a GPU), custom calls and fusions.

``--sweep-gaussians``: a training step's cost against the number of Gaussians (fit time
against work): the model's Gaussians drawn (with replacement above its count) to each N, in
a buffer of exactly N slots, the compiled training chunk (``chunk_steps`` steps on the train
views at ``--fit-resolution``, no densification) timed per step.

Fit (``--fit-steps`` > 0, first): the plain ``splatjax fit DATA --resolution R --iterations
S`` into ``--fit-out``; compilations are counted and timed through ``jax.monitoring``. Its
model is the fine pose's when ``--model`` is not given.

    python scripts/profile_stages.py --data LEGO --fit-steps 600 --fit-out /tmp/prof_fit \
        --image-size 200 --batch 8 --json prof.json
"""

from __future__ import annotations

import argparse
import collections
import functools
from dataclasses import replace
import json
import platform
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import splatjax as sj  # noqa: E402
from splatjax import pose  # noqa: E402
from splatjax.losses import photometric_loss  # noqa: E402
from splatjax.render import render  # noqa: E402


class Compiles:
    """Counts and times JAX's compilations (backend compile events) while alive."""

    def __init__(self):
        self.events = collections.Counter()
        self.seconds = collections.Counter()
        jax.monitoring.register_event_duration_secs_listener(self._on)

    def _on(self, name, secs, **kw):
        if name.startswith("/jax/"):
            self.events[name] += 1
            self.seconds[name] += secs

    def snapshot(self):
        backend = [k for k in self.events if "backend_compile" in k]
        trace = [k for k in self.events if k.endswith("jaxpr_trace_duration")]
        lower = [k for k in self.events if k.endswith("jaxpr_to_mlir_module_duration")]
        total = lambda keys: round(sum(self.seconds[k] for k in keys), 3)  # noqa: E731
        return {"compilations": sum(self.events[k] for k in backend), "compile_seconds": total(backend),
                "trace_seconds": total(trace), "lower_seconds": total(lower)}


def _median_ms(fn, args, repeats):
    jax.block_until_ready(fn(*args))  # compile + warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def _hlo_counts(text: str) -> dict:
    ops = collections.Counter(re.findall(r" (conditional|while|custom-call|fusion)\(", text))
    targets = collections.Counter(re.findall(r'custom_call_target="([^"]+)"', text))
    return {"conditional": ops["conditional"], "while": ops["while"], "custom-call": ops["custom-call"],
            "fusion": ops["fusion"], "custom_call_targets": dict(targets)}


def _query_batch(args, batch: int, width: int):
    """(val views at ``width``, queries [batch], their true cameras, screw starts, PoseConfig):
    val views repeated to fill the batch."""
    from splatjax.data import load_blender

    val = load_blender(Path(args.data), "val", width)
    idx = np.arange(batch) % len(val)
    # the fixed-step loop (no early stop), so that every case does the same work per query
    config = pose.PoseConfig(steps=args.steps, backend=args.backend, stop_patience=0,
                             background=tuple(float(x) for x in val.background))
    params0 = jax.vmap(lambda k: pose.init_screw(key=k, std=config.init_std))(jax.random.split(jax.random.key(0), batch))
    return val, jnp.asarray(val.images[idx]), jax.tree_util.tree_map(lambda x: x[idx], val.cameras), params0, config


def fine_pose_breakdown(args) -> dict:
    from splatjax.app.runs import resolve_model
    from splatjax.pose import fine

    g = sj.load_ply(resolve_model(args.model))
    val, queries, cams, params0, config = _query_batch(args, args.batch, args.image_size)
    static = fine._static(config)
    bg = jnp.asarray(val.background, jnp.float32)

    def rend(cam, p):
        return render(g, pose.moved_camera(cam, p), background=bg, backend=args.backend)[0]

    f_render = jax.jit(jax.vmap(rend))
    f_render_grad = jax.jit(jax.vmap(jax.grad(lambda p, cam: jnp.sum(rend(cam, p)))))
    f_loss_grad = jax.jit(jax.vmap(jax.value_and_grad(lambda a, b: photometric_loss(a, b))))
    renders = f_render(cams, params0)
    one_step = functools.partial(fine._batch_jit, core=fine._refine_core, **fine._static(replace(config, steps=1)))
    all_steps = functools.partial(fine._batch_jit, core=fine._refine_core, **static)
    r = args.repeats
    out = {
        "gaussians": int(g.num), "batch": args.batch, "image": [val.width, val.height], "steps": args.steps,
        "render_ms": _median_ms(f_render, (cams, params0), r),
        "render_grad_ms": _median_ms(f_render_grad, (params0, cams), r),
        "loss_grad_ms": _median_ms(f_loss_grad, (renders, queries), r),
        "step_ms": _median_ms(one_step, (g, cams, queries, params0), r),
        "scan_ms": _median_ms(all_steps, (g, cams, queries, params0), max(1, r // 3)),
    }
    out["scan_per_step_ms"] = out["scan_ms"] / args.steps
    out["per_query_s"] = out["scan_ms"] / 1000.0 / args.batch
    text = fine._batch_jit.lower(g, cams, queries, params0, core=fine._refine_core, **static).compile().as_text()
    out["hlo"] = _hlo_counts(text)
    return out


def fine_pose_sweep(args) -> list[dict]:
    """Cost against work: the compiled refinement (``--steps`` steps) per query, for each
    batch size of ``--sweep-batches`` at ``--image-size`` and each image size of
    ``--sweep-sizes`` at ``--batch`` (compilation excluded: one warm-up run each)."""
    from splatjax.app.runs import resolve_model
    from splatjax.pose import fine

    g = sj.load_ply(resolve_model(args.model))
    cases = [(b, args.image_size) for b in args.sweep_batches] + [(args.batch, w) for w in args.sweep_sizes]
    rows = []
    for batch, width in cases:
        val, queries, cams, params0, config = _query_batch(args, batch, width)
        run = functools.partial(fine._batch_jit, core=fine._refine_core, **fine._static(config))
        ms = _median_ms(run, (g, cams, queries, params0), 1)
        rows.append({"batch": batch, "image": width, "steps": args.steps, "ms_per_step": round(ms / args.steps, 3),
                     "s_per_query": round(ms / 1000.0 / batch, 4)})
        print(rows[-1], flush=True)
    return rows


def fit_sweep(args) -> list[dict]:
    """Milliseconds per training step against the Gaussian count (``--sweep-gaussians``)."""
    from splatjax.app.runs import resolve_model
    from splatjax.data import load_blender
    from splatjax.fitting import FitConfig
    from splatjax.fitting import fit_loop, train

    g = sj.load_ply(resolve_model(args.model))
    scene = load_blender(Path(args.data), "train", args.fit_resolution)
    config = FitConfig(resolution=args.fit_resolution, backend=args.backend)
    s = fit_loop._setup(scene, config, None, None)
    rng = np.random.default_rng(0)
    rows = []
    for n in args.sweep_gaussians:
        idx = rng.choice(g.num, size=n, replace=n > g.num)
        init = jax.tree_util.tree_map(lambda x: x[idx], g)
        state = fit_loop._fresh_state(s, init, n)

        def chunk(state):
            return train.train_chunk(state, s.images, s.cameras, s.key, jnp.int32(10 ** 9), jnp.int32(1000),
                                     config=s.compiled, extent=s.extent, guarded=False)[0]

        state = jax.block_until_ready(chunk(state))  # compile + warm up
        times = []
        for _ in range(max(1, args.repeats // 2)):
            t0 = time.perf_counter()
            state = jax.block_until_ready(chunk(state))
            times.append(time.perf_counter() - t0)
        ms = 1000.0 * float(np.median(times)) / config.chunk_steps
        rows.append({"gaussians": n, "image": int(s.images.shape[2]), "ms_per_step": round(ms, 3)})
        print(rows[-1], flush=True)
    return rows


def fit_breakdown(args, compiles: Compiles) -> dict:
    """The plain ``splatjax fit DATA --resolution R --iterations S`` (the application's
    run_fit, run folder ``--fit-out``), with its compilations counted."""
    from splatjax.app.fit_run import run_fit
    from splatjax.context import QUIET
    from splatjax.fitting import FitConfig

    before = compiles.snapshot()
    t0 = time.perf_counter()
    info = run_fit(args.data, args.fit_out, FitConfig(iterations=args.fit_steps, resolution=args.fit_resolution),
                   context=QUIET)
    wall = time.perf_counter() - t0
    after = compiles.snapshot()
    records = [json.loads(x) for x in (Path(args.fit_out) / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rates = [r["steps_per_second"] for r in records if r.get("steps_per_second")]
    return {"steps": args.fit_steps, "resolution": args.fit_resolution, "wall_s": round(wall, 2),
            "fit_seconds": info.get("seconds"), "gaussians": info.get("num_gaussians"),
            "val_psnr": info.get("val_psnr"), "capacities": sorted({r["capacity"] for r in records if "capacity" in r}),
            "steady_steps_per_s": round(float(np.median(rates)), 1) if rates else None,
            "compilations": after["compilations"] - before["compilations"],
            **{k: round(after[k] - before[k], 2) for k in after if k != "compilations"}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="run folder or .ply (fine-pose breakdown)")
    ap.add_argument("--data", required=True, help="Blender folder (val views = queries; train views for the fit)")
    ap.add_argument("--image-size", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=175, help="fine-pose steps (0: no fine-pose breakdown)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--fit-steps", type=int, default=0)
    ap.add_argument("--fit-resolution", type=int, default=200)
    ap.add_argument("--fit-out", default="runs/profile_fit", help="run folder of the fit (its model is then profiled "
                    "when --model is not given)")
    ap.add_argument("--sweep-batches", type=int, nargs="*", default=[], help="fine-pose cost per batch size")
    ap.add_argument("--sweep-sizes", type=int, nargs="*", default=[], help="fine-pose cost per image width")
    ap.add_argument("--sweep-gaussians", type=int, nargs="*", default=[], help="training-step cost per Gaussian count")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    compiles = Compiles()
    res = {"device": str(jax.devices()[0]), "jax": jax.__version__, "machine": platform.machine(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.fit_steps > 0:
        res["fit"] = fit_breakdown(args, compiles)
        args.model = args.model or args.fit_out
    if args.model and args.steps > 0:
        before = compiles.snapshot()
        res["fine_pose"] = fine_pose_breakdown(args)
        after = compiles.snapshot()
        res["fine_pose"].update({k: round(after[k] - before[k], 3) for k in after})
        if args.sweep_batches or args.sweep_sizes:
            res["fine_pose_sweep"] = fine_pose_sweep(args)
    if args.model and args.sweep_gaussians:
        res["fit_sweep"] = fit_sweep(args)
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
