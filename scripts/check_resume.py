"""Check that an interrupted and resumed fit equals the uninterrupted one, on real data.

    python scripts/check_resume.py DATA [--resolution 100] [--steps 1000] [--interrupts 200 700]
                                   [--out DIR] [--backend auto]

Runs the default fit (FitConfig defaults, 30k-step schedule) of the Blender/MAD-Sim folder
DATA twice through :func:`splatjax.app.fit_run.run_fit`: once straight to step ``--steps``
and once interrupted after each of ``--interrupts`` (the checkpoint written, the session
ended, then resumed from the run folder alone with its stored settings) up to the same
step. Both stop through ``run_fit(stop_at=...)``, which ends a session like Ctrl-C without
touching the schedule (``iterations`` stays 30000). Compares the two final checkpoints
(every array of the training state: Gaussians, Adam moments, densification statistics,
active mask, step) and the metrics logs, lists the buffer resizes and densifications the
interrupted run went through, and exits 1 when anything differs (beyond ``--atol``,
default 0 = bitwise).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _state(run: Path):
    import jax

    from splatjax.app.checkpoint import RunCheckpointer
    from splatjax.app.fit_run import stored_settings
    from splatjax.fitting import state_template

    _, config, _ = stored_settings(run)
    with RunCheckpointer(run / "checkpoints") as ckpt:
        meta = ckpt.metadata()
        tree, _, step = ckpt.restore({"state": state_template(config, int(meta["capacity"]))})
    flat = jax.tree_util.tree_flatten_with_path(tree["state"])[0]
    return step, meta, {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}


def _metrics(run: Path) -> dict[int, dict]:
    from splatjax.app.checkpoint import read_metrics

    keep = ("loss", "psnr", "num_gaussians", "capacity")
    return {r["step"]: {k: r.get(k) for k in keep} for r in read_metrics(run / "metrics.jsonl")}


def main(argv=None) -> int:
    from splatjax.app.fit_run import run_fit
    from splatjax.context import QUIET
    from splatjax.fitting import FitConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--resolution", type=int, default=100)
    ap.add_argument("--steps", type=int, default=1000, help="compare at this step (a multiple of chunk_steps)")
    ap.add_argument("--interrupts", type=int, nargs="+", default=[200, 700])
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--out", default=None, help="where the two run folders go (default: a temporary folder)")
    ap.add_argument("--atol", type=float, default=0.0, help="largest accepted difference (default 0: bitwise)")
    args = ap.parse_args(argv)

    config = FitConfig(resolution=args.resolution, backend=args.backend)
    out = Path(args.out or tempfile.mkdtemp(prefix="check_resume_"))
    out.mkdir(parents=True, exist_ok=True)
    full, parts = out / "uninterrupted", out / "interrupted"
    quiet = dict(context=QUIET, val_split=None)  # validation does not touch the training state
    print(f"data {args.data}, resolution {args.resolution}, iterations {config.iterations} (schedule), "
          f"compare at step {args.steps}, interrupts {args.interrupts}, runs in {out}")

    t0 = time.perf_counter()
    run_fit(args.data, full, config, stop_at=args.steps, **quiet)
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    events, sessions = [], []
    for i, stop in enumerate([*args.interrupts, args.steps]):
        s = run_fit(args.data if i == 0 else None, parts, config if i == 0 else None, resume=i > 0, stop_at=stop,
                    **quiet)
        events += s["events"]
        sessions.append((s["steps"] - s["steps_this_session"], s["steps"], s["capacity"]))
    t_parts = time.perf_counter() - t0
    print(f"uninterrupted: {t_full:.0f} s; interrupted + resumed ({len(sessions)} sessions): {t_parts:.0f} s")
    for a, b, cap in sessions:
        print(f"  session steps {a}..{b}, buffer {cap:,} slots at its end")
    for e in events:
        if "resize" in e:
            print(f"  step {e['step']}: buffer resized to {e['resize']:,}" + (
                f" (needed {e['needed']:,})" if "needed" in e else " (shrink after pruning)"))
        elif "densify" in e:
            print(f"  step {e['step']}: densify {json.dumps(e['densify'])}")
        elif "reset_opacity" in e:
            print(f"  step {e['step']}: opacity reset")

    step_a, meta_a, a = _state(full)
    step_b, meta_b, b = _state(parts)
    ok = step_a == step_b == args.steps and a.keys() == b.keys()
    worst, unequal = 0.0, []
    for k in a:
        if a[k].shape != b[k].shape:
            unequal.append(f"{k}: shape {a[k].shape} vs {b[k].shape}")
            continue
        d = float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) if a[k].size else 0.0
        worst = max(worst, d)
        if not np.array_equal(a[k], b[k]):
            unequal.append(f"{k}: max |diff| {d:.3g}")
    ok = ok and all("shape" not in u for u in unequal) and worst <= args.atol
    ma, mb = _metrics(full), _metrics(parts)
    metrics_same = ma == mb
    print(f"checkpoints at step {step_a} / {step_b}: capacity {meta_a['capacity']:,} / {meta_b['capacity']:,}, "
          f"{meta_a['num_gaussians']:,} / {meta_b['num_gaussians']:,} Gaussians; {len(a)} state arrays, "
          f"{len(a) - len(unequal)} bitwise equal, largest difference {worst:.3g}")
    for u in unequal:
        print(f"  differs: {u}")
    print(f"metrics.jsonl records (loss, PSNR, Gaussians, capacity at {len(ma)} steps): "
          f"{'identical' if metrics_same else 'DIFFERENT'}")
    ok = ok and (metrics_same or args.atol > 0)
    print("RESUME CHECK: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
