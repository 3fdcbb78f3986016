"""3D Gaussian splatting fitting: the defect-free model of an object from posed views.

Faithful to the INRIA 3DGS defaults (see REFERENCE.md): one shuffled view per step, Adam
per parameter group, the exponential position learning-rate decay, 0.8 L1 + 0.2 (1 - SSIM),
clone / split / prune every 100 steps from step 500 to 15,000 and opacity resets.

Static shapes: the Gaussians live in a buffer of ``FitConfig.capacity`` slots with an
active mask (:mod:`splatjax.densify`), so the compiled training chunk (a ``lax.scan`` over
``chunk_steps`` steps) and the compiled densification never recompile when the number of
Gaussians changes. Chunk boundaries fall on densification and opacity-reset steps.

Determinism and resuming: all randomness is derived from the key and the step (the view
order is a permutation drawn from (key, epoch); split samples from (key, step)), so a run
resumed from a checkpoint reproduces the uninterrupted run. Steps are counted from 1 as in
3DGS: "step s" is the state after s optimisation steps, and densification "at step s"
happens after step s.

``splatjax.fit`` is :func:`fit`; the rest of this module is reachable as ``splatjax.fitting``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Int

from ..app.checkpoint import RunCheckpointer, append_metrics, read_json, truncate_metrics, write_json
from ..data.types import PosedViews
from .densify import (
    FIELDS,
    DensityStats,
    densify_and_prune,
    pad_gaussians,
    reset_opacity,
    screen_radii,
    update_stats,
)
from ..gaussians import Gaussians, init_random_gaussians, save_ply
from ..losses import photometric_loss, psnr, ssim
from ..render import render, resolve_backend

__all__ = [
    "FitConfig",
    "TrainState",
    "fit",
    "run_fit",
    "scene_extent",
    "make_optimizers",
    "add_fit_arguments",
    "config_from_args",
    "run_fit_from_args",
]

# Independent random streams derived from the run key.
_INIT_STREAM, _VIEW_STREAM, _DENSIFY_STREAM = 0, 1, 2
# Fields that may change between an interrupted run and its resumption.
_RESUME_FREE_FIELDS = {"checkpoint_every", "val_every", "val_views", "log_every", "backend"}


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Fitting settings; defaults are the INRIA 3DGS / SplatPose ones.

    Learning rates are per parameter group; the mean learning rate is multiplied by the
    scene extent (1.1 x the largest distance of a camera centre from their mean) and
    decays exponentially from ``lr_means`` to ``lr_means_final`` over ``iterations``.
    Densification happens after steps s with densify_from < s < densify_until and
    s % densify_every == 0; size pruning (screen radius > prune_screen_size px or world
    size > prune_world_size x extent) after step ``opacity_reset_every``; opacity resets
    after steps s < densify_until with s % opacity_reset_every == 0, and at densify_from
    when the background is white.
    """

    iterations: int = 30_000
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resolution: int | None = 400  # image width used by run_fit's loaders; None = native
    # initialisation
    init_points: int = 100_000
    init_extent: float = 1.3
    init_opacity: float = 0.1
    init_ply: str | None = None  # point cloud (x y z [red green blue]) or 3DGS PLY to start from
    # optimiser
    lr_means: float = 1.6e-4
    lr_means_final: float = 1.6e-6
    lr_colors: float = 2.5e-3
    lr_opacity: float = 5e-2
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    adam_eps: float = 1e-15
    ssim_weight: float = 0.2
    # adaptive density control
    densify_from: int = 500
    densify_until: int = 15_000
    densify_every: int = 100
    densify_grad_threshold: float = 2e-4
    percent_dense: float = 0.01
    prune_opacity: float = 0.005
    prune_screen_size: float = 20.0
    prune_world_size: float = 0.1
    opacity_reset_every: int = 3000
    opacity_reset_value: float = 0.01
    capacity: int = 1_000_000
    # execution
    chunk_steps: int = 100
    checkpoint_every: int = 5000
    seed: int = 0
    train_fraction: float = 1.0
    backend: str = "auto"
    val_every: int = 5000
    val_views: int | None = None  # views used by intermediate validations (evenly spaced); final uses all
    log_every: int = 100

    def __post_init__(self):
        positive = ["iterations", "init_points", "capacity", "chunk_steps", "densify_every",
                    "opacity_reset_every", "checkpoint_every", "val_every", "log_every"]
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"FitConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"FitConfig.train_fraction must be in (0, 1], got {self.train_fraction}")
        if len(tuple(self.background)) != 3:
            raise ValueError(f"FitConfig.background must be 3 floats, got {self.background!r}")
        object.__setattr__(self, "background", tuple(float(b) for b in self.background))
        c = self.chunk_steps
        for name in ("densify_every", "opacity_reset_every", "densify_from"):
            if getattr(self, name) % c:
                raise ValueError(
                    f"FitConfig.{name}={getattr(self, name)} must be a multiple of chunk_steps={c} "
                    "(densification and opacity resets happen between compiled chunks)"
                )


