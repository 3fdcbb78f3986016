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

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..camera import Camera
from ..context import QUIET, Context
from ..gaussians import Gaussians
from ..image import resize_to_width
from ..sharding import ParallelConfig
from .cameras import as_batch
from .config import PoseConfig
from .fine import refine_poses_detailed
from .objectives import Objective

__all__ = ["screen_config", "screen_hypotheses"]


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
) -> tuple[Camera, Float[np.ndarray, "Q n"]]:
    """Screen ``n`` candidates per query: ``cameras`` stacked [Q * n], query-major, at the
    queries' size. Each is refined by :func:`splatjax.pose.refine_poses_detailed` with
    :func:`screen_config` at width ``min(config.screen_resolution, W)`` (queries resized,
    antialiased; intrinsics scaled, aspect kept) with the per-candidate keys of ``key`` (one
    key, split Q * n ways, or those Q * n keys). Returns the screened cameras [Q * n] at the
    queries' size and their losses [Q, n] at the screening width (inf: no finite loss)."""
    cams = as_batch(cameras)
    q, h, w = queries.shape[0], queries.shape[1], queries.shape[2]
    sw = min(int(config.screen_resolution), w)
    sh = max(1, int(round(h * sw / w)))
    small = resize_to_width(jnp.asarray(queries, jnp.float32), sw)
    ref = refine_poses_detailed(gaussians, cams.scaled(sw, sh), jnp.repeat(small, n, axis=0), screen_config(config),
                                key=key, context=context, parallel=parallel, objective=objective)
    return ref.cameras.scaled(w, h), np.asarray(ref.loss, np.float64).reshape(q, n)
