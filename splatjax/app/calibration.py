"""The model's heatmap calibration in its run folder (``RUN/map_calibration.json``).

One entry per setting (features, map size, sigma, score, image size, and what the renders
were compared with), each a :class:`splatjax.anomaly.MapCalibration` plus the SHA-256 of
the ``model.ply`` it was measured on: an entry belongs to the model's *content*, so a
copied run folder (whose file times change) reuses it and a refitted model is calibrated
again; entries without the hash (older files, keyed on the file's time) are measured
again. Computed lazily the first time a model's maps are drawn:

- with the training views (``evaluate``; ``detect`` when ``cameras.json`` names images it
  can find): ``MapConfig.calibration_views`` evenly spaced views rendered at their own
  poses, maps against the images;
- without them (a bare .ply, or images not found): the same views' renders against
  renders at slightly moved poses (0.005 rad, 0.01 units), a stand-in for the residual
  pose error (said in the log), stored under its own key (``.../moved-renders``).

An image-based entry for the model's content is always preferred (also when the images
are not found now); the stand-in is used only when there is none, so a later run that
finds the images measures and stores the image-based one.

With ``MapConfig.normalise`` the same pairs first give the model's residual scales
(:func:`splatjax.anomaly.residual_scales`), kept in the entry: the calibration must then
be had *before* the test maps, which are normalised with ``calibration.residual``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..anomaly import MapCalibration, MapConfig, calibrate, compute_maps, residual_scales
from ..anomaly.calibration import calibration_key
from ..camera import Camera
from ..context import QUIET, Context
from ..errors import DatasetError
from ..files import file_sha256, read_json, write_json
from ..pose import PoseConfig, index_cameras, moved_camera, render_views

__all__ = ["model_calibration", "CALIBRATION_FILE", "MOVED_RENDERS"]

CALIBRATION_FILE = "map_calibration.json"


MOVED_RENDERS = "/moved-renders"  # key suffix of the stand-in (renders against renders at moved poses)


def _key(features: str, config: MapConfig, cameras: Camera) -> str:
    return calibration_key(features, config.map_size, config.map_sigma, config.score, score_k=config.score_k,
                           normalise=config.normalise, shift_radius=config.shift_radius) + \
        f"/image{cameras.width}x{cameras.height}"


def _stored(path: Path, key: str, digest: str) -> MapCalibration | None:
    if not path.is_file():
        return None
    try:
        entry = read_json(path, "heatmap calibration")[key]
        if entry.get("model_sha256") != digest:
            return None
        return MapCalibration.from_dict(entry)
    except (DatasetError, KeyError, TypeError, ValueError, AttributeError):
        return None


def _perturbed(cameras: Camera) -> Camera:
    """Each camera moved by a fixed small screw (0.005 rad about a tilted axis, 0.01 units)."""
    axis = jnp.asarray([0.6, 0.64, 0.48], jnp.float32)
    params = {"w": axis, "v": jnp.asarray([0.8, -0.6, 0.0], jnp.float32), "theta": jnp.asarray(0.005, jnp.float32)}
    return jax.vmap(lambda c: moved_camera(c, params, exact_exp=True))(cameras)


def model_calibration(
    ply: Path,
    gaussians,
    cameras: Camera,
    images: np.ndarray | Callable[[np.ndarray], np.ndarray | None] | None,
    map_config: MapConfig,
    *,
    extractor,
    pose_config: PoseConfig = PoseConfig(),
    context: Context = QUIET,
    model_sha256: str | None = None,
) -> MapCalibration:
    """The calibration of the model ``ply`` for ``map_config``: read from the run folder,
    else measured on the views ``cameras`` (with their ``images``: an array, a function
    of the selected view indices returning their images or None, or None for the
    perturbed-render stand-in) and stored there; renders with ``pose_config.backend`` over
    ``pose_config.background``. ``model_sha256``: the file's hash when
    the caller has it (else computed)."""
    path = Path(ply).parent / CALIBRATION_FILE
    digest = model_sha256 or file_sha256(ply)
    key = _key(extractor.name, map_config, cameras)
    found = _stored(path, key, digest)
    if found is not None:
        return found
    n = int(cameras.R.shape[0])
    idx = np.unique(np.round(np.linspace(0, n - 1, min(map_config.calibration_views, n))).astype(np.int64))
    if callable(images):
        images = images(idx)
    elif images is not None:
        images = np.asarray(images)[idx]
    if images is None:
        key += MOVED_RENDERS
        found = _stored(path, key, digest)
        if found is not None:
            return found
    cams = index_cameras(cameras, jnp.asarray(idx))
    renders = render_views(gaussians, cams, batch_size=pose_config.batch_size, backend=pose_config.backend,
                           background=pose_config.background)
    if images is None:
        context.say(f"[splatjax] {ply}: no training images, so the heatmap scale is calibrated on renders at "
                    "slightly moved poses instead")
        reference = render_views(gaussians, _perturbed(cams), batch_size=pose_config.batch_size,
                                 backend=pose_config.backend, background=pose_config.background)
    else:
        reference = jnp.asarray(images)
    residual = None
    if map_config.normalise != "none":
        residual = residual_scales(renders, reference, extractor, size=map_config.map_size, chunk=map_config.chunk)
    maps = compute_maps(renders, reference, map_config, extractor=extractor, residual=residual)
    cal = calibrate(maps.scores, map_config, extractor.name, residual=residual)
    try:
        stored = read_json(path, "heatmap calibration") if path.is_file() else {}
    except DatasetError:  # a damaged file of ours: rewrite it
        stored = {}
    stored = stored if isinstance(stored, dict) else {}
    stored[key] = {**cal.to_dict(), "model_sha256": digest}
    write_json(path, stored)
    return cal
