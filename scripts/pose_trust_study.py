"""How well the pose trust rule (silhouette IoU, splatjax/pose/trust.py) separates converged
fine poses from wrong ones, on data with known poses.

  python scripts/pose_trust_study.py ious CLASS --model PLY --eval EVAL_DIR [--resolution 200]
  python scripts/pose_trust_study.py heldout CLASS --model PLY [--resolution 200]
  python scripts/pose_trust_study.py rules CLASS --model PLY --eval EVAL_DIR --json OUT.json [--resolution 200]
  python scripts/pose_trust_study.py rules-table OUT1.json OUT2.json ... [--plot PNG]
  python scripts/pose_trust_study.py half-turns CLASS --model PLY --eval EVAL_DIR [--resolution 200] [--steps S]
                                      [--full --queries test/Burrs/8.png ...]
  python scripts/pose_trust_study.py loss-rule EVAL_DIR ... [--outline R]

ious
  For an evaluation already run (``EVAL_DIR/poses.json`` and ``per_image.csv``, from any
  version of ``splatjax evaluate``): renders the model at every query's fine pose (at the
  model's fit's samples per pixel) and prints the silhouette IoU against the query (holes
  filled, as the trust rule has it; in brackets the IoU of the unfilled non-background
  masks; and the filled masks' pixels only in the render and only in the query: a wrong pose
  leaves both, a burr or a hole mostly one) with the fine rotation error, lowest IoU first,
  then for both the smallest IoU among converged queries (< 0.01 rad) and the largest among
  the others.

heldout
  The held-out calibration of ``splatjax.app.calibration`` re-run for a model whose fit held
  views out (``info.json`` ``val_views`` among CLASS's training views): each held-out query
  (the views and their rolled copies, default MapConfig) with its score, silhouette IoU and
  rotation error against its true pose (a rolled copy's pose rolled likewise).

rules
  The residual rule's two measurements for every test query of an evaluation, against the
  references today's calibration takes from the held-out queries (the medians over the
  silhouette-trusted ones, :meth:`splatjax.app.calibration.HeldOutScores.references`, re-run
  with the default ``PoseConfig`` / ``MapConfig``): the median silhouette residual ratio
  and the outline mismatch ratio (1 - IoU), with the query's label and fine rotation error;
  written to ``--json``.

rules-table
  For each (residual ratio, outline ratio) pair of :data:`GRID` (outline 0: the residual
  alone), over every query of the given ``rules`` outputs: how many queries are beyond
  0.01 rad, how many of them the rule flags (with the silhouette rule, IoU <
  ``PoseConfig().min_silhouette_iou``), and how many flagged queries are within 0.01 rad.
  ``--plot``: both ratios of every query, failures in red.

half-turns
  The half-turn check's screening (:func:`splatjax.pose.check_half_turns`, default
  ``PoseConfig`` at the model's samples per pixel; ``--steps S``: S screening steps for every
  candidate instead of the halved screening) on every query's fine pose of an
  evaluation, whatever its inliers: per query the screened losses of the pose and of its
  three turns about the model's principal axes, the best turn's ratio to the pose's, which
  would win and how far its screened pose lies from the truth; then the smallest ratio among
  the converged queries (< 0.01 rad) and each other query's. ``--full``: the pose and its
  turns refined with the full fine pose instead (default ``PoseConfig``, as the retry refines
  them), for the ``--queries`` given (all without), with each one's final loss and error.

loss-rule
  The loss rule on evaluations already run (``per_image.csv`` with ``pose_outline_ratio``,
  ``report.json``): each query's final loss over ``heldout_pose_loss`` of its model's
  calibration (the entry whose threshold the evaluation used), for :data:`LOSS_GRID` loss
  ratios asking the outline too (``pose_outline_ratio`` > ``--outline``, 0: the loss
  alone): how many queries beyond 0.01 rad it flags together with the default silhouette and
  residual rules (recomputed from the columns, whatever rules the evaluation ran), and how
  many within 0.01 rad it alone flags; then every query beyond 0.01 rad and the converged
  ones of highest loss ratio with an outline over ``--outline``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's splatjax
import splatjax as sj  # noqa: E402
from splatjax.data import load_mad_class  # noqa: E402
from splatjax.metrics import pose_errors  # noqa: E402
from splatjax.app.runs import model_supersample  # noqa: E402
from splatjax.pose import foreground, mask_iou, outline_gated, silhouette, silhouette_iou  # noqa: E402

CONVERGED = 0.01  # rad
# (max_residual_ratio, residual_outline_ratio) pairs rules-table counts; outline 0: the residual alone
GRID = [(r, o) for r in (1.5, 2.0, 2.5, 3.0) for o in (0.0, 2.0, 3.0, 4.0)]
LOSS_GRID = (2.5, 3.0, 3.5, 4.0, 5.0, 5.5, 6.0)  # loss ratios the loss-rule table counts


def _summary(iou: np.ndarray, rot: np.ndarray) -> str:
    ok = rot < CONVERGED
    low = f"{iou[ok].min():.3f}" if ok.any() else "n/a"
    high = f"{iou[~ok].max():.3f}" if (~ok).any() else "n/a"
    return (f"{int(ok.sum())} of {len(rot)} converged (< {CONVERGED} rad): smallest IoU among them {low}; "
            f"largest IoU among the others {high}")


def _evaluated(args):
    """The class, the model's renders at the evaluation's fine poses and its per_image.csv rows by path."""
    cls = load_mad_class(args.data, args.resolution)
    g = sj.load_ply(args.model)
    poses = json.loads((Path(args.eval) / "poses.json").read_text())
    with open(Path(args.eval) / "per_image.csv", newline="") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    w, h = cls.train.width, cls.train.height
    ss = model_supersample(Path(args.model))
    renders = np.stack([np.asarray(sj.render(g, sj.camera_from_blender(np.asarray(poses["fine"][p]),
                                                                       poses["camera_angle_x"], w, h),
                                             background=cls.train.background, supersample=ss)[0])
                        for p in cls.test.paths])
    return cls, g, renders, rows


def ious(args) -> None:
    cls, _, renders, rows = _evaluated(args)
    queries, bg = np.asarray(cls.test.images), cls.train.background
    fa, fb = silhouette(renders, bg), silhouette(queries, bg)
    iou, unfilled = mask_iou(fa, fb), mask_iou(foreground(renders, bg), foreground(queries, bg))
    render_only, query_only = (fa & ~fb).sum((1, 2)), (fb & ~fa).sum((1, 2))
    rot = np.array([float(rows[p]["fine_rotation_rad"]) for p in cls.test.paths])
    for i in np.argsort(iou):
        print(f"{cls.test.paths[i]}: IoU {iou[i]:.3f} (unfilled {unfilled[i]:.3f}; filled, pixels only in the render "
              f"{render_only[i]}, only in the query {query_only[i]}), fine rotation {rot[i]:.4f} rad")
    print("filled:", _summary(iou, rot))
    print("unfilled:", _summary(unfilled, rot))


def _calibration_setting(args, cls, g):
    """What the default held-out calibration of the model uses: the PoseConfig and MapConfig,
    the views its fit held out, the feature extractor and the train-max calibration."""
    from splatjax.anomaly import MapConfig
    from splatjax.anomaly.features import make_feature_extractor
    from splatjax.app import calibration as cal

    pc, mc = sj.PoseConfig(background=cls.train.background), MapConfig()
    held = cal.heldout_views(args.model, cls.train.paths, cls.train.images, cls.train.cameras, pc)
    if held is None:
        raise SystemExit(f"{args.model}: its fit held none of {args.data}'s training views out")
    ext = make_feature_extractor(mc.features)
    base = cal.model_calibration(args.model, g, cls.train.cameras, cls.train.images,
                                 MapConfig(threshold_rule="train-max"), extractor=ext, pose_config=pc)
    return pc, mc, held, ext, base


def heldout(args) -> None:
    import jax

    from splatjax.app import calibration as cal
    from splatjax.app.stages import pose_trust, run_stages
    from splatjax.data.roll import roll_pose

    cls = load_mad_class(args.data, args.resolution)
    g = sj.load_ply(args.model)
    pc, mc, held, ext, base = _calibration_setting(args, cls, g)
    idx = cal.held_out_among(cal.heldout_paths(args.model), cls.train.paths)
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


def rules(args) -> None:
    from splatjax.app import calibration as cal
    from splatjax.pose import silhouette_residual

    cls, g, renders, rows = _evaluated(args)
    pc, mc, held_views, ext, base = _calibration_setting(args, cls, g)
    held = cal.heldout_scores(g, held_views, pc, mc, extractor=ext, residual=base.residual,
                              highlight_cap=base.highlight_cap or None)
    ref = held.references
    ref_residual, ref_mismatch = float(np.median(held.residuals[ref])), float(np.median(held.mismatches[ref]))
    queries = np.asarray(cls.test.images)
    iou = silhouette_iou(renders, queries, cls.train.background)
    residual = silhouette_residual(renders, queries, cls.train.background)[:, 0]
    out = {"data": str(args.data), "model": str(args.model), "eval": str(args.eval),
           "reference_residual": ref_residual, "reference_mismatch": ref_mismatch, "queries": []}
    for i, p in enumerate(cls.test.paths):
        out["queries"].append({"path": p, "label": int(rows[p]["label"]), "iou": float(iou[i]),
                               "fine_rotation_rad": float(rows[p]["fine_rotation_rad"]),
                               "residual_ratio": float(residual[i] / ref_residual),
                               "outline_ratio": float((1.0 - iou[i]) / ref_mismatch)})
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"{Path(args.data).name}: held-out references residual {ref_residual:.4g}, outline mismatch "
          f"{ref_mismatch:.4g} ({int(ref.sum())} of {ref.size} held-out queries); wrote {args.json}")


def _flags(q: list[dict], residual: float, outline: float) -> np.ndarray:
    """The silhouette and residual rules' verdict per query (True: not trusted), as
    :func:`splatjax.pose.trust_poses` judges them (the silhouette rule, or the residual through
    :func:`splatjax.pose.outline_gated`; the loss rule is not in the study's records)."""
    iou = np.array([x["iou"] for x in q])
    rr, orat = np.array([x["residual_ratio"] for x in q]), np.array([x["outline_ratio"] for x in q])
    return (iou < sj.PoseConfig().min_silhouette_iou) | outline_gated(rr, orat, residual, outline)


def rules_table(paths: list[str], plot: str | None) -> None:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    q = [x for r in runs for x in r["queries"]]
    evals = [r["eval"] for r in runs for _ in r["queries"]]  # each query's evaluation folder
    bad = np.array([x["fine_rotation_rad"] > CONVERGED for x in q])
    print(f"{len(q)} queries of {len(runs)} evaluations, {int(bad.sum())} beyond {CONVERGED} rad")
    print("| residual ratio | outline ratio | failures flagged | flagged within 0.01 rad | flagged |")
    print("|---|---|---|---|---|")
    for residual, outline in GRID:
        f = _flags(q, residual, outline)
        print(f"| {residual:g} | {outline:g} | {int((f & bad).sum())} / {int(bad.sum())} | {int((f & ~bad).sum())} | "
              f"{int(f.sum())} |")
    default = sj.PoseConfig()
    f = _flags(q, default.max_residual_ratio, default.residual_outline_ratio)
    for x, flag, b, where in zip(q, f, bad, evals):
        if flag != b:
            print(f"  default rule {'misses' if b else 'flags'} {x['path']} ({x['fine_rotation_rad']:.4f} rad, "
                  f"residual {x['residual_ratio']:.2f} x, outline {x['outline_ratio']:.2f} x, IoU {x['iou']:.3f}) "
                  f"of {where}")
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 5))
        for sel, colour, name in ((~bad, "tab:green", "within 0.01 rad"), (bad, "tab:red", "beyond 0.01 rad")):
            ax.scatter([x["outline_ratio"] for x, s in zip(q, sel) if s],
                       [x["residual_ratio"] for x, s in zip(q, sel) if s], s=8 if colour == "tab:green" else 20,
                       c=colour, label=name)
        ax.axhline(default.max_residual_ratio, color="grey", ls="--")
        ax.axvline(default.residual_outline_ratio, color="grey", ls="--")
        ax.set(xscale="log", yscale="log", xlabel="outline mismatch (1 - IoU) / held-out median",
               ylabel="median residual / held-out median", title="the residual rule's two ratios per query")
        ax.legend()
        fig.savefig(plot, dpi=100, bbox_inches="tight")
        print(f"wrote {plot}")


