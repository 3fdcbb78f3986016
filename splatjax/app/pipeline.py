"""The detection pipelines users run: ``evaluate`` (a labelled MAD-Sim class folder, or
several), ``detect`` (new images against a fitted model) and ``demo`` (the toy object,
end to end).

evaluate: load the class -> fit (when no model is given) -> coarse pose -> fine pose
(batched) -> render at the final pose -> anomaly maps (224 x 224) and image scores ->
image AUROC, pixel AUROC (masks resized nearest to 224), AUPRO, and, with a test-pose file,
pose errors of the coarse and the fine poses. Output folder::

    report.json        metrics, per-stage seconds, queries per second, settings, pose errors
    per_image.csv      path, label, defect type, score, coarse index, final loss, pose errors
    heatmaps/<type>_<n>.png   query | render at the estimated pose | anomaly overlay
    roc.png            image and pixel ROC curves
    pose_convergence.png      fine-pose loss per step (+ coarse vs fine errors)
    poses.json         estimated camera-to-world poses (Blender/OpenGL), coarse and fine

Several class folders in one call: one such folder per class under ``out_dir/<class>``,
plus ``out_dir/table.md`` and ``out_dir/report.json`` (per-class rows and the mean, like
Table 1 of the paper).

Run folders: ``run_fit`` writes ``RUN/model.ply``; the pipelines here add
``RUN/cameras.json`` (:func:`save_cameras`) so that ``detect`` has the training cameras
as coarse-pose candidates.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import pose as pose_mod
from ..gaussians import load_ply
from ..render import resolve_backend

__all__ = [
    "evaluate",
    "evaluate_class",
    "detect",
    "demo",
    "save_cameras",
    "load_cameras",
    "load_test_poses",
    "format_table",
    "DEMO_SETTINGS",
    "add_evaluate_arguments",
    "add_detect_arguments",
    "add_demo_arguments",
    "run_evaluate",
    "run_detect",
    "run_demo",
]

CAMERAS_FILE = "cameras.json"
MAP_SIZE = 224
MIN_PANEL_HEIGHT = 256


def _log_default(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- run folders


def save_cameras(run_dir: str | os.PathLike, views) -> Path:
    """Write ``RUN/cameras.json``: ``{"camera_angle_x", "width", "height", "c2w": [N x 4 x 4]
    (Blender/OpenGL camera-to-world), "paths": [...]}`` of the training views
    (:class:`splatjax.data.PosedViews`)."""
    path = Path(run_dir) / CAMERAS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"camera_angle_x": float(views.camera_angle_x), "width": int(views.width), "height": int(views.height),
            "c2w": np.asarray(views.c2w, np.float64).tolist(), "paths": [str(p) for p in views.paths]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
    return path


def load_cameras(run_dir: str | os.PathLike) -> dict | None:
    """Training cameras of a run folder: ``cameras.json`` (see :func:`save_cameras`), else
    the poses of the training views named in ``config.json`` read from the dataset named in
    ``info.json`` (when it is still there). Returns ``{"camera_angle_x", "width", "height",
    "c2w"}`` or None."""
    run_dir = Path(run_dir)
    path = run_dir / CAMERAS_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            c2w = np.asarray(data["c2w"], np.float64).reshape(-1, 4, 4)
            return {"camera_angle_x": float(data["camera_angle_x"]), "width": int(data["width"]),
                    "height": int(data["height"]), "c2w": c2w}
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a valid cameras file ({exc}); delete it or rewrite it with "
                             "splatjax.pipeline.save_cameras") from exc
    try:
        info = json.loads((run_dir / "info.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        from ..data.blender import parse_pose, read_transforms

        data_dir = Path(info["data"])
        json_path = data_dir / "transforms.json"
        if not json_path.is_file():
            json_path = data_dir / "transforms_train.json"
        fov, frames = read_transforms(json_path)
        c2w = np.stack([parse_pose(fr, i, json_path) for i, fr in enumerate(frames)])
        idx = np.asarray(config.get("train_views", range(len(c2w))), np.int64)
        h, w = config["image_size"]
        return {"camera_angle_x": float(fov), "width": int(w), "height": int(h), "c2w": c2w[idx]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _resolve_model(model: str | os.PathLike, class_name: str | None = None) -> Path:
    """model.ply of a run folder (or a .ply path; or ``model/<class>[/model]`` for
    several classes)."""
    p = Path(model)
    candidates = [p] if p.suffix == ".ply" else [p / "model.ply"]
    if class_name is not None:
        candidates += [p / class_name / "model.ply", p / class_name / "model" / "model.ply"]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"{p}: no fitted model found (looked for {', '.join(str(c) for c in candidates)}); "
                            "give a run folder written by `splatjax fit` or a 3DGS .ply file")


def load_test_poses(path: str | os.PathLike) -> tuple[float, dict[str, np.ndarray]]:
    """A test-pose file ``{"camera_angle_x": a, "poses": {"test/<type>/<n>.png": 4x4}}``
    (Blender/OpenGL camera-to-world). Returns (camera_angle_x, {relative path: c2w})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: test-pose file not found")
    try:
        data = json.loads(path.read_text())
        poses = {str(k): np.asarray(v, np.float64) for k, v in data["poses"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a test-pose file ({exc}); expected "
                         '{"camera_angle_x": a, "poses": {"test/<type>/<n>.png": 4x4 camera-to-world}}') from exc
    bad = [k for k, v in poses.items() if v.shape != (4, 4) or not np.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path}: poses must be finite 4x4 matrices; bad entries: {bad[:5]}")
    return float(data.get("camera_angle_x", float("nan"))), poses


# ----------------------------------------------------------------------------- pieces


def _render_views(gaussians, cameras, *, batch_size, backend, background, progress):
    return pose_mod.render_candidates(gaussians, cameras, resolution=cameras.width, batch_size=batch_size,
                                      backend=backend, background=background, progress=progress)


def _maps_in_chunks(renders, queries, extractor, *, batch_size, progress):
    from ..anomaly import anomaly_maps

    out = []
    n = renders.shape[0]
    for s in pose_mod._progress(range(0, n, batch_size), total=-(-n // batch_size), desc="anomaly maps",
                                enabled=progress):
        out.append(np.asarray(anomaly_maps(renders[s:s + batch_size], queries[s:s + batch_size], extractor,
                                           size=MAP_SIZE)))
    return np.concatenate(out)


def _resize_masks(masks: np.ndarray, size: int = MAP_SIZE) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 0
                     for m in np.asarray(masks)])


