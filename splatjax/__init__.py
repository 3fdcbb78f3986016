"""splatjax: pose-agnostic 3D anomaly detection with 3D Gaussian splatting, in JAX.

One public namespace. Conventions (see README "Conventions"):
images float32 [H, W, 3] in [0, 1]; quaternions (w, x, y, z); cameras world-to-camera in
the OpenCV convention; poses reported to users camera-to-world in the data's convention.
"""

from . import data, metrics, se3
from .camera import Camera, blender_c2w_from_camera, camera_from_blender, stack_cameras
from .data import DatasetError, load_blender, load_mad_class, make_toy_dataset
from .gaussians import Gaussians, init_random_gaussians, load_ply, save_ply
from .metrics import aupro, auroc, pixel_auroc, pose_errors, pro_curve, summarize_pose_errors
from .render import available_backends, render

__version__ = "0.1.0"

__all__ = [
    "Camera",
    "DatasetError",
    "Gaussians",
    "aupro",
    "auroc",
    "available_backends",
    "blender_c2w_from_camera",
    "camera_from_blender",
    "data",
    "init_random_gaussians",
    "load_blender",
    "load_mad_class",
    "load_ply",
    "make_toy_dataset",
    "metrics",
    "pixel_auroc",
    "pose_errors",
    "pro_curve",
    "render",
    "save_ply",
    "se3",
    "stack_cameras",
    "summarize_pose_errors",
]
