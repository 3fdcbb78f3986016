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

The threshold (``MapConfig.threshold_rule``): "train-max" keeps the entry above
(``threshold_factor`` x the largest training-view score). "held-out" (and "auto" when
the model has views held out of its fit, :class:`HeldOut`) runs those views and
``calibration_rolls`` rolled copies of each through the whole pipeline as queries (coarse
pose among the other training cameras, keypoint polish, fine pose, render, maps) and sets
the threshold at ``false_positive_rate`` of the scores of those whose pose the trust rules
accept as a test query's would be (the silhouette, then the residual against the median of
the silhouette-trusted ones: :meth:`HeldOutScores.counted`; a query that would get "pose
not found" has no score verdict to calibrate) (:func:`splatjax.anomaly.with_heldout`);
stored under the key + ``/held-out-...``.

With ``MapConfig.normalise`` the same pairs first give the model's residual scales
(:func:`splatjax.anomaly.residual_scales`), kept in the entry: the calibration must then
be had *before* the test maps, which are normalised with ``calibration.residual``. Likewise
with ``MapConfig.highlights`` "calibrated" (the default): the same pairs give the model's
highlight cap (:func:`splatjax.anomaly.highlight_cap`), ``calibration.highlight_cap``, with
which every later query (held-out ones included) is discounted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..anomaly import (MapCalibration, MapConfig, calibrate, compute_maps, highlight_cap, residual_scales,
                       with_heldout)
from ..anomaly.calibration import calibration_key
from ..camera import Camera
from ..context import QUIET, Context
from ..data.roll import roll_image
from ..errors import DatasetError, UserError
from ..files import file_sha256, read_json, write_json
from ..pose import PoseConfig, candidate_cameras, index_cameras, moved_camera, outline_gated, render_views
from .runs import recorded_data_dir

__all__ = ["model_calibration", "heldout_scores", "HeldOutScores", "heldout_queries", "roll_angles", "heldout_views",
           "heldout_paths", "held_out_among", "held_out_in_moved_data", "HeldOut", "CALIBRATION_FILE",
           "MOVED_RENDERS"]

CALIBRATION_FILE = "map_calibration.json"
POSE_DIGEST_LENGTH = 12  # hex digits of the pose settings' digest in a held-out calibration's key


MOVED_RENDERS = "/moved-renders"  # key suffix of the stand-in (renders against renders at moved poses)


def _key(features: str, config: MapConfig, cameras: Camera, supersample: int = 1) -> str:
    """The calibration's key: the map settings, the image size and (when not 1) the renders'
    samples per pixel side."""
    return calibration_key(features, config.map_size, config.map_sigma, config.score, score_k=config.score_k,
                           normalise=config.normalise, shift_radius=config.shift_radius, highlights=config.highlights,
                           highlight_percentile=config.highlight_percentile,
                           highlight_saturation=config.highlight_saturation,
                           highlight_space=config.highlight_space) + \
        f"/image{cameras.width}x{cameras.height}" + (f"/supersample{supersample}" if supersample != 1 else "")


def _read_stored(path: Path) -> dict:
    """The calibration file's entries by key (empty when the file is missing or unreadable)."""
    try:
        stored = read_json(path, "heatmap calibration") if path.is_file() else {}
    except DatasetError:
        return {}
    return stored if isinstance(stored, dict) else {}


def _entry(stored: dict, key: str, digest: str) -> MapCalibration | None:
    """The entry ``key`` of ``stored`` if it was measured on the model with sha256 ``digest``."""
    try:
        entry = stored[key]
        if entry.get("model_sha256") != digest:
            return None
        return MapCalibration.from_dict(entry)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _stored(path: Path, key: str, digest: str) -> MapCalibration | None:
    return _entry(_read_stored(path), key, digest)