def _safe(fn, *args):
    """A metric, or None when it is undefined here (e.g. one class only)."""
    try:
        return float(fn(*args))
    except ValueError:
        return None


def _fmt(x, digits=3, scale=1.0):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{scale * x:.{digits}f}"


def _image_stem(rel: str, defect_type: str) -> str:
    return f"{defect_type}_{Path(rel).stem}"


def _write_heatmaps(folder: Path, names, queries, renders, maps, masks, *, progress):
    from ..anomaly import overlay_heatmap
    from .report import heatmap_panel, write_png

    from ..data.images import resize_float

    folder.mkdir(parents=True, exist_ok=True)
    vmin, vmax = float(np.min(maps)), float(np.percentile(maps, 99.9))
    h, w = queries.shape[1:3]
    scale = max(1, int(np.ceil(MIN_PANEL_HEIGHT / h)))  # small images are enlarged for viewing
    size = (w * scale, h * scale)
    for i in pose_mod._progress(range(len(names)), total=len(names), desc="heatmaps", enabled=progress):
        q, r = resize_float(np.asarray(queries[i]), size), resize_float(np.asarray(renders[i]), size)
        ov = overlay_heatmap(q, maps[i], None if masks is None else masks[i], vmin=vmin, vmax=vmax)
        write_png(folder / f"{names[i]}.png", heatmap_panel(q, r, ov))


def _model_and_fit(data_path: Path, out_dir: Path, *, model, fit_config, train_fraction, resolution, log,
                   progress, class_name):
    """(gaussians, model path, fit seconds, fit info or None)."""
    if model is not None:
        ply = _resolve_model(model, class_name)
        return load_ply(ply), ply, 0.0, None
    from ..fitting import FitConfig, run_fit

    config = fit_config if fit_config is not None else FitConfig(resolution=resolution)
    if train_fraction is not None:
        config = dataclasses.replace(config, train_fraction=float(train_fraction))
    run_dir = out_dir / "model"
    if run_dir.exists() and any(run_dir.iterdir()):
        if _same_fit(run_dir, config):
            log(f"[splatjax] reusing the model fitted earlier with the same settings: {run_dir / 'model.ply'} "
                "(delete that folder to fit again)")
            return load_ply(run_dir / "model.ply"), run_dir / "model.ply", 0.0, None
        raise FileExistsError(f"{run_dir}: holds another (or an unfinished) fit with different settings; delete the "
                              "folder, choose another output folder, or pass it as the model")
    log(f"[splatjax] fitting {data_path} ({config.iterations} iterations) into {run_dir}")
    t0 = time.perf_counter()
    gaussians, info = run_fit(data_path, run_dir, config, progress=progress)
    return gaussians, run_dir / "model.ply", time.perf_counter() - t0, info


