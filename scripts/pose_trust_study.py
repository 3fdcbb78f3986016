"""How well the pose trust rule (silhouette IoU, splatjax/pose/trust.py) separates converged
fine poses from wrong ones, on data with known poses.

  python scripts/pose_trust_study.py ious CLASS --model PLY --eval EVAL_DIR [--resolution 200]
  python scripts/pose_trust_study.py heldout CLASS --model PLY [--resolution 200]

ious
  For an evaluation already run (``EVAL_DIR/poses.json`` and ``per_image.csv``, from any
  version of ``splatjax evaluate``): renders the model at every query's fine pose and prints
  the silhouette IoU against the query with the fine rotation error, lowest IoU first, then
  the smallest IoU among converged queries (< 0.01 rad) and the largest among the others.

heldout
  The held-out calibration of ``splatjax.app.calibration`` re-run for a model whose fit held
  views out (``info.json`` ``val_views`` among CLASS's training views): each held-out query
  (the views and their rolled copies, default MapConfig) with its score, silhouette IoU and
  rotation error against its true pose (a rolled copy's pose rolled likewise).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's splatjax
import splatjax as sj  # noqa: E402
from splatjax.data import load_mad_class  # noqa: E402
from splatjax.metrics import pose_errors  # noqa: E402
from splatjax.pose import silhouette_iou  # noqa: E402

CONVERGED = 0.01  # rad


def _summary(iou: np.ndarray, rot: np.ndarray) -> str:
    ok = rot < CONVERGED
    low = f"{iou[ok].min():.3f}" if ok.any() else "n/a"
    high = f"{iou[~ok].max():.3f}" if (~ok).any() else "n/a"
    return (f"{int(ok.sum())} of {len(rot)} converged (< {CONVERGED} rad): smallest IoU among them {low}; "
            f"largest IoU among the others {high}")


def ious(args) -> None:
    cls = load_mad_class(args.data, args.resolution)
    g = sj.load_ply(args.model)
    poses = json.loads((Path(args.eval) / "poses.json").read_text())
    with open(Path(args.eval) / "per_image.csv", newline="") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    w, h = cls.train.width, cls.train.height
    renders = np.stack([np.asarray(sj.render(g, sj.camera_from_blender(np.asarray(poses["fine"][p]),
                                                                       poses["camera_angle_x"], w, h),
                                             background=cls.train.background)[0]) for p in cls.test.paths])
    iou = silhouette_iou(renders, np.asarray(cls.test.images), cls.train.background)
    rot = np.array([float(rows[p]["fine_rotation_rad"]) for p in cls.test.paths])
    for i in np.argsort(iou):
        print(f"{cls.test.paths[i]}: IoU {iou[i]:.3f}, fine rotation {rot[i]:.4f} rad")
    print(_summary(iou, rot))


def heldout(args) -> None:
    import jax

    from splatjax.anomaly import MapConfig
    from splatjax.anomaly.features import make_feature_extractor
    from splatjax.app import calibration as cal
    from splatjax.app.stages import pose_trust, run_stages
    from splatjax.data.roll import roll_pose

    cls = load_mad_class(args.data, args.resolution)
    g = sj.load_ply(args.model)
    pc, mc = sj.PoseConfig(background=cls.train.background), MapConfig()
    idx = cal.held_out_among(cal.heldout_paths(args.model), cls.train.paths)
    held = cal.heldout_views(args.model, cls.train.paths, cls.train.images, cls.train.cameras, pc)
    if held is None:
        raise SystemExit(f"{args.model}: its fit held none of {args.data}'s training views out")
    ext = make_feature_extractor(mc.features)
    base = cal.model_calibration(args.model, g, cls.train.cameras, cls.train.images,
                                 MapConfig(threshold_rule="train-max"), extractor=ext, pose_config=pc)
    rolls = mc.calibration_rolls
    angles = cal.roll_angles(rolls)
    queries = cal.heldout_queries(held.images, rolls, pc.background)
    truth = np.concatenate([np.stack([roll_pose(m, a) if a else m for m in cls.train.c2w[idx]]) for a in angles])
    det = run_stages(g, queries, held.candidates, pc, mc, key=jax.random.key(0), extractor=ext,
                     candidate_images=held.candidate_images, residual=base.residual)
    iou = pose_trust(det.renders, queries, pc).iou
    rot = pose_errors(det.poses.c2w, truth)["rotation_rad"]
    scores = np.asarray(det.maps.scores)
    for k in np.argsort(-scores):
        print(f"view {k % len(idx)} roll {k // len(idx)}: score {scores[k]:.0f}, IoU {iou[k]:.3f}, "
              f"rotation {rot[k]:.4f} rad")
    print(_summary(iou, rot))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pose_trust_study.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("ious", "heldout"):
        p = sub.add_parser(name)
        p.add_argument("data", help="MAD-Sim class folder with test poses")
        p.add_argument("--model", required=True, help="the model's .ply (in its run folder)")
        p.add_argument("--resolution", type=int, default=200, help="image width the model was evaluated at")
        if name == "ious":
            p.add_argument("--eval", required=True, help="the evaluate output folder")
    args = ap.parse_args(argv)
    (ious if args.command == "ious" else heldout)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
