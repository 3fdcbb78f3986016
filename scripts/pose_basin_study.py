"""Where the pose stage loses the right basin, on data with known poses.

  python scripts/pose_basin_study.py CLASS --model PLY --eval EVAL_DIR [--extra 4] [--k 8] [--retrieval 32]
  python scripts/pose_basin_study.py CLASS --model PLY --eval EVAL_DIR --screen WIDTH STEPS LR [--fine-steps 175]

For the queries of an evaluation already run (``EVAL_DIR/per_image.csv``, made with
screening off: ``--screen-steps 0``) whose fine pose ended more than 0.01 rad from the
truth, plus ``--extra`` converged ones: the rotation error of the ``--retrieval`` best
render-and-compare candidates (is the right basin retrieved at all, and at which rank?),
then of the ``--k`` keypoint-polished candidates (default PoseConfig), then of each after
the fine pose with its final loss: would keeping the lowest loss of K refined hypotheses
have found the right basin?

``--screen WIDTH STEPS LR``: instead of refining all K fully, screen them (each refined
STEPS steps at WIDTH pixels, rate LR after the first step; ``splatjax.pose.screen``), refine
the one of lowest screened loss ``--fine-steps`` steps at full resolution, and print how
many converge and the seconds of both parts.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's splatjax
import splatjax as sj  # noqa: E402
from splatjax.data import load_mad_class  # noqa: E402
from splatjax.metrics import pose_errors  # noqa: E402
from splatjax.pose import estimate as est_mod  # noqa: E402
from splatjax.pose.cameras import camera_to_c2w, index_cameras  # noqa: E402
from splatjax.pose.fine import refine_poses_detailed  # noqa: E402
from splatjax.pose.screen import screen_hypotheses  # noqa: E402

CONVERGED = 0.01  # rad
BASIN = 0.3  # rad: a start this close is taken to be in the right basin


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pose_basin_study.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--model", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--resolution", type=int, default=200)
    ap.add_argument("--extra", type=int, default=4)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--retrieval", type=int, default=32)
    ap.add_argument("--screen", nargs=3, metavar=("WIDTH", "STEPS", "LR"))
    ap.add_argument("--fine-steps", type=int, default=175)
    args = ap.parse_args(argv)

    cls = load_mad_class(args.data, args.resolution, test_poses=Path(args.data) / "test_poses.json")
    g = sj.load_ply(args.model)
    with open(Path(args.eval) / "per_image.csv", newline="") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    paths = list(cls.test.paths)
    rot = np.array([float(rows[p]["fine_rotation_rad"]) for p in paths])
    bad = [i for i in range(len(paths)) if rot[i] > CONVERGED]
    good = [i for i in range(len(paths)) if rot[i] <= CONVERGED][: args.extra]
    pick = bad + good
    queries = jnp.asarray(np.asarray(cls.test.images)[pick], jnp.float32)
    truth = np.asarray(cls.test.c2w)[pick]
    pc = sj.PoseConfig(background=cls.train.background, keypoint_candidates=args.k)
    cands = est_mod.candidate_cameras(cls.train.cameras, pc)
    _, cands, idx, score = est_mod._coarse(g, queries, cands, pc, args.retrieval, candidate_images=None,
                                           loftr_matcher=None, context=sj.QUIET)
    q, r = idx.shape
    starts = index_cameras(cands, jnp.asarray(idx.reshape(-1)))
    e_ret = pose_errors(camera_to_c2w(starts), np.repeat(truth, r, axis=0))["rotation_rad"].reshape(q, r)
    top = index_cameras(starts, jnp.asarray((np.arange(q)[:, None] * r + np.arange(args.k)).reshape(-1)))
    polish = est_mod.keypoint_polish(pc)
    pol, inl = polish(g, queries, top, args.k, pc)
    inl = np.asarray(inl).reshape(q, args.k)
    if args.screen:
        return _screen(g, queries, truth, pol, inl, pc, args, [paths[i] for i in pick], rot[pick], len(bad))
    e_pol = pose_errors(camera_to_c2w(pol), np.repeat(truth, args.k, axis=0))["rotation_rad"].reshape(q, args.k)
    ref = refine_poses_detailed(g, pol, jnp.repeat(queries, args.k, axis=0), pc, key=jax.random.key(0))
    e_fin = pose_errors(camera_to_c2w(ref.cameras), np.repeat(truth, args.k, axis=0))["rotation_rad"].reshape(q, args.k)
    loss = np.asarray(ref.loss).reshape(q, args.k)
    np.set_printoptions(precision=3, suppress=True, linewidth=200)
    fixed = 0
    for j, i in enumerate(pick):
        ranks = np.flatnonzero(e_ret[j] < BASIN)
        by_inl = int(np.argsort(-inl[j], kind="stable")[0])
        by_loss = int(np.argmin(loss[j]))
        fixed += int(e_fin[j, by_loss] < CONVERGED)
        print(f"{paths[i]} (eval: {rot[i]:.4f} rad): retrieval ranks within {BASIN} rad: {ranks.tolist()[:8]}; "
              f"polished err {e_pol[j]}; inliers {inl[j]}; fine err {e_fin[j]}; loss {loss[j]}; "
              f"most inliers -> {e_fin[j, by_inl]:.4f}, lowest loss -> {e_fin[j, by_loss]:.4f}")
    print(f"lowest loss of {args.k} refined hypotheses converges on {fixed} of {len(pick)} "
          f"({len(bad)} failed in the evaluation, {len(good)} converged)")
    return 0


def _screen(g, queries, truth, pol, inl, pc, args, names, eval_rot, n_bad) -> int:
    width, steps, lr = int(args.screen[0]), int(args.screen[1]), float(args.screen[2])
    k, q = args.k, queries.shape[0]
    sc = replace(pc, screen_resolution=width, screen_steps=steps, screen_lr=lr)
    t0 = time.perf_counter()
    screened, losses = screen_hypotheses(g, pol, queries, k, sc, key=jax.random.key(1))
    jax.block_until_ready(screened.R)
    t1 = time.perf_counter()
    chosen = np.argmin(losses, axis=1)
    win = index_cameras(screened, jnp.asarray(np.arange(q) * k + chosen))
    ref = refine_poses_detailed(g, win, queries, replace(pc, steps=args.fine_steps), key=jax.random.key(2))
    jax.block_until_ready(ref.loss)
    t2 = time.perf_counter()
    e_s = pose_errors(camera_to_c2w(screened), np.repeat(truth, k, axis=0))["rotation_rad"].reshape(q, k)
    e_f = pose_errors(camera_to_c2w(ref.cameras), truth)["rotation_rad"]
    np.set_printoptions(precision=3, suppress=True, linewidth=200)
    for j in range(q):
        print(f"{names[j]} (eval: {eval_rot[j]:.4f} rad): inliers {inl[j]}; screened err {e_s[j]}; loss {losses[j]}; "
              f"kept {chosen[j]} -> fine {e_f[j]:.4f} rad")
    print(f"screen {width} px x {steps} steps, lr {lr:g}, {k} candidates; fine {args.fine_steps} steps: "
          f"{int((e_f < CONVERGED).sum())} of {q} converge ({n_bad} failed in the evaluation), median "
          f"{np.median(e_f):.4f} rad; screening {t1 - t0:.1f} s, fine {t2 - t1:.1f} s (this machine, compile included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