def half_turns(args) -> None:
    import jax
    import jax.numpy as jnp

    from splatjax.pose import (camera_to_c2w, cameras_from_c2w, half_turn_candidates, index_cameras,
                               principal_half_turns, refine_poses_detailed)
    from splatjax.pose.screen import screen_hypotheses

    cls = load_mad_class(args.data, args.resolution, test_poses=Path(args.data) / "test_poses.json")
    g = sj.load_ply(args.model)
    poses = json.loads((Path(args.eval) / "poses.json").read_text())
    pc = sj.PoseConfig(background=cls.train.background, supersample=model_supersample(Path(args.model)))
    paths, truth = list(cls.test.paths), np.asarray(cls.test.c2w)
    kept = cameras_from_c2w(np.stack([np.asarray(poses["fine"][p]) for p in paths]), poses["camera_angle_x"],
                            cls.train.width, cls.train.height)
    turns, centre = principal_half_turns(g)
    n = 1 + len(turns)
    images = np.asarray(cls.test.images, np.float32)
    if args.queries:
        missing = sorted(set(args.queries) - set(paths))
        if missing:
            raise SystemExit(f"{args.data}: no test images {missing}")
        pick = [paths.index(p) for p in args.queries]
        paths, truth, images, kept = args.queries, truth[pick], images[pick], index_cameras(kept, jnp.asarray(pick))
    stacked = half_turn_candidates(g, kept)
    if args.full:
        ref = refine_poses_detailed(g, stacked, jnp.asarray(np.repeat(images, n, 0)), pc, key=jax.random.key(1))
        err = pose_errors(camera_to_c2w(ref.cameras), np.repeat(truth, n, 0))["rotation_rad"].reshape(-1, n)
        start = pose_errors(camera_to_c2w(stacked), np.repeat(truth, n, 0))["rotation_rad"].reshape(-1, n)
        loss = np.asarray(ref.loss, np.float64).reshape(-1, n)
        for i, p in enumerate(paths):
            print(f"{p}: the pose and its turns start {np.round(start[i], 3).tolist()} rad from the truth, refined "
                  f"in full end {np.round(err[i], 4).tolist()} rad at losses {np.round(loss[i], 5).tolist()} "
                  f"(best turn / pose {loss[i, 1:].min() / loss[i, 0]:.3f})")
        return
    pc = dataclasses.replace(pc, screen_steps=args.steps, screen_halving_step=0) if args.steps else pc
    screened, loss = screen_hypotheses(g, stacked, jnp.asarray(images), n, pc, key=jax.random.key(1))
    start = pose_errors(camera_to_c2w(stacked), np.repeat(truth, n, 0))["rotation_rad"].reshape(-1, n)
    end = pose_errors(camera_to_c2w(screened), np.repeat(truth, n, 0))["rotation_rad"].reshape(-1, n)
    best = 1 + np.argmin(loss[:, 1:], axis=1)
    ratio = loss[np.arange(len(paths)), best] / loss[:, 0]
    print(f"turn centre {np.round(centre, 3).tolist()}; axes (rows, smallest spread first) "
          f"{np.round([np.linalg.eigh(t + np.eye(3))[1][:, -1] for t in turns], 2).tolist()}")
    for i, p in enumerate(paths):
        win = best[i] if ratio[i] < 1 else 0
        print(f"{p}: fine rotation {start[i, 0]:.4f} rad, turns start {np.round(start[i, 1:], 2).tolist()} rad; "
              f"screened losses {np.round(loss[i], 4).tolist()}, best turn / pose {ratio[i]:.3f} -> "
              f"{'turn ' + str(win - 1) if win else 'the pose'} ends {end[i, win]:.3f} rad from the truth")
    ok = start[:, 0] < CONVERGED
    print(f"{int(ok.sum())} of {len(paths)} converged (< {CONVERGED} rad): smallest best turn / pose ratio among them "
          f"{ratio[ok].min() if ok.any() else float('nan'):.3f} ({int((ratio[ok] < 1).sum())} would turn)")
    for i in np.flatnonzero(~ok):
        print(f"  not converged: {paths[i]} ({start[i, 0]:.3f} rad): ratio {ratio[i]:.3f}, "
              f"{'turns to ' + format(end[i, best[i]], '.3f') + ' rad' if ratio[i] < 1 else 'stays'}")


