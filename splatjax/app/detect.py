"""``detect``: new images of a fitted object through the stages, one verdict per image.

Writes ``out/detections.json`` (per image: score, verdict, heatmap, final loss,
whether the fine pose diverged and the step of the kept iterate, camera-to-world pose;
the threshold and colour scale), ``out/maps.npy`` and
``out/heatmaps/<name>.png`` on the model's fixed scale (:mod:`splatjax.app.calibration`),
and says ``<image>: score S, threshold T -> ANOMALOUS/normal`` for every image (through
``say``, stdout by default; a note for an image whose fine pose diverged goes to ``log``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

from ..anomaly import MapConfig
from ..anomaly.features import make_feature_extractor
from ..errors import UserError
from ..files import atomic_write, write_json
from ..gaussians import load_ply
from ..pose import PoseConfig, candidate_cameras, cameras_from_c2w, sphere_cameras
from .calibration import model_calibration
from .report import verdict, write_heatmaps
from .runs import CAMERAS_FILE, load_cameras, log_stderr, progress_bars, resolve_model
from .stages import run_stages

__all__ = ["detect"]

DEFAULT_CAMERA_ANGLE_X = 0.6911112070083618  # the NeRF-synthetic / MAD field of view, radians


def _read_queries(image_paths, width, background) -> np.ndarray:
    from ..data.images import read_rgb

    if not image_paths:
        raise UserError("detect: no images given")
    images = [read_rgb(p, background=background, resolution=width)[0] for p in image_paths]
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise UserError(f"detect: the images have different sizes {sorted(shapes)}; give a resolution")
    return np.stack(images)


def _training_images(cams_info, width, background) -> Callable[[np.ndarray], np.ndarray | None]:
    """The selected training views' images from the paths in cameras.json, or None when unreadable."""
    def load(idx):
        from ..data.images import read_rgb
        from ..errors import DatasetError

        paths = cams_info.get("paths") if cams_info else None
        if not paths:
            return None
        try:
            return np.stack([read_rgb(paths[i], background=background, resolution=width)[0] for i in idx])
        except (DatasetError, OSError):
            return None

    return load


def _candidates(gaussians, cams_info, fov, w, h, pose_config, ply, log):
    """(coarse candidates, training cameras or the sphere views for the calibration)."""
    if cams_info is not None:
        train = cameras_from_c2w(cams_info["c2w"], fov, w, h)
        return candidate_cameras(train, pose_config), train
    means = np.asarray(gaussians.means)
    extent = float(np.percentile(np.linalg.norm(means - np.median(means, 0), axis=1), 95))
    n = max(pose_config.sphere_views, 200)
    log(f"[splatjax] {ply.parent}: no training cameras ({CAMERAS_FILE}); coarse pose candidates are "
        f"{n} views on a sphere of radius {3.5 * extent:.2f}")
    cands, _ = sphere_cameras(n, 3.5 * extent, fov, w, h, target=np.median(means, 0))
    return cands, cands


def _names(image_paths) -> list[str]:
    names: list[str] = []
    for p in image_paths:
        stem = Path(p).parent.name + "_" + Path(p).stem
        while stem in names:
            stem += "_"
        names.append(stem)
    return names


def detect(
    model: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    pose_config: PoseConfig = PoseConfig(coarse="render"),
    map_config: MapConfig = MapConfig(),
    resolution: int | None = None,
    camera_angle_x: float | None = None,
    background=(1.0, 1.0, 1.0),
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], object] = log_stderr,
    say: Callable[[str], object] = print,
) -> dict:
    """Anomaly maps, heatmaps, scores and verdicts for new images of a fitted object.

    ``model``: run folder (or .ply). Coarse-pose candidates are the run's training cameras
    (``cameras.json``); without them, ``max(sphere_views, 200)`` views on a sphere whose
    radius is 3.5 x the model's extent. Images are read at width ``resolution`` (default:
    the training width, else native). Render-and-compare coarse pose (LoFTR needs the
    training images). ``say`` gets the verdict lines (stdout by default), ``log`` the
    messages and notes (stderr by default). Returns the ``detections.json`` dict."""
    out = Path(out)
    ply = resolve_model(model)
    gaussians = load_ply(ply)
    cams_info = load_cameras(ply.parent)
    width = resolution or (cams_info["width"] if cams_info else None)
    queries = _read_queries(images, width, background)
    h, w = queries.shape[1:3]
    fov = camera_angle_x or (cams_info["camera_angle_x"] if cams_info else DEFAULT_CAMERA_ANGLE_X)
    if pose_config.coarse == "loftr":
        log("[splatjax] detect: LoFTR needs the training images; using render-and-compare coarse pose")
    pose_config = dataclasses.replace(pose_config, coarse="render")
    cands, calib_cams = _candidates(gaussians, cams_info, fov, w, h, pose_config, ply, log)
    extractor = make_feature_extractor(map_config.features, map_config.efficientnet_weights, log=log)
    cal = model_calibration(ply, gaussians, calib_cams, _training_images(cams_info, w, background) if cams_info
                            else None, map_config, extractor=extractor, pose_config=pose_config,
                            background=tuple(background), log=log)  # before the maps (residual scales)
    t0 = time.perf_counter()
    det = run_stages(gaussians, queries, cands, pose_config, map_config, key=jax.random.key(seed),
                     extractor=extractor, background=tuple(background), progress=progress_bars(progress),
                     residual=cal.residual)
    seconds = time.perf_counter() - t0
    names = _names(images)
    write_heatmaps(out / "heatmaps", names, queries, det.renders, det.maps.maps, det.maps.scores, cal,
                   progress=progress_bars(progress))
    atomic_write(out / "maps.npy", lambda f: np.save(f, det.maps.maps.astype(np.float32)))
    result = {
        "model": str(ply), "features": det.maps.features, "coarse_method": det.poses.method,
        "fine_steps": int(pose_config.steps), "seconds": seconds, "maps": "maps.npy",
        "threshold": cal.threshold, "heatmap_scale": [cal.vmin, cal.vmax],
        "images": [{"path": str(p), "score": float(s), "verdict": verdict(s, cal), "heatmap": f"heatmaps/{n}.png",
                    "final_loss": float(det.poses.loss[i]), "pose_diverged": bool(det.poses.diverged[i]),
                    "pose_best_step": int(det.poses.best_step[i]), "c2w": det.poses.c2w[i].tolist()}
                   for i, (p, s, n) in enumerate(zip(images, det.maps.scores, names))],
    }
    write_json(out / "detections.json", result)
    for item in result["images"]:
        say(f"{item['path']}: score {item['score']:.4g}, threshold {cal.threshold:.4g} -> {item['verdict']}")
        if item["pose_diverged"]:
            log(f"{item['path']}: note: the fine pose diverged (its loss became NaN/inf or grew); the pose is its "
                f"best iterate (step {item['pose_best_step']}) and the verdict may be unreliable")
    return result