class TrainState(eqx.Module):
    """Everything that evolves during fitting (a pytree of fixed-shape arrays)."""

    params: Gaussians  # buffer of capacity slots, pre-activation values
    opt_state: dict[str, Any]  # optax state per parameter group (keys: densify.FIELDS)
    active: Bool[Array, " N"]
    stats: DensityStats
    step: Int[Array, ""]  # optimisation steps done


def scene_extent(c2w: np.ndarray) -> float:
    """3DGS ``cameras_extent``: 1.1 x the largest distance of a camera centre from the mean
    centre (c2w: [N, 4, 4] camera-to-world, any axis convention)."""
    centres = np.asarray(c2w, np.float64)[:, :3, 3]
    return float(1.1 * np.max(np.linalg.norm(centres - centres.mean(0), axis=-1)))


def make_optimizers(config: FitConfig, extent: float) -> dict[str, optax.GradientTransformation]:
    """Adam (eps ``adam_eps``) per parameter group with the 3DGS learning rates; the mean
    learning rate decays exponentially (log-linearly) from lr_means x extent to
    lr_means_final x extent over ``iterations`` steps and stays there."""
    lr_means = optax.exponential_decay(
        init_value=config.lr_means * extent, transition_steps=config.iterations,
        decay_rate=config.lr_means_final / config.lr_means, end_value=config.lr_means_final * extent,
    )
    lrs = {"means": lr_means, "log_scales": config.lr_scales, "quats": config.lr_quats,
           "opacity_logits": config.lr_opacity, "sh0": config.lr_colors}
    return {name: optax.adam(lrs[name], eps=config.adam_eps) for name in FIELDS}


def _mask_rows(x, active):
    return jnp.where(active.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros_like(x))


def _compiled_config(config: FitConfig) -> FitConfig:
    """``config`` with the fields the compiled functions do not read set to their defaults,
    so runs that differ only in them (seed, capacity, logging, ...) share compilations."""
    d = FitConfig()
    unused = ("resolution", "init_points", "init_extent", "init_opacity", "init_ply", "capacity",
              "checkpoint_every", "seed", "train_fraction", "val_every", "val_views", "log_every")
    return dataclasses.replace(config, **{k: getattr(d, k) for k in unused})


