"""In-plane roll of a posed view: the image rotated about the principal point, and the
camera-to-world pose whose render shows exactly that rotated image.

Conventions (those of :mod:`splatjax.camera`): pixel (row i, column j) is centred at image
coordinates (u, v) = (j + 0.5, i + 0.5), v grows downwards; square pixels (fx = fy) and the
principal point at the image centre (cx, cy) = (W / 2, H / 2), as
:func:`splatjax.camera.camera_from_blender` builds them. Poses are Blender/OpenGL
camera-to-world 4 x 4 matrices.

Angle: radians; a positive ``angle`` turns the image content **counter-clockwise as
displayed** (the convention of ``PIL.Image.rotate`` and ``cv2.getRotationMatrix2D``). A
point at (u, v) moves to (u', v') with::

    u' - cx =  cos(angle) (u - cx) + sin(angle) (v - cy)
    v' - cy = -sin(angle) (u - cx) + cos(angle) (v - cy)

The camera turns the other way about its optical axis: ``roll_pose(look_at_c2w(p), a)``
equals ``look_at_c2w(p, roll=-a)``. Content rotated out of the frame is lost and the
corners rotated in are transparent (alpha 0), so the rolled image equals the render at the
rolled pose exactly when the object lies inside the image's inscribed circle
(:func:`fits_inscribed_circle`).
"""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Float, Shaped
from scipy import ndimage

__all__ = ["roll_image", "roll_mask", "roll_pose", "roll_view", "roll_points", "fits_inscribed_circle"]


def _rotation_2d(angle: float) -> np.ndarray:
    """The 2 x 2 matrix of the module docstring, acting on (u - cx, v - cy)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, s], [-s, c]])


def roll_points(uv: Float[np.ndarray, "N 2"], angle: float, width: int, height: int) -> Float[np.ndarray, "N 2"]:
    """Where image points ``uv`` (pixels, (u, v)) move under a roll by ``angle`` radians
    about the centre of a ``width x height`` image."""
    centre = np.array([width / 2.0, height / 2.0])
    return (np.asarray(uv, np.float64) - centre) @ _rotation_2d(angle).T + centre


def _source_coords(angle: float, height: int, width: int) -> np.ndarray:
    """Array coordinates (row, column) in the source image sampled by every output pixel."""
    rows, cols = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    uv = np.stack([cols.ravel(), rows.ravel()], axis=-1)
    src = roll_points(uv, -angle, width, height) - 0.5  # inverse map, back to array indices
    return np.stack([src[:, 1].reshape(height, width), src[:, 0].reshape(height, width)])


def _resample(channel: np.ndarray, coords: np.ndarray, order: int) -> np.ndarray:
    return ndimage.map_coordinates(channel, coords, order=order, mode="grid-constant", cval=0.0, prefilter=False)


def roll_image(rgba: Shaped[np.ndarray, "H W 4"], angle: float) -> Shaped[np.ndarray, "H W 4"]:
    """An RGBA image (uint8, or float in [0, 1]) rolled by ``angle`` radians about its
    centre: bilinear on alpha-premultiplied colour (so compositing on any background
    commutes with the roll), transparent outside the source frame. Same dtype out
    (uint8 rounded); fully transparent pixels get colour 0."""
    a = np.asarray(rgba)
    if a.ndim != 3 or a.shape[-1] != 4:
        raise ValueError(f"roll_image: expected an H x W x 4 RGBA image, got shape {a.shape}")
    scale = 255.0 if a.dtype == np.uint8 else 1.0
    x = a.astype(np.float64) / scale
    premul = np.concatenate([x[..., :3] * x[..., 3:], x[..., 3:]], axis=-1)
    coords = _source_coords(angle, *a.shape[:2])
    out = np.stack([_resample(premul[..., k], coords, 1) for k in range(4)], axis=-1)
    alpha = np.clip(out[..., 3:], 0.0, 1.0)
    rgb = np.where(alpha > 0, out[..., :3] / np.maximum(alpha, 1e-12), 0.0)
    out = np.concatenate([np.clip(rgb, 0.0, 1.0), alpha], axis=-1)
    if a.dtype == np.uint8:
        return np.round(out * 255.0).astype(np.uint8)
    return out.astype(a.dtype)


def roll_mask(mask: Shaped[np.ndarray, "H W"], angle: float) -> Shaped[np.ndarray, "H W"]:
    """A mask (any dtype) rolled like :func:`roll_image`, nearest neighbour, 0 outside."""
    m = np.asarray(mask)
    coords = _source_coords(angle, *m.shape)
    return _resample(m, coords, 0).astype(m.dtype)


def roll_pose(c2w: Float[np.ndarray, "4 4"], angle: float) -> Float[np.ndarray, "4 4"]:
    """The Blender/OpenGL camera-to-world whose image is the image of ``c2w`` rolled by
    ``angle`` radians (:func:`roll_image`): the same centre, the camera turned about its
    optical axis. ``roll_pose(roll_pose(c2w, a), -a) == c2w``."""
    c2w = np.asarray(c2w, np.float64)
    if c2w.shape != (4, 4):
        raise ValueError(f"roll_pose: expected a 4 x 4 camera-to-world matrix, got shape {c2w.shape}")
    # OpenCV camera coordinates of the rolled camera: x' = Rz x with Rz acting on (x, y) as
    # _rotation_2d does on (u - cx, v - cy) (square pixels), so pixels move as documented.
    rz = np.eye(4)
    rz[:2, :2] = _rotation_2d(angle)
    flip = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL <-> OpenCV camera axes
    return c2w @ flip @ rz.T @ flip


def roll_view(rgba: Shaped[np.ndarray, "H W 4"], c2w: Float[np.ndarray, "4 4"], angle: float
              ) -> tuple[Shaped[np.ndarray, "H W 4"], Float[np.ndarray, "4 4"]]:
    """(:func:`roll_image`, :func:`roll_pose`) of one posed view."""
    return roll_image(rgba, angle), roll_pose(c2w, angle)


def fits_inscribed_circle(alpha: Shaped[np.ndarray, "H W"], margin: float = 1.0) -> bool:
    """True when every pixel with ``alpha > 0`` has its centre within ``min(W, H) / 2 -
    margin`` pixels of the image centre, so a roll by any angle loses none of it."""
    a = np.asarray(alpha)
    h, w = a.shape
    rows, cols = np.nonzero(a > 0)
    if rows.size == 0:
        return True
    r = np.hypot(cols + 0.5 - w / 2.0, rows + 0.5 - h / 2.0)
    return bool(r.max() <= min(w, h) / 2.0 - margin)
