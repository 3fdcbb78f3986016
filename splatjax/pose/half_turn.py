"""A second look at every fine pose of a part that may be near-symmetric: the pose turned half
a turn about each of the model's principal axes.

A car-like or boxy part looks much the same after half a turn about one of its axes (front
and back swapped): its outline barely moves, and when retrieval and the screening only
offered candidates near the turned view, the fine pose converges there and stays (a finite,
non-growing loss; a silhouette IoU of 0.93-0.96). No screened candidate lies in the right
basin, so the retry (:mod:`.retry`) cannot find it either. The right pose is then the kept
pose composed with the half-turn that nearly maps the object onto itself.

The turns are about the principal axes of the Gaussians' centres (weighted by opacity)
through their weighted centroid: a mirror or rotation symmetry of a part has its axes
there. For a query the keypoints did not pin down (fewer than ``screen_skip_inliers`` PnP
inliers, i.e. a screened query), :func:`check_half_turns` (applied by
:func:`splatjax.pose.estimate_poses` when ``config.half_turns``) screens the kept pose and its
three turns alike (:func:`splatjax.pose.screen_hypotheses`: the screening's short
refinement at its width) and, where a turn screens lower than the kept pose, refines that turn in
full; the query keeps the lower full-resolution loss. The measurements behind it are in
BENCHMARKS.md ("Half-turn check").
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ..camera import Camera
from ..context import QUIET, Context
from ..gaussians import Gaussians
from ..sharding import ParallelConfig
from .cameras import index_cameras, interleave_cameras, num_cameras
from .config import PoseConfig
from .fine import Refinement, refine_poses_detailed
from .objectives import Objective
from .screen import screen_hypotheses

__all__ = ["principal_half_turns", "turn_cameras", "half_turn_candidates", "HalfTurnCheck", "check_half_turns"]


def principal_half_turns(gaussians: Gaussians) -> tuple[Float[np.ndarray, "3 3 3"], Float[np.ndarray, " 3"]]:
    """The rotations by pi about the three principal axes of the Gaussians' centres
    (eigenvectors of their covariance, weighted by opacity; smallest spread first) and the
    weighted centroid they turn about (world units)."""
    means = np.asarray(gaussians.means, np.float64).reshape(-1, 3)
    w = np.asarray(gaussians.opacities, np.float64).reshape(-1)
    if means.shape[0] == 0 or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("principal_half_turns: the model has no Gaussian of positive opacity")
    w = w / w.sum()
    centre = w @ means
    d = means - centre
    _, axes = np.linalg.eigh((d * w[:, None]).T @ d)
    turns = np.stack([2.0 * np.outer(a, a) - np.eye(3) for a in axes.T])  # rotation by pi about unit axis a
    return turns, centre


def turn_cameras(cameras: Camera, turn: Float[np.ndarray, "3 3"], centre: Float[np.ndarray, " 3"]) -> Camera:
    """``cameras`` (world-to-camera R, t) composed with the world motion M: x -> turn (x -
    centre) + centre, i.e. world-to-camera R turn, R (centre - turn centre) + t: the new
    camera sees a point y where the old one sees M y. For a half-turn (M is its own inverse)
    that is the camera moved by M, which sees the object turned back by M: a part symmetric
    under M renders alike."""
    turn, centre = jnp.asarray(turn, jnp.float32), jnp.asarray(centre, jnp.float32)
    R, t = cameras.R, cameras.t
    return cameras.with_pose(R @ turn, t + R @ (centre - turn @ centre))


def half_turn_candidates(gaussians: Gaussians, cameras: Camera) -> Camera:
    """Per camera of the batch ``cameras`` [Q], itself and its turns by each
    :func:`principal_half_turns` of ``gaussians``: [Q * 4], query-major."""
    turns, centre = principal_half_turns(gaussians)
    return interleave_cameras([cameras] + [turn_cameras(cameras, s, centre) for s in turns])


class HalfTurnCheck(NamedTuple):
    """What :func:`check_half_turns` found for Q queries: ``turn`` [Q], the axis (0-2,
    smallest spread first) of the turn that won (-1: none; the kept pose stays); ``ratio``
    [Q], the best turn's screened loss over the kept pose's (NaN: not checked); ``rows``
    [R], the queries a turn won, and ``refinement``, their refined turns (R rows; None when
    R = 0)."""

    turn: np.ndarray
    ratio: np.ndarray
    rows: np.ndarray
    refinement: Refinement | None


def check_half_turns(
    gaussians: Gaussians,
    queries: Float[Array, "Q H W 3"],
    cameras: Camera,
    losses: Float[np.ndarray, " Q"],
    check: Bool[np.ndarray, " Q"],
    config: PoseConfig = PoseConfig(),
    *,
    screen_keys: jax.Array,
    refine_keys: jax.Array,
    context: Context = QUIET,
    parallel: ParallelConfig | None = None,
    objective: str | Objective | None = None,
) -> HalfTurnCheck:
    """The half-turn check (see the module) of the queries where ``check`` is True, whose
    fine poses are ``cameras`` [Q] with full-resolution ``losses`` [Q]: each pose and the
    pose turned by each :func:`principal_half_turns` are screened alike
    (:func:`splatjax.pose.screen_hypotheses` with ``config``'s screening settings;
    ``screen_keys``: Q * 4 keys, query-major); where the best turn's screened loss is below
    the pose's, the turn is refined in full from its screened pose (``refine_keys``: Q keys;
    one query per chunk) and wins when its full-resolution loss is below ``losses``. Returns
    a :class:`HalfTurnCheck`."""
    q = int(np.asarray(losses).shape[0])
    turn, ratio = np.full(q, -1, np.int64), np.full(q, np.nan)
    rows = np.flatnonzero(np.asarray(check, bool))
    if rows.size == 0:
        return HalfTurnCheck(turn, ratio, rows, None)
    pick = jnp.asarray(rows)
    stacked = half_turn_candidates(gaussians, index_cameras(cameras, pick))
    n = num_cameras(stacked) // rows.size
    sel = jnp.asarray(queries, jnp.float32)[pick]
    screen_keys = jnp.asarray(screen_keys)
    keys = screen_keys.reshape((q, n) + screen_keys.shape[1:])[pick]
    keys = keys.reshape((-1,) + keys.shape[2:])
    screened, screen_losses = screen_hypotheses(gaussians, stacked, sel, n, config, key=keys, context=context,
                                                parallel=parallel, objective=objective, stage="half-turn screening")
    best = np.argmin(screen_losses[:, 1:], axis=1)
    best_loss = screen_losses[np.arange(rows.size), 1 + best]
    ratio[rows] = best_loss / screen_losses[:, 0]
    lower = np.flatnonzero(best_loss < screen_losses[:, 0])
    if lower.size == 0:
        return HalfTurnCheck(turn, ratio, np.zeros(0, np.int64), None)
    # one query per chunk, as the retry's rounds: one compiled program (shared with the retry) for any count
    ref = refine_poses_detailed(gaussians, index_cameras(screened, jnp.asarray(lower * n + 1 + best[lower])),
                                sel[jnp.asarray(lower)], dataclasses.replace(config, batch_size=1),
                                key=jnp.asarray(refine_keys)[jnp.asarray(rows[lower])], context=context,
                                parallel=parallel, objective=objective, stage="half-turn check", full_chunks=True)
    won = np.flatnonzero(np.asarray(ref.loss, np.float64) < np.asarray(losses, np.float64)[rows[lower]])
    turn[rows[lower[won]]] = best[lower[won]]
    refinement = None if won.size == 0 else jax.tree_util.tree_map(lambda a: a[jnp.asarray(won)], ref)
    return HalfTurnCheck(turn, ratio, rows[lower[won]], refinement)
