"""splatjax: pose-agnostic 3D anomaly detection with 3D Gaussian splatting, in JAX.

One public namespace. Conventions (see README "Conventions"):
images float32 [H, W, 3] in [0, 1]; quaternions (w, x, y, z); cameras world-to-camera in
the OpenCV convention; poses reported to users camera-to-world in the data's convention.
"""

from . import se3
from .camera import Camera, blender_c2w_from_camera, camera_from_blender, stack_cameras
from .gaussians import Gaussians, init_random_gaussians, load_ply, save_ply
from .render import available_backends, render

__version__ = "0.1.0"

__all__ = [
    "Camera",
    "Gaussians",
    "available_backends",
    "blender_c2w_from_camera",
    "camera_from_blender",
    "init_random_gaussians",
    "load_ply",
    "render",
    "save_ply",
    "se3",
    "stack_cameras",
]
