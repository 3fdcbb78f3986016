"""Coarse pose: pick a starting camera per query (SplatPose's coarse pose).

- :func:`coarse_pose_render`: render-and-compare retrieval. The model is rendered once
  from every candidate camera (training poses, optionally extra poses on a sphere and
  in-plane rotations) at a low resolution; every query is compared with every candidate
  by the mean squared colour difference of the downsampled images; the closest wins.
- :func:`coarse_pose_loftr`: the reference's retrieval, LoFTR matches against every
  training image (most matches wins); needs the "indoor_new" weights.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..camera import Camera
from ..context import QUIET, Context
from ..gaussians import Gaussians
from ..image import grey, resize, resize_to_width
from ..render import render
from .config import COARSE_METHODS
from ..sharding import ParallelConfig, ceil_div, map_padded_chunks, query_mesh, shard_over_queries
from .cameras import as_batch, num_cameras

__all__ = ["render_views", "coarse_pose_render", "coarse_pose_loftr", "resolve_coarse"]


def render_views(
    gaussians: Gaussians,
    cameras: Camera,
    *,
    width: int | None = None,
    batch_size: int = 32,
    backend: str = "auto",
    background=(1.0, 1.0, 1.0),
    context: Context = QUIET,
    stage: str = "render",
    parallel: ParallelConfig | None = None,
    supersample: int = 1,
) -> Float[Array, "C h w 3"]:
    """RGB renders of every camera of a stacked batch, in vmapped chunks of ``batch_size``
    (the last chunk padded, one compilation). ``width``: render at that width (intrinsics
    scaled, aspect kept); None: the cameras' own size. ``parallel``: shard every chunk
    over ``parallel.devices`` local devices, ``parallel.per_device_batch`` (default
    ``batch_size``) cameras per device (None: one device, unsharded); every camera's
    image is the same on any number of devices. ``supersample``: samples per pixel side
    (:func:`splatjax.render.render`; the model's fit's)."""
    cams = as_batch(cameras)
    if width is not None:
        cams = cams.scaled(int(width), max(1, int(round(cams.height * width / cams.width))))
    n = num_cameras(cams)
    bg = tuple(float(x) for x in background)
    mesh = None if parallel is None else query_mesh(parallel.devices)
    per = int(batch_size if parallel is None or parallel.per_device_batch is None else parallel.per_device_batch)
    if mesh is None or mesh.size == 1:
        fn = jax.jit(jax.vmap(lambda cam: render(gaussians, cam, background=bg, backend=backend,
                                                 supersample=supersample)[0]))
        size = min(per, n)
    else:
        stack = _render_stack(backend, bg, supersample)
        one_launch = ParallelConfig(devices=mesh.size)

        def fn(c):
            return shard_over_queries(stack, gaussians, c, in_axes=(None, 0), mesh=mesh, config=one_launch)

        size = min(per, ceil_div(n, mesh.size)) * mesh.size
    return map_padded_chunks(fn, n, size, (cams,), context=context, stage=stage)


@functools.lru_cache(maxsize=16)
def _render_stack(backend: str, background: tuple, supersample: int = 1) -> Callable:
    """``(gaussians, cameras [C]) -> rgb [C, H, W, 3]``, one function object per
    (backend, background, supersample), so that its sharded program is compiled once."""
    return jax.vmap(lambda g, cam: render(g, cam, background=background, backend=backend, supersample=supersample)[0],
                    in_axes=(None, 0))


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
    context: Context = QUIET,
    top_k: int | None = None,
) -> tuple[Int[np.ndarray, "Q *K"], Float[np.ndarray, "Q *K"]]:
    """Render-and-compare retrieval. Candidates are rendered from ``gaussians`` at width
    ``resolution`` (or ``candidate_images`` are used instead, e.g. the training images;
    then ``gaussians`` may be None); queries are downsampled (antialiased) to the same
    size. Returns, per query, the index of the closest candidate and its mean squared
    colour difference, both [Q]; with ``top_k=K``, the K closest, closest first, [Q, K]
    (ties: the lower index first; the first column is the ``top_k=None`` answer)."""
    if candidate_images is None:
        if gaussians is None:
            raise ValueError("coarse_pose_render: give gaussians or candidate_images")
        cand = render_views(gaussians, candidate_cameras, width=resolution, batch_size=batch_size,
                            backend=backend, background=background, context=context, stage="render candidates")
    else:
        cand = resize_to_width(candidate_images, resolution)
        if cand.shape[0] != num_cameras(as_batch(candidate_cameras)):
            raise ValueError(f"coarse_pose_render: {cand.shape[0]} candidate images for "
                             f"{num_cameras(as_batch(candidate_cameras))} candidate cameras")
    q = resize_to_width(queries, resolution)
    if q.shape[1:] != cand.shape[1:]:
        raise ValueError(f"coarse_pose_render: queries resize to {q.shape[1:]} but candidates are {cand.shape[1:]}"
                         " (different aspect ratios)")
    k = _check_top_k(top_k, cand.shape[0], "coarse_pose_render")
    best, score = [], []
    for s in range(0, q.shape[0], 256):
        d = np.asarray(_sq_distances(q[s:s + 256], cand))
        order = np.argsort(d, axis=1, kind="stable")[:, :k]  # NaN sorts last
        best.append(order)
        score.append(np.take_along_axis(d, order, axis=1))
    best, score = np.concatenate(best), np.concatenate(score)
    return (best[:, 0], score[:, 0]) if top_k is None else (best, score)


def _check_top_k(top_k: int | None, n: int, where: str) -> int:
    """The number of candidates to keep (1 for None); a clear error when out of range."""
    k = 1 if top_k is None else int(top_k)
    if not 1 <= k <= n:
        raise ValueError(f"{where}: top_k (hypotheses) must be between 1 and the {n} candidates, got {top_k}")
    return k


def _to_grey(images, size: int = 400) -> np.ndarray:
    """RGB [B, H, W, 3] -> greyscale [B, size, size] (antialiased resize), a writable copy for torch."""
    return np.array(grey(resize(images, size, size)), np.float32)


def coarse_pose_loftr(
    queries: Float[Array, "Q H W 3"],
    candidate_images: Float[Array, "C H W 3"],
    *,
    matcher=None,
    weights: str | None = None,
    size: int = 400,
    context: Context = QUIET,
    top_k: int | None = None,
) -> tuple[Int[np.ndarray, "Q *K"], Float[np.ndarray, "Q *K"]]:
    """The reference's coarse pose: LoFTR ("indoor_new") matches between each query and
    every candidate (training) image, both ``size`` x ``size`` greyscale in [0, 1]; the
    candidate with the most matches wins. Returns (index [Q], match count [Q]); with
    ``top_k=K`` the K candidates with the most matches, most first, [Q, K] (ties: the
    lower index first).
    ``matcher``: a loaded kornia LoFTR; else loaded from ``weights`` (path, or
    ``$SPLATJAX_LOFTR_WEIGHTS``, or the torch hub cache; see :mod:`splatjax.nets.weights`)."""
    from ..nets import weights as weights_mod
    from .loftr import loftr_match_counts

    if matcher is None:
        path = weights_mod.find_loftr_weights(weights)
        if path is None:
            raise weights_mod.WeightsError(f"LoFTR coarse pose requested but no weights were found. "
                                           f"{weights_mod.loftr_guidance()}")
        matcher = weights_mod.load_loftr(path)
    k = _check_top_k(top_k, int(np.shape(candidate_images)[0]), "coarse_pose_loftr")
    qg, cg = _to_grey(queries, size), _to_grey(candidate_images, size)
    best, count = [], []
    for i in range(qg.shape[0]):
        counts = np.asarray(loftr_match_counts(matcher, qg[i], cg), np.float64)
        order = np.argsort(-counts, kind="stable")[:k]
        best.append(order)
        count.append(counts[order])
        context.tick("LoFTR coarse pose", i + 1, qg.shape[0])
    best, count = np.asarray(best, np.int64).reshape(-1, k), np.asarray(count, np.float64).reshape(-1, k)
    return (best[:, 0], count[:, 0]) if top_k is None else (best, count)


def resolve_coarse(coarse: str, loftr_weights: str | None = None, *, context: Context = QUIET) -> str:
    """"render" | "loftr" | "auto" -> the method used; "auto" is LoFTR when its weights
    are found, else render-and-compare (said through ``context``)."""
    if coarse not in COARSE_METHODS:
        raise ValueError(f"coarse must be one of {', '.join(COARSE_METHODS)}, got {coarse!r}")
    if coarse != "auto":
        return coarse
    from ..nets.weights import find_loftr_weights, loftr_guidance

    if find_loftr_weights(loftr_weights):  # a given path that does not exist raises
        return "loftr"
    context.say("[splatjax] coarse pose: no LoFTR weights found, so the reference's LoFTR retrieval is replaced by "
                f"render-and-compare retrieval (renders of the model at the training poses). {loftr_guidance()}")
    return "render"