def _eval_rows(folder: Path) -> list[dict]:
    """An evaluation's queries with ``loss_ratio`` against its calibration's held-out loss."""
    report = json.loads((folder / "report.json").read_text())
    model = Path(report["model"])  # relative: to where evaluate ran, which may be any folder above the evaluation
    tries = [model] if model.is_absolute() else [model, *(up / model for up in folder.resolve().parents)]
    found = next((t.parent / "map_calibration.json" for t in tries if (t.parent / "map_calibration.json").is_file()),
                 None)
    if found is None:
        raise SystemExit(f"{folder}: no map_calibration.json beside its model {report['model']}")
    cal = json.loads(found.read_text())
    refs = [c["heldout_pose_loss"] for c in cal.values()
            if c.get("heldout_pose_loss") and np.isclose(c["threshold"], report["threshold"])]
    if not refs:
        raise SystemExit(f"{folder}: no held-out calibration of its model used threshold {report['threshold']}")
    rows = list(csv.DictReader((folder / "per_image.csv").open()))
    return [dict(eval=folder.name, path=r["path"], rot=float(r["fine_rotation_rad"]),
                 loss_ratio=float(r["final_loss"]) / refs[0], outline=float(r["pose_outline_ratio"]),
                 residual=float(r["pose_residual_ratio"]), iou=float(r["silhouette_iou"]),
                 trusted=r["pose_trusted"] == "1") for r in rows]


