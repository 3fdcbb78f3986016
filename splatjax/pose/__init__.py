"""Pose estimation (SplatPose's pose stage): coarse retrieval (:mod:`.coarse`), the keypoint polish (:mod:`.keypoints`), the fine pose (:mod:`.fine`) with its objectives (:mod:`.objectives`), and the whole stage (:mod:`.estimate`, :func:`estimate_poses`)."""

from __future__ import annotations

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
from .trust import PoseTrust, foreground, residual_distrusted, silhouette_iou, silhouette_residual, trust_poses
from .objectives import (
    OBJECTIVES,
    Objective,
    PoseRender,
    charbonnier,
    get_objective,
    masked_photometric,
    objective_names,
    photometric,
    register_objective,
)
from .keypoints import KeypointConfig, keypoint_pose, keypoint_poses, render_depth
from .fine import (
    Refinement,
    fine_level_plan,
    fine_lr_schedule,
    init_screw,
    moved_camera,
    refine_pose,
    refine_poses,
    refine_poses_detailed,
    screw_motion,
)
from .screen import screen_config, screen_hypotheses
from .estimate import (
    Polish,
    PoseEstimate,
    PoseStarts,
    RenderedCandidates,
    candidate_cameras,
    render_candidates,
    keypoint_polish,
    pose_starts,
    estimate_poses,
)

__all__ = [
    "KeypointConfig",
    "keypoint_pose",
    "keypoint_poses",
    "keypoint_polish",
    "render_depth",
    "PoseConfig",
    "foreground",
    "silhouette_iou",
    "silhouette_residual",
    "residual_distrusted",
    "PoseTrust",
    "trust_poses",
    "PoseEstimate",
    "PoseRender",
    "Objective",
    "OBJECTIVES",
    "photometric",
    "masked_photometric",
    "charbonnier",
    "register_objective",
    "get_objective",
    "objective_names",
    "PoseStarts",
    "RenderedCandidates",
    "render_candidates",
    "pose_starts",
    "estimate_poses",
    "candidate_cameras",
    "render_views",
    "refine_pose",
    "refine_poses",
    "refine_poses_detailed",
    "Refinement",
    "screen_config",
    "screen_hypotheses",
    "fine_level_plan",
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