#: FitConfig fields that do not change the fitted model.
_FIT_FIELDS_IGNORED = {"backend", "checkpoint_every", "val_every", "val_views", "log_every"}


def _same_fit(run_dir: Path, config) -> bool:
    """Whether ``run_dir`` holds a completed fit (model.ply) made with ``config``."""
    try:
        saved = json.loads((run_dir / "config.json").read_text())["fit_config"]
    except (OSError, ValueError, KeyError):
        return False
    now = json.loads(json.dumps(dataclasses.asdict(config)))
    same = all(saved.get(k) == v for k, v in now.items() if k not in _FIT_FIELDS_IGNORED)
    return same and (run_dir / "model.ply").is_file()


# ----------------------------------------------------------------------------- evaluate


def evaluate_class(
    data_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    test_poses: str | os.PathLike | None = None,
    fit_config=None,
    train_fraction: float | None = None,
    coarse: str = "auto",
    coarse_resolution: int = 64,
    inplane_rotations: int = 0,
    sphere_views: int = 0,
    steps: int = pose_mod.FINE_STEPS,
    batch_size: int = 16,
    exact_exp: bool = False,
    features: str = "auto",
    efficientnet_weights: str | None = None,
    loftr_weights: str | None = None,
    resolution: int | None = 400,
    backend: str = "auto",
    seed: int = 0,
    heatmaps: bool = True,
    progress: bool = True,
    log: Callable[[str], object] = _log_default,
) -> dict:
    """Evaluate one MAD-Sim class folder (see the module docstring); returns the report
    dict that is also written to ``out_dir/report.json``.

    model: run folder (or .ply) of a fitted model; None fits one first into
    ``out_dir/model`` with ``fit_config`` (default :class:`splatjax.FitConfig` at this
    resolution; ``train_fraction`` overrides its training-view fraction). test_poses:
    test-pose file; None uses ``<data>/test_poses.json`` when present. coarse: "auto",
    "render" or "loftr"; ``inplane_rotations`` adds that many rolled copies of every
    candidate (render-and-compare) and ``sphere_views`` extra candidates on a sphere.
    steps / exact_exp: fine pose (175 and the reference screw map by default).
    features: "auto", "efficientnet" or "weights-free"."""
    from ..data import load_mad_class
    from ..anomaly.features import make_feature_extractor
    from ..metrics import aupro, auroc, pixel_auroc, pose_errors, summarize_pose_errors

    data_path, out_dir = Path(data_path), Path(out_dir)
    if out_dir.resolve().is_relative_to(data_path.resolve()):
        raise ValueError(f"{out_dir}: the output folder must not be inside the (read-only) dataset folder {data_path}")
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    cls = load_mad_class(data_path, resolution)
    seconds["load"] = time.perf_counter() - t0
    train, test = cls.train, cls.test
    m = len(test)
    log(f"[splatjax] {cls.name}: {len(train)} training views, {m} test images at {train.width}x{train.height}")

    gaussians, model_ply, seconds["fit"], fit_info = _model_and_fit(
        data_path, out_dir, model=model, fit_config=fit_config, train_fraction=train_fraction,
        resolution=resolution, log=log, progress=progress, class_name=cls.name)
    if model is None:
        save_cameras(model_ply.parent, train)

    # test poses (optional)
    if test_poses is None and (data_path / "test_poses.json").is_file():
        test_poses = data_path / "test_poses.json"
    true_c2w = None
    if test_poses is not None:
        _, poses = load_test_poses(test_poses)
        missing = [p for p in test.paths if p not in poses]
        if missing:
            raise ValueError(f"{test_poses}: no pose for {len(missing)} test images, e.g. {missing[:3]}")
        true_c2w = np.stack([poses[p] for p in test.paths])

    # poses
    cams = train.cameras
    extra = None
    if sphere_views:
        radius = float(np.median(np.linalg.norm(train.c2w[:, :3, 3], axis=1)))
        extra, _ = pose_mod.sphere_cameras(int(sphere_views), radius, train.camera_angle_x, train.width, train.height)
    angles = (np.arange(1, inplane_rotations + 1) * 2 * np.pi / (inplane_rotations + 1)) if inplane_rotations else None
    angles = None if angles is None else np.where(angles > np.pi, angles - 2 * np.pi, angles)
    queries = jnp.asarray(test.images)
    est = pose_mod.estimate_poses(
        gaussians, queries, cams, key=jax.random.key(seed), coarse=coarse, candidate_images=train.images,
        coarse_resolution=coarse_resolution, extra_cameras=extra, inplane_angles=angles, loftr_weights=loftr_weights,
        steps=steps, batch_size=batch_size, exact_exp=exact_exp, backend=backend, background=train.background,
        progress=progress)
    seconds["coarse"], seconds["fine"] = est.seconds["coarse"], est.seconds["fine"]

    # renders, maps, scores
    t0 = time.perf_counter()
    renders = np.asarray(_render_views(gaussians, est.cameras, batch_size=batch_size, backend=backend,
                                       background=train.background, progress=progress))
    seconds["render"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    extractor = make_feature_extractor(features, efficientnet_weights, log=log)
    maps = _maps_in_chunks(renders, test.images, extractor, batch_size=batch_size, progress=progress)
    scores = maps.reshape(m, -1).max(axis=1)
    seconds["maps"] = time.perf_counter() - t0

    # metrics
    t0 = time.perf_counter()
    masks224 = _resize_masks(test.masks)
    labels = np.asarray(test.labels).astype(bool)
    report: dict = {
        "class": cls.name,
        "data": str(data_path.resolve()),
        "model": str(model_ply),
        "num_test_images": m,
        "num_defective": int(labels.sum()),
        "num_train_views": len(train),
        "image_size": [train.width, train.height],
        "image_auroc": _safe(auroc, scores, labels),
        "pixel_auroc": _safe(pixel_auroc, maps, masks224),
        "aupro": _safe(aupro, maps, masks224),
        "features": extractor.name,
        "coarse_method": est.method,
        "fine_steps": int(steps),
        "exact_exp": bool(exact_exp),
        "batch_size": int(batch_size),
        "render_backend": resolve_backend(backend),
        "seed": int(seed),
    }
    errs = None
    if true_c2w is not None:
        e_coarse = pose_errors(est.coarse_c2w, true_c2w)
        e_fine = pose_errors(est.c2w, true_c2w)
        better = (e_fine["rotation_rad"] < e_coarse["rotation_rad"]) & (e_fine["translation"] < e_coarse["translation"])
        report["pose"] = {"coarse": summarize_pose_errors(e_coarse), "fine": summarize_pose_errors(e_fine),
                          "fine_better_fraction": float(better.mean()), "test_poses": str(test_poses)}
        errs = (e_coarse, e_fine)
    seconds["metrics"] = time.perf_counter() - t0

    # files
    t0 = time.perf_counter()
    from .report import plot_pose_convergence, plot_roc_curves

    names = [_image_stem(p, t) for p, t in zip(test.paths, test.defect_types)]
    with open(out_dir / "per_image.csv", "w", newline="") as f:
        w = csv.writer(f)
        head = ["path", "label", "defect_type", "score", "coarse_index", "coarse_score", "final_loss"]
        if errs:
            head += ["coarse_translation", "coarse_rotation_rad", "fine_translation", "fine_rotation_rad",
                     "fine_rotation_half_rad"]
        w.writerow(head)
        for i in range(m):
            row = [test.paths[i], int(labels[i]), test.defect_types[i], f"{scores[i]:.6g}", int(est.coarse_index[i]),
                   f"{est.coarse_score[i]:.6g}", f"{est.loss_traces[i, -1]:.6g}"]
            if errs:
                row += [f"{errs[0]['translation'][i]:.6g}", f"{errs[0]['rotation_rad'][i]:.6g}",
                        f"{errs[1]['translation'][i]:.6g}", f"{errs[1]['rotation_rad'][i]:.6g}",
                        f"{errs[1]['rotation_half_rad'][i]:.6g}"]
            w.writerow(row)
    (out_dir / "poses.json").write_text(json.dumps({
        "camera_angle_x": train.camera_angle_x, "convention": "Blender/OpenGL camera-to-world",
        "coarse": {p: est.coarse_c2w[i].tolist() for i, p in enumerate(test.paths)},
        "fine": {p: est.c2w[i].tolist() for i, p in enumerate(test.paths)}}))
    plot_roc_curves(out_dir / "roc.png", scores, labels, maps, masks224, title=cls.name)
    plot_pose_convergence(out_dir / "pose_convergence.png", est.loss_traces,
                          coarse_errors=errs[0] if errs else None, fine_errors=errs[1] if errs else None,
                          title=cls.name)
    if heatmaps:
        _write_heatmaps(out_dir / "heatmaps", names, test.images, renders, maps, test.masks, progress=progress)
    seconds["write"] = time.perf_counter() - t0

    infer = seconds["coarse"] + seconds["fine"] + seconds["render"] + seconds["maps"]
    seconds["total"] = float(sum(seconds.values()))
    report["seconds"] = seconds
    report["queries_per_second"] = m / infer if infer > 0 else None
    report["seconds_per_query_without_coarse"] = (seconds["fine"] + seconds["render"] + seconds["maps"]) / m
    if fit_info is not None:
        report["fit"] = {k: fit_info.get(k) for k in ("steps", "num_gaussians", "seconds", "final_psnr", "backend")}
    report["files"] = {"report": "report.json", "per_image": "per_image.csv", "roc": "roc.png",
                       "pose_convergence": "pose_convergence.png", "poses": "poses.json",
                       "heatmaps": "heatmaps/" if heatmaps else None}
    _write_json(out_dir / "report.json", report)
    return report


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


def format_table(reports: Sequence[dict]) -> str:
    """Markdown table like the paper's Table 1: per class image AUROC, pixel AUROC, AUPRO
    (percent) and pose errors (translation / rotation rad, fine), plus the mean row."""
    rows = ["| class | image AUROC | pixel AUROC | AUPRO | fine translation | fine rotation (rad) | s / query |",
            "|---|---|---|---|---|---|---|"]

    def pe(r, key):
        p = r.get("pose")
        return None if p is None else p["fine"][key]["median"]

    cols = []
    for r in reports:
        vals = [r.get("image_auroc"), r.get("pixel_auroc"), r.get("aupro"), pe(r, "translation"),
                pe(r, "rotation_rad"), r.get("seconds_per_query_without_coarse")]
        cols.append(vals)
        rows.append(f"| {r['class']} | {_fmt(vals[0], 1, 100)} | {_fmt(vals[1], 1, 100)} | {_fmt(vals[2], 1, 100)} | "
                    f"{_fmt(vals[3], 4)} | {_fmt(vals[4], 4)} | {_fmt(vals[5], 2)} |")

    def mean(j):
        v = [c[j] for c in cols if c[j] is not None]
        return float(np.mean(v)) if v else None

    rows.append(f"| **mean** | {_fmt(mean(0), 1, 100)} | {_fmt(mean(1), 1, 100)} | {_fmt(mean(2), 1, 100)} | "
                f"{_fmt(mean(3), 4)} | {_fmt(mean(4), 4)} | {_fmt(mean(5), 2)} |")
    return "\n".join(rows) + "\n"


def evaluate(
    data_paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    out_dir: str | os.PathLike,
    model: str | os.PathLike | None = None,
    test_poses: str | os.PathLike | None = None,
    log: Callable[[str], object] = _log_default,
    **kwargs,
) -> dict:
    """Evaluate one class folder (report written to ``out_dir``) or several (one folder per
    class under ``out_dir``, plus ``table.md`` and a summary ``report.json`` with per-class
    rows and the mean). Keyword arguments: see :func:`evaluate_class`. With several
    classes, ``model`` is a folder holding ``<class>/model.ply`` (or
    ``<class>/model/model.ply``) and ``test_poses`` a folder holding
    ``<class>/test_poses.json``."""
    if isinstance(data_paths, (str, os.PathLike)):
        data_paths = [data_paths]
    data_paths = [Path(p) for p in data_paths]
    if not data_paths:
        raise ValueError("evaluate: no class folder given")
    out_dir = Path(out_dir)
    if len(data_paths) == 1:
        report = evaluate_class(data_paths[0], out_dir, model=model, test_poses=test_poses, log=log, **kwargs)
        log(format_table([report]))
        return report
    reports = []
    for p in data_paths:
        tp = None
        if test_poses is not None:
            tp = Path(test_poses) / p.name / "test_poses.json"
            tp = tp if tp.is_file() else None
        reports.append(evaluate_class(p, out_dir / p.name, model=model, test_poses=tp, log=log, **kwargs))
    table = format_table(reports)
    (out_dir / "table.md").write_text(table)
    mean = {k: float(np.mean([r[k] for r in reports if r.get(k) is not None]))
            if any(r.get(k) is not None for r in reports) else None
            for k in ("image_auroc", "pixel_auroc", "aupro", "queries_per_second")}
    summary = {"classes": [r["class"] for r in reports], "mean": mean,
               "per_class": {r["class"]: {k: r.get(k) for k in ("image_auroc", "pixel_auroc", "aupro", "pose",
                                                                "queries_per_second", "seconds")} for r in reports},
               "table": "table.md"}
    _write_json(out_dir / "report.json", summary)
    log(table)
    return summary


# ----------------------------------------------------------------------------- detect


def detect(
    model_run: str | os.PathLike,
    image_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    coarse: str = "render",
    coarse_resolution: int = 64,
    inplane_rotations: int = 0,
    sphere_views: int = 0,
    steps: int = pose_mod.FINE_STEPS,
    batch_size: int = 16,
    exact_exp: bool = False,
    features: str = "auto",
    efficientnet_weights: str | None = None,
    resolution: int | None = None,
    camera_angle_x: float | None = None,
    background=(1.0, 1.0, 1.0),
    backend: str = "auto",
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], object] = _log_default,
) -> dict:
    """Anomaly maps, overlays and scores for new images of a fitted object.

    Coarse-pose candidates are the run's training cameras (:func:`load_cameras`); without
    them, ``max(sphere_views, 200)`` views on a sphere whose radius is 3.5 x the model's
    extent (95th percentile distance of the Gaussian means from their median). Images are
    read at width ``resolution`` (default: the training width, else native). Writes
    ``out_dir/detections.json`` (per image: score, camera-to-world pose) and
    ``out_dir/heatmaps/<name>.png``; returns the JSON dict."""
    from ..data.images import read_rgb
    from ..anomaly.features import make_feature_extractor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ply = _resolve_model(model_run)
    gaussians = load_ply(ply)
    if not image_paths:
        raise ValueError("detect: no images given")
    cams_info = load_cameras(ply.parent)
    width = resolution or (cams_info["width"] if cams_info else None)
    images = []
    for p in image_paths:
        img, _ = read_rgb(p, background=background, resolution=width)
        images.append(img)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"detect: the images have different sizes {sorted(shapes)}; give --resolution")
    images = np.stack(images)
    h, w = images.shape[1:3]
    fov = camera_angle_x or (cams_info["camera_angle_x"] if cams_info else 0.6911112070083618)
    if cams_info is not None:
        cands = pose_mod.cameras_from_c2w(cams_info["c2w"], fov, w, h)
        extra = None
        if sphere_views:
            radius = float(np.median(np.linalg.norm(cams_info["c2w"][:, :3, 3], axis=1)))
            extra, _ = pose_mod.sphere_cameras(int(sphere_views), radius, fov, w, h)
    else:
        means = np.asarray(gaussians.means)
        extent = float(np.percentile(np.linalg.norm(means - np.median(means, 0), axis=1), 95))
        log(f"[splatjax] {ply.parent}: no training cameras ({CAMERAS_FILE}); coarse pose candidates are "
            f"{max(sphere_views, 200)} views on a sphere of radius {3.5 * extent:.2f}")
        cands, _ = pose_mod.sphere_cameras(max(int(sphere_views), 200), 3.5 * extent, fov, w, h,
                                           target=np.median(means, 0))
        extra = None
    angles = (np.arange(1, inplane_rotations + 1) * 2 * np.pi / (inplane_rotations + 1)) if inplane_rotations else None
    if coarse != "render":
        log("[splatjax] detect: LoFTR needs the training images; using render-and-compare coarse pose")
    t0 = time.perf_counter()
    est = pose_mod.estimate_poses(gaussians, jnp.asarray(images), cands, key=jax.random.key(seed), coarse="render",
                                  coarse_resolution=coarse_resolution, extra_cameras=extra, inplane_angles=angles,
                                  steps=steps, batch_size=batch_size, exact_exp=exact_exp, backend=backend,
                                  background=tuple(background), progress=progress)
    renders = np.asarray(_render_views(gaussians, est.cameras, batch_size=batch_size, backend=backend,
                                       background=tuple(background), progress=progress))
    extractor = make_feature_extractor(features, efficientnet_weights, log=log)
    maps = _maps_in_chunks(renders, images, extractor, batch_size=batch_size, progress=progress)
    scores = maps.reshape(len(images), -1).max(axis=1)
    seconds = time.perf_counter() - t0
    names = []
    for p in image_paths:
        stem = Path(p).parent.name + "_" + Path(p).stem
        while stem in names:
            stem += "_"
        names.append(stem)
    _write_heatmaps(out_dir / "heatmaps", names, images, renders, maps, None, progress=progress)
    np.save(out_dir / "maps.npy", maps.astype(np.float32))
    result = {
        "model": str(ply), "features": extractor.name, "coarse_method": est.method, "fine_steps": int(steps),
        "seconds": seconds, "maps": "maps.npy",
        "images": [{"path": str(p), "score": float(s), "heatmap": f"heatmaps/{n}.png", "final_loss":
                    float(est.loss_traces[i, -1]), "c2w": est.c2w[i].tolist()}
                   for i, (p, s, n) in enumerate(zip(image_paths, scores, names))],
    }
    _write_json(out_dir / "detections.json", result)
    return result


