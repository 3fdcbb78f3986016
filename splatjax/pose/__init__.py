"""Pose estimation for query images of a fitted object: coarse retrieval, then SplatPose's
gradient refinement, batched; and renders at the estimated poses.

The stage is :func:`estimate_poses` (gaussians, queries, candidate cameras,
:class:`PoseConfig`, ``key``) -> :class:`PoseEstimate`; :func:`render_views` renders the
model at the estimated cameras. The parts: :mod:`.coarse` (render-and-compare and LoFTR
retrieval), :mod:`.fine` (screw parameters, Adam, vmapped chunks), :mod:`.cameras`
(camera batches, camera-to-world, sphere and in-plane candidates), :mod:`.config`.

Poses returned to users are camera-to-world 4 x 4 in the Blender/OpenGL convention
(:func:`camera_to_c2w`), the convention of ``transforms.json`` data.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..camera import Camera
from ..gaussians import Gaussians
from ..sharding import ParallelConfig
from .cameras import (
    as_batch,
    camera_to_c2w,
    cameras_from_c2w,
    index_cameras,
    inplane_angles,
    inplane_rotations,
    sphere_cameras,
)
from .coarse import coarse_pose_loftr, coarse_pose_render, render_views, resolve_coarse
from .config import PoseConfig
from .fine import fine_lr_schedule, init_screw, moved_camera, refine_pose, refine_poses, screw_motion

__all__ = [
    "PoseConfig",
    "PoseEstimate",
    "estimate_poses",
    "candidate_cameras",
    "render_views",
    "refine_pose",
    "refine_poses",
    "coarse_pose_render",
    "coarse_pose_loftr",
    "resolve_coarse",
    "fine_lr_schedule",
    "init_screw",
    "screw_motion",
    "moved_camera",
    "camera_to_c2w",
    "cameras_from_c2w",
    "index_cameras",
    "sphere_cameras",
    "inplane_rotations",
]

Progress = Callable[[str, int, int], object]


@dataclasses.dataclass(frozen=True)
class PoseEstimate:
    """Coarse and fine poses of Q queries.

    coarse_index: index into the candidates; coarse_score: its distance (render) or match
    count (loftr); coarse_cameras / cameras: stacked starting / refined cameras;
    coarse_c2w / c2w: Blender camera-to-world [Q, 4, 4]; loss_traces [Q, k];
    method: "render" or "loftr"; seconds: {"coarse": s, "fine": s}.
    """

    coarse_index: np.ndarray
    coarse_score: np.ndarray
    coarse_cameras: Camera
    cameras: Camera
    coarse_c2w: np.ndarray
    c2w: np.ndarray
    loss_traces: np.ndarray
    method: str
    seconds: dict


def candidate_cameras(training_cameras: Camera, config: PoseConfig) -> Camera:
    """The coarse-pose candidates: the training cameras plus ``config.sphere_views``
    cameras on a Fibonacci sphere (radius: the median distance of the training camera
    centres from the origin; field of view and size of the first training camera)."""
    cams = as_batch(training_cameras)
    if not config.sphere_views:
        return cams
    radius = float(np.median(np.linalg.norm(np.asarray(cams.center, np.float64), axis=-1)))
    fov = 2.0 * math.atan(0.5 * cams.width / float(np.asarray(cams.fx).reshape(-1)[0]))
    extra, _ = sphere_cameras(config.sphere_views, radius, fov, cams.width, cams.height)
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), cams, extra)


def _coarse(gaussians, queries, cands, config, *, candidate_images, loftr_matcher, background, progress, log):
    """(method, candidate cameras searched, index [Q], score [Q])."""
    method = resolve_coarse(config.coarse, config.loftr_weights, log=log) if loftr_matcher is None else (
        "loftr" if config.coarse in ("auto", "loftr") else config.coarse)
    if method == "loftr":
        if candidate_images is None:
            raise ValueError("estimate_poses: LoFTR coarse pose needs candidate_images (the training images)")
        n_train = candidate_images.shape[0]
        idx, score = coarse_pose_loftr(queries, candidate_images, matcher=loftr_matcher,
                                       weights=config.loftr_weights, progress=progress)
        return method, index_cameras(cands, slice(0, n_train)), idx, score
    if config.inplane_rotations:
        cands = inplane_rotations(cands, np.concatenate([[0.0], inplane_angles(config.inplane_rotations)]))
    idx, score = coarse_pose_render(gaussians, cands, queries, resolution=config.coarse_resolution,
                                    backend=config.backend, background=background, progress=progress)
    return method, cands, idx, score


def estimate_poses(
    gaussians: Gaussians,
    queries: Float[Array, "Q H W 3"],
    candidates: Camera,
    config: PoseConfig = PoseConfig(),
    *,
    key: jax.Array,
    candidate_images: Float[Array, "C H W 3"] | None = None,
    loftr_matcher=None,
    background=(1.0, 1.0, 1.0),
    progress: Progress | None = None,
    log: Callable[[str], object] | None = None,
    parallel: ParallelConfig | None = None,
) -> PoseEstimate:
    """The pose stage: coarse pose then fine pose for every query.

    ``candidates``: stacked cameras at the query resolution, e.g.
    :func:`candidate_cameras` of the training cameras; for LoFTR the first C of them
    must be the cameras of ``candidate_images`` (the training images).
    Render-and-compare adds ``config.inplane_rotations`` rolls of every candidate.
    ``progress(stage, done, total)`` reports chunks; ``log`` says which coarse method
    "auto" chose; ``parallel`` shards the fine pose over local devices (see
    :func:`refine_poses`)."""
    queries = jnp.asarray(queries, jnp.float32)
    t0 = time.perf_counter()
    method, cands, idx, score = _coarse(gaussians, queries, as_batch(candidates), config,
                                        candidate_images=candidate_images, loftr_matcher=loftr_matcher,
                                        background=background, progress=progress, log=log)
    coarse_cams = index_cameras(cands, jnp.asarray(idx))
    jax.block_until_ready(coarse_cams.R)
    t1 = time.perf_counter()
    cams, traces = refine_poses(gaussians, coarse_cams, queries, config, key=key, background=background,
                                progress=progress, parallel=parallel)
    traces = np.asarray(traces)
    t2 = time.perf_counter()
    return PoseEstimate(
        coarse_index=np.asarray(idx), coarse_score=np.asarray(score), coarse_cameras=coarse_cams, cameras=cams,
        coarse_c2w=camera_to_c2w(coarse_cams), c2w=camera_to_c2w(cams), loss_traces=traces, method=method,
        seconds={"coarse": t1 - t0, "fine": t2 - t1},
    )