def loss_rule(folders: list[str], outline: float) -> None:
    q = [x for f in folders for x in _eval_rows(Path(f))]
    bad = np.array([x["rot"] > CONVERGED for x in q])
    lr, ol = np.array([x["loss_ratio"] for x in q]), np.array([x["outline"] for x in q])
    trusted = np.array([x["trusted"] for x in q])
    pc = sj.PoseConfig()
    others = ((np.array([x["iou"] for x in q]) < pc.min_silhouette_iou)  # the silhouette and residual rules' flags
              | outline_gated(np.array([x["residual"] for x in q]), ol, pc.max_residual_ratio, outline))
    print(f"{len(q)} queries of {len(folders)} evaluations, {int(bad.sum())} beyond {CONVERGED} rad "
          f"({int((bad & trusted).sum())} of them trusted by the evaluation)")
    print("| loss ratio | outline ratio | failures flagged (with the silhouette and residual rules) | "
          "converged flagged by the loss rule alone |")
    print("|---|---|---|---|")
    for r in LOSS_GRID:
        for o in sorted({0.0, outline}):
            f = outline_gated(lr, ol, r, o)
            print(f"| {r:g} | {o:g} | {int((bad & (f | others)).sum())} of {int(bad.sum())} | "
                  f"{int((~bad & f & ~others).sum())} |")
    line = ("{eval} {path}: {rot:.4f} rad, loss {loss_ratio:.2f} x, outline {outline:.2f} x, "
            "residual {residual:.2f} x, IoU {iou:.3f}, trusted {trusted}")
    for i in np.flatnonzero(bad):
        print("beyond: " + line.format(**q[i]))
    top = [i for i in np.argsort(-np.nan_to_num(lr)) if not bad[i] and ol[i] > outline][:5]
    for i in top:
        print(f"converged, outline > {outline:g}: " + line.format(**q[i]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pose_trust_study.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("ious", "heldout", "rules", "half-turns"):
        p = sub.add_parser(name)
        p.add_argument("data", help="MAD-Sim class folder with test poses")
        p.add_argument("--model", required=True, help="the model's .ply (in its run folder)")
        p.add_argument("--resolution", type=int, default=200, help="image width the model was evaluated at")
        if name != "heldout":
            p.add_argument("--eval", required=True, help="the evaluate output folder")
        if name == "rules":
            p.add_argument("--json", required=True, help="where to write the per-query ratios")
        if name == "half-turns":
            p.add_argument("--steps", type=int, default=0,
                           help="screening steps, none stopped early (0: the screening's defaults, as the check)")
            p.add_argument("--full", action="store_true", help="refine the pose and its turns in full instead")
            p.add_argument("--queries", nargs="*", default=[], help="these test images only (paths as in the "
                           "evaluation's per_image.csv)")
    p = sub.add_parser("rules-table")
    p.add_argument("runs", nargs="+", help="rules outputs (JSON)")
    p.add_argument("--plot", help="write the scatter of both ratios here (PNG)")
    p = sub.add_parser("loss-rule")
    p.add_argument("evals", nargs="+", help="evaluate output folders")
    p.add_argument("--outline", type=float, default=sj.PoseConfig().residual_outline_ratio,
                   help="the outline ratio the loss rule asks too (0: the loss alone)")
    args = ap.parse_args(argv)
    if args.command == "rules-table":
        rules_table(args.runs, args.plot)
    elif args.command == "loss-rule":
        loss_rule(args.evals, args.outline)
    else:
        {"ious": ious, "heldout": heldout, "rules": rules, "half-turns": half_turns}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
