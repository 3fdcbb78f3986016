"""A second try for the queries whose fine pose is not trusted: refine the next candidates
that lie in other basins, and keep the lowest loss.

The screening ranks a query's candidates by a short low-resolution refinement; on a
near-symmetric part the flipped view can rank first there and the fine pose then converges
upside down, which the trust rules (:mod:`.trust`) flag. The candidate in the right basin
is often among the next ones. For a flagged query, :func:`retry_poses` refines in full the
next ``config.pose_retries`` candidates (in the screening's order) whose starting rotation is
more than ``config.retry_angle`` rad from the kept pose and from each other (a candidate in
the kept basin would only find that pose again) and keeps, of the estimate's pose and
these, the one of lowest full-resolution loss: the fine pose's own choice among hypotheses
(:func:`splatjax.pose.estimate_poses`), asked only where the pose is in doubt. The
candidates go ``config.retry_round`` at a time, and a query whose new pose the trust rules
accept stops there. Trusted queries are untouched, so the retry costs nothing where the pose
is fine.

With ``config.retry_half_turns`` the candidates tried after the screened ones are the kept
pose turned half a turn about each principal axis of the model
(:func:`splatjax.pose.principal_half_turns`, :func:`alternatives_with_half_turns`), refined
in full: the half-turn check
(:mod:`.half_turn`) only refines a turn that its short low-resolution screening ranks below
the pose, and on a glossy part the right turn can screen a little higher yet converge to a
loss several times lower (BENCHMARKS.md, "The retry refines the half-turns too").
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ..context import QUIET, Context
from ..gaussians import Gaussians
from ..sharding import ParallelConfig
from .cameras import camera_to_c2w, index_cameras, interleave_cameras, set_cameras
from .config import PoseConfig
from .estimate import Alternatives, PoseEstimate, derived_keys, replace_fine_poses
from .fine import refine_poses_detailed
from .half_turn import half_turn_candidates
from .objectives import Objective

__all__ = ["rotation_angles", "distinct_alternatives", "alternatives_with_half_turns", "retry_poses"]

TURNS = 3  # half-turns about the three principal axes


def rotation_angles(a: Float[np.ndarray, "*B 3 3"], b: Float[np.ndarray, "*B 3 3"]) -> Float[np.ndarray, " *B"]:
    """The angle (rad, in [0, pi]) of the rotation between ``a`` and ``b``, pair by pair."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (np.einsum("...ij,...ij->...", a, b) - 1.0) / 2.0  # trace(a b^T)
    return np.arccos(np.clip(cos, -1.0, 1.0))


def distinct_alternatives(kept: Float[np.ndarray, "Q 3 3"], alternatives: Float[np.ndarray, "Q n 3 3"], first: int,
                          m: int, min_angle: float) -> Int[np.ndarray, "Q m"]:
    """Per query, the ranks (into its n ``alternatives``, rotations of world-to-camera
    rotations) of up to ``m`` candidates from rank ``first`` on, in rank order, each more than
    ``min_angle`` rad from the ``kept`` rotation and from those taken before it; -1 fills."""
    kept, alternatives = np.asarray(kept, np.float64), np.asarray(alternatives, np.float64)
    q, n = alternatives.shape[:2]
    out = np.full((q, m), -1, np.int64)
    for i in range(q):
        taken = [kept[i]]
        for j in range(first, n):
            if len(taken) > m:
                break
            if (rotation_angles(np.stack(taken), alternatives[i, j][None]) > min_angle).all():
                out[i, len(taken) - 1] = j
                taken.append(alternatives[i, j])
    return out


