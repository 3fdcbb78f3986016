"""Image-score and map variants on one labelled class, with the pose and render stages run once.

Stage 1 (cached in ``--cache``, an .npz): the class is loaded at the model's training
resolution, the poses of the test queries are estimated (default :class:`PoseConfig`:
render-and-compare coarse pose against the training cameras + sphere views, fine pose),
the model renders them, and ``--calibration-views`` evenly spaced training views are
rendered at their own poses (the pairs of the heatmap calibration, as
:func:`splatjax.app.calibration.model_calibration` picks them). Stored: renders, queries,
masks, labels, defect types, calibration renders and images, pose errors.

Stage 2, per feature extractor (``weights-free``, ``lite0``: EfficientNet-Lite0 ImageNet
weights, ``lite0-random``: the same network randomly initialised, a control) x
``normalise`` (none / level / channel; the residual scales measured on the calibration
pairs) x ``shift_radius`` (0, 1; EfficientNet terms only) x ``--highlights`` (keep = the
paper; calibrated = the cap measured on the calibration pairs, as ``evaluate``; uncapped =
all common brightening taken out): the test maps give pixel AUROC
and AUPRO, and image AUROC for every image score (max = the paper, p99, top-k means);
the calibration maps give the threshold (1.5 x their largest score), and the table says
how many good / defective test images score above it. Torch features of an image are
computed once and reused by every variant (cache keyed by the image bytes).

    python scripts/score_variants.py --data /work/runs/lego_ad/LegoAD --model /work/runs/lego200_6k \\
        --cache /work/runs/score/lego_ad_stages.npz --out /work/runs/score/variants.json

Prints a markdown table (one row per features x normalise x shift) and writes all numbers
to ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from splatjax.anomaly import MapConfig, compute_maps, highlight_cap, image_scores, residual_scales
from splatjax.anomaly.features import Lite0Features, WeightsFreeFeatures
from splatjax.metrics import auroc, evaluate_detection, pose_errors

SCORES = (("max", 0), ("p99", 0), ("topk", 100), ("topk", 500))
BACKGROUND = (1.0, 1.0, 1.0)  # stage 1 loads the class over load_mad_class's default background
# calibrated: as evaluate (linear light, clipped channels at MapConfig's saturation); calibrated-unclipped: the
# sRGB values, every channel as read (before 2026-12-05); uncapped: the whole common brightening taken out (cap 1)
HIGHLIGHTS = ("keep", "calibrated", "calibrated-unclipped", "uncapped")


def _score_name(score: str, k: int) -> str:
    return f"top{k}" if score == "topk" else score


# --------------------------------------------------------------------------- stage 1 (cached)


def run_stages_once(data: Path, model: Path, views: int, seed: int, fine_poses: Path | None = None) -> dict:
    """Poses and renders of the test queries and the calibration pairs (see the module doc).
    ``fine_poses``: the ``poses.json`` of a ``splatjax evaluate`` run on ``data`` with this
    model; its fine poses are rendered instead of estimating them again."""
    from splatjax.data import load_mad_class
    from splatjax.gaussians import load_ply
    from splatjax.pose import PoseConfig, candidate_cameras, estimate_poses, index_cameras, render_views

    run = model if model.is_dir() else model.parent
    resolution = json.loads((run / "config.json").read_text())["resolution"]
    tp = data / "test_poses.json"
    cls = load_mad_class(data, resolution, test_poses=tp if tp.is_file() else None)
    g = load_ply(run / "model.ply" if model.is_dir() else model)
    pc = PoseConfig(background=cls.train.background)
    t0 = time.perf_counter()
    if fine_poses is None:
        est = estimate_poses(g, cls.test.images, candidate_cameras(cls.train.cameras, pc), pc,
                             key=jax.random.key(seed), candidate_images=cls.train.images)
        cams, fine_c2w = est.cameras, est.c2w
    else:
        fine_c2w, cams = evaluated_poses(fine_poses, data, cls)
    renders = np.asarray(render_views(g, cams, batch_size=pc.batch_size, background=cls.train.background))
    n = int(cls.train.cameras.R.shape[0])
    idx = np.unique(np.round(np.linspace(0, n - 1, min(views, n))).astype(np.int64))
    cal_renders = np.asarray(render_views(g, index_cameras(cls.train.cameras, jnp.asarray(idx)),
                                          batch_size=pc.batch_size, background=cls.train.background))
    out = {"renders": renders, "queries": np.asarray(cls.test.images, np.float32),
           "masks": np.asarray(cls.test.masks).astype(bool), "labels": np.asarray(cls.test.labels).astype(np.int64),
           "defect_types": np.asarray(cls.test.defect_types), "cal_renders": cal_renders,
           "cal_images": np.asarray(cls.train.images, np.float32)[idx], "cal_index": idx,
           "stage_seconds": np.float64(time.perf_counter() - t0)}
    if cls.test.c2w is not None:
        err = pose_errors(fine_c2w, cls.test.c2w)
        out["fine_rotation_rad"], out["fine_translation"] = err["rotation_rad"], err["translation"]
    return out


def evaluated_poses(path: Path, data: Path, cls):
    """(fine c2w [Q, 4, 4], cameras) of the test images of ``cls`` from an evaluate run's
    ``poses.json`` (keyed by the image path relative to the class folder)."""
    from splatjax.camera import camera_from_blender, stack_cameras

    fine = json.loads(path.read_text())["fine"]
    keys = list(cls.test.paths)  # relative, e.g. "test/Burrs/3.png", as poses.json
    missing = [k for k in keys if k not in fine]
    if missing:
        raise SystemExit(f"{path}: no fine pose for {len(missing)} test images, e.g. {missing[0]}")
    c2w = np.asarray([fine[k] for k in keys], np.float64)
    cams = stack_cameras([camera_from_blender(c, cls.train.camera_angle_x, cls.train.width, cls.train.height)
                          for c in c2w])
    return c2w, cams


def oracle_renders(data: Path, model: Path) -> np.ndarray:
    """Renders of the test queries at their true poses (``test_poses.json``): the maps
    without pose errors, so that a score variant is judged on what the model renders."""
    from splatjax.camera import camera_from_blender, stack_cameras
    from splatjax.data import load_mad_class
    from splatjax.gaussians import load_ply
    from splatjax.pose import render_views

    run = model if model.is_dir() else model.parent
    resolution = json.loads((run / "config.json").read_text())["resolution"]
    cls = load_mad_class(data, resolution, test_poses=data / "test_poses.json")
    cams = stack_cameras([camera_from_blender(c, cls.train.camera_angle_x, cls.train.width, cls.train.height)
                          for c in cls.test.c2w])
    g = load_ply(run / "model.ply" if model.is_dir() else model)
    return np.asarray(render_views(g, cams, background=cls.train.background))


def select_poses(c: dict, poses: str) -> dict:
    """The cached arrays for ``--poses``: estimated (all queries), oracle (renders at the
    true poses) or estimated-ok (only queries whose fine pose is within 0.05 rad / 0.1)."""
    if poses == "oracle":
        return {**c, "renders": c["oracle_renders"]}
    if poses == "estimated-ok":
        ok = (c["fine_rotation_rad"] < 0.05) & (c["fine_translation"] < 0.1)
        return {**c, **{k: c[k][ok] for k in ("renders", "queries", "masks", "labels", "defect_types")}}
    return c


# --------------------------------------------------------------------------- extractors


def _with_feature_cache(ext):
    """``ext.features`` memoised on the image bytes, so that variants reuse the forwards."""
    plain, cache = ext.features, {}

    def features(images, *, size=224):
        arr = np.asarray(images)
        key = (hashlib.sha1(arr.tobytes()).hexdigest(), arr.shape, size)
        if key not in cache:
            cache[key] = plain(images, size=size)
        return cache[key]

    ext.features = features
    return ext


def make_extractor(kind: str):
    if kind == "weights-free":
        return WeightsFreeFeatures()
    if kind == "lite0":
        return _with_feature_cache(Lite0Features())
    if kind == "lite0-random":
        import torch

        from splatjax.nets.weights import build_efficientnet_lite0

        torch.manual_seed(0)
        ext = Lite0Features.from_model(build_efficientnet_lite0().eval())
        ext.name = "lite0-random"
        return _with_feature_cache(ext)
    raise SystemExit(f"unknown features {kind!r}")


# --------------------------------------------------------------------------- stage 2


def _rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> str:
    above = scores > threshold
    return f"{int(above[labels == 0].sum())}/{int((labels == 0).sum())}, {int(above[labels == 1].sum())}/" \
           f"{int((labels == 1).sum())}"


def variant_row(c: dict, ext, kind: str, normalise: str, shift: int, residual, highlights: str = "keep") -> dict:
    """Maps of the test and calibration pairs with one setting, and all its numbers.
    ``highlights``: keep (the paper), calibrated (the cap measured on the calibration pairs,
    as ``splatjax evaluate``), calibrated-unclipped (the same with every channel as read),
    uncapped (cap 1: all common brightening discounted)."""
    t0 = time.perf_counter()
    config = MapConfig(features="weights-free" if kind == "weights-free" else "lite0", normalise=normalise,
                       shift_radius=shift, highlights="keep" if highlights == "keep" else "calibrated",
                       **({"highlight_saturation": 0.0, "highlight_space": "srgb"}
                          if highlights == "calibrated-unclipped" else {}))
    cap = {"keep": None, "uncapped": 1.0}.get(highlights)
    if highlights.startswith("calibrated"):
        cap = highlight_cap(c["cal_renders"], c["cal_images"], BACKGROUND, config.highlight_percentile,
                            config.highlight_saturation, config.highlight_space)
    res = residual if normalise != "none" else None
    maps = compute_maps(c["renders"], c["queries"], config, extractor=ext, residual=res, highlight_cap=cap).maps
    cal_maps = compute_maps(c["cal_renders"], c["cal_images"], config, extractor=ext, residual=res,
                            highlight_cap=cap).maps
    labels, types = c["labels"], c["defect_types"]
    m = evaluate_detection(np.asarray(image_scores(maps, "max")), maps, labels, c["masks"])
    row = {"features": kind, "normalise": normalise, "shift_radius": shift, "highlights": highlights,
           "highlight_cap": cap, "pixel_auroc": m.pixel_auroc,
           "aupro": m.aupro, "image_auroc": {}, "per_type": {}, "flagged": {}}
    for score, k in SCORES:
        name = _score_name(score, k)
        s = np.asarray(image_scores(maps, score, k))
        thr = 1.5 * float(np.max(np.asarray(image_scores(cal_maps, score, k))))
        row["image_auroc"][name] = auroc(s, labels)
        row["per_type"][name] = {t: auroc(s[(types == t) | (labels == 0)], labels[(types == t) | (labels == 0)])
                                 for t in sorted(set(types[labels == 1]))}
        row["flagged"][name] = _rates(s, labels, thr)
    row["seconds"] = time.perf_counter() - t0
    return row


def table(rows: list[dict]) -> str:
    names = [_score_name(s, k) for s, k in SCORES]
    head = ["features", "normalise", "shift", "highlights (cap)", "pixel AUROC", "AUPRO", *[f"image AUROC {n}" for n in names],
            "per type (B/M/S) top100", "above thr good, defect (max / top100)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        pt = r["per_type"]["top100"]
        hl = r.get("highlights", "keep") + ("" if r.get("highlight_cap") is None else f" ({r['highlight_cap']:.3f})")
        cells = [r["features"], r["normalise"], str(r["shift_radius"]), hl, f"{r['pixel_auroc']:.4f}",
                 f"{r['aupro']:.4f}", *[f"{r['image_auroc'][n]:.3f}" for n in names],
                 "/".join(f"{v:.2f}" for v in pt.values()), f"{r['flagged']['max']} / {r['flagged']['top100']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/work/runs/lego_ad/LegoAD", help="MAD-layout class folder")
    ap.add_argument("--model", default="/work/runs/lego200_6k", help="run folder (model.ply, config.json)")
    ap.add_argument("--cache", default="/work/runs/score/lego_ad_stages.npz", help="stage-1 cache (.npz)")
    ap.add_argument("--out", default="/work/runs/score/variants.json", help="results JSON")
    ap.add_argument("--features", nargs="+", default=["weights-free", "lite0", "lite0-random"])
    ap.add_argument("--normalise", nargs="+", default=["none", "level", "channel"])
    ap.add_argument("--shifts", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--highlights", nargs="+", choices=HIGHLIGHTS, default=["keep"],
                    help="highlight discounts to compare (keep = the paper; calibrated = the evaluate default)")
    ap.add_argument("--calibration-views", type=int, default=MapConfig().calibration_views)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fine-poses", default=None,
                    help="poses.json of a splatjax evaluate run on --data with --model: render its fine poses "
                         "instead of estimating them again (stage 1)")
    ap.add_argument("--poses", choices=("estimated", "oracle", "estimated-ok"), default="estimated",
                    help="renders at the estimated poses (all queries), at the true poses, or only the queries "
                         "whose estimated pose is right (0.05 rad, 0.1 units)")
    args = ap.parse_args(argv)
    cache = Path(args.cache)
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        stages = run_stages_once(Path(args.data), Path(args.model), args.calibration_views, args.seed,
                                 None if args.fine_poses is None else Path(args.fine_poses))
        np.savez(cache, **stages)
        print(f"stages cached in {cache} ({float(stages['stage_seconds']):.0f} s)", file=sys.stderr)
    c = dict(np.load(cache))
    if args.poses == "oracle" and "oracle_renders" not in c:
        c["oracle_renders"] = oracle_renders(Path(args.data), Path(args.model))
        np.savez(cache, **c)
    if "fine_rotation_rad" in c:
        print(f"fine pose: median rotation {np.median(c['fine_rotation_rad']):.4f} rad (max "
              f"{np.max(c['fine_rotation_rad']):.3f}), translation {np.median(c['fine_translation']):.4f} (max "
              f"{np.max(c['fine_translation']):.3f})", file=sys.stderr)
    c = select_poses(c, args.poses)
    print(f"{args.poses} poses: {len(c['labels'])} queries, {int(c['labels'].sum())} defective", file=sys.stderr)
    rows = []
    for kind in args.features:
        ext = make_extractor(kind)
        residual = residual_scales(c["cal_renders"], c["cal_images"], ext)
        for normalise in args.normalise:
            if kind == "weights-free" and normalise == "channel":
                continue  # one channel per level: the same as "level"
            for shift, hl in [(s, h) for s in (args.shifts if kind != "weights-free" else [0]) for h in args.highlights]:
                rows.append(variant_row(c, ext, kind, normalise, shift, residual, hl))
                r = rows[-1]
                print(f"{kind} {normalise} shift {shift} highlights {hl}: image AUROC {r['image_auroc']}, pixel "
                      f"{r['pixel_auroc']:.4f}, AUPRO {r['aupro']:.4f} ({r['seconds']:.0f} s)", file=sys.stderr)
    print("python scripts/score_variants.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(table(rows))
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
