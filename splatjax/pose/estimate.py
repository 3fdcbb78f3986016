"""Pose estimation for query images of a fitted object: coarse retrieval, then SplatPose's
gradient refinement, batched; and renders at the estimated poses.

The stage is :func:`estimate_poses` (gaussians, queries, candidate cameras,
:class:`PoseConfig`, ``key``) -> :class:`PoseEstimate`; :func:`render_views` renders the
model at the estimated cameras. The parts: :mod:`.coarse` (render-and-compare and LoFTR
retrieval, the top-K candidates of each query), :mod:`.fine` (screw parameters, Adam,
vmapped chunks, best iterate, divergence, coarse-to-fine levels), :mod:`.cameras`
(camera batches, camera-to-world, sphere and in-plane candidates), :mod:`.keypoints`
(SIFT + rendered depth + PnP-RANSAC polish of the coarse candidates), :mod:`.objectives`
(the fine pose's loss as a value: built-ins and a registry), :mod:`.config`.

Poses returned to users are camera-to-world 4 x 4 in the Blender/OpenGL convention
(:func:`camera_to_c2w`), the convention of ``transforms.json`` data.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..camera import Camera
from ..context import QUIET, Context
from ..gaussians import Gaussians
from ..sharding import ParallelConfig
from .cameras import (
    as_batch,
    camera_to_c2w,
    index_cameras,
    inplane_angles,
    inplane_rotations,
    set_cameras,
    sphere_cameras,
)
from .coarse import coarse_pose_loftr, coarse_pose_render, render_views, resolve_coarse
from .config import PoseConfig
from .objectives import Objective
from .keypoints import keypoint_poses
from .fine import Refinement, query_keys, refine_poses_detailed
from .half_turn import check_half_turns
from .screen import screen_hypotheses

__all__ = ["Alternatives", "Polish", "PoseEstimate", "PoseStarts", "RenderedCandidates", "candidate_cameras",
           "render_candidates", "keypoint_polish", "pose_starts", "estimate_poses"]

Polish = Callable[..., tuple[Camera, object]]


@dataclasses.dataclass(frozen=True)
class Alternatives:
    """The n candidates of each of Q queries that went past the polish, in the order the
    fine pose takes them: a screened query's by its screening loss (lowest first), the
    others' by PnP inliers (retrieval order without a polish), so the first K =
    ``config.hypotheses`` of each are the refined hypotheses. cameras [Q * n] (query-major):
    where a fine pose from each would start (its screened pose where the query was
    screened); starts [Q * n]: the polished candidates they came from; index / score /
    inliers [Q, n]: retrieval index and score, PnP inliers (-1: no polish)."""

    cameras: Camera
    starts: Camera
    index: np.ndarray
    score: np.ndarray
    inliers: np.ndarray


@dataclasses.dataclass(frozen=True)
class PoseEstimate:
    """Coarse and fine poses of Q queries, K = ``config.hypotheses`` hypotheses each.

    Of the kept (chosen) hypothesis: coarse_index: index into the candidates;
    coarse_score: its distance (render) or match count (loftr); coarse_cameras / cameras:
    stacked starting (after the optional polish) / refined cameras; coarse_c2w / c2w:
    Blender camera-to-world [Q, 4, 4]; loss_traces [Q, k]: the loss before each step;
    loss [Q]: the full-resolution loss of the returned iterate; best_step [Q]: its number
    of steps (0 = the start, k = the last); diverged [Q]: the refinement's loss became
    NaN/inf or grew (the pose is still its best iterate). Of every hypothesis:
    hypothesis_index / hypothesis_score [Q, K] (best coarse first), hypothesis_losses
    [Q, K] (inf: no finite loss); chosen [Q]: the kept column (lowest loss); inliers [Q]:
    the kept hypothesis's keypoint PnP inliers (0: the keypoint pose fell back to the
    retrieval candidate; -1: no polish); screen_losses [Q, n]: the screening losses of the n
    screened candidates, most inliers first (a row of NaN: that query was not screened, its
    keypoint pose had enough inliers; None: no screening; see :mod:`.screen`); fine_steps [Q]:
    the fine-pose steps the kept hypothesis took (fewer than ``config.steps`` where
    ``config.stop_patience`` stopped it); alternatives: the candidates past the polish
    (:class:`Alternatives`), for :func:`splatjax.pose.retry_poses`; retried [Q]: the
    alternatives a retry refined (0: none); retry_rank [Q]: the rank in ``alternatives`` of
    the retried candidate kept (-1: the estimate's own pose); half_turn [Q]: the principal
    axis of the model a half-turn of the pose was taken about (-1: none; see
    :mod:`splatjax.pose.half_turn`), half_turn_ratio [Q]: the best turn's screened loss over
    the pose's (NaN: not checked).
    method: "render" or "loftr"; seconds: {"coarse": s, "polish": s, "screen": s, "fine": s,
    "half_turn": s}.
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
    loss: np.ndarray
    best_step: np.ndarray
    diverged: np.ndarray
    hypothesis_index: np.ndarray
    hypothesis_score: np.ndarray
    hypothesis_losses: np.ndarray
    chosen: np.ndarray
    inliers: np.ndarray | None = None
    screen_losses: np.ndarray | None = None
    fine_steps: np.ndarray | None = None
    alternatives: Alternatives | None = None
    retried: np.ndarray | None = None
    retry_rank: np.ndarray | None = None
    half_turn: np.ndarray | None = None
    half_turn_ratio: np.ndarray | None = None


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


@dataclasses.dataclass(frozen=True)
class RenderedCandidates:
    """Render-and-compare candidates rendered once (:func:`render_candidates`), for runs
    that estimate poses batch by batch against one model: cameras [C'] (the candidates and
    their in-plane rolls, at the queries' size), images [C', h, w, 3] (renders at the coarse
    width), and ``settings``, the PoseConfig fields they depend on (checked on use)."""

    cameras: Camera
    images: Array
    settings: tuple


def _render_settings(config: PoseConfig) -> tuple:
    return (config.coarse_resolution, config.inplane_rotations, tuple(config.background), config.backend)


def _rolled(cands: Camera, config: PoseConfig) -> Camera:
    if not config.inplane_rotations:
        return cands
    return inplane_rotations(cands, np.concatenate([[0.0], inplane_angles(config.inplane_rotations)]))


def render_candidates(gaussians: Gaussians, candidates: Camera, config: PoseConfig = PoseConfig(), *,
                      context: Context = QUIET) -> RenderedCandidates:
    """The render-and-compare candidates of ``candidates`` (e.g. :func:`candidate_cameras`)
    rendered at ``config.coarse_resolution`` with their ``config.inplane_rotations`` rolls:
    pass the result as ``candidates`` to :func:`estimate_poses` to render them once for
    many calls (the same poses as passing the cameras)."""
    cams = _rolled(as_batch(candidates), config)
    images = render_views(gaussians, cams, width=config.coarse_resolution, backend=config.backend,
                          background=config.background, context=context, stage="render candidates")
    return RenderedCandidates(cams, images, _render_settings(config))


def _coarse(gaussians, queries, cands, config, k, *, candidate_images, loftr_matcher, context):
    """(method, candidate cameras searched, index [Q, k], score [Q, k]): the k best."""
    if isinstance(cands, RenderedCandidates):
        if config.coarse == "loftr" or cands.settings != _render_settings(config):
            raise ValueError(f"estimate_poses: candidates rendered with (coarse_resolution, inplane_rotations, "
                             f"background, backend) = {cands.settings} do not serve coarse={config.coarse!r} with "
                             f"{_render_settings(config)}; pass the cameras or render them again")
        idx, score = coarse_pose_render(None, cands.cameras, queries, resolution=config.coarse_resolution,
                                        candidate_images=cands.images, top_k=k)
        return "render", cands.cameras, idx, score
    method = resolve_coarse(config.coarse, config.loftr_weights, context=context) if loftr_matcher is None else (
        "loftr" if config.coarse in ("auto", "loftr") else config.coarse)
    if method == "loftr":
        if candidate_images is None:
            raise ValueError("estimate_poses: LoFTR coarse pose needs candidate_images (the training images)")
        n_train = candidate_images.shape[0]
        idx, score = coarse_pose_loftr(queries, candidate_images, matcher=loftr_matcher,
                                       weights=config.loftr_weights, context=context, top_k=k)
        return method, index_cameras(cands, slice(0, n_train)), idx, score
    cands = _rolled(cands, config)
    idx, score = coarse_pose_render(gaussians, cands, queries, resolution=config.coarse_resolution,
                                    backend=config.backend, background=config.background, context=context,
                                    top_k=k)
    return method, cands, idx, score


def keypoint_polish(config: PoseConfig, *, context: Context = QUIET) -> Polish:
    """The polish of ``config.keypoints``: :func:`keypoint_poses` with ``config.keypoint``,
    rendering with ``config.backend`` over ``config.background``, each query's candidates
    polished until ``config.hypotheses`` of them have ``config.polish_stop_inliers``
    inliers."""

    def polish(gaussians, queries, cameras, k, _config):
        stop = (config.hypotheses, config.polish_stop_inliers) if config.polish_stop_inliers > 0 else None
        return keypoint_poses(gaussians, queries, cameras, k, config.keypoint, backend=config.backend,
                              background=config.background, context=context, stop=stop)

    return polish


def _keep(order, starts, *columns):
    """Per query the columns ``order`` [Q, k] of the [Q * n] query-major ``starts`` and of
    each [Q, n] array of ``columns``: (starts [Q * k], *columns [Q, k])."""
    q, n = columns[0].shape
    flat = (np.arange(q)[:, None] * n + order).reshape(-1)
    return (index_cameras(starts, jnp.asarray(flat)),) + tuple(np.take_along_axis(a, order, axis=1) for a in columns)


def _polish_and_pick(polish, gaussians, queries, starts, idx, score, k, config):
    """Polish the [Q * kr] query-major ``starts`` and keep, per query, the ``k`` with the
    most inliers (retrieval order on ties). Returns (starts [Q * k], idx, score, inliers
    [Q, k])."""
    q, kr = idx.shape
    starts, inliers = polish(gaussians, queries, starts, kr, config)
    inliers = np.asarray(inliers, np.int64).reshape(q, kr)
    return _keep(np.argsort(-inliers, axis=1, kind="stable")[:, :k], starts, idx, score, inliers)


def derived_keys(key: jax.Array, q: int, k: int, n: int, stage: int) -> jax.Array:
    """Q * n keys of a stage, query-major, each query's from its first per-hypothesis key
    (of ``query_keys(key, Q * k)``) folded with ``stage`` (1: screening, 2: retry), so that
    queries estimated in slices get the keys of the whole."""
    return _folded_splits(query_keys(key, q * k), k=k, n=n, stage=stage)


@functools.partial(jax.jit, static_argnames=("k", "n", "stage"))
def _folded_splits(keys: jax.Array, *, k: int, n: int, stage: int) -> jax.Array:
    # one compiled program per key count (eagerly, each random primitive compiled apart)
    return jax.vmap(lambda kk: jax.random.split(jax.random.fold_in(kk, stage), n))(keys[::k]).reshape(-1)


def _choose(ref: Refinement, q: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hypothesis losses [Q, K], chosen column [Q], flat index of the chosen [Q]) of a
    query-major refinement of Q * K hypotheses; the lowest loss wins (the first on ties)."""
    losses = np.asarray(ref.loss, np.float64).reshape(q, k)  # inf, never NaN, when no loss was finite
    chosen = np.argmin(losses, axis=1)
    return losses, chosen, np.arange(q) * k + chosen


def _ordered(order, pool, where, starts, idx, score, inliers) -> Alternatives:
    """The :class:`Alternatives` of the [Q, n] ``order``: per query, row ``where[i, j]`` of
    ``pool`` is where candidate j's fine pose starts, row i * n + j of ``starts`` its
    polished start."""
    cams = index_cameras(pool, jnp.asarray(np.take_along_axis(where, order, axis=1).reshape(-1)))
    starts, idx, score, inliers = _keep(order, starts, idx, score, inliers)
    return Alternatives(cams, starts, idx, score, inliers)


def _screen_some(gaussians, queries, starts, idx, score, inliers, config, *, key, context, parallel, objective):
    """The screening step of :func:`estimate_poses` on the n candidates per query of
    ``starts`` [Q * n] (most inliers first): the queries whose first candidate has fewer
    than ``config.screen_skip_inliers`` PnP inliers (all, when that is 0) are screened and
    order their candidates by screened loss, from their screened poses; the others keep
    their order and their candidates as they are. Returns (:class:`Alternatives`, screening
    losses [Q, n], NaN for a query not screened)."""
    q, n = idx.shape
    k, skip = config.hypotheses, config.screen_skip_inliers
    need = np.ones(q, bool) if skip <= 0 else inliers[:, 0] < skip
    order = np.tile(np.arange(n), (q, 1))
    losses = np.full((q, n), np.nan)
    pool, where = starts, np.arange(q * n).reshape(q, n)  # per query, its candidates' rows in pool
    rows = np.flatnonzero(need)
    if rows.size:
        pick = jnp.asarray((rows[:, None] * n + np.arange(n)).reshape(-1))
        keys = derived_keys(key, q, k, n, 1).reshape(q, n)[jnp.asarray(rows)].reshape(-1)
        screened, losses[rows] = screen_hypotheses(gaussians, index_cameras(starts, pick), queries[jnp.asarray(rows)],
                                                   n, config, key=keys, context=context, parallel=parallel,
                                                   objective=objective)
        order[rows] = np.argsort(losses[rows], axis=1, kind="stable")  # inf (no finite loss) sorts last
        pool = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), starts, screened)
        where[rows] = q * n + np.arange(rows.size * n).reshape(-1, n)
    return _ordered(order, pool, where, starts, idx, score, inliers), losses


@dataclasses.dataclass(frozen=True)
class PoseStarts:
    """Where the fine pose of Q queries starts, K = ``config.hypotheses`` per query
    (:func:`pose_starts`): fine_starts [Q * K] (query-major; screened poses where a query
    was screened), starts [Q * K] (the polished candidates they came from), idx / score /
    inliers [Q, K] (retrieval index and score, PnP inliers), screen_losses [Q, n] or None,
    method ("render" or "loftr"), seconds {"coarse", "polish", "screen"}, alternatives
    (:class:`Alternatives`: all n candidates past the polish, whose first K are these)."""

    fine_starts: Camera
    starts: Camera
    idx: np.ndarray
    score: np.ndarray
    inliers: np.ndarray
    screen_losses: np.ndarray | None
    method: str
    seconds: dict
    alternatives: Alternatives | None = None


def pose_starts(
    gaussians: Gaussians,
    queries: Float[Array, "Q H W 3"],
    candidates: Camera | RenderedCandidates,
    config: PoseConfig = PoseConfig(),
    *,
    key: jax.Array,
    candidate_images: Float[Array, "C H W 3"] | None = None,
    loftr_matcher=None,
    polish: Polish | None = None,
    context: Context = QUIET,
    parallel: ParallelConfig | None = None,
    objective: str | Objective | None = None,
) -> PoseStarts:
    """The pose stage up to the fine pose (coarse retrieval, polish, screening) with the
    arguments of :func:`estimate_poses`: a :class:`PoseStarts`."""
    queries = jnp.asarray(queries, jnp.float32)
    q, k = queries.shape[0], config.hypotheses
    if polish is None and config.keypoints:
        polish = keypoint_polish(config, context=context)
    screening = config.screen_steps > 0 and config.screen_candidates > k
    n = config.screen_candidates if screening else k  # the candidates past the polish
    kr = max(n, config.keypoint_candidates) if polish is not None else n
    t0 = time.perf_counter()
    cands = candidates if isinstance(candidates, RenderedCandidates) else as_batch(candidates)
    method, cands, idx, score = _coarse(gaussians, queries, cands, config, kr,
                                        candidate_images=candidate_images, loftr_matcher=loftr_matcher,
                                        context=context)
    starts = index_cameras(cands, jnp.asarray(idx.reshape(-1)))  # [Q * kr], query-major
    jax.block_until_ready(starts.R)
    t1 = time.perf_counter()
    inliers = np.full((q, n), -1, np.int64)
    if polish is not None:
        starts, idx, score, inliers = _polish_and_pick(polish, gaussians, queries, starts, idx, score, n, config)
        jax.block_until_ready(starts.R)
    t2 = time.perf_counter()
    screen_losses = None
    if screening:
        alt, screen_losses = _screen_some(gaussians, queries, starts, idx, score, inliers, config, key=key,
                                          context=context, parallel=parallel, objective=objective)
        jax.block_until_ready(alt.cameras.R)
    else:
        alt = Alternatives(starts, starts, idx, score, inliers)
    seconds = {"coarse": t1 - t0, "polish": t2 - t1, "screen": time.perf_counter() - t2}
    first = np.tile(np.arange(k), (q, 1))
    fine_starts = index_cameras(alt.cameras, jnp.asarray((np.arange(q)[:, None] * n + first).reshape(-1)))
    return PoseStarts(fine_starts, *_keep(first, alt.starts, alt.index, alt.score, alt.inliers), screen_losses,
                      method, seconds, alt)


def estimate_poses(
    gaussians: Gaussians,
    queries: Float[Array, "Q H W 3"],
    candidates: Camera | RenderedCandidates,
    config: PoseConfig = PoseConfig(),
    *,
    key: jax.Array,
    candidate_images: Float[Array, "C H W 3"] | None = None,
    loftr_matcher=None,
    polish: Polish | None = None,
    context: Context = QUIET,
    parallel: ParallelConfig | None = None,
    objective: str | Objective | None = None,
) -> PoseEstimate:
    """The pose stage: coarse pose (the ``config.hypotheses`` = K best candidates of every
    query), then the optional ``polish`` of every candidate, then the fine pose of all
    Q * K hypotheses in one batched run; each query keeps the hypothesis of lowest loss.

    ``candidates``: stacked cameras at the query resolution, e.g.
    :func:`candidate_cameras` of the training cameras; for LoFTR the first C of them
    must be the cameras of ``candidate_images`` (the training images).
    Render-and-compare adds ``config.inplane_rotations`` rolls of every candidate;
    ``candidates`` may also be those already rendered (:func:`render_candidates`).
    ``polish(gaussians, queries [Q], cameras [Q*K query-major], K, config) -> (cameras
    [Q*K], inliers [Q*K])`` moves each coarse candidate before the fine pose (e.g. a
    keypoint pose); None: :func:`keypoint_polish` when ``config.keypoints`` (then the
    ``config.keypoint_candidates`` best retrieval candidates are polished and the K with the
    most PnP inliers refined). Screening (``config.screen_steps`` > 0 and
    ``config.screen_candidates`` = n > K): the n candidates with the most inliers (retrieval
    order without a polish) of every query whose best candidate has fewer than
    ``config.screen_skip_inliers`` PnP inliers are refined briefly at low resolution
    (:func:`screen_hypotheses`, keys from each query's first key) and the K of lowest
    screened loss go on to the fine pose from their screened poses. Hypothesis j of query i
    is refined with the screw initialisation of
    ``jax.random.split(key, Q * K)[i * K + j]`` (K = 1: exactly :func:`refine_poses` from
    the best candidate); ``key`` may also be those Q * K keys themselves, so that queries
    estimated in slices get the keys of the whole. ``context`` gets progress (chunks) and
    which coarse method "auto" chose; ``parallel`` shards the fine pose over local
    devices (see :func:`refine_poses`); ``objective`` replaces ``config.objective`` (a
    function or a registered name, see :mod:`.objectives`), the loss hypotheses are chosen by."""
    queries = jnp.asarray(queries, jnp.float32)
    st = pose_starts(gaussians, queries, candidates, config, key=key, candidate_images=candidate_images,
                     loftr_matcher=loftr_matcher, polish=polish, context=context, parallel=parallel,
                     objective=objective)
    k = config.hypotheses
    t3 = time.perf_counter()
    targets = queries if k == 1 else jnp.repeat(queries, k, axis=0)
    ref = refine_poses_detailed(gaussians, st.fine_starts, targets, config, key=key, context=context,
                                parallel=parallel, objective=objective)
    jax.block_until_ready(ref.cameras.R)
    seconds = dict(st.seconds, fine=time.perf_counter() - t3)
    est = _estimate(ref, st.starts, st.idx, st.score, st.inliers, st.method, seconds, st.screen_losses,
                    st.alternatives)
    return _half_turns(gaussians, queries, est, config, key=key, context=context, parallel=parallel,
                       objective=objective)


def _half_turns(gaussians, queries, est: PoseEstimate, config: PoseConfig, *, key, context, parallel,
                objective) -> PoseEstimate:
    """The half-turn check of :func:`estimate_poses` (:func:`splatjax.pose.check_half_turns`,
    when ``config.half_turns`` and ``config.screen_steps`` > 0) on the queries whose kept
    hypothesis has fewer than ``config.screen_skip_inliers`` PnP inliers (all when that is 0
    or without a polish); a turn that won replaces the fine pose (the coarse pose stays)."""
    q, k = est.c2w.shape[0], config.hypotheses
    t0 = time.perf_counter()
    if not (config.half_turns and config.screen_steps > 0):
        return dataclasses.replace(est, half_turn=np.full(q, -1, np.int64), half_turn_ratio=np.full(q, np.nan))
    skip = config.screen_skip_inliers
    check = np.ones(q, bool) if skip <= 0 or est.inliers is None else np.asarray(est.inliers) < skip
    if not check.any():  # every query pinned by its keypoints: no keys to derive, nothing to screen
        return dataclasses.replace(est, half_turn=np.full(q, -1, np.int64), half_turn_ratio=np.full(q, np.nan),
                                   seconds=dict(est.seconds, half_turn=time.perf_counter() - t0))
    found = check_half_turns(gaussians, queries, est.cameras, est.loss, check, config,
                             screen_keys=derived_keys(key, q, k, 4, 3), refine_keys=derived_keys(key, q, k, 1, 4),
                             context=context, parallel=parallel, objective=objective)
    if found.rows.size:
        est = replace_fine_poses(est, found.rows, found.refinement, np.arange(found.rows.size))
    jax.block_until_ready(est.cameras.R)
    seconds = dict(est.seconds, half_turn=time.perf_counter() - t0)
    return dataclasses.replace(est, half_turn=found.turn, half_turn_ratio=found.ratio, seconds=seconds)


def replace_fine_poses(est: PoseEstimate, rows: np.ndarray, ref: Refinement, src: np.ndarray) -> PoseEstimate:
    """``est`` with the fine pose of queries ``rows`` taken from rows ``src`` of the
    refinement ``ref``: cameras, c2w, loss and :func:`refined_fields` (the coarse pose and
    the hypotheses' record stay)."""
    rows, src = np.asarray(rows, np.int64), np.asarray(src, np.int64)
    cams = set_cameras(est.cameras, rows, index_cameras(ref.cameras, jnp.asarray(src)))

    def put(old, new):
        out = np.array(old, copy=True)
        out[rows] = np.asarray(new)
        return out

    refined = {name: put(getattr(est, name), value) for name, value in refined_fields(ref, src).items()}
    return dataclasses.replace(est, cameras=cams, c2w=camera_to_c2w(cams),
                               loss=put(est.loss, np.asarray(ref.loss, np.float64)[src]), **refined)


def _estimate(ref, starts, idx, score, inliers, method, seconds, screen_losses=None, alternatives=None) -> PoseEstimate:
    """The :class:`PoseEstimate` of the refined hypotheses ``ref`` (query-major, K per
    query): each query keeps the hypothesis of lowest loss."""
    q, k = idx.shape
    losses, chosen, flat = _choose(ref, q, k)
    pick = jnp.asarray(flat)
    cams, coarse_cams = index_cameras(ref.cameras, pick), index_cameras(starts, pick)
    rows = np.arange(q)
    return PoseEstimate(
        coarse_index=idx[rows, chosen], coarse_score=score[rows, chosen], coarse_cameras=coarse_cams,
        cameras=cams, coarse_c2w=camera_to_c2w(coarse_cams), c2w=camera_to_c2w(cams), method=method,
        seconds=seconds, loss=losses[rows, chosen], hypothesis_index=idx, hypothesis_score=score,
        hypothesis_losses=losses, chosen=chosen, inliers=inliers[rows, chosen], screen_losses=screen_losses,
        alternatives=alternatives, retried=np.zeros(q, np.int64), retry_rank=np.full(q, -1, np.int64),
        **refined_fields(ref, flat))


def refined_fields(ref: Refinement, rows: np.ndarray) -> dict:
    """The :class:`PoseEstimate` fields taken from rows ``rows`` of the refinement ``ref``:
    loss_traces, best_step, diverged, fine_steps (numpy)."""
    return dict(loss_traces=np.asarray(ref.traces)[rows], best_step=np.asarray(ref.best_step)[rows],
                diverged=np.asarray(ref.diverged)[rows], fine_steps=np.asarray(ref.steps)[rows])