def alternatives_with_half_turns(gaussians: Gaussians, estimate: PoseEstimate) -> Alternatives:
    """``estimate.alternatives`` (n per query) followed, at ranks n .. n + 2 of every query, by
    its kept pose (``estimate.cameras``) turned by each
    :func:`splatjax.pose.principal_half_turns` of ``gaussians`` (smallest spread first). A
    turn starts where it is (``cameras`` and ``starts`` alike) and carries the kept pose's
    retrieval index, score and inliers."""
    alt = estimate.alternatives
    q, n = alt.index.shape
    rows = jnp.arange(q)
    turned = half_turn_candidates(gaussians, estimate.cameras)  # [Q * 4]: kept, then its three turns
    turns = [index_cameras(turned, rows * (TURNS + 1) + 1 + j) for j in range(TURNS)]

    def ranks(cams):
        return [index_cameras(cams, rows * n + r) for r in range(n)]

    def cols(a, kept):
        return np.concatenate([a, np.repeat(np.asarray(kept)[:, None], TURNS, 1)], 1)

    return Alternatives(cameras=interleave_cameras(ranks(alt.cameras) + turns),
                        starts=interleave_cameras(ranks(alt.starts) + turns),
                        index=cols(alt.index, estimate.coarse_index), score=cols(alt.score, estimate.coarse_score),
                        inliers=cols(alt.inliers, alt.inliers[np.arange(q), np.asarray(estimate.chosen)]))


def retry_poses(
    gaussians: Gaussians,
    queries: Float[Array, "Q H W 3"],
    estimate: PoseEstimate,
    rows: Bool[np.ndarray, " Q"],
    config: PoseConfig = PoseConfig(),
    *,
    key: jax.Array,
    context: Context = QUIET,
    parallel: ParallelConfig | None = None,
    objective: str | Objective | None = None,
    still_distrusted: Callable[[PoseEstimate, np.ndarray], np.ndarray] | None = None,
) -> PoseEstimate:
    """The ``estimate`` of ``queries`` (from :func:`splatjax.pose.estimate_poses` with
    ``config``) with a retry of the queries where ``rows`` is True (e.g. the untrusted ones,
    :func:`splatjax.pose.trust_poses`): their next ``config.pose_retries`` distinct
    alternatives (:func:`distinct_alternatives`, from rank ``config.hypotheses`` on, at least
    ``config.retry_angle`` rad apart) are refined with ``config`` and a query keeps the lowest
    full-resolution loss, its current pose on ties.

    The alternatives go in rounds of ``config.retry_round`` per query (0: all in one round).
    After a round, ``still_distrusted(estimate, moved)`` is asked about the queries ``moved``
    (indices) whose pose that round changed and says, per index, whether the new pose is still
    distrusted; the next round takes only the distrusted ones (those and the unmoved). Without
    it every asked query tries all its alternatives. A round runs in chunks of the power of two
    at or above ``retry_round`` (at most ``batch_size``), the last padded, so that one compiled
    program serves every round. Alternative slot r of query i is refined with the screw
    initialisation of key r of query i's retry keys (from ``key`` as in
    :func:`splatjax.pose.estimate_poses`: one key or the Q * K per-hypothesis keys), whatever
    the round. ``retried`` (alternatives refined per query) and ``retry_rank`` say what was
    done; ``seconds["retry"]`` its time, ``still_distrusted`` included. With
    ``config.retry_half_turns`` the alternatives are first :func:`alternatives_with_half_turns`
    (the three turns of the kept pose after the n screened candidates; the returned estimate
    carries them, so that ``retry_rank`` indexes them). Without alternatives or retries the
    estimate comes back as it is (with zero retries)."""
    t0 = time.perf_counter()
    q, k, m = estimate.c2w.shape[0], config.hypotheses, int(config.pose_retries)
    rows = np.asarray(rows, bool).reshape(-1).copy()
    if rows.shape[0] != q:
        raise ValueError(f"retry_poses: {rows.shape[0]} rows for {q} queries")
    alt = estimate.alternatives
    retried, retry_rank = np.zeros(q, np.int64), np.full(q, -1, np.int64)
    if alt is not None and m > 0 and rows.any():
        if config.retry_half_turns:
            alt = alternatives_with_half_turns(gaussians, estimate)
            estimate = dataclasses.replace(estimate, alternatives=alt)
        n = alt.index.shape[1]
        ranks = np.full((q, m), -1, np.int64)
        todo = np.flatnonzero(rows)
        ranks[todo] = distinct_alternatives(np.asarray(estimate.cameras.R)[todo],
                                            np.asarray(alt.cameras.R).reshape(q, n, 3, 3)[todo], k, m,
                                            config.retry_angle)
        keys = derived_keys(key, q, k, m, 2).reshape(q, m)
        size = config.retry_round or m
        chunk = min(config.batch_size, 1 << (size - 1).bit_length())
        kw = dict(context=context, parallel=parallel, objective=objective)
        for lo in range(0, m, size):
            in_round = np.zeros((q, m), bool)
            in_round[:, lo:lo + size] = True
            qi, slot = np.nonzero(in_round & (ranks >= 0) & rows[:, None])
            if qi.size == 0:
                break
            retried += np.bincount(qi, minlength=q)
            estimate, won = _retry_round(gaussians, queries, estimate, qi, ranks[qi, slot], keys[qi, slot],
                                         dataclasses.replace(config, batch_size=chunk), **kw)
            moved = np.flatnonzero(won >= 0)
            retry_rank[moved] = won[moved]
            if still_distrusted is not None and moved.size:
                rows[moved] = np.asarray(still_distrusted(estimate, moved), bool).reshape(-1)
    seconds = dict(estimate.seconds, retry=time.perf_counter() - t0)
    return dataclasses.replace(estimate, retried=retried, retry_rank=retry_rank, seconds=seconds)