def _stored_other_pose(path: Path, head: str, tail: str, digest: str) -> MapCalibration | None:
    """The first stored entry (in key order) named ``head + <pose digest> + tail``: a held-out
    calibration of the same model and map settings measured with any pose settings (evaluate's,
    where detect poses by render-and-compare), for when the held-out views cannot be read again."""
    stored = _read_stored(path)
    for k in sorted(stored):
        if k.startswith(head) and k.endswith(tail) and len(k) == len(head) + POSE_DIGEST_LENGTH + len(tail):
            found = _entry(stored, k, digest)
            if found is not None:
                return found
    return None


def _perturbed(cameras: Camera) -> Camera:
    """Each camera moved by a fixed small screw (0.005 rad about a tilted axis, 0.01 units)."""
    axis = jnp.asarray([0.6, 0.64, 0.48], jnp.float32)
    params = {"w": axis, "v": jnp.asarray([0.8, -0.6, 0.0], jnp.float32), "theta": jnp.asarray(0.005, jnp.float32)}
    return jax.vmap(lambda c: moved_camera(c, params, exact_exp=True))(cameras)


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Views held out of a model's fit: their images [K, H, W, 3] (composited on the
    model's background) and the coarse-pose candidates to look for them among (cameras
    without theirs) with those candidates' images (None: render-and-compare only)."""

    images: np.ndarray
    candidates: Camera
    candidate_images: np.ndarray | None = None


def heldout_paths(ply: Path) -> list[str]:
    """The image files the fit of model ``ply`` held out (its run's ``info.json``
    ``val_views``); empty when the run has no such record or it cannot be read."""
    info = Path(ply).parent / "info.json"
    try:
        val = read_json(info, "fit summary").get("val_views") if info.is_file() else None
    except (DatasetError, AttributeError):
        val = None
    return [p for p in val if isinstance(p, str)] if isinstance(val, list) else []


def held_out_among(held: list[str], paths) -> list[int]:
    """Indices of ``paths`` (None entries allowed) that are among the files ``held``, by real path."""
    real = {os.path.realpath(p) for p in held}
    return [i for i, p in enumerate(paths) if p is not None and os.path.realpath(p) in real]


def held_out_in_moved_data(ply: Path, paths) -> list[int]:
    """Indices of ``paths`` that are the files model ``ply``'s fit held out, by their path
    inside the data folder the fit read (``info.json`` ``data``): ``train/good/11.png`` held
    out of ``/old/CLASS`` is ``/new/COPY/train/good/11.png``, for a data folder copied or
    moved since the fit. Empty when the run has no such record."""
    root = recorded_data_dir(Path(ply).parent)
    if root is None:
        return []
    inside = {Path(os.path.relpath(p, root)).parts for p in heldout_paths(ply)}
    inside = {parts for parts in inside if parts and ".." not in parts}
    return [i for i, p in enumerate(paths) if p is not None
            and any(Path(p).parts[-len(parts):] == parts for parts in inside)]


def heldout_views(ply: Path, paths, images: np.ndarray, cameras: Camera, pose_config: PoseConfig) -> HeldOut | None:
    """The views among ``paths`` (with their ``images`` and ``cameras``) that the fit of
    model ``ply`` held out (:func:`heldout_paths`; in a data folder copied or moved since the
    fit, by their path inside it: :func:`held_out_in_moved_data`), looked for among the
    others' cameras (:func:`~splatjax.pose.candidate_cameras`) with their images; None when
    none of ``paths`` was held out, or the run has no such record."""
    idx = held_out_among(heldout_paths(ply), paths) or held_out_in_moved_data(ply, paths)
    if not idx:
        return None
    rest = np.setdiff1d(np.arange(len(paths)), idx)
    others = index_cameras(cameras, jnp.asarray(rest))
    return HeldOut(images=np.asarray(images)[idx], candidates=candidate_cameras(others, pose_config),
                   candidate_images=np.asarray(images)[rest])


