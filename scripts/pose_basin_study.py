"""Where the pose stage loses the right basin, on data with known poses.

  python scripts/pose_basin_study.py CLASS --model PLY --eval EVAL_DIR [--extra 4] [--k 8] [--retrieval 32]

For the queries of an evaluation already run (``EVAL_DIR/per_image.csv``) whose fine pose
ended more than 0.01 rad from the truth, plus ``--extra`` converged ones: the rotation error
of the ``--retrieval`` best render-and-compare candidates (is the right basin retrieved at
all, and at which rank?), then of the ``--k`` keypoint-polished candidates (default
PoseConfig), then of each after the fine pose with its final loss: would keeping the lowest
loss of K refined hypotheses have found the right basin?
"""

from __future__ import annotations

import argparse
import csv
import sys
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


if __name__ == "__main__":
    raise SystemExit(main())
