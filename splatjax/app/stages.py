"""The detection stages composed once, for ``evaluate`` and ``detect`` alike:
poses (coarse + fine) -> renders at the estimated poses -> anomaly maps and scores."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..anomaly import MapCalibration, MapConfig, Maps, compute_maps
from ..camera import Camera
from ..context import QUIET, Context
from ..gaussians import Gaussians
from ..pose import (PoseConfig, PoseEstimate, PoseTrust, estimate_poses, index_cameras, render_views, retry_poses,
                    trust_poses)
from ..sharding import ParallelConfig

__all__ = ["Detection", "run_stages", "pose_trust"]


@dataclasses.dataclass(frozen=True)
class Detection:
    """What the stages give for Q queries: ``poses`` (:class:`splatjax.pose.PoseEstimate`),
    ``renders`` [Q, H, W, 3] at the fine poses, ``maps`` (:class:`splatjax.anomaly.Maps`)
    and ``seconds`` per stage ("coarse", "polish", "screen", "fine", "retry" (with a calibration),
    "render", "maps")."""

    poses: PoseEstimate
    renders: np.ndarray
    maps: Maps
    seconds: dict


def run_stages(
    gaussians: Gaussians,
    queries: Float[Array, "Q H W 3"],
    candidates: Camera,
    pose_config: PoseConfig,
    map_config: MapConfig,
    *,
    key: jax.Array,
    extractor,
    candidate_images: np.ndarray | None = None,
    polish=None,
    context: Context = QUIET,
    parallel: ParallelConfig | None = None,
    residual=None,
    highlight_cap: float | None = None,
    calibration: MapCalibration | None = None,
) -> Detection:
    """Poses, renders and maps of ``queries`` (see :func:`splatjax.pose.estimate_poses`
    and :func:`splatjax.anomaly.compute_maps`; the renders over ``pose_config.background``);
    ``context`` gets progress and messages; ``parallel`` shards the fine pose, the
    renders and the (weights-free) maps over local devices; ``polish`` moves every coarse
    candidate before the fine pose (see :func:`splatjax.pose.estimate_poses`); ``residual``:
    the model's residual scales for ``map_config.normalise`` (its calibration's ``residual``);
    ``highlight_cap``: its calibration's ``highlight_cap`` for ``map_config.highlights``.
    ``key``: one key, or the Q * K per-hypothesis keys (a slice of the whole run's, so that
    queries run in batches get the numbers of one run; ``evaluate`` does so). With the model's
    ``calibration`` (the references of the trust rules) and ``pose_config.pose_retries`` > 0,
    the queries whose pose :func:`pose_trust` distrusts are retried from other candidates
    (:func:`splatjax.pose.retry_poses`, a round at a time until trusted; the renders of moved
    poses count in "retry") before the maps; without it nothing is retried."""
    est = estimate_poses(gaussians, queries, candidates, pose_config, key=key, candidate_images=candidate_images,
                         polish=polish, context=context, parallel=parallel)
    t0 = time.perf_counter()
    renders = _render(gaussians, est.cameras, pose_config, context, parallel)
    render_s = time.perf_counter() - t0
    if calibration is not None and pose_config.pose_retries > 0:
        distrusted = ~pose_trust(renders, queries, pose_config, est.loss, calibration).trusted

        def still_distrusted(estimate: PoseEstimate, moved: np.ndarray) -> np.ndarray:
            # a round moved these poses: render them there and ask the trust rules again
            renders[moved] = _render(gaussians, index_cameras(estimate.cameras, jnp.asarray(moved)), pose_config,
                                     context, parallel)
            return ~pose_trust(renders[moved], np.asarray(queries)[moved], pose_config, estimate.loss[moved],
                               calibration).trusted

        est = retry_poses(gaussians, queries, est, distrusted, pose_config, key=key, context=context,
                          parallel=parallel, still_distrusted=still_distrusted)
    seconds = dict(est.seconds, render=render_s)
    t0 = time.perf_counter()
    maps = compute_maps(renders, queries, map_config, extractor=extractor, parallel=parallel, residual=residual,
                        highlight_cap=highlight_cap)
    seconds["maps"] = time.perf_counter() - t0
    return Detection(poses=est, renders=renders, maps=maps, seconds=seconds)


def _render(gaussians, cameras, pose_config: PoseConfig, context: Context, parallel) -> np.ndarray:
    """Renders [B, H, W, 3] of the model at ``cameras`` over ``pose_config.background``."""
    return np.array(render_views(gaussians, cameras, batch_size=pose_config.batch_size, backend=pose_config.backend,
                                 background=pose_config.background, context=context, parallel=parallel,
                                 supersample=pose_config.supersample))


def pose_trust(renders: np.ndarray, queries: np.ndarray, pose_config: PoseConfig, losses: np.ndarray | None = None,
               calibration: MapCalibration | None = None) -> PoseTrust:
    """:func:`splatjax.pose.trust_poses` of the renders at the fine poses against the queries
    over ``pose_config.background``, with ``pose_config.min_silhouette_iou``,
    ``pose_config.max_residual_ratio`` and ``residual_outline_ratio`` (against the
    calibration's ``heldout_pose_residual`` and ``heldout_pose_mismatch``) and
    ``pose_config.max_loss_ratio`` (the fine poses' ``losses`` against its
    ``heldout_pose_loss``, asking the outline alike); without a calibration only the
    silhouette counts."""
    cal = calibration
    return trust_poses(np.asarray(renders), np.asarray(queries), losses, pose_config.background,
                       min_iou=pose_config.min_silhouette_iou, max_loss_ratio=pose_config.max_loss_ratio,
                       reference_loss=cal.heldout_pose_loss if cal else 0.0,
                       max_residual_ratio=pose_config.max_residual_ratio,
                       reference_residual=cal.heldout_pose_residual if cal else 0.0,
                       residual_outline_ratio=pose_config.residual_outline_ratio,
                       reference_mismatch=cal.heldout_pose_mismatch if cal else 0.0)
