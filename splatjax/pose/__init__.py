"""Pose estimation for query images of a fitted object: coarse retrieval, then SplatPose's
gradient refinement, batched.

Coarse pose (pick a starting camera per query):

- :func:`coarse_pose_render`: render-and-compare retrieval. The model is rendered once
  from every candidate camera (training poses, optionally extra poses on a sphere and
  in-plane rotations) at a low resolution; every query is compared with every candidate
  by the mean squared colour difference of the downsampled images; the closest wins.
- :func:`coarse_pose_loftr`: the reference's retrieval, LoFTR matches against every
  training image (most matches wins); needs the "indoor_new" weights.

Fine pose (:func:`refine_pose`, :func:`refine_poses`), the reference objective: keep the
camera at the coarse pose and move the object by the screw (w, v, theta), each entry
initialised from N(0, 1e-6) (standard deviation 1e-6). The reference moves the Gaussian
means by ``x @ R + t`` (row vectors), i.e. ``x -> R^T x + t``, and composes the Gaussian
rotations with R^-1; with degree-0 colour this is the same as rendering the untouched
Gaussians from the moved camera :func:`splatjax.se3.transform_camera` (camera, R^T, t).
Adam (0.9, 0.999), learning rate 1e-3 for the first step then 0.01 * 0.8^(s / 100) for
step s >= 1 (:func:`fine_lr_schedule`), k = 175 steps, no early stop, loss
0.8 L1 + 0.2 (1 - SSIM) on the full image. Steps run in ``lax.scan``; queries are refined
in fixed-size chunks under ``jax.vmap`` (the last chunk is padded, so one compilation
serves every chunk).

Poses returned to users are camera-to-world 4 x 4 in the Blender/OpenGL convention
(:func:`camera_to_c2w`), the convention of ``transforms.json`` data.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

from .. import se3
from ..camera import OPENGL_TO_OPENCV, Camera, camera_from_blender, look_at_c2w, stack_cameras
from ..gaussians import Gaussians
from ..losses import photometric_loss
from ..render import render

__all__ = [
    "FINE_STEPS",
    "fine_lr_schedule",
    "init_screw",
    "screw_motion",
    "moved_camera",
    "refine_pose",
    "refine_poses",
    "camera_to_c2w",
    "cameras_from_c2w",
    "index_cameras",
    "sphere_cameras",
    "inplane_rotations",
    "render_candidates",
    "coarse_pose_render",
    "coarse_pose_loftr",
    "resolve_coarse",
    "PoseEstimate",
    "estimate_poses",
]

FINE_STEPS = 175


# ----------------------------------------------------------------------------- helpers


def index_cameras(cameras: Camera, index) -> Camera:
    """Select cameras from a stacked batch (integer, slice or index array)."""
    return jax.tree_util.tree_map(lambda x: x[index], cameras)


def _num_cameras(cameras: Camera) -> int:
    return int(cameras.R.shape[0]) if cameras.R.ndim == 3 else 1


def _as_batch(cameras: Camera) -> Camera:
    return cameras if cameras.R.ndim == 3 else jax.tree_util.tree_map(lambda x: x[None], cameras)


def camera_to_c2w(camera: Camera) -> Float[np.ndarray, "*c 4 4"]:
    """Camera-to-world 4 x 4 (float64, Blender/OpenGL axes) of one camera or a stacked
    batch. The world-to-camera matrix may be a general linear map (the reference screw is
    only near a rotation): the centre is the exact preimage of the camera origin,
    ``-R^-1 t``, and the rotation block is the nearest rotation to R^T (polar factor)."""
    R = np.asarray(camera.R, np.float64)
    t = np.asarray(camera.t, np.float64)
    center = -np.linalg.solve(R, t[..., None])[..., 0]
    u, _, vt = np.linalg.svd(R)
    d = np.sign(np.linalg.det(u @ vt))
    u[..., :, -1] *= d[..., None]
    rot = u @ vt  # nearest rotation to R (det +1)
    c2w = np.zeros(R.shape[:-2] + (4, 4))
    c2w[..., :3, :3] = np.swapaxes(rot, -1, -2)
    c2w[..., :3, 3] = center
    c2w[..., 3, 3] = 1.0
    return c2w @ OPENGL_TO_OPENCV


def cameras_from_c2w(
    c2w: Float[np.ndarray, "C 4 4"], camera_angle_x: float, width: int, height: int
) -> Camera:
    """Stacked cameras from Blender/OpenGL camera-to-world matrices."""
    c2w = np.asarray(c2w, np.float64).reshape(-1, 4, 4)
    return stack_cameras([camera_from_blender(m, camera_angle_x, width, height) for m in c2w])


def sphere_cameras(
    num: int,
    radius: float,
    camera_angle_x: float,
    width: int,
    height: int,
    *,
    target=(0.0, 0.0, 0.0),
    up=(0.0, 0.0, 1.0),
    upper_hemisphere: bool = False,
) -> tuple[Camera, np.ndarray]:
    """``num`` cameras on a Fibonacci sphere of ``radius`` around ``target``, looking at it
    with ``up`` as the world's up axis (Blender scenes: +z). Returns (stacked cameras,
    Blender camera-to-world [num, 4, 4])."""
    if num < 1:
        raise ValueError(f"sphere_cameras: num must be >= 1, got {num}")
    i = np.arange(num) + 0.5
    zmin = 0.0 if upper_hemisphere else -1.0
    z = 1.0 - (1.0 - zmin) * i / num
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, 1.0))
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    # orthonormal frame with `up` as its z axis
    a = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(up, a)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    dirs = (r * np.cos(phi))[:, None] * e1 + (r * np.sin(phi))[:, None] * e2 + z[:, None] * up
    target = np.asarray(target, np.float64)
    c2w = np.stack([look_at_c2w(target + radius * d, target, up) for d in dirs])
    return cameras_from_c2w(c2w, camera_angle_x, width, height), c2w


def inplane_rotations(cameras: Camera, angles_rad) -> Camera:
    """Each camera rolled about its optical axis by each angle (the image rotates about
    the principal point). Returns a stacked batch of C * len(angles) cameras, camera-major."""
    cams = _as_batch(cameras)
    ang = jnp.asarray(angles_rad, cams.R.dtype).reshape(-1)
    c, s = jnp.cos(ang), jnp.sin(ang)
    o, one = jnp.zeros_like(c), jnp.ones_like(c)
    Rz = jnp.stack([jnp.stack([c, -s, o], -1), jnp.stack([s, c, o], -1), jnp.stack([o, o, one], -1)], -2)
    R = jnp.einsum("aij,cjk->caik", Rz, cams.R).reshape(-1, 3, 3)
    t = jnp.einsum("aij,cj->cai", Rz, cams.t).reshape(-1, 3)
    n = ang.shape[0]

    def rep(x):
        return jnp.repeat(x, n, axis=0)

    return Camera(R=R, t=t, fx=rep(cams.fx), fy=rep(cams.fy), cx=rep(cams.cx), cy=rep(cams.cy),
                  width=cams.width, height=cams.height)


def _resize_images(images: Float[Array, "B H W 3"], size: int) -> Float[Array, "B s s 3"]:
    images = jnp.asarray(images, jnp.float32)
    b, h, w, _ = images.shape
    sh = max(1, int(round(h * size / w)))
    if (h, w) == (sh, size):
        return images
    return jax.image.resize(images, (b, sh, size, 3), method="linear", antialias=True)


def _progress(iterable, *, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr)


# ----------------------------------------------------------------------------- fine pose


def fine_lr_schedule(count):
    """The reference learning rate as an optax schedule of the update count: 1e-3 for the
    first step (count 0), then 0.01 * 0.8^(count / 100), i.e. 0.01 * 0.8^((i + 1) / 100)
    after step i."""
    count = jnp.asarray(count, jnp.float32)
    return jnp.where(count < 0.5, 1e-3, 0.01 * jnp.power(0.8, count / 100.0))


def init_screw(*, key: jax.Array, std: float = 1e-6, dtype=jnp.float32) -> dict[str, Array]:
    """Screw parameters {"w": [3], "v": [3], "theta": []}, each entry ~ N(0, std^2)
    (the reference: std 1e-6)."""
    kw, kv, kt = jax.random.split(key, 3)
    return {
        "w": std * jax.random.normal(kw, (3,), dtype),
        "v": std * jax.random.normal(kv, (3,), dtype),
        "theta": std * jax.random.normal(kt, (), dtype),
    }


def screw_motion(params: dict[str, Array], *, exact_exp: bool = False) -> tuple[Float[Array, "3 3"], Float[Array, " 3"]]:
    """The object motion x -> A x + b of the screw parameters, A = R^T and b = t, where
    (R, t) is the reference screw map (``exact_exp=False``, w not normalised) or the SE(3)
    exponential with normalised w (``exact_exp=True``). The reference applies R in the
    row-vector form ``x @ R + t``, hence the transpose."""
    fn = se3.screw_to_transform if exact_exp else se3.screw_to_transform_reference
    R, t = fn(params["w"], params["v"], params["theta"])
    return R.T, t


def moved_camera(camera: Camera, params: dict[str, Array], *, exact_exp: bool = False) -> Camera:
    """The camera that sees the untouched Gaussians as ``camera`` sees the object moved
    by the screw ``params``."""
    A, b = screw_motion(params, exact_exp=exact_exp)
    return se3.transform_camera(camera, A.astype(camera.R.dtype), b.astype(camera.t.dtype))


def _optimizer():
    return optax.adam(fine_lr_schedule, b1=0.9, b2=0.999)


def _refine_core(gaussians, camera, query, params0, *, steps, exact_exp, backend, background):
    opt = _optimizer()
    query = jnp.asarray(query, gaussians.means.dtype)

    def loss_fn(params):
        rgb, _ = render(gaussians, moved_camera(camera, params, exact_exp=exact_exp),
                        background=background, backend=backend)
        return photometric_loss(rgb, query)

    def step(carry, _):
        params, state = carry
        loss, grad = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grad, state, params)
        return (optax.apply_updates(params, updates), state), loss

    (params, _), trace = jax.lax.scan(step, (params0, opt.init(params0)), None, length=steps)
    return moved_camera(camera, params, exact_exp=exact_exp), trace


@functools.partial(jax.jit, static_argnames=("steps", "exact_exp", "backend", "background"))
def _refine_one_jit(gaussians, camera, query, params0, *, steps, exact_exp, backend, background):
    return _refine_core(gaussians, camera, query, params0, steps=steps, exact_exp=exact_exp,
                        backend=backend, background=background)


@functools.partial(jax.jit, static_argnames=("steps", "exact_exp", "backend", "background"))
def _refine_batch_jit(gaussians, cameras, queries, params0, *, steps, exact_exp, backend, background):
    fn = functools.partial(_refine_core, steps=steps, exact_exp=exact_exp, backend=backend,
                           background=background)
    return jax.vmap(fn, in_axes=(None, 0, 0, 0))(gaussians, cameras, queries, params0)


def _check_query(query, camera: Camera, where: str):
    shape = tuple(query.shape[-3:])
    if shape != (camera.height, camera.width, 3):
        raise ValueError(f"{where}: query images are {shape[1]}x{shape[0]} (shape {tuple(query.shape)}) but "
                         f"the camera is {camera.width}x{camera.height}; resize the queries or use "
                         "camera.scaled(width, height)")


def refine_pose(
    gaussians: Gaussians,
    camera: Camera,
    query: Float[Array, "H W 3"],
    *,
    key: jax.Array,
    steps: int = FINE_STEPS,
    exact_exp: bool = False,
    backend: str = "auto",
    background=(1.0, 1.0, 1.0),
) -> tuple[Camera, Float[Array, " k"]]:
    """Refine one query's pose from the starting ``camera`` (SplatPose fine pose).

    Returns the refined camera (it sees the untouched model as the query shows it; use
    :func:`camera_to_c2w` for a Blender camera-to-world) and the loss before each step [k].
    """
    _check_query(query, camera, "refine_pose")
    params0 = init_screw(key=key)
    return _refine_one_jit(gaussians, camera, query, params0, steps=int(steps), exact_exp=bool(exact_exp),
                           backend=backend, background=tuple(float(x) for x in background))


def refine_poses(
    gaussians: Gaussians,
    cameras: Camera,
    queries: Float[Array, "B H W 3"],
    *,
    key: jax.Array,
    steps: int = FINE_STEPS,
    batch_size: int = 16,
    exact_exp: bool = False,
    backend: str = "auto",
    background=(1.0, 1.0, 1.0),
    progress: bool = False,
) -> tuple[Camera, Float[Array, "B k"]]:
    """Refine B queries: ``jax.vmap`` over chunks of ``batch_size`` queries (the last chunk
    padded to full size). Query i uses the screw initialisation of
    ``jax.random.split(key, B)[i]``, so the result equals :func:`refine_pose` called with
    that key. Returns the stacked refined cameras and the loss traces [B, k]."""
    cams = _as_batch(cameras)
    queries = jnp.asarray(queries)
    b = queries.shape[0]
    if _num_cameras(cams) != b:
        raise ValueError(f"refine_poses: {_num_cameras(cams)} cameras for {b} queries")
    _check_query(queries, cams, "refine_poses")
    if batch_size < 1:
        raise ValueError(f"refine_poses: batch_size must be >= 1, got {batch_size}")
    keys = jax.random.split(key, b)
    params0 = jax.vmap(lambda k: init_screw(key=k))(keys)
    bs = min(int(batch_size), b)
    n_chunks = -(-b // bs)
    out_cams, out_traces = [], []
    bg = tuple(float(x) for x in background)
    for c in _progress(range(n_chunks), total=n_chunks, desc="fine pose", enabled=progress):
        idx = np.arange(c * bs, (c + 1) * bs)
        idx = np.minimum(idx, b - 1)  # pad the last chunk by repeating its last query
        take = functools.partial(jax.tree_util.tree_map, lambda x: x[idx])
        cam_c, trace_c = _refine_batch_jit(gaussians, take(cams), queries[idx], take(params0),
                                           steps=int(steps), exact_exp=bool(exact_exp), backend=backend,
                                           background=bg)
        n_valid = min(bs, b - c * bs)
        out_cams.append(index_cameras(cam_c, slice(0, n_valid)))
        out_traces.append(trace_c[:n_valid])
    cams_out = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *out_cams)
    return cams_out, jnp.concatenate(out_traces)


# ----------------------------------------------------------------------------- coarse pose


def render_candidates(
    gaussians: Gaussians,
    cameras: Camera,
    *,
    resolution: int = 64,
    batch_size: int = 32,
    backend: str = "auto",
    background=(1.0, 1.0, 1.0),
    progress: bool = False,
) -> Float[Array, "C h w 3"]:
    """Render every candidate camera at width ``resolution`` (intrinsics scaled; aspect
    kept), in vmapped chunks. Render once and reuse for all queries."""
    cams = _as_batch(cameras)
    h = max(1, int(round(cams.height * resolution / cams.width)))
    small = cams.scaled(int(resolution), h)
    n = _num_cameras(small)
    bs = min(int(batch_size), n)
    bg = tuple(float(x) for x in background)
    fn = jax.jit(jax.vmap(lambda cam: render(gaussians, cam, background=bg, backend=backend)[0]))
    outs = []
    n_chunks = -(-n // bs)
    for c in _progress(range(n_chunks), total=n_chunks, desc="render candidates", enabled=progress):
        idx = np.minimum(np.arange(c * bs, (c + 1) * bs), n - 1)
        outs.append(fn(index_cameras(small, idx))[: min(bs, n - c * bs)])
    return jnp.concatenate(outs)


@jax.jit
def _sq_distances(queries, candidates):
    """Mean squared difference [Q, C] of flattened images, as |q|^2 + |c|^2 - 2 q.c."""
    q = queries.reshape(queries.shape[0], -1)
    c = candidates.reshape(candidates.shape[0], -1)
    d = jnp.sum(q * q, 1)[:, None] + jnp.sum(c * c, 1)[None, :] - 2.0 * q @ c.T
    return jnp.maximum(d, 0.0) / q.shape[1]


def coarse_pose_render(
    gaussians: Gaussians | None,
    candidate_cameras: Camera,
    queries: Float[Array, "Q H W 3"],
    *,
    resolution: int = 64,
    candidate_images: Float[Array, "C h w 3"] | None = None,
    batch_size: int = 32,
    backend: str = "auto",
    background=(1.0, 1.0, 1.0),
    progress: bool = False,
) -> tuple[Int[np.ndarray, " Q"], Float[np.ndarray, " Q"]]:
    """Render-and-compare retrieval. Candidates are rendered from ``gaussians`` at width
    ``resolution`` (or ``candidate_images`` are used instead, e.g. the training images;
    then ``gaussians`` may be None); queries are downsampled (area) to the same size.
    Returns, per query, the index of the closest candidate and its mean squared colour
    difference."""
    if candidate_images is None:
        if gaussians is None:
            raise ValueError("coarse_pose_render: give gaussians or candidate_images")
        cand = render_candidates(gaussians, candidate_cameras, resolution=resolution, batch_size=batch_size,
                                 backend=backend, background=background, progress=progress)
    else:
        cand = _resize_images(candidate_images, resolution)
        if cand.shape[0] != _num_cameras(_as_batch(candidate_cameras)):
            raise ValueError(f"coarse_pose_render: {cand.shape[0]} candidate images for "
                             f"{_num_cameras(_as_batch(candidate_cameras))} candidate cameras")
    q = _resize_images(queries, resolution)
    if q.shape[1:] != cand.shape[1:]:
        raise ValueError(f"coarse_pose_render: queries resize to {q.shape[1:]} but candidates are {cand.shape[1:]}"
                         " (different aspect ratios)")
    best, score = [], []
    for s in range(0, q.shape[0], 256):
        d = _sq_distances(q[s:s + 256], cand)
        best.append(np.asarray(jnp.argmin(d, axis=1)))
        score.append(np.asarray(jnp.min(d, axis=1)))
    return np.concatenate(best), np.concatenate(score)


def _to_gray(images, size: int = 400) -> np.ndarray:
    """RGB [B, H, W, 3] -> grayscale [B, size, size] (antialiased resize), a writable copy for torch."""
    from .loftr import to_gray

    x = jnp.asarray(images, jnp.float32)
    b, h, w, _ = x.shape
    if (h, w) != (size, size):
        x = jax.image.resize(x, (b, size, size, 3), method="linear", antialias=True)
    return np.array(to_gray(x), np.float32)


def coarse_pose_loftr(
    queries: Float[Array, "Q H W 3"],
    candidate_images: Float[Array, "C H W 3"],
    *,
    matcher=None,
    weights: str | None = None,
    size: int = 400,
    progress: bool = False,
) -> tuple[Int[np.ndarray, " Q"], Float[np.ndarray, " Q"]]:
    """The reference's coarse pose: LoFTR ("indoor_new") matches between each query and
    every candidate (training) image, both ``size`` x ``size`` grayscale in [0, 1]; the
    candidate with the most matches wins. Returns (index [Q], match count [Q]).
    ``matcher``: a loaded kornia LoFTR; else loaded from ``weights`` (path, or
    ``$SPLATJAX_LOFTR_WEIGHTS``, or the torch hub cache; see :mod:`splatjax.weights`)."""
    from ..anomaly import weights as weights_mod
    from .loftr import loftr_match_counts

    if matcher is None:
        path = weights_mod.find_loftr_weights(weights)
        if path is None:
            raise weights_mod.WeightsError(f"LoFTR coarse pose requested but no weights were found. "
                                           f"{weights_mod.loftr_guidance()}")
        matcher = weights_mod.load_loftr(path)
    qg, cg = _to_gray(queries, size), _to_gray(candidate_images, size)
    best, count = [], []
    for i in _progress(range(qg.shape[0]), total=qg.shape[0], desc="LoFTR coarse pose", enabled=progress):
        counts = loftr_match_counts(matcher, qg[i], cg)
        best.append(int(np.argmax(counts)))
        count.append(float(counts.max()))
    return np.asarray(best, np.int64), np.asarray(count, np.float64)


# ----------------------------------------------------------------------------- both


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


_ANNOUNCED: set[str] = set()


def _announce(msg: str) -> None:
    if msg not in _ANNOUNCED:
        _ANNOUNCED.add(msg)
        print(f"[splatjax] {msg}", file=sys.stderr)


def resolve_coarse(coarse: str, loftr_weights: str | None = None) -> str:
    """"render" | "loftr" | "auto" -> the method used; "auto" is LoFTR when its weights
    are found, else render-and-compare (announced once)."""
    if coarse not in ("render", "loftr", "auto"):
        raise ValueError(f"coarse must be 'render', 'loftr' or 'auto', got {coarse!r}")
    if coarse != "auto":
        return coarse
    from ..anomaly.weights import find_loftr_weights, loftr_guidance

    found = find_loftr_weights(loftr_weights)  # a given path that does not exist raises
    if found:
        return "loftr"
    _announce("coarse pose: no LoFTR weights found, so the reference's LoFTR retrieval is replaced by "
              f"render-and-compare retrieval (renders of the model at the training poses). {loftr_guidance()}")
    return "render"


def estimate_poses(
    gaussians: Gaussians,
    queries: Float[Array, "Q H W 3"],
    candidate_cameras: Camera,
    *,
    key: jax.Array,
    coarse: str = "auto",
    candidate_images: Float[Array, "C H W 3"] | None = None,
    coarse_resolution: int = 64,
    coarse_from_images: bool = False,
    extra_cameras: Camera | None = None,
    inplane_angles=None,
    loftr_weights: str | None = None,
    loftr_matcher=None,
    steps: int = FINE_STEPS,
    batch_size: int = 16,
    exact_exp: bool = False,
    backend: str = "auto",
    background=(1.0, 1.0, 1.0),
    progress: bool = False,
) -> PoseEstimate:
    """Coarse pose then fine pose for every query.

    ``candidate_cameras``: the training cameras (at the query resolution);
    ``candidate_images``: the training images (LoFTR, or render-and-compare with
    ``coarse_from_images``). Render-and-compare may add ``extra_cameras`` (e.g.
    :func:`sphere_cameras`) and in-plane rotations by ``inplane_angles`` (radians) of all
    candidates."""
    queries = jnp.asarray(queries, jnp.float32)
    cands = _as_batch(candidate_cameras)
    method = resolve_coarse(coarse, loftr_weights) if loftr_matcher is None else (
        "loftr" if coarse in ("auto", "loftr") else coarse)
    t0 = time.perf_counter()
    if method == "loftr":
        if candidate_images is None:
            raise ValueError("estimate_poses: LoFTR coarse pose needs candidate_images (the training images)")
        idx, score = coarse_pose_loftr(queries, candidate_images, matcher=loftr_matcher, weights=loftr_weights,
                                       progress=progress)
    else:
        if coarse_from_images:
            if candidate_images is None:
                raise ValueError("estimate_poses: coarse_from_images needs candidate_images")
            idx, score = coarse_pose_render(None, cands, queries, resolution=coarse_resolution,
                                            candidate_images=candidate_images, backend=backend,
                                            background=background, progress=progress)
        else:
            if extra_cameras is not None:
                cands = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), cands, _as_batch(extra_cameras))
            if inplane_angles is not None and len(np.atleast_1d(inplane_angles)):
                cands = inplane_rotations(cands, np.concatenate([[0.0], np.atleast_1d(inplane_angles)]))
            idx, score = coarse_pose_render(gaussians, cands, queries, resolution=coarse_resolution,
                                            backend=backend, background=background, progress=progress)
    coarse_cams = index_cameras(cands, jnp.asarray(idx))
    jax.block_until_ready(coarse_cams.R)
    t1 = time.perf_counter()
    cams, traces = refine_poses(gaussians, coarse_cams, queries, key=key, steps=steps, batch_size=batch_size,
                                exact_exp=exact_exp, backend=backend, background=background, progress=progress)
    traces = np.asarray(traces)
    t2 = time.perf_counter()
    return PoseEstimate(
        coarse_index=np.asarray(idx), coarse_score=np.asarray(score), coarse_cameras=coarse_cams, cameras=cams,
        coarse_c2w=camera_to_c2w(coarse_cams), c2w=camera_to_c2w(cams), loss_traces=traces, method=method,
        seconds={"coarse": t1 - t0, "fine": t2 - t1},
    )
