"""Where the right basin lies among a query's retry candidates, on data with known poses.

  python scripts/retry_alternatives_study.py CLASS --model RUN --eval EVAL_DIR [--json OUT.json]
  python scripts/retry_alternatives_study.py CLASS --model RUN --queries test/good/3.png test/Missing/8.png

For the queries of an evaluation already run (``EVAL_DIR/per_image.csv``) whose pose was
distrusted or retried, or those named with ``--queries`` (paths as in per_image.csv): the
pose stage of ``splatjax evaluate`` (images at the model's fit resolution, default
PoseConfig with the class's background and the model's supersampling, the evaluation's
per-query keys) up to the fine pose, then every screened alternative refined in full at full
resolution (what a retry of all of them would do, with the study's own screw
initialisations, not the retry's keys). Per query it prints each alternative's starting and
final rotation error (rad) and final loss, the ranks
:func:`splatjax.pose.distinct_alternatives` would try (``--retry-angle``), and at which of
those the right basin (final error under 0.01 rad) first lies: the number of retries, and
of rounds of ``retry_round``, a retry needs to find it.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's splatjax
import splatjax as sj  # noqa: E402
from splatjax.app.evaluate import _model_resolution  # noqa: E402
from splatjax.app.runs import model_supersample  # noqa: E402
from splatjax.context import QUIET  # noqa: E402
from splatjax.data import load_mad_class  # noqa: E402
from splatjax.metrics import pose_errors  # noqa: E402
from splatjax.pose import camera_to_c2w, distinct_alternatives, refine_poses_detailed  # noqa: E402

CONVERGED = 0.01  # rad


def first_right_try(distinct: np.ndarray, final_err: np.ndarray, losses: np.ndarray, kept_loss: float) -> int:
    """The 1-based try (position in ``distinct``, ranks into the alternatives, -1 fill) whose
    alternative ends within CONVERGED rad (``final_err``) at a loss below ``kept_loss`` and
    below every try before it (so that a retry keeping the lowest loss takes it); 0 if none."""
    best = kept_loss
    for t, rank in enumerate(r for r in distinct if r >= 0):
        if losses[rank] < best:
            best = losses[rank]
            if final_err[rank] < CONVERGED:
                return t + 1
    return 0


def _asked(eval_dir: Path) -> list[str]:
    with (eval_dir / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    return [r["path"] for r in rows
            if r.get("pose_trusted") in ("0", "False") or int(r.get("pose_retried") or 0) > 0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="retry_alternatives_study.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="the class folder (with test_poses.json)")
    ap.add_argument("--model", type=Path, required=True, help="the fit's run folder (model.ply)")
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--eval", type=Path, help="an evaluation of the class: its distrusted or retried queries")
    group.add_argument("--queries", nargs="+", help="test image paths as in per_image.csv")
    ap.add_argument("--retry-angle", type=float, default=sj.PoseConfig().retry_angle)
    ap.add_argument("--json", type=Path, help="write the per-query numbers here")
    args = ap.parse_args(argv)

    ply = args.model / "model.ply"
    # images at the model's fit resolution, as evaluate reads them
    cls = load_mad_class(args.data, _model_resolution(args.model, args.data, QUIET),
                         test_poses=args.data / "test_poses.json")
    names = args.queries or _asked(args.eval)
    paths = list(cls.test.paths)
    missing = [n for n in names if n not in paths]
    if missing:
        raise SystemExit(f"{args.data}: no test image {missing[0]!r}")
    if not names:
        print("no distrusted or retried query")
        return 0
    g = sj.load_ply(ply)
    pc = sj.PoseConfig(background=cls.train.background, supersample=model_supersample(ply))
    idx = np.array([paths.index(n) for n in names])
    keys = jax.random.split(jax.random.key(0), len(paths) * pc.hypotheses).reshape(len(paths), -1)
    keys = keys[jnp.asarray(idx)].reshape(-1)  # evaluate's per-hypothesis keys (its default seed 0)
    queries = jnp.asarray(np.asarray(cls.test.images, np.float32)[idx])
    truth = np.asarray(cls.test.c2w)[idx]
    cands = sj.pose.render_candidates(g, sj.pose.candidate_cameras(cls.train.cameras, pc), pc)
    est = sj.pose.estimate_poses(g, queries, cands, pc, key=keys)
    alt = est.alternatives
    q, n = len(idx), alt.index.shape[1]
    ref = refine_poses_detailed(g, alt.cameras, jnp.repeat(queries, n, axis=0), pc,
                                key=jax.random.split(jax.random.key(5), q * n))
    start_err = pose_errors(camera_to_c2w(alt.cameras), np.repeat(truth, n, 0))["rotation_rad"].reshape(q, n)
    final_err = pose_errors(camera_to_c2w(ref.cameras), np.repeat(truth, n, 0))["rotation_rad"].reshape(q, n)
    losses = np.asarray(ref.loss, np.float64).reshape(q, n)
    kept_err = pose_errors(est.c2w, truth)["rotation_rad"]
    distinct = distinct_alternatives(np.asarray(est.cameras.R), np.asarray(alt.cameras.R).reshape(q, n, 3, 3),
                                     pc.hypotheses, n, args.retry_angle)
    out = []
    for i, name in enumerate(names):
        t = first_right_try(distinct[i], final_err[i], losses[i], float(est.loss[i]))
        rounds = -(-t // pc.retry_round) if t and pc.retry_round else int(bool(t))
        out.append(dict(path=name, kept_error=float(kept_err[i]), kept_loss=float(est.loss[i]),
                        start_error=start_err[i].tolist(), final_error=final_err[i].tolist(),
                        loss=losses[i].tolist(), distinct=[int(r) for r in distinct[i] if r >= 0],
                        right_try=t, rounds=rounds))
        print(f"{name}: kept {kept_err[i]:.4f} rad, loss {est.loss[i]:.4f}; tries {out[-1]['distinct']}; "
              f"right basin at try {t or 'none'} (round {rounds or '-'})")
        for r in range(n):
            print(f"  alternative {r}: start {start_err[i, r]:.3f} -> {final_err[i, r]:.4f} rad, "
                  f"loss {losses[i, r]:.4f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