def _rolled(images: np.ndarray, angle: float, background) -> np.ndarray:
    """RGB images rolled in-plane by ``angle`` radians; the corners the roll uncovers get
    the background (the object must lie inside the inscribed circle to lose nothing)."""
    rgba = np.concatenate([images, np.ones(images.shape[:-1] + (1,), images.dtype)], axis=-1)
    out = np.stack([roll_image(x, angle) for x in rgba])
    a = out[..., 3:]
    return (out[..., :3] + (1.0 - a) * np.asarray(background, np.float32)).astype(np.float32)


def roll_angles(rolls: int) -> list[float]:
    """The calibration's in-plane angles, radians: 0 (the view itself), then 2 pi j / (rolls + 1)."""
    return [2 * np.pi * j / (rolls + 1) for j in range(rolls + 1)]


def heldout_queries(images: np.ndarray, rolls: int, background) -> np.ndarray:
    """The calibration's queries: the held-out ``images`` [V], then ``rolls`` rolled copies
    of them, one block of V per angle of :func:`roll_angles` ([V * (rolls + 1)], angle-major)."""
    return np.concatenate([images if a == 0 else _rolled(images, a, background) for a in roll_angles(rolls)])


@dataclasses.dataclass(frozen=True)
class HeldOutScores:
    """The held-out queries run through the pipeline (:func:`heldout_scores`), per query [M]:
    its image score, final fine-pose loss, median silhouette residual
    (:func:`~splatjax.pose.silhouette_residual`), whether the silhouette rule trusts its
    pose, and its outline mismatch 1 - silhouette IoU (None: not measured, the residual
    alone counts)."""

    scores: np.ndarray
    losses: np.ndarray
    residuals: np.ndarray
    silhouette_ok: np.ndarray
    mismatches: np.ndarray | None = None

    @property
    def references(self) -> np.ndarray:
        """Mask of the queries whose losses, residuals and outline mismatches give the trust
        rules' references (the medians kept as ``heldout_pose_loss`` / ``heldout_pose_residual``
        / ``heldout_pose_mismatch``): those the silhouette trusts, or all when fewer than two
        are."""
        ok = np.asarray(self.silhouette_ok, bool)
        return ok if ok.sum() >= 2 else np.ones_like(ok)

    def counted(self, max_residual_ratio: float, residual_outline_ratio: float = 0.0,
                max_loss_ratio: float = 0.0) -> np.ndarray:
        """Mask of the queries whose scores set the threshold: of :attr:`references`, those
        the residual and loss rules trust too (as a test query is judged: untrusted when the
        median residual is above ``max_residual_ratio`` x the references' median, or the loss
        above ``max_loss_ratio`` x theirs, and, with ``residual_outline_ratio`` > 0 and
        :attr:`mismatches`, the outline mismatch above ``residual_outline_ratio`` x theirs;
        0: no such rule). A query whose pose is not trusted gets "pose not found", not a score
        verdict, so its score must not set the threshold. All references when fewer than two
        would remain."""
        ref = self.references
        mismatch = float(np.median(self.mismatches[ref])) if self.mismatches is not None else 0.0
        outline = self.mismatches / mismatch if mismatch > 0 else np.full(self.residuals.shape, np.nan)
        gate = residual_outline_ratio if mismatch > 0 else 0.0
        keep = ref.copy()
        for values, max_ratio in ((self.residuals, max_residual_ratio), (self.losses, max_loss_ratio)):
            reference = float(np.median(values[ref]))
            if max_ratio > 0 and reference > 0:
                keep &= ~outline_gated(values / reference, outline, max_ratio, gate)
        return keep if keep.sum() >= 2 else ref


