"""``detect``: new images of a fitted object through the stages, one verdict per image.

Writes ``out/detections.json`` (the model's SHA-256 and settings; per image: absolute
path, score, verdict, heatmap, final loss, whether the fine pose diverged and the step of
the kept iterate, camera-to-world pose; the threshold and colour scale), ``out/maps.npy``
and ``out/heatmaps/<folder>_<name>.png`` on the model's fixed scale
(:mod:`splatjax.app.calibration`), and says ``<image>: score S, threshold T ->
ANOMALOUS/normal`` for every image (plus a note for an image whose fine pose diverged).
Nothing written depends on where the run folder is or on the current folder (no model
path, no times): a copied model gives byte-identical files.
The verdict lines go through ``say`` (stdout by default); a note for an image whose fine
pose diverged goes to the context's log (stderr by default).
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
from ..context import Context
from ..errors import UserError
from ..files import atomic_write, file_sha256, write_json
from ..gaussians import load_ply
from ..pose import PoseConfig, candidate_cameras, cameras_from_c2w, sphere_cameras
from .calibration import HeldOut, held_out_among, heldout_paths, model_calibration
from .outdir import check_writable_out
from .report import verdict, write_heatmaps
from .logs import console_context
from .runs import CAMERAS_FILE, load_cameras, model_supersample, resolve_model
from .stages import pose_trust, run_stages

__all__ = ["detect"]

DEFAULT_CAMERA_ANGLE_X = 0.6911112070083618  # the NeRF-synthetic / MAD field of view, radians


def _read_queries(image_paths, width, background, cams_info=None) -> np.ndarray:
    """The queries at the model's image shape; refused (one line naming the file) when one
    has another aspect ratio than the training views or, unless the training views are
    known to be opaque, is opaque with a border that is not the background (as ``fit``
    refuses such an image among transparent ones)."""
    from ..data.images import has_transparency, read_query_images
    from ..errors import DatasetError

    if not image_paths:
        raise UserError("detect: no images given")
    expected = (int(cams_info["width"]), int(cams_info["height"])) if cams_info else None
    peers_transparent = True  # unknown training views: the model is rendered onto the background
    found = [q for q in (cams_info or {}).get("paths") or () if q is not None]
    if found:
        try:
            peers_transparent = has_transparency(found[0])
        except (DatasetError, OSError):
            pass
    return read_query_images(image_paths, background=background, resolution=width, expected_size=expected,
                             transparent_peers=peers_transparent)


def _training_images(cams_info, width, background) -> Callable[[np.ndarray], np.ndarray | None]:
    """The selected training views' images from the paths :func:`load_cameras` found, or
    None when one of them was not found or is unreadable."""
    def load(idx):
        from ..data.images import read_rgb
        from ..errors import DatasetError

        paths = cams_info.get("paths") if cams_info else None
        if not paths or any(paths[i] is None for i in idx):
            return None
        try:
            return np.stack([read_rgb(paths[i], background=background, resolution=width)[0] for i in idx])
        except (DatasetError, OSError):
            return None

    return load


def _say_missing_images(cams_info, ply: Path, context: Context) -> None:
    """One log line when the run's training images (for the calibration) are not all found."""
    paths = cams_info.get("paths") if cams_info else None
    if cams_info is None or (paths and all(p is not None for p in paths)):
        return
    if not paths:
        context.say(f"[splatjax] {ply.parent}: the training images are not recorded (nor found through the dataset in "
                    "info.json); the heatmap scale is the one stored for this model, else calibrated on renders")
        return
    missing = sum(p is None for p in paths)
    context.say(f"[splatjax] {ply.parent / CAMERAS_FILE}: {missing} of {len(paths)} training images not found (not at "
                "their recorded paths, nor relative to the run folder or the dataset folder in info.json); the heatmap "
                "scale is the one stored for this model, else calibrated on renders")