# ----------------------------------------------------------------------------- demo

#: The demo's reduced schedule (toy object, CPU): chosen so the whole demo finishes within
#: 5 minutes on a 2-core CPU with the CPU kernel.
DEMO_SETTINGS = {
    "toy": {"resolution": 128, "num_train": 100, "num_test_per_type": 6},
    "fit": {"iterations": 2000, "init_points": 4000, "densify_from": 300, "densify_until": 1600,
            "densify_every": 100, "opacity_reset_every": 3000, "capacity": 40000, "chunk_steps": 100,
            "checkpoint_every": 100000, "val_every": 100000, "log_every": 100, "resolution": None},
    "evaluate": {"steps": pose_mod.FINE_STEPS, "batch_size": 6, "coarse": "render", "coarse_resolution": 64,
                 "features": "weights-free", "resolution": None},
}


def demo(
    out_dir: str | os.PathLike = "demo_out",
    *,
    seed: int = 0,
    settings: dict | None = None,
    progress: bool = True,
    log: Callable[[str], object] = print,
) -> dict:
    """The toy object end to end: generate it (``out_dir/toy``), fit it with the reduced
    schedule of :data:`DEMO_SETTINGS` (``out_dir/eval/model``), evaluate with the
    weights-free comparison (``out_dir/eval``) and print the headline numbers."""
    from ..data import make_toy_dataset, write_toy_preview
    from ..fitting import FitConfig

    s = {k: dict(v) for k, v in DEMO_SETTINGS.items()}
    for k, v in (settings or {}).items():
        s.setdefault(k, {}).update(v)
    out = Path(out_dir)
    t_start = time.perf_counter()
    log(f"[splatjax demo] 1/3 generating the toy object into {out / 'toy'}")
    data = make_toy_dataset(out / "toy", seed=seed, **s["toy"])
    preview = write_toy_preview(data, out / "toy_preview.png")
    fit_config = FitConfig(seed=seed, **s["fit"])
    log(f"[splatjax demo] 2/3 fitting {fit_config.iterations} steps, then 3/3 evaluating")
    report = evaluate_class(data, out / "eval", fit_config=fit_config, seed=seed, progress=progress,
                            log=_log_default, **s["evaluate"])
    total = time.perf_counter() - t_start
    p = report.get("pose")
    lines = [
        "",
        "splatjax demo (toy object, weights-free comparison)",
        f"  image AUROC  {_fmt(report['image_auroc'])}",
        f"  pixel AUROC  {_fmt(report['pixel_auroc'])}",
        f"  AUPRO        {_fmt(report['aupro'])}",
    ]
    if p:
        lines.append(f"  pose error (median) coarse: translation {p['coarse']['translation']['median']:.4f}, "
                     f"rotation {p['coarse']['rotation_rad']['median']:.4f} rad; fine: translation "
                     f"{p['fine']['translation']['median']:.4f}, rotation {p['fine']['rotation_rad']['median']:.4f} rad")
    lines += [
        f"  time         {total:.0f} s in total (fit "
        f"{'reused' if 'fit' not in report else format(report['seconds']['fit'], '.0f') + ' s'}, "
        f"{report['queries_per_second']:.2f} queries/s)",
        f"  pictures     {out / 'eval' / 'heatmaps'}/ (query | render | anomaly map), "
        f"{out / 'eval' / 'roc.png'}, {out / 'eval' / 'pose_convergence.png'}",
        f"  toy object   {preview} (training views, each defect type, its defect-free view and mask)",
        f"  report       {out / 'eval' / 'report.json'}, {out / 'eval' / 'per_image.csv'}",
    ]
    log("\n".join(lines))
    report["demo_seconds"] = total
    return report


