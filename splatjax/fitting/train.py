"""The compiled parts of fitting: the training state, the optimiser, a chunk of training
steps, densification and opacity resets on the state, buffer resizing and validation.

One optax ``multi_transform`` holds an Adam per parameter group (labels: a Gaussians-shaped
tree of group names); optimiser-state surgery (moving moments with their Gaussians, zeroing
the opacity moments, resizing the buffer) goes through ``optax.tree_utils.tree_map_params``.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int

from ..gaussians import Gaussians
from ..losses import photometric_loss, psnr, ssim
from ..render import render
from .config import FitConfig
from .densify import (
    DensifyStrategy,
    DensityStats,
    move_rows,
    pad_gaussians,
    resize_gaussians,
    resize_rows,
    screen_radii,
    update_stats,
)

__all__ = ["TrainState", "make_optimizer", "init_state", "resize_state", "scene_extent", "param_labels"]

_VIEW_STREAM, _DENSIFY_STREAM = 1, 2  # independent random streams derived from the run key


class TrainState(eqx.Module):
    """Everything that evolves during fitting (a pytree of arrays; capacity = buffer rows)."""

    params: Gaussians  # buffer of capacity slots, pre-activation values
    opt_state: Any  # the multi_transform state of make_optimizer
    active: Bool[Array, " N"]
    stats: DensityStats
    step: Int[Array, ""]  # optimisation steps done

    @property
    def capacity(self) -> int:
        return self.active.shape[0]


def scene_extent(c2w: Float[np.ndarray, "N 4 4"]) -> float:
    """3DGS ``cameras_extent``: 1.1 x the largest distance of a camera centre from the mean
    centre (c2w: camera-to-world, any axis convention)."""
    centres = np.asarray(c2w, np.float64)[:, :3, 3]
    return float(1.1 * np.max(np.linalg.norm(centres - centres.mean(0), axis=-1)))


def param_labels(sh_degree: int = 0) -> Gaussians:
    """The optimiser's label tree: every Gaussians field is its own Adam group (``sh_rest``
    only for an SH degree above 0)."""
    return Gaussians(means="means", log_scales="log_scales", quats="quats", opacity_logits="opacity_logits",
                     sh0="sh0", sh_rest="sh_rest" if sh_degree > 0 else None)


def make_optimizer(config: FitConfig, extent: float, iterations=None) -> optax.GradientTransformation:
    """Adam (eps ``adam_eps``) per parameter group with the 3DGS learning rates; the mean
    learning rate decays exponentially (log-linearly) from lr_means x extent to
    lr_means_final x extent over ``iterations`` steps (default ``config.iterations``; may
    be a traced scalar, so fits of different lengths share compilations) and stays there.
    SH degrees 1-3 (``config.sh_degree`` > 0) learn at lr_colors x lr_sh_rest_factor."""
    total = config.iterations if iterations is None else iterations
    lr0, lr1 = config.lr_means * extent, config.lr_means_final * extent

    def lr_means(count):  # optax.exponential_decay's formula with a possibly traced length
        return jnp.maximum(lr0 * (config.lr_means_final / config.lr_means) ** (count / total), lr1)

    lrs = {"means": lr_means, "log_scales": config.lr_scales, "quats": config.lr_quats,
           "opacity_logits": config.lr_opacity, "sh0": config.lr_colors}
    if config.sh_degree > 0:
        lrs["sh_rest"] = config.lr_colors * config.lr_sh_rest_factor
    groups = {name: optax.adam(lr, eps=config.adam_eps) for name, lr in lrs.items()}
    return optax.multi_transform(groups, param_labels(config.sh_degree))


def _is_masked(x) -> bool:
    return isinstance(x, optax.MaskedNode)


def _map_moments(opt: optax.GradientTransformation, fn, opt_state, *rest):
    """``fn(leaf, *rest_leaves)`` on every parameter-shaped leaf of the optimiser state
    (Adam moments); step counts and masked-out groups are left alone."""
    def f(x, *r):
        return x if _is_masked(x) else fn(x, *r)

    return optax.tree_utils.tree_map_params(opt, f, opt_state, *rest, transform_non_params=lambda x: x,
                                            is_leaf=_is_masked)


def init_state(gaussians: Gaussians, config: FitConfig, extent: float, capacity: int) -> TrainState:
    """Initial state: ``gaussians`` (stored at ``config.sh_degree``) in the first slots of a
    ``capacity``-slot buffer."""
    params, active = pad_gaussians(gaussians.with_sh_degree(config.sh_degree).astype(jnp.float32), capacity)
    opt_state = make_optimizer(config, extent).init(params)
    return TrainState(params=params, opt_state=opt_state, active=active,
                      stats=DensityStats.zeros(capacity), step=jnp.zeros((), jnp.int32))


def resize_state(state: TrainState, capacity: int, config: FitConfig, extent: float) -> TrainState:
    """The state with its buffer grown (new slots inactive, zero moments) or cut (the
    dropped slots must be inactive) to ``capacity`` slots."""
    n_active = int(jnp.sum(state.active))
    if n_active > capacity:
        raise ValueError(f"cannot shrink a buffer holding {n_active} Gaussians to {capacity} slots")
    opt = make_optimizer(config, extent)
    return TrainState(
        params=resize_gaussians(state.params, capacity),
        opt_state=_map_moments(opt, lambda x: resize_rows(x, capacity), state.opt_state),
        active=resize_rows(state.active, capacity, False),
        stats=jax.tree_util.tree_map(lambda x: resize_rows(x, capacity), state.stats),
        step=state.step,
    )


def compiled_config(config: FitConfig) -> FitConfig:
    """``config`` with the fields compiled code does not read (or gets as traced values:
    ``iterations``) set to their defaults, so fits that differ only in them share
    compilations."""
    d = FitConfig()
    unused = ("iterations", "resolution", "upsample", "init_points", "init_extent", "init_opacity", "init_ply", "capacity",
              "buffer", "checkpoint_every", "checkpoint_minutes", "seed", "train_fraction", "holdout_views", "val_every",
              "val_views", "log_every", "densify_from", "densify_until", "opacity_reset_every", "densify_grad_threshold",
              "percent_dense", "prune_opacity", "prune_screen_size", "prune_world_size", "opacity_reset_value")
    return dataclasses.replace(config, **{k: getattr(d, k) for k in unused})


@partial(jax.jit, static_argnames=("config", "extent", "guarded"), donate_argnames=("state",))
def train_chunk(state: TrainState, images: Float[Array, "V H W 3"], cameras, key, iterations: Int[Array, ""],
                sh_degree_every: Int[Array, ""] | int = 1000, *, config: FitConfig, extent: float,
                guarded: bool = True):
    """``config.chunk_steps`` optimisation steps on one shuffled view each (steps past
    ``iterations``, a traced scalar, are no-ops). Returns the new state and per-step (loss, PSNR) (NaN for
    no-op steps). ``guarded=False`` (static) leaves out the per-step test against
    ``iterations`` (a conditional, hence a device-to-host round trip per step on a GPU): for
    chunks the caller knows end at or before ``iterations``; the results are the same (up to float rounding).
    The view of step s is entry s % V of a permutation drawn from (key, s // V).
    Step s (counted from 1) renders SH degree min(config.sh_degree, s // sh_degree_every)."""
    n_views = images.shape[0]
    opt = make_optimizer(config, extent, iterations)
    background = jnp.asarray(config.background, jnp.float32)
    view_key = jax.random.fold_in(key, _VIEW_STREAM)
    height, width = images.shape[1], images.shape[2]

    def step(state: TrainState):
        s = state.step
        idx = jax.random.permutation(jax.random.fold_in(view_key, s // n_views), n_views)[s % n_views]
        camera = jax.tree_util.tree_map(lambda x: x[idx], cameras)
        target = images[idx]

        active_degree = None if config.sh_degree == 0 else jnp.minimum((s + 1) // sh_degree_every,
                                                                         config.sh_degree)

        def loss_fn(params, offset):
            rgb, _ = render(params, camera, background=background, backend=config.backend,
                            means2d_offset=offset, sh_degree=active_degree, supersample=config.supersample)
            return photometric_loss(rgb, target, ssim_weight=config.ssim_weight), rgb

        offset = jnp.zeros((state.capacity, 2), state.params.means.dtype)
        (loss, rgb), (grads, grad2d) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            state.params, offset)
        radii, visible = screen_radii(state.params, camera, state.active)
        stats = update_stats(state.stats, grad2d, radii, visible, width, height)
        grads = jax.tree_util.tree_map(lambda g: _mask_rows(g, state.active), grads)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        updates = jax.tree_util.tree_map(lambda u: _mask_rows(u, state.active), updates)
        new = TrainState(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                         active=state.active, stats=stats, step=s + 1)
        return new, (loss, psnr(jnp.clip(rgb, 0.0, 1.0), target))

    def skip(state: TrainState):
        nan = jnp.full((), jnp.nan, jnp.float32)
        return state, (nan, nan)

    def body(state, _):
        if not guarded:
            return step(state)
        return jax.lax.cond(state.step < iterations, step, skip, state)

    state, (losses, psnrs) = jax.lax.scan(body, state, None, length=config.chunk_steps)
    return state, losses, psnrs


def _mask_rows(x, active):
    return jnp.where(active.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros_like(x))


@partial(jax.jit, static_argnames=("strategy", "extent"))
def densify_demand(state: TrainState, size_prune, *, strategy: DensifyStrategy, extent: float):
    """Slots the next densification needs (see :func:`densify.densify_demand`)."""
    return strategy.demand(state.params, state.active, state.stats, extent=extent, size_prune=size_prune)


@partial(jax.jit, static_argnames=("strategy", "config", "extent"), donate_argnames=("state",))
def densify_state(state: TrainState, key, size_prune, *, strategy: DensifyStrategy, config: FitConfig,
                  extent: float):
    """Densify and prune; Adam moments move with their Gaussians (new ones start at zero)."""
    k = jax.random.fold_in(jax.random.fold_in(key, _DENSIFY_STREAM), state.step)
    params, active, moves, counts = strategy.densify(state.params, state.active, state.stats, key=k,
                                                     extent=extent, size_prune=size_prune)
    opt_state = _map_moments(make_optimizer(config, extent), lambda x: move_rows(x, moves), state.opt_state)
    return TrainState(params=params, opt_state=opt_state, active=active,
                      stats=DensityStats.zeros(state.capacity), step=state.step), counts


@partial(jax.jit, static_argnames=("strategy", "config", "extent"), donate_argnames=("state",))
def reset_state(state: TrainState, *, strategy: DensifyStrategy, config: FitConfig, extent: float):
    """3DGS opacity reset; the opacity moments restart from zero."""
    params = strategy.reset(state.params, state.active)
    opt = make_optimizer(config, extent)
    opt_state = _map_moments(opt, lambda x, label: jnp.zeros_like(x) if label == "opacity_logits" else x,
                             state.opt_state, param_labels(config.sh_degree))
    return TrainState(params=params, opt_state=opt_state, active=state.active, stats=state.stats,
                      step=state.step)


@partial(jax.jit, static_argnames=("backend", "background", "supersample"))
def evaluate(params: Gaussians, images: Float[Array, "V H W 3"], cameras, *, backend: str, background: tuple,
             supersample: int = 1):
    """Per-view PSNR and SSIM (renders clipped to [0, 1], ``supersample`` samples per pixel
    side) of ``params`` against ``images``."""
    bg = jnp.asarray(background, jnp.float32)

    def one(args):
        target, camera = args
        rgb, _ = render(params, camera, background=bg, backend=backend, supersample=supersample)
        rgb = jnp.clip(rgb, 0.0, 1.0)
        return psnr(rgb, target), ssim(rgb, target)

    return jax.lax.map(one, (images, cameras))