def heldout_scores(gaussians, heldout: HeldOut, pose_config: PoseConfig, map_config: MapConfig, *, extractor,
                   residual=None, highlight_cap: float | None = None, context: Context = QUIET) -> HeldOutScores:
    """The held-out views and ``map_config.calibration_rolls`` copies of each rolled by
    2 pi j / (rolls + 1), run through the whole pipeline as queries with ``pose_config``
    (fine-pose key 0): every query's score, loss, silhouette residual and silhouette trust
    (:class:`HeldOutScores`; which of them set the threshold and the trust references is
    its ``counted`` / ``references``)."""
    from .stages import pose_trust, run_stages

    rolls = map_config.calibration_rolls
    queries = heldout_queries(heldout.images, rolls, pose_config.background)
    context.say(f"[splatjax] calibrating the threshold on {len(heldout.images)} views held out of the fit and "
                f"{rolls} rolled copies of each ({len(queries)} queries through the whole pipeline)")
    det = run_stages(gaussians, queries, heldout.candidates, pose_config, map_config, key=jax.random.key(0),
                     extractor=extractor, candidate_images=heldout.candidate_images, residual=residual,
                     highlight_cap=highlight_cap, context=context)
    trust = pose_trust(det.renders, queries, pose_config)  # no references: the silhouette alone
    return HeldOutScores(scores=np.asarray(det.maps.scores, np.float64),
                         losses=np.asarray(det.poses.loss, np.float64),
                         residuals=np.asarray(trust.residual[:, 0], np.float64),
                         silhouette_ok=np.asarray(trust.trusted),
                         mismatches=1.0 - np.asarray(trust.iou, np.float64))


def _pose_digest(pose_config: PoseConfig) -> str:
    """12 hex digits naming every pose setting the held-out queries were posed with (a
    calibration measured with other pose settings is measured again); ``max_loss_ratio``,
    ``max_residual_ratio`` and ``residual_outline_ratio`` are left out: they do not change how
    these queries are posed (the latter two pick which of them count,
    :meth:`HeldOutScores.counted`, and are in the calibration's key on their own)."""
    settings = dataclasses.asdict(pose_config)
    del settings["max_loss_ratio"], settings["max_residual_ratio"], settings["residual_outline_ratio"]
    if settings["supersample"] == 1:
        del settings["supersample"]  # calibrations stored before the option keep their digests
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:POSE_DIGEST_LENGTH]


def _store(path: Path, key: str, cal: MapCalibration, digest: str) -> MapCalibration:
    stored = _read_stored(path)  # a damaged file of ours is rewritten
    stored[key] = {**cal.to_dict(), "model_sha256": digest}
    write_json(path, stored)
    return cal