# ----------------------------------------------------------------------------- command line


def _add_pose_and_map_arguments(parser: argparse.ArgumentParser, *, coarse_default: str) -> None:
    g = parser.add_argument_group("pose and anomaly maps")
    g.add_argument("--coarse", choices=("auto", "render", "loftr"), default=coarse_default,
                   help=f"coarse pose: LoFTR retrieval, render-and-compare, or auto (default {coarse_default})")
    g.add_argument("--coarse-resolution", type=int, default=64, help="render-and-compare image width (default 64)")
    g.add_argument("--inplane-rotations", type=int, default=0,
                   help="extra rolled copies of each coarse candidate (render-and-compare; default 0)")
    g.add_argument("--sphere-views", type=int, default=0, help="extra coarse candidates on a sphere (default 0)")
    g.add_argument("--steps", type=int, default=pose_mod.FINE_STEPS, help="fine pose steps k (default 175)")
    g.add_argument("--batch-size", type=int, default=16, help="queries refined at once under vmap (default 16)")
    g.add_argument("--exact-exp", action="store_true", help="corrected SE(3) exponential instead of the reference map")
    g.add_argument("--features", choices=("auto", "efficientnet", "weights-free"), default="auto",
                   help="anomaly-map features (default auto: EfficientNet-b4 when its weights are found)")
    g.add_argument("--efficientnet-weights", default=None, help="EfficientNet-b4 state dict (efficientnet_pytorch)")
    g.add_argument("--backend", choices=("auto", "reference", "cpu", "cuda"), default="auto", help="render backend")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``splatjax evaluate DATA... [--model RUN] [--test-poses FILE] --out DIR [...]``."""
    parser.add_argument("data", nargs="+", help="MAD-Sim class folder(s)")
    parser.add_argument("--out", required=True, help="output folder (report.json, per_image.csv, PNGs)")
    parser.add_argument("--model", default=None, help="fitted run folder (model.ply); default: fit first")
    parser.add_argument("--test-poses", default=None,
                        help="test-pose file (default: DATA/test_poses.json when present)")
    parser.add_argument("--resolution", type=int, default=400, help="image width (default 400, as the paper)")
    parser.add_argument("--loftr-weights", default=None, help="LoFTR indoor_new checkpoint")
    parser.add_argument("--no-heatmaps", action="store_true", help="do not write per-image heatmap PNGs")
    f = parser.add_argument_group("fitting when no --model is given (ablations)")
    f.add_argument("--iterations", type=int, default=None, help="fit iterations (default 30000)")
    f.add_argument("--train-fraction", type=float, default=None, help="fraction of training views used (default 1)")
    _add_pose_and_map_arguments(parser, coarse_default="auto")
    return parser


def _common_kwargs(args) -> dict:
    return dict(coarse=args.coarse, coarse_resolution=args.coarse_resolution, inplane_rotations=args.inplane_rotations,
                sphere_views=args.sphere_views, steps=args.steps, batch_size=args.batch_size, exact_exp=args.exact_exp,
                features=args.features, efficientnet_weights=args.efficientnet_weights, backend=args.backend,
                seed=args.seed, progress=not args.quiet)


def run_evaluate(args: argparse.Namespace) -> int:
    fit_config = None
    if args.model is None and args.iterations is not None:
        from ..fitting import FitConfig

        fit_config = FitConfig(iterations=args.iterations, resolution=args.resolution)
    evaluate(args.data, out_dir=args.out, model=args.model, test_poses=args.test_poses, resolution=args.resolution,
             loftr_weights=args.loftr_weights, heatmaps=not args.no_heatmaps, fit_config=fit_config,
             train_fraction=args.train_fraction, **_common_kwargs(args))
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0


def add_detect_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``splatjax detect --model RUN IMAGES... --out DIR [...]``."""
    parser.add_argument("images", nargs="+", help="query images")
    parser.add_argument("--model", required=True, help="fitted run folder (model.ply, cameras.json)")
    parser.add_argument("--out", default="detect_out", help="output folder (default detect_out)")
    parser.add_argument("--resolution", type=int, default=None, help="image width (default: the training width)")
    parser.add_argument("--camera-angle-x", type=float, default=None, help="horizontal field of view, radians")
    _add_pose_and_map_arguments(parser, coarse_default="render")
    return parser


def run_detect(args: argparse.Namespace) -> int:
    result = detect(args.model, args.images, args.out, resolution=args.resolution, camera_angle_x=args.camera_angle_x,
                    **_common_kwargs(args))
    for item in result["images"]:
        print(f"{item['score']:10.4f}  {item['path']}  -> {Path(args.out) / item['heatmap']}")
    print(f"details: {Path(args.out) / 'detections.json'}")
    return 0


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``splatjax demo [--out DIR] [--seed N]``."""
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run_demo(args: argparse.Namespace) -> int:
    demo(args.out, seed=args.seed, progress=not args.quiet)
    return 0
