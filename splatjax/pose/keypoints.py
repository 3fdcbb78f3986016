"""Coarse pose from keypoints: SIFT matches between the query and a render of the model at
a candidate camera, lifted to 3D with the render's depth, then PnP-RANSAC.

A retrieval candidate (:func:`splatjax.pose.coarse.coarse_pose_render`) is only the
nearest of a few hundred views; this stage turns it into an accurate pose without any
learned weights:

1. render RGB and depth (:func:`render_depth`) at the candidate, at the matching width
   ``KeypointConfig.width`` (the query is resized to the same size);
2. SIFT keypoints (``cv2.SIFT_create``) on both greyscale images, the render's only where
   its depth is valid; nearest-two matches with Lowe's ratio test;
3. each matched render keypoint becomes a world point (depth, bilinear, at the keypoint;
   candidate camera's intrinsics and pose); ``cv2.solvePnPRansac`` with the query's
   intrinsics (the candidate's) gives the query pose, refined on the inliers by
   ``cv2.solvePnPRefineLM``.

SIFT is rotation invariant, so a query rolled about its optical axis is matched from an
unrolled candidate. Needs OpenCV (``pip install opencv-python-headless``).

Pixel conventions: our cameras put pixel (row i, column j)'s centre at (j + 0.5, i + 0.5);
OpenCV keypoints put it at (j, i). Keypoint coordinates get + 0.5 before they meet our
intrinsics.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import field

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int
from scipy.ndimage import map_coordinates

from ..camera import Camera
from ..context import QUIET, Context
from ..validation import is_int, is_number, require, require_bools, require_ints
from ..gaussians import Gaussians
from ..image import resize
from ..render import rasterize, render
from .cameras import as_batch, index_cameras, num_cameras

__all__ = ["KeypointConfig", "render_depth", "keypoint_pose", "keypoint_poses", "match_size"]


def _cv2():
    """The ``cv2`` module, or an ImportError saying which package provides it."""
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the keypoint coarse pose needs OpenCV: pip install opencv-python-headless") from e
    return cv2


@dataclasses.dataclass(frozen=True)
class KeypointConfig:
    """Options of :func:`keypoint_pose` (validated on construction).

    ``width``: matching resolution in pixels (query and render are both resized/rendered
    to this width, aspect kept; None: the candidate camera's own width).
    ``ransac_threshold`` is in pixels at that width. The defaults (width 200, two rounds)
    were the most accurate and fastest on lego (a model fitted at 200 px;
    ``scripts/bench_coarse.py``).
    """

    features: int = field(default=4000, metadata={"help": "SIFT keypoints per image (cv2 nfeatures)"})
    ratio: float = field(default=0.8, metadata={"help": "Lowe ratio test: best / second-best distance below this"})
    ransac_threshold: float = field(default=2.0, metadata={"help": "PnP-RANSAC reprojection threshold, pixels"})
    iterations: int = field(default=2000, metadata={"help": "PnP-RANSAC iterations"})
    confidence: float = field(default=0.999, metadata={"help": "PnP-RANSAC confidence"})
    min_inliers: int = field(default=12, metadata={"help": "fewer PnP inliers: keep the candidate pose"})
    width: int | None = field(default=200, metadata={"help": "matching image width in pixels"})
    refine: bool = field(default=True, metadata={"help": "Levenberg-Marquardt refinement on the inliers"})
    min_alpha: float = field(default=0.5, metadata={"help": "render opacity below which depth is invalid"})
    rounds: int = field(default=2, metadata={
        "help": "keypoint PnP rounds; each later round starts from the previous round's pose"})

    def __post_init__(self):
        require_ints(self, ("features", "iterations", "rounds"), 1)
        require(is_int(self.min_inliers) and self.min_inliers >= 4, self, "min_inliers",
                "an integer >= 4, the fewest points PnP can use")
        require(self.width is None or (is_int(self.width) and self.width >= 16), self, "width",
                "None or an integer >= 16")
        require(is_number(self.ratio) and 0 < self.ratio <= 1, self, "ratio", "in (0, 1]")
        require(is_number(self.ransac_threshold) and self.ransac_threshold > 0, self, "ransac_threshold", "> 0 pixels")
        require(is_number(self.confidence) and 0 < self.confidence < 1, self, "confidence", "in (0, 1)")
        require(is_number(self.min_alpha) and 0 < self.min_alpha < 1, self, "min_alpha", "in (0, 1)")
        require_bools(self, ("refine",))


def render_depth(
    gaussians: Gaussians,
    camera: Camera,
    *,
    backend: str = "auto",
    min_alpha: float = 0.5,
) -> tuple[Float[Array, "H W"], Float[Array, "H W"]]:
    """Expected camera-space depth of the model seen by ``camera`` (OpenCV; scene units).

    Renders the Gaussians with "colour" = their centre's camera-space z (``R @ mean + t``,
    third component) over a black background and divides by the rendered opacity, i.e. the
    opacity-weighted mean centre depth along each pixel's ray. Returns (depth [H, W],
    alpha [H, W]); depth is NaN where ``alpha <= min_alpha`` (too little of the model
    there for a reliable depth). Works under ``jit``/``vmap`` (``min_alpha`` is a float)."""
    dtype = gaussians.means.dtype
    R, t = camera.R.astype(dtype), camera.t.astype(dtype)
    z = gaussians.means @ R[2] + t[2]
    colors = jnp.broadcast_to(z[:, None], z.shape + (3,))
    weighted, alpha = rasterize(
        gaussians.means, gaussians.scales, gaussians.unit_quats, gaussians.opacities, colors,
        R, t, camera.intrinsics.astype(dtype), jnp.zeros(3, dtype),
        width=camera.width, height=camera.height, backend=backend)
    valid = alpha > min_alpha
    depth = jnp.where(valid, weighted[..., 0] / jnp.where(valid, alpha, 1.0), jnp.nan)
    return depth, alpha


def match_size(camera: Camera, width: int | None) -> tuple[int, int]:
    """(width, height) of the matching images for ``camera``: ``width`` (None: the
    camera's own) and the height that keeps the camera's aspect ratio."""
    if width is None:
        return camera.width, camera.height
    return int(width), max(1, int(round(camera.height * width / camera.width)))


@functools.lru_cache(maxsize=16)
def _render_fn(backend: str, background: tuple, min_alpha: float):
    """jitted ``(gaussians, camera) -> (rgb [H, W, 3], depth [H, W])``."""
    def one(g, cam):
        rgb = render(g, cam, background=background, backend=backend)[0]
        return rgb, render_depth(g, cam, backend=backend, min_alpha=min_alpha)[0]

    return jax.jit(one)


def _to_uint8_grey(image) -> np.ndarray:
    cv2 = _cv2()
    rgb = np.clip(np.round(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _matches(query_grey, render_grey, render_mask, config: KeypointConfig):
    """Ratio-test SIFT matches: (query points [M, 2], render points [M, 2]) in OpenCV
    pixel coordinates (pixel centres at integers)."""
    cv2 = _cv2()
    sift = cv2.SIFT_create(nfeatures=config.features)
    kq, dq = sift.detectAndCompute(query_grey, None)
    kr, dr = sift.detectAndCompute(render_grey, render_mask)
    empty = np.zeros((0, 2), np.float64)
    if dq is None or dr is None or len(kq) < 2 or len(kr) < 2:
        return empty, empty
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(dq, dr, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < config.ratio * p[1].distance]
    if not good:
        return empty, empty
    pq = np.array([kq[m.queryIdx].pt for m in good], np.float64)
    pr = np.array([kr[m.trainIdx].pt for m in good], np.float64)
    return pq, pr


def _lift(points_cv, depth, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """World points [M', 3] of render keypoints (OpenCV pixel coordinates) with bilinear
    depth, and the boolean mask [M] of keypoints with valid depth (all four neighbours)."""
    z = map_coordinates(np.asarray(depth, np.float64), [points_cv[:, 1], points_cv[:, 0]],
                        order=1, mode="constant", cval=np.nan)
    ok = np.isfinite(z) & (z > 0)
    fx, fy, cx, cy = (float(v) for v in np.asarray(camera.intrinsics, np.float64))
    u, v, z = points_cv[ok, 0] + 0.5, points_cv[ok, 1] + 0.5, z[ok]
    cam_pts = np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], -1)
    R, t = np.asarray(camera.R, np.float64), np.asarray(camera.t, np.float64)
    return (cam_pts - t) @ R, ok  # R^T (p - t), row-wise


def _pnp(world, image_pts, camera: Camera, config: KeypointConfig):
    """PnP-RANSAC (+ LM refinement) -> (R [3, 3], t [3], inliers) or None."""
    cv2 = _cv2()
    if len(world) < max(config.min_inliers, 6):
        return None
    fx, fy, cx, cy = (float(v) for v in np.asarray(camera.intrinsics, np.float64))
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    obj, img = np.ascontiguousarray(world), np.ascontiguousarray(image_pts)
    ok, rvec, tvec, inl = cv2.solvePnPRansac(
        obj, img, K, None, iterationsCount=config.iterations, reprojectionError=float(config.ransac_threshold),
        confidence=float(config.confidence), flags=cv2.SOLVEPNP_EPNP)
    if not ok or inl is None or len(inl) < config.min_inliers:
        return None
    inl = inl.reshape(-1)
    if config.refine:
        rvec, tvec = cv2.solvePnPRefineLM(obj[inl], img[inl], K, None, rvec, tvec)
    R = cv2.Rodrigues(rvec)[0]
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(tvec))):
        return None
    return R, tvec.reshape(3), int(len(inl))


def _pose_from_render(query_small, rgb, depth, cam_small: Camera, camera: Camera, config: KeypointConfig):
    """The PnP pose from one query and the render (RGB, depth) at ``cam_small`` (the
    candidate at matching size). Returns (camera, inliers); (``camera``, 0) on failure."""
    depth = np.asarray(depth)
    mask = np.isfinite(depth).astype(np.uint8) * 255
    pq, pr = _matches(_to_uint8_grey(query_small), _to_uint8_grey(rgb), mask, config)
    if len(pq) == 0:
        return camera, 0
    world, ok = _lift(pr, depth, cam_small)
    found = _pnp(world, pq[ok] + 0.5, cam_small, config)
    if found is None:
        return camera, 0
    R, t, n = found
    dtype = camera.R.dtype
    return camera.with_pose(jnp.asarray(R, dtype), jnp.asarray(t, dtype)), n


def _query_at(query, size: tuple[int, int], camera: Camera):
    """The query [H, W, 3] resized to ``size`` (w, h) after checking its aspect ratio."""
    q = jnp.asarray(query, jnp.float32)
    if q.ndim != 3 or q.shape[-1] != 3:
        raise ValueError(f"keypoint_pose: query must be an RGB image [H, W, 3], got shape {q.shape}")
    if abs(q.shape[0] / q.shape[1] - camera.height / camera.width) > 2.0 / min(q.shape[:2]):
        raise ValueError(f"keypoint_pose: query {q.shape[1]}x{q.shape[0]} and camera "
                         f"{camera.width}x{camera.height} have different aspect ratios")
    return resize(q, size[1], size[0])


def keypoint_pose(
    gaussians: Gaussians,
    query: Float[Array, "H W 3"],
    camera: Camera,
    config: KeypointConfig = KeypointConfig(),
    *,
    backend: str = "auto",
    background=(1.0, 1.0, 1.0),
) -> tuple[Camera, int]:
    """Pose of ``query`` (RGB in [0, 1]) from SIFT matches against the model rendered at
    the candidate ``camera`` (one camera, OpenCV world-to-camera; its intrinsics are taken
    as the query's) over ``background``, lifted to 3D by :func:`render_depth`, then
    PnP-RANSAC and LM refinement; ``config.rounds`` > 1 repeats this from each new pose
    (the truth is a fixed point: there the render's rays are the query's, so depth errors
    no longer move the reprojections).

    Returns (camera with the estimated pose and ``camera``'s intrinsics and size, number
    of PnP inliers of the last successful round). Fallback: when the first round has too
    few matches, PnP fails, or it has fewer than ``config.min_inliers`` inliers, returns
    (``camera`` unchanged, 0); a later round that fails keeps the previous round's pose."""
    size = match_size(camera, config.width)
    q = _query_at(query, size, camera)
    fn = _render_fn(backend, tuple(float(b) for b in background), float(config.min_alpha))
    best, inliers = camera, 0
    for _ in range(config.rounds):
        cam_small = best.scaled(*size)
        rgb, depth = fn(gaussians, cam_small)
        cam, n = _pose_from_render(q, rgb, depth, cam_small, camera, config)
        if n == 0:
            break
        best, inliers = cam, n
    return best, inliers


def keypoint_poses(
    gaussians: Gaussians,
    queries: Float[Array, "Q H W 3"],
    cameras: Camera,
    k: int,
    config: KeypointConfig = KeypointConfig(),
    *,
    backend: str = "auto",
    background=(1.0, 1.0, 1.0),
    context: Context = QUIET,
    stop: tuple[int, int] | None = None,
) -> tuple[Camera, Int[np.ndarray, " QK"]]:
    """:func:`keypoint_pose` for ``k`` candidates per query, one after the other (OpenCV
    runs on the CPU). ``cameras``: stacked [Q * k], query-major (the k candidates of query
    0 first). ``stop = (m, t)``: a query's later candidates are left as they are once m of
    its candidates got at least t inliers (None: every candidate is polished). Returns
    (stacked cameras [Q * k], inliers [Q * k] int; 0 marks a candidate returned unchanged:
    the fallback, or not polished after the stop)."""
    cams = as_batch(cameras)
    n = num_cameras(cams)
    if not (isinstance(k, int) and k >= 1) or n != len(queries) * k:
        raise ValueError(f"keypoint_poses: {n} cameras for {len(queries)} queries x k={k}")
    out, inliers = [], np.zeros(n, np.int64)
    enough = np.zeros(len(queries), np.int64)
    for i in range(n):
        cam = index_cameras(cams, i)
        if stop is None or enough[i // k] < stop[0]:
            cam, inliers[i] = keypoint_pose(gaussians, queries[i // k], cam, config, backend=backend,
                                            background=background)
            enough[i // k] += int(stop is not None and inliers[i] >= stop[1])
        out.append(cam)
        context.tick("keypoint pose", i + 1, n)
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *out), inliers
