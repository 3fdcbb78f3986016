"""splatjax: pose-agnostic 3D anomaly detection with 3D Gaussian splatting, in JAX.

One public namespace. Conventions (see README "Conventions"):
images float32 [H, W, 3] in [0, 1]; quaternions (w, x, y, z); cameras world-to-camera in
the OpenCV convention; poses reported to users camera-to-world in the data's convention.
"""

from . import data, fitting, metrics, pose, se3
from .app import pipeline
from .anomaly import anomaly_map, anomaly_maps, image_scores, overlay_heatmap
from .camera import Camera, blender_c2w_from_camera, camera_from_blender, look_at_c2w, stack_cameras
from .data import DatasetError, load_blender, load_mad_class, make_toy_dataset
from .anomaly.features import EfficientNetFeatures, FeatureExtractor, WeightsFreeFeatures, make_feature_extractor
from .fitting import FitConfig, fit, run_fit
from .gaussians import Gaussians, init_random_gaussians, load_ply, save_ply
from .metrics import aupro, auroc, pixel_auroc, pose_errors, pro_curve, summarize_pose_errors
from .app.pipeline import demo, detect, evaluate, load_cameras, save_cameras
from .pose import (
    camera_to_c2w,
    coarse_pose_loftr,
    coarse_pose_render,
    estimate_poses,
    refine_pose,
    refine_poses,
)
from .render import available_backends, render
from .anomaly.weights import WeightsError, find_efficientnet_weights, find_loftr_weights, load_efficientnet_b4, load_loftr

__version__ = "0.1.0"

__all__ = [
    "Camera",
    "DatasetError",
    "EfficientNetFeatures",
    "FeatureExtractor",
    "FitConfig",
    "Gaussians",
    "WeightsError",
    "WeightsFreeFeatures",
    "anomaly_map",
    "anomaly_maps",
    "aupro",
    "auroc",
    "available_backends",
    "blender_c2w_from_camera",
    "camera_from_blender",
    "camera_to_c2w",
    "coarse_pose_loftr",
    "coarse_pose_render",
    "data",
    "demo",
    "detect",
    "estimate_poses",
    "evaluate",
    "find_efficientnet_weights",
    "find_loftr_weights",
    "fit",
    "fitting",
    "image_scores",
    "init_random_gaussians",
    "load_blender",
    "load_cameras",
    "load_efficientnet_b4",
    "load_loftr",
    "load_mad_class",
    "load_ply",
    "look_at_c2w",
    "make_feature_extractor",
    "make_toy_dataset",
    "metrics",
    "overlay_heatmap",
    "pixel_auroc",
    "pipeline",
    "pose",
    "pose_errors",
    "pro_curve",
    "refine_pose",
    "refine_poses",
    "render",
    "run_fit",
    "save_cameras",
    "save_ply",
    "se3",
    "stack_cameras",
    "summarize_pose_errors",
]
