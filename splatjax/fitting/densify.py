"""Adaptive density control (3DGS clone / split / prune / opacity reset) on a static buffer.

The Gaussians live in a buffer of ``capacity`` slots with an ``active`` mask, so every
compiled function keeps its shapes while the number of Gaussians changes; the fitting loop
resizes the buffer (a recompilation) only when densification needs more slots. Active Gaussians
always occupy the first slots (every densification compacts the buffer). Inactive slots
hold :data:`INACTIVE_LOGIT` as opacity logit (opacity ~2e-9 < 1/255, so every renderer
skips them and their gradients are exactly zero); their optimiser moments are zero, so a
slot re-used by a new Gaussian starts with a fresh Adam state, as 3DGS appends new points
with zero moments.

Statistics follow 3DGS: the norm of the screen-space gradient of each projected mean,
measured in NDC units (pixel gradient times W/2, H/2, as the INRIA rasterizer reports it),
accumulated over the steps in which the Gaussian is visible; the largest screen radius
(3 sigma of the dilated 2D covariance, in pixels) seen since the last densification.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ..gaussians import Gaussians
from ..render.reference import project
from ..se3 import quat_to_rotmat
from .schedule import FitSchedule

__all__ = [
    "INACTIVE_LOGIT",
    "DensityStats",
    "DensifyCounts",
    "pad_gaussians",
    "screen_radii",
    "update_stats",
    "densify_demand",
    "densify_and_prune",
    "reset_opacity",
    "move_rows",
    "resize_rows",
    "resize_gaussians",
    "DensifyRule",
    "DensifyStrategy",
]

INACTIVE_LOGIT = -20.0  # sigmoid(-20) ~ 2e-9: below the 1/255 alpha floor of every backend
FIELDS = ("means", "log_scales", "quats", "opacity_logits", "sh0", "sh_rest")
_INACTIVE_LOG_SCALE = -10.0
SPLIT_CHILDREN = 2
SPLIT_SCALE_DIVISOR = 1.6  # 0.8 * SPLIT_CHILDREN, as 3DGS


class DensityStats(eqx.Module):
    """Per-slot densification statistics since the last densification."""

    grad_accum: Float[Array, " N"]  # sum of screen-space (NDC) mean-gradient norms
    denom: Float[Array, " N"]  # number of steps in which the Gaussian was visible
    max_radii: Float[Array, " N"]  # largest screen radius (px) seen

    @staticmethod
    def zeros(capacity: int) -> "DensityStats":
        def z():  # distinct buffers: the state is donated to the compiled step
            return jnp.zeros((capacity,), jnp.float32)

        return DensityStats(grad_accum=z(), denom=z(), max_radii=z())


class DensifyCounts(eqx.Module):
    """What one densification did (scalars, on device)."""

    cloned: Int[Array, ""]
    split: Int[Array, ""]
    pruned: Int[Array, ""]
    dropped: Int[Array, ""]  # candidates not densified because the buffer is full
    candidates: Int[Array, ""]
    active: Int[Array, ""]  # active Gaussians afterwards


def _inactive_rows(capacity: int, dtype=jnp.float32, sh_degree: int = 0) -> Gaussians:
    quats = jnp.zeros((capacity, 4), dtype).at[:, 0].set(1.0)
    return Gaussians(
        means=jnp.zeros((capacity, 3), dtype),
        log_scales=jnp.full((capacity, 3), _INACTIVE_LOG_SCALE, dtype),
        quats=quats,
        opacity_logits=jnp.full((capacity,), INACTIVE_LOGIT, dtype),
        sh0=jnp.zeros((capacity, 3), dtype),
    ).with_sh_degree(sh_degree)


def pad_gaussians(gaussians: Gaussians, capacity: int) -> tuple[Gaussians, Bool[Array, " N"]]:
    """Place ``gaussians`` in the first slots of a buffer of ``capacity`` slots; returns the
    buffer and its active mask. Raises ``ValueError`` when they do not fit."""
    n = gaussians.num
    if n > capacity:
        raise ValueError(f"{n} initial Gaussians do not fit in a buffer of capacity {capacity}; raise capacity")
    buf = _inactive_rows(capacity, gaussians.means.dtype, gaussians.sh_degree)
    buf = jax.tree_util.tree_map(lambda b, g: b.at[:n].set(g.astype(b.dtype)), buf, gaussians)
    return buf, jnp.arange(capacity) < n


def screen_radii(
    gaussians: Gaussians, camera, active: Bool[Array, " N"]
) -> tuple[Float[Array, " N"], Bool[Array, " N"]]:
    """3DGS screen radius ``ceil(3 sqrt(lambda_max(cov2d)))`` in pixels (dilated 2D
    covariance) and visibility (in front of the camera, active, and its 3-sigma box
    overlaps the image), computed with the reference projection."""
    means2d, _, _, cov2d, valid = project(
        gaussians.means, gaussians.scales, gaussians.unit_quats, camera.R, camera.t,
        camera.intrinsics, camera.width, camera.height,
    )
    a, b, c = cov2d[:, 0], cov2d[:, 1], cov2d[:, 2]
    mid = 0.5 * (a + c)
    lam = mid + jnp.sqrt(jnp.maximum(0.1, mid * mid - (a * c - b * b)))
    radii = jnp.ceil(3.0 * jnp.sqrt(lam))
    u, v = means2d[:, 0], means2d[:, 1]
    on_screen = (u + radii > 0) & (u - radii < camera.width) & (v + radii > 0) & (v - radii < camera.height)
    visible = valid & active & on_screen & (radii > 0)
    return jnp.where(visible, radii, 0.0), visible


def update_stats(
    stats: DensityStats,
    grad_means2d: Float[Array, "N 2"],
    radii: Float[Array, " N"],
    visible: Bool[Array, " N"],
    width: int,
    height: int,
) -> DensityStats:
    """Accumulate one step's screen-space gradient norms (pixel gradient converted to NDC
    units, as the INRIA rasterizer) and radii for the visible Gaussians."""
    g_ndc = grad_means2d * jnp.asarray([0.5 * width, 0.5 * height], grad_means2d.dtype)
    norm = jnp.linalg.norm(g_ndc, axis=-1)
    return DensityStats(
        grad_accum=stats.grad_accum + jnp.where(visible, norm, 0.0),
        denom=stats.denom + visible.astype(stats.denom.dtype),
        max_radii=jnp.where(visible, jnp.maximum(stats.max_radii, radii), stats.max_radii),
    )


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


class _Selection(eqx.Module):
    clone: Bool[Array, " N"]
    split: Bool[Array, " N"]
    prune_old: Bool[Array, " N"]
    cand: Bool[Array, " N"]
    grads: Float[Array, " N"]
    cost: Int[Array, " N"]  # slots needed beyond the surviving old Gaussians


def _select(params: Gaussians, active, stats: DensityStats, rule: "DensifyRule", extent: float, size_prune):
    """3DGS candidate selection: which Gaussians are cloned, split and pruned."""
    grads = jnp.where(stats.denom > 0, stats.grad_accum / jnp.maximum(stats.denom, 1.0), 0.0)
    max_scale = jnp.exp(jnp.max(params.log_scales, axis=-1))
    low_opacity = params.opacity_logits < _logit(rule.prune_opacity)
    size_prune = jnp.asarray(size_prune)
    world_big = max_scale > rule.prune_world_size * extent
    screen_big = stats.max_radii > rule.prune_screen_size
    prune_old = active & (low_opacity | (size_prune & (world_big | screen_big)))
    cand = active & (grads >= rule.densify_grad_threshold) & ~low_opacity
    small = max_scale <= rule.percent_dense * extent
    clone = cand & small
    split = cand & ~small & ~(size_prune & (max_scale / SPLIT_SCALE_DIVISOR > rule.prune_world_size * extent))
    # a split re-uses its parent's slot unless the parent is pruned anyway
    cost = jnp.where(clone, 1, jnp.where(split, 2 - (~prune_old).astype(jnp.int32), 0))
    return _Selection(clone=clone, split=split, prune_old=prune_old, cand=clone | split, grads=grads, cost=cost)


def densify_demand(
    params: Gaussians, active: Bool[Array, " N"], stats: DensityStats, rule: "DensifyRule", *,
    extent: float, size_prune: Bool[Array, ""] | bool,
) -> Int[Array, ""]:
    """Slots :func:`densify_and_prune` needs to densify every candidate (the buffer
    grows to hold them before densifying; nothing is ever dropped)."""
    sel = _select(params, active, stats, rule, extent, size_prune)
    return jnp.sum(active & ~sel.prune_old) + jnp.sum(sel.cost)


def _split_children(params: Gaussians, key: jax.Array) -> list[Gaussians]:
    """The SPLIT_CHILDREN children of every row: means sampled from the parent Gaussian,
    scales divided by SPLIT_SCALE_DIVISOR, everything else copied."""
    cap, dtype = params.means.shape[0], params.means.dtype
    rot = quat_to_rotmat(params.unit_quats)
    noise = jax.random.normal(key, (SPLIT_CHILDREN, cap, 3), dtype) * params.scales[None]
    child_means = params.means[None] + jnp.einsum("nij,cnj->cni", rot, noise)
    child_log_scales = params.log_scales - jnp.log(jnp.asarray(SPLIT_SCALE_DIVISOR, dtype))
    return [Gaussians(means=child_means[i], log_scales=child_log_scales, quats=params.quats,
                      opacity_logits=params.opacity_logits, sh0=params.sh0, sh_rest=params.sh_rest)
            for i in range(SPLIT_CHILDREN)]


def densify_and_prune(
    params: Gaussians,
    active: Bool[Array, " N"],
    stats: DensityStats,
    rule: "DensifyRule",
    *,
    key: jax.Array,
    extent: float,
    size_prune: Bool[Array, ""] | bool,
) -> tuple[Gaussians, Bool[Array, " N"], Int[Array, " N"], DensifyCounts]:
    """One 3DGS ``densify_and_prune`` on the static buffer, compacting it.

    Candidates: active Gaussians whose mean screen-space (NDC) gradient is >=
    ``rule.densify_grad_threshold``. Small ones (max scale <= percent_dense x extent) are cloned;
    large ones are split into 2 Gaussians sampled from the parent (scale / 1.6), replacing
    it. Pruned: opacity < ``rule.prune_opacity``; when ``size_prune``, also screen radius >
    ``prune_screen_size`` px or max scale > ``prune_world_size`` x extent. If the buffer cannot
    hold every candidate (the caller grows it first, see :func:`densify_demand`), the
    largest gradients win and ``counts.dropped`` says how many were left out.

    Returns the new buffer, its active mask, ``moves`` (new row of each old row; the
    buffer size for removed rows: move optimiser moments with :func:`move_rows`, new rows
    start with zero moments as 3DGS appends them) and the counts. Statistics restart at 0.

    Differences from the INRIA code, all outcome-preserving: candidates whose children
    would be pruned right away (low opacity, or split children still too large) are not
    created; and the screen-size test uses the radii seen since the last densification
    (INRIA resets them before pruning, so that test never fires there).
    """
    cap = active.shape[0]
    dtype = params.means.dtype
    sel = _select(params, active, stats, rule, extent, size_prune)
    free = cap - jnp.sum(active & ~sel.prune_old)
    order = jnp.argsort(jnp.where(sel.cand, -sel.grads, jnp.inf), stable=True)
    accepted_sorted = sel.cand[order] & (jnp.cumsum(sel.cost[order]) <= free)
    accepted = jnp.zeros_like(sel.cand).at[order].set(accepted_sorted)
    clone, split = sel.clone & accepted, sel.split & accepted
    keep_old = active & ~sel.prune_old & ~split

    sources = [params, params, *_split_children(params, key)]
    flags = jnp.concatenate([keep_old, clone, split, split])
    dest = jnp.where(flags, jnp.cumsum(flags) - 1, cap)  # cap = dropped by the scatter
    total = jnp.sum(flags)
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *sources)
    new_params = jax.tree_util.tree_map(lambda b, s: b.at[dest].set(s, mode="drop"),
                                        _inactive_rows(cap, dtype, params.sh_degree), stacked)
    counts = DensifyCounts(
        cloned=jnp.sum(clone), split=jnp.sum(split), pruned=jnp.sum(sel.prune_old & ~split),
        dropped=jnp.sum(sel.cand) - jnp.sum(accepted), candidates=jnp.sum(sel.cand), active=total,
    )
    return new_params, jnp.arange(cap) < total, dest[:cap], counts


def move_rows(x: Array, moves: Int[Array, " N"]) -> Array:
    """Row i of ``x`` goes to row ``moves[i]`` (rows moved out of range are dropped);
    rows nobody moves to are zero."""
    return jnp.zeros_like(x).at[moves].set(x, mode="drop")


def resize_rows(x: Array, capacity: int, fill: float = 0.0) -> Array:
    """The first ``capacity`` rows of ``x``, padded with ``fill`` when it is longer."""
    n = x.shape[0]
    if capacity <= n:
        return x[:capacity]
    pad = jnp.full((capacity - n,) + x.shape[1:], fill, x.dtype)
    return jnp.concatenate([x, pad])


def resize_gaussians(params: Gaussians, capacity: int) -> Gaussians:
    """The buffer cut or padded (with invisible inactive rows) to ``capacity`` slots;
    active Gaussians must occupy the first slots (they do after every densification)."""
    if capacity <= params.num:
        return params.take(jnp.arange(capacity))
    pad = _inactive_rows(capacity - params.num, params.means.dtype, params.sh_degree)
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), params, pad)


@dataclasses.dataclass(frozen=True)
class DensifyRule:
    """The thresholds of adaptive density control (3DGS defaults); hashable. Each field is
    the :class:`~splatjax.fitting.FitConfig` field of the same name (see its docs), so a
    config's rule is :func:`splatjax.fitting.fit_loop.strategy_for`'s projection by name."""

    densify_grad_threshold: float = 2e-4
    percent_dense: float = 0.01
    prune_opacity: float = 0.005
    prune_screen_size: float = 20.0
    prune_world_size: float = 0.1
    opacity_reset_value: float = 0.01


@dataclasses.dataclass(frozen=True)
class DensifyStrategy:
    """Adaptive density control as one object: its thresholds (:class:`DensifyRule`) and
    its schedule (:class:`~splatjax.fitting.schedule.FitSchedule`); hashable, so it can be
    a static argument of compiled functions."""

    rule: DensifyRule
    schedule: FitSchedule

    def events(self, step: int) -> tuple[bool, bool, bool]:
        """(densify, size_prune, reset_opacity) after ``step``."""
        s = self.schedule
        return s.densify_at(step), s.size_prune_at(step), s.reset_at(step)

    def demand(self, params, active, stats, *, extent: float, size_prune) -> Int[Array, ""]:
        return densify_demand(params, active, stats, self.rule, extent=extent, size_prune=size_prune)

    def densify(self, params, active, stats, *, key, extent: float, size_prune):
        return densify_and_prune(params, active, stats, self.rule, key=key, extent=extent, size_prune=size_prune)

    def reset(self, params: Gaussians, active) -> Gaussians:
        return reset_opacity(params, active, value=self.rule.opacity_reset_value)


def reset_opacity(params: Gaussians, active: Bool[Array, " N"], *, value: float = 0.01) -> Gaussians:
    """3DGS opacity reset: active opacities become min(opacity, ``value``) (the caller
    restarts the Adam moments of the opacity logits)."""
    logits = jnp.where(active, jnp.minimum(params.opacity_logits, _logit(value)), params.opacity_logits)
    return eqx.tree_at(lambda g: g.opacity_logits, params, logits)