def _init_state(gaussians: Gaussians, config: FitConfig, extent: float) -> TrainState:
    params, active = pad_gaussians(gaussians.astype(jnp.float32), config.capacity)
    opts = make_optimizers(config, extent)
    opt_state = {name: opts[name].init(getattr(params, name)) for name in FIELDS}
    return TrainState(params=params, opt_state=opt_state, active=active,
                      stats=DensityStats.zeros(config.capacity), step=jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------- compiled parts
@partial(jax.jit, static_argnames=("config", "extent"), donate_argnames=("state",))
def _train_chunk(state: TrainState, images, cameras, key, *, config: FitConfig, extent: float):
    """``config.chunk_steps`` optimisation steps (steps past ``iterations`` are no-ops).
    Returns the new state and per-step (loss, psnr) (NaN for no-op steps)."""
    n_views = images.shape[0]
    cap = state.active.shape[0]
    opts = make_optimizers(config, extent)
    background = jnp.asarray(config.background, jnp.float32)
    view_key = jax.random.fold_in(key, _VIEW_STREAM)
    height, width = images.shape[1], images.shape[2]

    def step(state: TrainState):
        s = state.step
        perm = jax.random.permutation(jax.random.fold_in(view_key, s // n_views), n_views)
        idx = perm[s % n_views]
        camera = jax.tree_util.tree_map(lambda x: x[idx], cameras)
        target = images[idx]

        def loss_fn(params, offset):
            rgb, _ = render(params, camera, background=background, backend=config.backend,
                            means2d_offset=offset)
            return photometric_loss(rgb, target, ssim_weight=config.ssim_weight), rgb

        offset = jnp.zeros((cap, 2), state.params.means.dtype)
        (loss, rgb), (grads, grad2d) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            state.params, offset)
        radii, visible = screen_radii(state.params, camera, state.active)
        stats = update_stats(state.stats, grad2d, radii, visible, width, height)
        new_params, new_opt = {}, {}
        for name in FIELDS:
            p = getattr(state.params, name)
            g = _mask_rows(getattr(grads, name), state.active)
            upd, new_opt[name] = opts[name].update(g, state.opt_state[name], p)
            new_params[name] = p + _mask_rows(upd, state.active)
        new_state = TrainState(params=Gaussians(**new_params), opt_state=new_opt, active=state.active,
                               stats=stats, step=s + 1)
        return new_state, (loss, psnr(jnp.clip(rgb, 0.0, 1.0), target))

    def skip(state: TrainState):
        nan = jnp.full((), jnp.nan, jnp.float32)
        return state, (nan, nan)

    def body(state, _):
        return jax.lax.cond(state.step < config.iterations, step, skip, state)

    state, (losses, psnrs) = jax.lax.scan(body, state, None, length=config.chunk_steps)
    return state, losses, psnrs


@partial(jax.jit, static_argnames=("config", "extent"), donate_argnames=("state",))
def _densify(state: TrainState, key, size_prune, *, config: FitConfig, extent: float):
    k = jax.random.fold_in(jax.random.fold_in(key, _DENSIFY_STREAM), state.step)
    params, opt_state, active, stats, counts = densify_and_prune(
        state.params, state.opt_state, state.active, state.stats, key=k, extent=extent,
        grad_threshold=config.densify_grad_threshold, percent_dense=config.percent_dense,
        min_opacity=config.prune_opacity, size_prune=size_prune,
        max_screen_size=config.prune_screen_size, max_world_size=config.prune_world_size,
    )
    return TrainState(params=params, opt_state=opt_state, active=active, stats=stats, step=state.step), counts


@partial(jax.jit, static_argnames=("value",), donate_argnames=("state",))
def _reset_opacity(state: TrainState, *, value: float):
    params, opac_state = reset_opacity(state.params, state.opt_state["opacity_logits"], state.active, value=value)
    opt_state = dict(state.opt_state, opacity_logits=opac_state)
    return TrainState(params=params, opt_state=opt_state, active=state.active, stats=state.stats, step=state.step)


@partial(jax.jit, static_argnames=("backend", "background"))
def _evaluate(params: Gaussians, images, cameras, *, backend: str, background: tuple):
    bg = jnp.asarray(background, jnp.float32)

    def one(args):
        target, camera = args
        rgb, _ = render(params, camera, background=bg, backend=backend)
        rgb = jnp.clip(rgb, 0.0, 1.0)
        return psnr(rgb, target), ssim(rgb, target)

    return jax.lax.map(one, (images, cameras))


def _initial_gaussians(init, config: FitConfig, key) -> Gaussians:
    if isinstance(init, Gaussians):
        return init
    k = jax.random.fold_in(key, _INIT_STREAM)
    if init is None:
        return init_random_gaussians(config.init_points, key=k, extent=config.init_extent,
                                     opacity=config.init_opacity)
    pts = np.asarray(init, np.float32)
    if pts.ndim != 2 or pts.shape[1] not in (3, 6):
        raise ValueError(f"init point cloud must be [M, 3] (xyz) or [M, 6] (xyz rgb in [0, 1]), got {pts.shape}")
    return init_random_gaussians(pts.shape[0], key=k, opacity=config.init_opacity, points=pts[:, :3],
                                 colors=pts[:, 3:] if pts.shape[1] == 6 else None)


def load_init_ply(path: str | Path) -> Gaussians | np.ndarray:
    """A 3DGS PLY (``f_dc_0`` present) as Gaussians, otherwise a point cloud PLY (x y z
    and optional red green blue, 0-255 integers or 0-1 floats) as an [M, 3|6] array."""
    from plyfile import PlyData

    from ..gaussians import load_ply

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: initial point cloud not found")
    v = PlyData.read(str(path))["vertex"].data
    names = v.dtype.names
    if "f_dc_0" in names:
        return load_ply(path)
    if not all(n in names for n in "xyz"):
        raise ValueError(f"{path}: point cloud PLY needs x, y, z vertex properties (found {names})")
    cols = [np.asarray(v[n], np.float32) for n in "xyz"]
    if all(n in names for n in ("red", "green", "blue")):
        rgb = [np.asarray(v[n], np.float32) for n in ("red", "green", "blue")]
        scale = 255.0 if np.issubdtype(v["red"].dtype, np.integer) else 1.0
        cols += [c / scale for c in rgb]
    return np.stack(cols, -1)


def _train_view_indices(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted seeded subset of round(fraction x n) views (at least 1); all views at 1.0."""
    if fraction >= 1.0:
        return np.arange(n)
    k = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def _evenly_spaced(n: int, k: int | None) -> np.ndarray:
    if k is None or k >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max(1, k))).astype(int))


def _raw_key(key) -> jax.Array:
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return key


# ----------------------------------------------------------------------------- the driver
def fit(
    scene: PosedViews,
    config: FitConfig = FitConfig(),
    *,
    key: jax.Array | None = None,
    val: PosedViews | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    init: Gaussians | np.ndarray | None = None,
    stop_at: int | None = None,
) -> tuple[Gaussians, dict]:
    """Fit 3D Gaussians to the posed views of ``scene``.

    key: the run's random key (default ``PRNGKey(config.seed)``); ``config.seed`` also
    draws the ``train_fraction`` subset. val: held-out views, scored (PSNR, SSIM on
    images clipped to [0, 1], mean over views) every ``val_every`` steps and at the end.
    run_dir: folder for config.json, metrics.jsonl, orbax checkpoints and, when the run
    completes, model.ply. resume: continue from the newest checkpoint in ``run_dir``
    (fresh start when there is none). init: initial Gaussians or point cloud [M, 3|6]
    instead of the random cube. stop_at: stop (with a checkpoint) at the first chunk end
    at or after this step, as an interruption would; ``info["completed"]`` is then False.

    Returns the active Gaussians (compacted) and an info dict: num_gaussians, capacity,
    steps, seconds (this call), seconds_total (over resumed sessions), steps_per_second
    (this call, compilation included), steady_steps_per_second (without the first chunk),
    final_loss, final_psnr (mean over the last chunk), val_psnr / val_ssim (with val),
    history (the logged records), densify_events (step, cloned, split, pruned, dropped,
    num_gaussians; this call), overflow_events, backend, extent, train_views, completed.
    """
    backend = resolve_backend(config.backend)
    config = dataclasses.replace(config, backend=backend)
    if config.backend == "reference" and config.capacity > 4096:
        warnings.warn(
            f"fitting with the dense reference renderer and capacity {config.capacity}: this is only "
            "practical for tiny scenes; build the FFI kernel for real runs", stacklevel=2)
    if run_dir is None and resume:
        raise ValueError("resume=True needs a run_dir holding the checkpoints")
    train_idx = _train_view_indices(len(scene), config.train_fraction, config.seed)
    views = scene.subset(train_idx) if len(train_idx) < len(scene) else scene
    extent = scene_extent(views.c2w) if len(views) > 1 else 1.0
    key = _raw_key(jax.random.PRNGKey(config.seed) if key is None else key)

    images = jnp.asarray(views.images, jnp.float32)
    cameras = views.cameras
    state = _init_state(_initial_gaussians(init, config, key), config, extent)
    n_active = int(np.sum(np.asarray(state.active)))
    white = all(b == 1.0 for b in config.background)

    history: list[dict] = []
    ckpt = None
    metrics_path = None
    start_step = 0
    seconds_before = 0.0
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = run_dir / "metrics.jsonl"
        run_config = {"fit_config": dataclasses.asdict(config), "extent": extent,
                      "train_views": [int(i) for i in train_idx], "num_train_views_total": len(scene),
                      "image_size": [views.height, views.width], "key": [int(x) for x in np.asarray(key).ravel()]}
        ckpt = RunCheckpointer(run_dir / "checkpoints")
        if resume and ckpt.latest_step() is not None:
            try:
                _check_resumable(run_dir / "config.json", run_config)
                tree, meta, start_step = ckpt.restore({"state": state, "key": key})
            except Exception:
                ckpt.close()
                raise
            state = jax.tree_util.tree_map(jnp.asarray, tree["state"])
            key = jnp.asarray(tree["key"])
            n_active = int(meta["num_gaussians"])
            seconds_before = float(meta.get("seconds_total", 0.0))
            history = truncate_metrics(metrics_path, start_step)
        else:
            earlier = ckpt.latest_step()
            if earlier is not None:
                ckpt.close()
                raise FileExistsError(
                    f"{run_dir}: holds checkpoints of an earlier run (step {earlier}); resume it "
                    "(resume=True, --resume) or choose another run folder")
            if resume:
                warnings.warn(f"{run_dir}: no checkpoint found, starting from step 0", stacklevel=2)
            if metrics_path.exists():
                metrics_path.unlink()
            write_json(run_dir / "config.json", run_config)

    val_data = None
    if val is not None and len(val):
        val_data = (jnp.asarray(val.images, jnp.float32), val.cameras)

    def evaluate(state_params, subset: np.ndarray | None) -> tuple[float, float]:
        imgs, cams = val_data
        if subset is not None and len(subset) < imgs.shape[0]:
            imgs = imgs[subset]
            cams = jax.tree_util.tree_map(lambda x: x[subset], cams)
        p, s = _evaluate(state_params, imgs, cams, backend=config.backend, background=config.background)
        return float(np.mean(np.asarray(p))), float(np.mean(np.asarray(s)))

    from tqdm.auto import tqdm

    total = config.iterations
    end_step = total if stop_at is None else min(total, max(stop_at, 0))
    bar = tqdm(total=total, initial=start_step, unit="step", disable=not progress, dynamic_ncols=True)
    overflow_events: list[dict] = []
    densify_events: list[dict] = []
    t0 = time.perf_counter()
    steady_t, steady_steps = 0.0, 0
    step = start_step
    last_loss = last_psnr = float("nan")
    val_psnr = val_ssim = None
    inter_val = _evenly_spaced(len(val), config.val_views) if val_data is not None else None
    ccfg = _compiled_config(config)
    try:
        while step < end_step:
            tc = time.perf_counter()
            state, losses, psnrs = _train_chunk(state, images, cameras, key, config=ccfg, extent=extent)
            prev, step = step, min(step + config.chunk_steps, total)
            losses, psnrs = np.asarray(losses), np.asarray(psnrs)  # the one sync per chunk
            dt = time.perf_counter() - tc
            if prev > start_step:  # the first chunk of a session includes compilation
                steady_t += dt
                steady_steps += step - prev
            last_loss, last_psnr = float(np.nanmean(losses)), float(np.nanmean(psnrs))

            if config.densify_from < step < config.densify_until and step % config.densify_every == 0:
                size_prune = jnp.asarray(step > config.opacity_reset_every)
                state, counts = _densify(state, key, size_prune, config=ccfg, extent=extent)
                counts = jax.device_get(counts)
                n_active = int(counts.active)
                densify_events.append({"step": step, "cloned": int(counts.cloned), "split": int(counts.split),
                                       "pruned": int(counts.pruned), "dropped": int(counts.dropped),
                                       "num_gaussians": n_active})
                if int(counts.dropped) > 0:
                    overflow_events.append({"step": step, "dropped": int(counts.dropped),
                                            "candidates": int(counts.candidates)})
                    warnings.warn(
                        f"step {step}: Gaussian buffer full (capacity {config.capacity}, {n_active} active): "
                        f"{int(counts.dropped)} of {int(counts.candidates)} densification candidates dropped "
                        "(smallest gradients first); raise FitConfig.capacity", RuntimeWarning, stacklevel=2)
            if step < config.densify_until and (
                step % config.opacity_reset_every == 0 or (white and step == config.densify_from)
            ):
                state = _reset_opacity(state, value=config.opacity_reset_value)

            record = None
            done = step >= end_step
            if done or _crossed(prev, step, config.log_every):
                record = {"step": step, "loss": last_loss, "psnr": last_psnr, "num_gaussians": n_active,
                          "steps_per_second": (step - prev) / dt, "seconds": time.perf_counter() - t0}
            if val_data is not None and (_crossed(prev, step, config.val_every) or step >= total):
                val_psnr, val_ssim = evaluate(state.params, None if step >= total else inter_val)
                record = record or {"step": step, "num_gaussians": n_active}
                record.update(val_psnr=val_psnr, val_ssim=val_ssim)
            if record is not None:
                history.append(record)
                if metrics_path is not None:
                    append_metrics(metrics_path, record)
            if ckpt is not None and (done or _crossed(prev, step, config.checkpoint_every)):
                ckpt.save(step, {"state": state, "key": key}, {
                    "num_gaussians": n_active, "step": step,
                    "seconds_total": seconds_before + time.perf_counter() - t0})
            post = {"loss": f"{last_loss:.4f}", "psnr": f"{last_psnr:.2f}", "N": str(n_active)}
            if val_psnr is not None:
                post["val_psnr"], post["val_ssim"] = f"{val_psnr:.2f}", f"{val_ssim:.3f}"
            bar.set_postfix(post, refresh=False)
            bar.update(step - prev)
    finally:  # also on errors and interrupts: flush pending checkpoint writes
        bar.close()
        if ckpt is not None:
            ckpt.close()
    seconds = time.perf_counter() - t0

    active = np.asarray(state.active)
    gaussians = state.params.take(jnp.asarray(np.flatnonzero(active)))
    completed = step >= total
    if completed and val_data is not None and val_psnr is None:
        val_psnr, val_ssim = evaluate(state.params, None)
    steps_run = step - start_step
    info = {
        "num_gaussians": int(active.sum()),
        "capacity": config.capacity,
        "steps": step,
        "steps_this_session": steps_run,
        "completed": completed,
        "seconds": seconds,
        "seconds_total": seconds_before + seconds,
        "steps_per_second": steps_run / seconds if seconds > 0 else float("nan"),
        "steady_steps_per_second": steady_steps / steady_t if steady_t > 0 else float("nan"),
        "final_loss": last_loss,
        "final_psnr": last_psnr,
        "overflow_events": overflow_events,
        "densify_events": densify_events,
        "backend": config.backend,
        "extent": extent,
        "train_views": [int(i) for i in train_idx],
        "history": history,
    }
    if val_data is not None:
        info["val_psnr"], info["val_ssim"] = val_psnr, val_ssim
    if completed and run_dir is not None:
        save_ply(gaussians, run_dir / "model.ply")
    return gaussians, info


def _crossed(prev: int, step: int, every: int) -> bool:
    """True when a multiple of ``every`` lies in (prev, step]."""
    return step // every > prev // every


def _check_resumable(config_path: Path, current: dict) -> None:
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing; cannot check that the checkpoints belong to this run")
    saved = read_json(config_path)
    a, b = dict(saved.get("fit_config", {})), json.loads(json.dumps(current["fit_config"]))
    diff = sorted(k for k in set(a) | set(b) if k not in _RESUME_FREE_FIELDS and a.get(k) != b.get(k))
    for k in ("train_views", "image_size"):
        if saved.get(k) != current[k]:
            diff.append(k)
    if diff:
        detail = ", ".join(f"{k}: {a.get(k, saved.get(k))!r} -> {b.get(k, current.get(k))!r}" for k in diff)
        raise ValueError(f"{config_path}: cannot resume, the run was started with different settings ({detail})")


# ----------------------------------------------------------------------------- run folders
def _is_mad_class(path: Path) -> bool:
    return (path / "transforms.json").is_file() and (path / "train" / "good").is_dir()


def run_fit(
    data_path: str | Path,
    out_dir: str | Path,
    config: FitConfig = FitConfig(),
    *,
    resume: bool = False,
    val_split: str | None = "val",
    progress: bool = True,
    stop_at: int | None = None,
) -> tuple[Gaussians, dict]:
    """Fit a Blender/NeRF folder (``transforms_train.json``; validation on
    ``transforms_<val_split>.json`` when present) or a MAD-Sim class folder
    (``train/good`` + ``transforms.json``, no validation split) and write the run folder:
    ``out_dir/model.ply`` (INRIA 3DGS PLY), ``config.json``, ``metrics.jsonl``,
    ``checkpoints/`` and ``info.json`` (the summary). ``out_dir`` must not lie inside the
    (read-only) dataset folder."""
    from ..data import load_blender, load_mad_train

    data_path, out_dir = Path(data_path), Path(out_dir)
    if not data_path.is_dir():
        raise FileNotFoundError(f"{data_path}: dataset folder not found")
    if out_dir.resolve().is_relative_to(data_path.resolve()):
        raise ValueError(f"{out_dir}: the run folder must not be inside the dataset folder {data_path}")
    val = None
    if _is_mad_class(data_path):
        train = load_mad_train(data_path, config.resolution, config.background)
    elif (data_path / "transforms_train.json").is_file():
        train = load_blender(data_path, "train", config.resolution, config.background)
        if val_split and (data_path / f"transforms_{val_split}.json").is_file():
            val = load_blender(data_path, val_split, config.resolution, config.background)
    else:
        raise FileNotFoundError(
            f"{data_path}: neither a Blender/NeRF folder (transforms_train.json) nor a MAD-Sim class "
            "folder (transforms.json + train/good/)")
    init = load_init_ply(config.init_ply) if config.init_ply else None
    gaussians, info = fit(train, config, val=val, run_dir=out_dir, resume=resume, progress=progress,
                          init=init, stop_at=stop_at)
    summary = {k: v for k, v in info.items() if k not in ("history", "train_views")}
    summary["data"] = str(data_path.resolve())
    write_json(out_dir / "info.json", summary)
    return gaussians, info


# ----------------------------------------------------------------------------- command line
def _optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


_OPTIONAL_FIELDS = {"resolution": int, "val_views": int, "init_ply": str}


def add_fit_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``splatjax fit DATA --out RUN [--resume] [--<config field> VALUE ...]``:
    one option per :class:`FitConfig` field (``--iterations``, ``--resolution``,
    ``--capacity``, ``--train-fraction``, ``--backend``, ...; ``none`` for optional ones),
    plus ``--no-val``, ``--stop-at`` and ``--quiet``."""
    parser.add_argument("data", help="Blender/NeRF folder (transforms_train.json) or MAD-Sim class folder")
    parser.add_argument("--out", required=True, help="run folder (model.ply, config.json, metrics.jsonl, checkpoints/)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--no-val", action="store_true", help="do not score the validation split")
    parser.add_argument("--stop-at", type=int, default=None, help="stop after this step (checkpointed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    defaults = FitConfig()
    group = parser.add_argument_group("fit settings (defaults: INRIA 3DGS / SplatPose)")
    for f in dataclasses.fields(FitConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name == "background":
            group.add_argument(flag, type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                               help=f"background colour (default {default})")
        elif f.name in _OPTIONAL_FIELDS:
            group.add_argument(flag, type=_optional(_OPTIONAL_FIELDS[f.name]), default=None,
                               help=f"(default {default})")
        elif f.name == "backend":
            group.add_argument(flag, choices=("auto", "reference", "cpu", "cuda"), default=None,
                               help=f"render backend (default {default})")
        else:
            group.add_argument(flag, type=type(default), default=None, help=f"(default {default})")
    return parser


def config_from_args(args: argparse.Namespace) -> FitConfig:
    """The :class:`FitConfig` for parsed :func:`add_fit_arguments` arguments (unset
    options keep the defaults)."""
    values = {}
    for f in dataclasses.fields(FitConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = tuple(v) if f.name == "background" else v
    return FitConfig(**values)


def run_fit_from_args(args: argparse.Namespace) -> int:
    """Run ``splatjax fit`` for parsed arguments; prints a one-line summary; returns 0."""
    config = config_from_args(args)
    _, info = run_fit(args.data, args.out, config, resume=args.resume,
                      val_split=None if args.no_val else "val", progress=not args.quiet, stop_at=args.stop_at)
    summary = (f"{info['steps']} steps in {info['seconds']:.1f} s ({info['steps_per_second']:.2f} steps/s), "
               f"{info['num_gaussians']} Gaussians (capacity {info['capacity']}), "
               f"train loss {info['final_loss']:.4f}, PSNR {info['final_psnr']:.2f} dB")
    if info.get("val_psnr") is not None:
        summary += f", val PSNR {info['val_psnr']:.2f} dB, SSIM {info['val_ssim']:.4f}"
    print(summary)
    if info["completed"]:
        print(f"model: {Path(args.out) / 'model.ply'}")
    return 0