def _candidates(gaussians, cams_info, fov, w, h, pose_config, ply, context: Context):
    """(coarse candidates, training cameras or the sphere views for the calibration)."""
    if cams_info is not None:
        train = cameras_from_c2w(cams_info["c2w"], fov, w, h)
        return candidate_cameras(train, pose_config), train
    means = np.asarray(gaussians.means)
    extent = float(np.percentile(np.linalg.norm(means - np.median(means, 0), axis=1), 95))
    n = max(pose_config.sphere_views, 200)
    context.say(f"[splatjax] {ply.parent}: no training cameras ({CAMERAS_FILE}); coarse pose candidates are "
                f"{n} views on a sphere of radius {3.5 * extent:.2f}")
    cands, _ = sphere_cameras(n, 3.5 * extent, fov, w, h, target=np.median(means, 0))
    return cands, cands


def _heldout(ply: Path, cams_info, fov: float, w: int, h: int, cands, background, pose_config) -> HeldOut | None:
    """The views the model's fit held out (``info.json`` ``val_views``) that can be read,
    looked for among the candidates without their own cameras; None when there are none."""
    from ..data.images import read_rgb
    from ..errors import DatasetError

    val = heldout_paths(ply)
    try:
        images = np.stack([read_rgb(p, background=background, resolution=w)[0] for p in val])
    except (DatasetError, OSError, ValueError):
        return None  # no record (nothing to stack), or an image gone: the train-max threshold is used
    if images.shape[1:3] != (h, w):
        return None
    paths = cams_info.get("paths") if cams_info else None
    if paths:
        keep = np.setdiff1d(np.arange(len(paths)), held_out_among(val, paths))
        cands = candidate_cameras(cameras_from_c2w(np.asarray(cams_info["c2w"])[keep], fov, w, h), pose_config)
    return HeldOut(images=images, candidates=cands)


def _names(image_paths) -> list[str]:
    """Heatmap names ``<folder>_<stem>`` from the images' absolute paths (so the same image
    gets the same name from any current folder)."""
    names: list[str] = []
    for p in image_paths:
        p = Path(os.path.abspath(p))
        stem = p.parent.name + "_" + p.stem
        while stem in names:
            stem += "_"
        names.append(stem)
    return names


def _detections(digest: str, det, pose_config, cal, images, names, trust) -> dict:
    """The ``detections.json`` record: the model's SHA-256, the settings that shaped the
    verdicts, and per image its score, verdict, heatmap, pose and pose diagnostics."""
    iou, trusted = trust.iou, trust.trusted
    return {
        "model_sha256": digest, "features": det.maps.features, "coarse_method": det.poses.method,
        "pose_config": dataclasses.asdict(pose_config), "maps": "maps.npy",
        "threshold": cal.threshold, "threshold_rule": cal.describe(), "heatmap_scale": [cal.vmin, cal.vmax],
        "images": [{"path": os.path.abspath(p), "score": float(s), "score_over_threshold": float(s) / cal.threshold,
                    "verdict": verdict(s, cal, trusted[i]), "silhouette_iou": float(iou[i]),
                    "pose_trusted": bool(trusted[i]), "pose_loss_ratio": float(trust.loss_ratio[i]),
                    "pose_residual_ratio": float(trust.residual_ratio[i]),
                    "pose_outline_ratio": float(trust.outline_ratio[i]),
                    "pose_untrusted_reason": trust.reasons[i],
                    "heatmap": f"heatmaps/{n}.png", "final_loss": float(det.poses.loss[i]),
                    "pose_diverged": bool(det.poses.diverged[i]), "pose_best_step": int(det.poses.best_step[i]),
                    "pose_steps": int(det.poses.fine_steps[i]), "pose_retried": int(det.poses.retried[i]),
                    "pose_retry_rank": int(det.poses.retry_rank[i]),
                    "pose_half_turn": int(det.poses.half_turn[i]),
                    "pose_half_turn_ratio": float(det.poses.half_turn_ratio[i]),
                    "c2w": det.poses.c2w[i].tolist()}
                   for i, (p, s, n) in enumerate(zip(images, det.maps.scores, names))],
    }


