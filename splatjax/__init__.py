"""splatjax: pose-agnostic 3D anomaly detection with 3D Gaussian splatting, in JAX.

One public namespace. The engine (pure stages over pytrees, options in frozen configs):
``render``, ``fit``, ``estimate_poses`` / ``refine_poses``, ``compute_maps``,
``evaluate_detection``. The application on top (run folders, reports, figures):
``run_fit``, ``evaluate``, ``detect``, ``demo``.

Conventions (see README "Conventions"): images float32 [H, W, 3] in [0, 1]; quaternions
(w, x, y, z); cameras world-to-camera in the OpenCV convention; poses reported to users
camera-to-world in the data's convention.
"""

from . import data, fitting, image, metrics, pose, se3, sharding
from .anomaly import MapCalibration, MapConfig, Maps, calibrate, compute_maps, image_scores
from .anomaly.features import (
    EfficientNetFeatures,
    FeatureExtractor,
    Lite0Features,
    WeightsFreeFeatures,
    make_feature_extractor,
)
from .nets.weights import (
    find_efficientnet_weights,
    find_lite0_weights,
    find_loftr_weights,
    load_efficientnet_b4,
    load_efficientnet_lite0,
    load_loftr,
)
from .app.demo import demo
from .app.detect import detect
from .app.evaluate import evaluate
from .app.fit_run import run_fit
from .context import QUIET, Context
from .camera import Camera, blender_c2w_from_camera, camera_from_blender, look_at_c2w, stack_cameras
from .data import (
    class_folders,
    detect_format,
    load_blender,
    load_colmap,
    load_mad_class,
    load_test_poses,
    SynthConfig,
    make_synth_dataset,
    make_toy_dataset,
)
from .errors import ConfigError, DatasetError, UserError, WeightsError
from .fitting import FitConfig, FitResult, fit
from .gaussians import Gaussians, init_random_gaussians, load_ply, save_ply
from .metrics import DetectionMetrics, aupro, auroc, evaluate_detection, pixel_auroc, pose_errors, summarize_pose_errors
from .pose import (
    PoseConfig,
    PoseEstimate,
    camera_to_c2w,
    candidate_cameras,
    estimate_poses,
    refine_pose,
    refine_poses,
    render_views,
)
from .render import available_backends, render
from .sharding import ParallelConfig, shard_over_queries

__version__ = "0.1.0"

__all__ = [
    "Camera",
    "ConfigError",
    "Context",
    "DatasetError",
    "DetectionMetrics",
    "EfficientNetFeatures",
    "FeatureExtractor",
    "FitConfig",
    "FitResult",
    "Gaussians",
    "Lite0Features",
    "MapCalibration",
    "MapConfig",
    "Maps",
    "ParallelConfig",
    "PoseConfig",
    "PoseEstimate",
    "QUIET",
    "SynthConfig",
    "UserError",
    "WeightsError",
    "WeightsFreeFeatures",
    "aupro",
    "auroc",
    "available_backends",
    "blender_c2w_from_camera",
    "calibrate",
    "camera_from_blender",
    "camera_to_c2w",
    "candidate_cameras",
    "class_folders",
    "compute_maps",
    "data",
    "demo",
    "detect",
    "detect_format",
    "estimate_poses",
    "evaluate",
    "evaluate_detection",
    "find_efficientnet_weights",
    "find_lite0_weights",
    "find_loftr_weights",
    "fit",
    "fitting",
    "image",
    "image_scores",
    "init_random_gaussians",
    "load_blender",
    "load_colmap",
    "load_efficientnet_b4",
    "load_efficientnet_lite0",
    "load_loftr",
    "load_mad_class",
    "load_ply",
    "load_test_poses",
    "look_at_c2w",
    "make_feature_extractor",
    "make_synth_dataset",
    "make_toy_dataset",
    "metrics",
    "pixel_auroc",
    "pose",
    "pose_errors",
    "refine_pose",
    "refine_poses",
    "render",
    "render_views",
    "run_fit",
    "save_ply",
    "se3",
    "shard_over_queries",
    "sharding",
    "stack_cameras",
    "summarize_pose_errors",
]
