"""Coarse pose on lego: render-and-compare retrieval, then the keypoint stage.

Queries: ``--queries`` (20) validation views, evenly spaced, and the same views rolled
about the optical axis by random angles (the image rotated about its centre, corners
filled with the white background; the true pose rolled the same way). Candidates: the
training cameras plus ``--rolls`` rolled copies of each (``pose.cameras.inplane_angles``).
For each query the top retrieval candidate (:func:`coarse_pose_render`, at
``--retrieval-resolution`` px) is refined by :func:`keypoint_pose` at the query width
(``--top-k`` k: the k best candidates are refined, the one with most PnP inliers wins).
Prints rotation / translation errors (median, max) before and after and seconds per
query for each width in ``--widths``; writes them as JSON to ``--out``.

    python scripts/bench_coarse.py --model /work/runs/lego200_6k/model.ply [--widths 400 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import splatjax as sj
from splatjax.data import load_blender
from splatjax.metrics import pose_errors
from splatjax.pose.cameras import (camera_to_c2w, index_cameras, inplane_angles, inplane_rotations,
                                   num_cameras)
from splatjax.image import resize_to_width
from splatjax.pose.coarse import coarse_pose_render, render_views
from splatjax.pose.keypoints import KeypointConfig, keypoint_poses

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nerf_synthetic_lego_400"


def roll_image(image: np.ndarray, angle: float, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """``image`` [H, W, 3] as seen by its camera rolled by ``angle`` radians about the
    optical axis (:func:`inplane_rotations`' convention; principal point at the centre):
    the rolled camera sees at offset d from the centre what the camera saw at Rz^T d."""
    import cv2

    h, w = image.shape[:2]
    c, s = np.cos(angle), np.sin(angle)
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])  # OpenCV pixel coordinates
    rot = np.array([[c, -s], [s, c]])
    m = np.concatenate([rot, (centre - rot @ centre)[:, None]], 1)  # source -> destination
    return cv2.warpAffine(np.asarray(image, np.float32), m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(b) for b in background))


def top_candidates(g, cands, queries, k: int, args) -> np.ndarray:
    """[Q, k] indices of the k closest candidates (coarse_pose_render's distance: mean
    squared colour difference at ``--retrieval-resolution``), closest first."""
    if k == 1:
        return coarse_pose_render(g, cands, jnp.asarray(queries), resolution=args.retrieval_resolution,
                                  backend=args.backend)[0][:, None]
    imgs = np.asarray(render_views(g, cands, width=args.retrieval_resolution, backend=args.backend))
    q = np.asarray(resize_to_width(jnp.asarray(queries), args.retrieval_resolution))
    d = ((q.reshape(len(q), 1, -1) - imgs.reshape(1, len(imgs), -1)) ** 2).mean(-1)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def summary(err: dict) -> dict:
    return {k: {"median": float(np.median(err[k])), "max": float(np.max(err[k]))}
            for k in ("rotation_rad", "translation")}


def run_width(g, data: Path, width: int, args) -> dict:
    train = load_blender(data, "train", width)
    val = load_blender(data, "val", width)
    qidx = np.linspace(0, len(val) - 1, args.queries).round().astype(int)
    angles = np.random.default_rng(args.seed).uniform(-np.pi, np.pi, len(qidx))
    cams = [val.camera(int(i)) for i in qidx]
    sets = {
        "upright": (val.images[qidx], camera_to_c2w(sj.stack_cameras(cams))),
        "rolled": (np.stack([roll_image(val.images[i], a) for i, a in zip(qidx, angles)]),
                   camera_to_c2w(sj.stack_cameras([index_cameras(inplane_rotations(c, [a]), 0)
                                                   for c, a in zip(cams, angles)]))),
    }
    base = train.cameras
    rolled = inplane_rotations(base, inplane_angles(args.rolls)) if args.rolls else None
    cands = base if rolled is None else sj.stack_cameras(
        [index_cameras(base, i) for i in range(num_cameras(base))]
        + [index_cameras(rolled, i) for i in range(num_cameras(rolled))])
    config = KeypointConfig(width=width, rounds=args.rounds)
    out = {}
    for name, (queries, true_c2w) in sets.items():
        t0 = time.perf_counter()
        top = top_candidates(g, cands, queries, args.top_k, args)
        t_retrieval = time.perf_counter() - t0
        start = index_cameras(cands, top[:, 0])
        est, inl, secs = [], [], []
        for q in range(len(queries)):  # the candidate with the most PnP inliers wins
            t1 = time.perf_counter()
            cams, n = keypoint_poses(g, queries[q:q + 1], index_cameras(cands, top[q]), args.top_k, config,
                                     backend=args.backend)
            secs.append(time.perf_counter() - t1)
            est.append(index_cameras(cams, int(np.argmax(n))))
            inl.append(int(n.max()))
        e0 = pose_errors(camera_to_c2w(start), true_c2w)
        e1 = pose_errors(camera_to_c2w(sj.stack_cameras(est)), true_c2w)
        out[name] = {"before": summary(e0), "after": summary(e1), "inliers": inl,
                     "fallbacks": int(sum(n == 0 for n in inl)),
                     "retrieval_seconds_per_query": t_retrieval / len(queries),
                     "keypoint_seconds_per_query": float(np.median(secs[1:] or secs)),
                     "keypoint_seconds_first": secs[0],
                     "per_query": {"before": {k: e0[k].tolist() for k in ("rotation_rad", "translation")},
                                   "after": {k: e1[k].tolist() for k in ("rotation_rad", "translation")}}}
    return out


def print_table(results: dict) -> None:
    print(f"{'width':>5} {'set':8} {'stage':6} {'rot med':>9} {'rot max':>9} {'tr med':>9} {'tr max':>9} "
          f"{'s/query':>8} {'fallbacks':>9}")
    for width, sets in results.items():
        for name, r in sets.items():
            for stage in ("before", "after"):
                s = r[stage]
                sec = r["retrieval_seconds_per_query"] if stage == "before" else r["keypoint_seconds_per_query"]
                fb = "" if stage == "before" else str(r["fallbacks"])
                print(f"{width:>5} {name:8} {stage:6} {s['rotation_rad']['median']:9.4f} "
                      f"{s['rotation_rad']['max']:9.4f} {s['translation']['median']:9.4f} "
                      f"{s['translation']['max']:9.4f} {sec:8.3f} {fb:>9}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="Blender lego folder (train + val splits)")
    ap.add_argument("--model", required=True, help="fitted model .ply")
    ap.add_argument("--widths", type=int, nargs="+", default=[400, 200], help="query (and matching) widths")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--rolls", type=int, default=8, help="rolled copies of each training candidate")
    ap.add_argument("--retrieval-resolution", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=1, help="keypoint pose from the k best retrieval candidates "
                    "(the one with most inliers wins)")
    ap.add_argument("--rounds", type=int, default=KeypointConfig().rounds)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random roll angles")
    ap.add_argument("--out", default=None, help="results JSON (optional)")
    args = ap.parse_args(argv)
    g = sj.load_ply(args.model)
    print(f"model {args.model}: {g.num} Gaussians; {args.queries} val queries (upright and rolled); "
          f"training cameras x {1 + args.rolls} rolls as candidates; keypoint rounds {args.rounds}, "
          f"top-{args.top_k}", flush=True)
    t0 = time.perf_counter()
    results = {w: run_width(g, Path(args.data), w, args) for w in args.widths}
    print_table(results)
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