def _say_verdicts(images, result: dict, cal, say, context: Context) -> None:
    """One verdict line per image through ``say``, with why a pose is not trusted; a note
    through ``context`` for a pose that diverged."""
    for given, item in zip(images, result["images"]):
        why = "" if item["pose_trusted"] else f" ({item['pose_untrusted_reason']})"
        say(f"{given}: score {item['score']:.4g}, threshold {cal.threshold:.4g} ({cal.describe()}) -> "
            f"{item['verdict'].upper() if not item['pose_trusted'] else item['verdict']}{why}")
        if item["pose_diverged"]:
            context.say(f"{given}: note: the fine pose diverged (its loss became NaN/inf or grew); the pose is its "
                        f"best iterate (step {item['pose_best_step']}) and the verdict may be unreliable")


def detect(
    model: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    pose_config: PoseConfig = PoseConfig(coarse="render"),
    map_config: MapConfig = MapConfig(),
    resolution: int | None = None,
    camera_angle_x: float | None = None,
    seed: int = 0,
    context: Context | None = None,
    say: Callable[[str], object] = print,
) -> dict:
    """Anomaly maps, heatmaps, scores and verdicts for new images of a fitted object.

    ``model``: run folder (or .ply). Coarse-pose candidates are the run's training cameras
    (``cameras.json``); without them, ``max(sphere_views, 200)`` views on a sphere whose
    radius is 3.5 x the model's extent. Images are read at width ``resolution`` (default:
    the training width, else native). Render-and-compare coarse pose (LoFTR needs the
    training images). Images are composited on, and the model rendered over,
    ``pose_config.background``. ``say`` gets the verdict lines (stdout by default),
    ``context`` the messages, notes and progress (None: stderr). Returns the
    ``detections.json`` dict."""
    check_writable_out(out)
    context = console_context() if context is None else context
    background = pose_config.background
    out = Path(out)
    ply = resolve_model(model)
    gaussians = load_ply(ply)
    digest = file_sha256(ply)
    cams_info = load_cameras(ply.parent)
    _say_missing_images(cams_info, ply, context)
    width = resolution or (cams_info["width"] if cams_info else None)
    queries = _read_queries(images, width, background, cams_info)
    h, w = queries.shape[1:3]
    fov = camera_angle_x or (cams_info["camera_angle_x"] if cams_info else DEFAULT_CAMERA_ANGLE_X)
    if pose_config.coarse == "loftr":
        context.say("[splatjax] detect: LoFTR needs the training images; using render-and-compare coarse pose")
    pose_config = dataclasses.replace(pose_config, coarse="render", supersample=model_supersample(ply))
    cands, calib_cams = _candidates(gaussians, cams_info, fov, w, h, pose_config, ply, context)
    extractor = make_feature_extractor(map_config.features, map_config.efficientnet_weights, context=context)
    heldout = _heldout(ply, cams_info, fov, w, h, cands, background, pose_config)
    cal = model_calibration(ply, gaussians, calib_cams, _training_images(cams_info, w, background) if cams_info
                            else None, map_config, extractor=extractor, pose_config=pose_config, heldout=heldout,
                            context=context, model_sha256=digest)  # before the maps
    t0 = time.perf_counter()
    det = run_stages(gaussians, queries, cands, pose_config, map_config, key=jax.random.key(seed),
                     extractor=extractor, context=context, residual=cal.residual, highlight_cap=cal.highlight_cap,
                     calibration=cal)
    context.say(f"[splatjax] detect: poses and maps of {len(queries)} images in {time.perf_counter() - t0:.1f} s")
    names, trust = _names(images), pose_trust(det.renders, queries, pose_config, det.poses.loss, cal)
    write_heatmaps(out / "heatmaps", names, queries, det.renders, det.maps.maps, det.maps.scores, cal,
                   trusted=trust.trusted, context=context)
    atomic_write(out / "maps.npy", lambda f: np.save(f, det.maps.maps.astype(np.float32)))
    result = _detections(digest, det, pose_config, cal, images, names, trust)
    write_json(out / "detections.json", result)
    _say_verdicts(images, result, cal, say, context)
    return result