def _retry_round(gaussians, queries, estimate: PoseEstimate, qi: np.ndarray, rank: np.ndarray, keys: jax.Array,
                 config: PoseConfig, **kw) -> tuple[PoseEstimate, np.ndarray]:
    """One round of :func:`retry_poses`: alternative ``rank[j]`` of query ``qi[j]`` (``qi``
    sorted) refined with ``keys[j]``, in full chunks of ``config.batch_size`` (the last padded
    with copies of its last row); the estimate with each query's lowest loss if below its
    current one, and per query the rank it took (-1: unchanged)."""
    alt = estimate.alternatives
    q, n = estimate.c2w.shape[0], alt.index.shape[1]
    ref = refine_poses_detailed(gaussians, index_cameras(alt.cameras, jnp.asarray(qi * n + rank)),
                                jnp.asarray(queries, jnp.float32)[jnp.asarray(qi)], config, key=keys,
                                stage="pose retry", full_chunks=True, **kw)
    loss = np.asarray(ref.loss, np.float64)
    best = np.full(q, np.inf)
    np.minimum.at(best, qi, loss)
    better = best < np.asarray(estimate.loss, np.float64)
    # each winner's row in the round: the first of its query's rows at the lowest loss
    rows = np.flatnonzero(better[qi] & (loss == best[qi]))
    src = rows[np.unique(qi[rows], return_index=True)[1]]
    win, won_rank = qi[src], rank[src]
    alt_flat = win * n + won_rank

    def put(old, new):
        out = np.array(old, copy=True)
        out[win] = np.asarray(new)
        return out

    coarse = set_cameras(estimate.coarse_cameras, win, index_cameras(alt.starts, jnp.asarray(alt_flat)))
    inliers = None if estimate.inliers is None else put(estimate.inliers, alt.inliers[win, won_rank])
    won = np.full(q, -1, np.int64)
    won[win] = won_rank
    estimate = dataclasses.replace(
        replace_fine_poses(estimate, win, ref, src), coarse_cameras=coarse, coarse_c2w=camera_to_c2w(coarse),
        coarse_index=put(estimate.coarse_index, alt.index[win, won_rank]),
        coarse_score=put(estimate.coarse_score, alt.score[win, won_rank]), inliers=inliers)
    return estimate, won
