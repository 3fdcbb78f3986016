"""Screening of pose hypotheses: a short, cheap refinement of every candidate that ranks them.

Retrieval (and the keypoint polish) ranks a query's candidates by image distance or inlier
count; on textureless, glossy or near-symmetric objects the first candidate is often a
flipped view (rotation error 2-3 rad) while another of the first eight lies in the right
basin. Ranking the candidates by the fine pose's own loss after a full refinement finds the
right one, but costs a full refinement per candidate. Screening refines each candidate for
``screen_steps`` steps at a width of ``screen_resolution`` pixels, with learning rate
``screen_lr`` (larger than the fine pose's: the candidates are tenths of a radian off), and
ranks them by the loss of their best iterate at that width; the winners then get the full
fine pose. The measurements behind the defaults are in BENCHMARKS.md ("Pose screening").
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..camera import Camera
from ..context import QUIET, Context
from ..gaussians import Gaussians
from ..image import resize_to_width
from ..sharding import ParallelConfig
from .cameras import as_batch, index_cameras, set_cameras
from .config import PoseConfig
from .fine import query_keys, refine_poses_detailed, scan_poses, start_scan
from .objectives import Objective

__all__ = ["halving_split", "screen_config", "screen_hypotheses", "screen_inputs", "screen_model"]


def screen_config(config: PoseConfig) -> PoseConfig:
    """The refinement settings of the screening: ``screen_steps`` steps at learning rate
    ``screen_lr``, one resolution level (the caller renders at ``screen_resolution``), no
    early stop (the candidates are ranked after equal budgets), the reference's screw
    initialisation (the settings were chosen with it)."""
    return dataclasses.replace(config, steps=config.screen_steps, lr=config.screen_lr, fine_levels=1, stop_patience=0,
                               init_theta=0.0)


def screen_hypotheses(
    gaussians: Gaussians,
    cameras: Camera,
    queries: Float[Array, "Q H W 3"],
    n: int,
    config: PoseConfig,
    *,
    key: jax.Array,
    context: Context = QUIET,
    parallel: ParallelConfig | None = None,
    objective: str | Objective | None = None,
    stage: str = "screening",
) -> tuple[Camera, Float[np.ndarray, "Q n"]]:
    """Screen ``n`` candidates per query: ``cameras`` stacked [Q * n], query-major, at the
    queries' size. Each is refined by :func:`splatjax.pose.refine_poses_detailed` with
    :func:`screen_config` at width ``min(config.screen_resolution, W)`` (queries resized,
    antialiased; intrinsics scaled, aspect kept) with the per-candidate keys of ``key`` (one
    key, split Q * n ways, or those Q * n keys). With ``config.screen_halving_step`` = s
    (:func:`halving_split`), the refinement of each query's worse half (the last n // 2 by
    the lowest loss of their first s steps) stops after s steps (:func:`splatjax.pose.scan_poses`):
    a kept candidate ends exactly as without halving, a dropped one with its best iterate
    of s steps. The screening renders :func:`screen_model` of ``gaussians`` (the
    ``config.screen_gaussians`` share). Returns the screened cameras [Q * n] at the queries'
    size and their losses [Q, n] at the screening width (inf: no finite loss); ``stage``
    names the progress."""
    q, h, w = queries.shape[0], queries.shape[1], queries.shape[2]
    gaussians = screen_model(gaussians, config.screen_gaussians)  # at least SCREEN_MIN_GAUSSIANS
    small_cams, small = screen_inputs(cameras, queries, n, config)
    keys = query_keys(key, q * n)
    split, sc = halving_split(config, n), screen_config(config)
    kw = dict(context=context, parallel=parallel, objective=objective, stage=stage)
    if not split:
        ref = refine_poses_detailed(gaussians, small_cams, small, sc, key=keys, **kw)
        return ref.cameras.scaled(w, h), np.asarray(ref.loss, np.float64).reshape(q, n)
    # every candidate's first `split` steps; then the better half of each query's goes on from where it stands
    state, ended = scan_poses(gaussians, small_cams, small, start_scan(sc, key=keys, b=q * n),
                              dataclasses.replace(sc, steps=split), 0, **kw)
    losses = np.asarray(ended.loss, np.float64).reshape(q, n)
    on = (np.arange(q)[:, None] * n + np.argsort(losses, axis=1, kind="stable")[:, : n - n // 2]).reshape(-1)
    pick = jnp.asarray(on)
    rest = dataclasses.replace(sc, steps=sc.steps - split)
    _, more = scan_poses(gaussians, index_cameras(small_cams, pick), small[pick],
                         jax.tree_util.tree_map(lambda a: a[pick], state), rest, split, **kw)
    losses[on // n, on % n] = np.asarray(more.loss, np.float64)
    screened = set_cameras(ended.cameras, pick, more.cameras)
    return screened.scaled(w, h), losses


# a model this small is rendered whole by the screening: it is cheap, and a share of a few hundred
# Gaussians is no longer the object (the dev benchmark's models have 12-20k, so a quarter is 3-5k)
SCREEN_MIN_GAUSSIANS = 2048


def screen_model(gaussians: Gaussians, share: float, minimum: int | None = None) -> Gaussians:
    """The Gaussians the screening renders: the ceil(``share`` * N) of highest opacity, but
    at least ``minimum`` (None: :data:`SCREEN_MIN_GAUSSIANS`), in their order in
    ``gaussians`` (ties: the earlier first); all of them (the same object) when that is N.
    At the screening's 64 px a step's kernel time grows with the Gaussians (mostly the
    blending of every Gaussian binned to a tile), and the faint ones left out change a 64 px
    render little, so candidates rank nearly as with the whole model (BENCHMARKS.md, the
    screening's Gaussians)."""
    n = int(gaussians.means.shape[0])
    floor = SCREEN_MIN_GAUSSIANS if minimum is None else int(minimum)
    keep = min(n, max(1, floor, math.ceil(float(share) * n)))
    if keep >= n:
        return gaussians
    opacity = np.asarray(gaussians.opacities, np.float64).reshape(-1)
    top = np.sort(np.argsort(-opacity, kind="stable")[:keep])
    return gaussians.take(jnp.asarray(top))


def screen_inputs(cameras: Camera, queries: Float[Array, "Q H W 3"], n: int,
                  config: PoseConfig) -> tuple[Camera, Float[Array, "Qn h w 3"]]:
    """What the screening refines at: the Q * n ``cameras`` scaled to width ``min(
    config.screen_resolution, W)`` (aspect kept) and each query resized to it (antialiased)
    and repeated n times (query-major)."""
    h, w = queries.shape[1], queries.shape[2]
    sw = min(int(config.screen_resolution), w)
    sh = max(1, int(round(h * sw / w)))
    small = jnp.repeat(resize_to_width(jnp.asarray(queries, jnp.float32), sw), n, axis=0)
    return as_batch(cameras).scaled(sw, sh), small


def halving_split(config: PoseConfig, n: int) -> int:
    """The screening step after which only the better half of ``n`` candidates goes on
    (``config.screen_halving_step``), or 0 where nothing is dropped (0, not before the
    last step, or fewer than 2 candidates)."""
    s = int(config.screen_halving_step)
    return s if 0 < s < config.screen_steps and n >= 2 else 0