def model_calibration(
    ply: Path,
    gaussians,
    cameras: Camera,
    images: np.ndarray | Callable[[np.ndarray], np.ndarray | None] | None,
    map_config: MapConfig,
    *,
    extractor,
    pose_config: PoseConfig = PoseConfig(),
    heldout: HeldOut | None = None,
    context: Context = QUIET,
    model_sha256: str | None = None,
) -> MapCalibration:
    """The calibration of the model ``ply`` for ``map_config``: read from the run folder,
    else measured on the views ``cameras`` (with their ``images``: an array, a function
    of the selected view indices returning their images or None, or None for the
    perturbed-render stand-in) and stored there; renders with ``pose_config.backend`` over
    ``pose_config.background``. The threshold by ``map_config.threshold_rule`` (module
    docstring; ``heldout``: the views held out of the fit; without them a held-out calibration stored in the run
    folder is still read back, e.g. by detect once the data folder has moved). ``model_sha256``: the file's
    hash when the caller has it (else computed)."""
    rule = map_config.threshold_rule
    path, digest = Path(ply).parent / CALIBRATION_FILE, model_sha256 or file_sha256(ply)
    key = None
    if rule != "train-max":
        # the held-out views' count from the images given, else from the fit's record: a calibration stored
        # earlier (by evaluate) is read back even where the held-out images can no longer be read (data moved)
        views = len(heldout.images) if heldout is not None else len(heldout_paths(ply))
        head = (_key(extractor.name, map_config, cameras) + f"/held-out-fpr{map_config.false_positive_rate:g}"
                f"-rolls{map_config.calibration_rolls}-views{views}-pose")
        # older entries (no such suffix; no outline mismatch measured, or one of unfilled silhouettes): measured again
        tail = (f"-residual-counted{pose_config.max_residual_ratio:g}-outline{pose_config.residual_outline_ratio:g}"
                "-filled")
        if pose_config.max_loss_ratio > 0:
            tail += f"-loss-counted{pose_config.max_loss_ratio:g}"
        if map_config.heldout_prior_views > 0:
            tail += f"-prior{map_config.heldout_prior_log_sd:g}x{map_config.heldout_prior_views:g}"
        key = head + _pose_digest(pose_config) + tail
        found = _stored(path, key, digest) if views else None
        if found is None and heldout is None and views:
            found = _stored_other_pose(path, head, tail, digest)
            if found is not None:
                context.say(f"[splatjax] {ply}: the views held out of its fit cannot be read (data folder moved?); "
                            "using the held-out threshold stored with it, measured with other pose settings")
        if found is not None:
            return found
        if heldout is None and rule == "held-out":
            raise UserError(f"{ply}: --threshold-rule held-out needs views held out of the model's fit (info.json "
                            "val_views, images that can be read) or their calibration stored in the run folder; "
                            "this model has neither: use train-max or auto")
    base = _train_calibration(path, digest, gaussians, cameras, images, map_config, extractor=extractor,
                              pose_config=pose_config, context=context)
    if key is None or heldout is None:
        return base
    held = heldout_scores(gaussians, heldout, pose_config, map_config, extractor=extractor, residual=base.residual,
                          highlight_cap=base.highlight_cap, context=context)
    ref = held.references
    counted = held.counted(pose_config.max_residual_ratio, pose_config.residual_outline_ratio,
                           pose_config.max_loss_ratio)
    if not counted.all():
        context.say(f"[splatjax] {int((~counted).sum())} of the {counted.size} held-out queries found no trusted pose "
                    f"({int((~ref).sum())} by the silhouette rule, {int((ref & ~counted).sum())} by the residual and "
                    "loss rules) and do not count for the threshold")
    cal = with_heldout(base, held.scores[counted], map_config, held.losses[ref], held.residuals[ref],
                       held.mismatches[ref])
    return _store(path, key, cal, digest)


def _train_calibration(path: Path, digest: str, gaussians, cameras: Camera, images, map_config: MapConfig, *,
                       extractor, pose_config: PoseConfig, context: Context) -> MapCalibration:
    """The training-view calibration (threshold rule train-max) of :func:`model_calibration`."""
    key = _key(extractor.name, map_config, cameras, pose_config.supersample)
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
                           background=pose_config.background, supersample=pose_config.supersample)
    if images is None:
        context.say(f"[splatjax] {path.parent}: no training images, so the heatmap scale is calibrated on renders at "
                    "slightly moved poses instead")
        reference = render_views(gaussians, _perturbed(cams), batch_size=pose_config.batch_size,
                                 backend=pose_config.backend, background=pose_config.background,
                                 supersample=pose_config.supersample)
    else:
        reference = jnp.asarray(images)
    residual = None
    if map_config.normalise != "none":
        residual = residual_scales(renders, reference, extractor, size=map_config.map_size, chunk=map_config.chunk)
    cap = None
    if map_config.highlights == "calibrated":
        cap = highlight_cap(renders, reference, pose_config.background, map_config.highlight_percentile,
                            map_config.highlight_saturation, map_config.highlight_space)
    maps = compute_maps(renders, reference, map_config, extractor=extractor, residual=residual, highlight_cap=cap)
    return _store(path, key, calibrate(maps.scores, map_config, extractor.name, residual=residual,
                                       highlight_cap=cap), digest)
