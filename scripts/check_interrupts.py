"""Signals at random moments, then ``--resume``: the same result as an uninterrupted run.

    python scripts/check_interrupts.py fit DATA --out DIR [--stop-at 1000] [--signals 3] [--seed 0] [-- FLAGS...]
    python scripts/check_interrupts.py evaluate DATA --model RUN --out DIR [--signals 3] [--seed 0] [-- FLAGS...]

Runs the real command line (``python -m splatjax.app.cli``) in subprocesses:

1. once uninterrupted, timed (``DIR/straight``);
2. again into ``DIR/interrupted``: ``--signals`` sessions each get SIGINT or SIGTERM (in
   turn) at a moment drawn uniformly from the first 1/``--signals`` of the uninterrupted
   run's duration (seeded; start-up included, so a signal may land before anything was
   saved), each restarted with the command the previous session printed after ``resume
   with:`` (or the first command plus ``--resume`` when it had no time to say one); then a
   session without a signal runs to the end.

``fit`` stops both runs at ``--stop-at`` (``splatjax fit --stop-at``: a session end that
keeps the 30k schedule, so the default fit is checked without running its hour) and
compares every array of the two final checkpoints bitwise. ``evaluate`` compares
``report.json`` (every entry but the timings), ``per_image.csv``, ``poses.json`` and the
bytes of every heatmap PNG. Prints each session (signal, when, exit status, how long it
took to stop) and exits 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's splatjax for the comparisons, as the subprocesses get
CLI = [sys.executable, "-m", "splatjax.app.cli"]
#: report.json entries that measure time or name the run's own folder (they differ between any
#: two runs; the model itself is compared by its bytes)
TIMING_KEYS = {"seconds", "queries_per_second", "seconds_per_query_without_coarse", "parallel", "fit", "model"}


def _session(argv: list[str], *, at: float | None, sig: signal.Signals | None) -> dict:
    """Run one session; with ``at``, send ``sig`` after ``at`` seconds. Returns exit status,
    seconds, stop latency and the resume command printed (if any)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sent = None
    if at is not None:
        try:
            proc.wait(timeout=at)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
            sent = time.perf_counter()
    out, err = proc.communicate()
    t1 = time.perf_counter()
    resume = None
    for line in (out + err).splitlines():
        if "resume with: " in line:
            resume = line.split("resume with: ", 1)[1].strip()
    return {"status": proc.returncode, "seconds": t1 - t0, "stop_latency": None if sent is None else t1 - sent,
            "signal": None if sent is None else sig.name, "at": at, "resume": resume, "stderr": err[-2000:]}


def _argv_of(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "splatjax", command
    return CLI + words[1:]


def _fit_state(run: Path) -> tuple[int, dict[str, np.ndarray]]:
    import jax

    from splatjax.app.checkpoint import RunCheckpointer
    from splatjax.app.fit_run import stored_settings
    from splatjax.fitting import state_template

    _, config, _ = stored_settings(run)
    with RunCheckpointer(run / "checkpoints") as ckpt:
        meta = ckpt.metadata()
        tree, _, step = ckpt.restore({"state": state_template(config, int(meta["capacity"]))})
    flat = jax.tree_util.tree_flatten_with_path(tree["state"])[0]
    return step, {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}


def _compare_fit(a: Path, b: Path) -> list[str]:
    (sa, xa), (sb, xb) = _fit_state(a), _fit_state(b)
    bad = [] if sa == sb else [f"checkpoint steps differ: {sa} vs {sb}"]
    for k in xa:
        if xa[k].shape != xb[k].shape or not np.array_equal(xa[k], xb[k]):
            bad.append(f"state {k} differs")
    print(f"fit: final checkpoints at step {sa} / {sb}; {len(xa)} state arrays compared bitwise")
    return bad


def _without_timings(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in TIMING_KEYS}


def _compare_evaluate(a: Path, b: Path) -> list[str]:
    bad = []
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (a, b))
    if json.dumps(_without_timings(ra), sort_keys=True) != json.dumps(_without_timings(rb), sort_keys=True):
        bad.append("report.json differs (apart from timings)")
    for name in ("per_image.csv", "poses.json"):
        if (a / name).read_bytes() != (b / name).read_bytes():
            bad.append(f"{name} differs")
    if (a / "model" / "model.ply").is_file() and \
            (a / "model" / "model.ply").read_bytes() != (b / "model" / "model.ply").read_bytes():
        bad.append("model/model.ply differs")  # the fit evaluate made (no --model)
    pngs = sorted(p.relative_to(a) for p in (a / "heatmaps").glob("*.png")) if (a / "heatmaps").is_dir() else []
    bad += [f"{p} differs" for p in pngs if (a / p).read_bytes() != (b / p).read_bytes()]
    print(f"evaluate: report.json, per_image.csv, poses.json and {len(pngs)} heatmaps compared; image AUROC "
          f"{ra.get('image_auroc')} / {rb.get('image_auroc')}")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("fit", "evaluate"))
    ap.add_argument("data")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--model", default=None, help="evaluate: the fitted run folder")
    ap.add_argument("--stop-at", type=int, default=1000, help="fit: the step both runs stop at (default 1000)")
    ap.add_argument("--signals", type=int, default=3, help="signals sent to the interrupted run (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare-only", action="store_true", help="only compare DIR/straight and DIR/interrupted")
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = argv[argv.index("--") + 1:] if "--" in argv else []  # after --: more flags for the command
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    straight, interrupted = a.out / "straight", a.out / "interrupted"
    if a.compare_only:
        bad = (_compare_fit if a.command == "fit" else _compare_evaluate)(straight, interrupted)
        print("\n".join(f"DIFFERS: {b}" for b in bad) or "the same")
        return 1 if bad else 0
    for d in (straight, interrupted):
        if d.exists():
            raise SystemExit(f"{d} exists; give a new --out")

    def first(out: Path) -> list[str]:
        if a.command == "fit":
            return CLI + ["fit", a.data, "--out", str(out), "--stop-at", str(a.stop_at), "--quiet", *flags]
        model = ["--model", a.model] if a.model else []
        return CLI + ["evaluate", a.data, *model, "--out", str(out), "--quiet", *flags]

    ref = _session(first(straight), at=None, sig=None)
    print(f"uninterrupted: exit {ref['status']} in {ref['seconds']:.1f} s")
    if ref["status"] != 0:
        print(ref["stderr"])
        return 1
    rng = random.Random(a.seed)
    argv_now, sessions = first(interrupted), []
    for i in range(a.signals + 50):
        at = rng.uniform(0.5, ref["seconds"] / a.signals) if i < a.signals else None
        sig = (signal.SIGINT, signal.SIGTERM)[i % 2]
        s = _session(argv_now, at=at, sig=sig)
        sessions.append(s)
        lat = "" if s["stop_latency"] is None else f", stopped {s['stop_latency']:.2f} s after the signal"
        print(f"session {i + 1}: " + (f"{s['signal']} at {at:.1f} s" if s["signal"] else "no signal") + f" -> exit {s['status']} after {s['seconds']:.1f} s{lat}")
        if s["status"] == 0 and (s["signal"] is None or s["resume"] is None):
            break  # finished (the signal, if any, came after the end)
        if s["status"] not in (130, 143) and not (s["status"] == 0 and a.command == "fit"):
            print(s["stderr"])
            return 1
        if s["resume"] is not None:
            argv_now = _argv_of(s["resume"])
        elif interrupted.exists():  # stopped before it could say how (e.g. in start-up): resume the folder
            argv_now = first(interrupted) + ["--resume"]
        else:
            argv_now = first(interrupted)
        if a.command == "fit" and "--stop-at" not in argv_now:
            argv_now += ["--stop-at", str(a.stop_at), "--quiet"]
    bad = (_compare_fit if a.command == "fit" else _compare_evaluate)(straight, interrupted)
    for b in bad:
        print("DIFFERS:", b)
    print("INTERRUPT CHECK:", "PASS" if not bad else "FAIL",
          f"({sum(s['signal'] is not None for s in sessions)} signals, {len(sessions)} sessions)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
