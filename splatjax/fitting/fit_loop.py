"""3D Gaussian splatting fitting: the defect-free model of an object from posed views.

Faithful to the INRIA 3DGS defaults (Kerbl et al. 2023): one shuffled view per step, Adam
per parameter group, the exponential position learning-rate decay, 0.8 L1 + 0.2 (1 - SSIM),
clone / split / prune every 100 steps and opacity resets on the schedule of
:mod:`splatjax.fitting.schedule` (the paper's at 30k steps, scaled for other lengths).

Pure: views and a frozen :class:`FitConfig` in, a :class:`FitResult` out; no files, no
printing. A ``callback`` sees every chunk end (metrics, state for checkpoints, and it may
stop the fit); :mod:`splatjax.app.fit_run` builds run folders, resuming and interrupts on it.

Static shapes: the Gaussians live in a buffer with an active mask; the compiled training
chunk (a ``lax.scan`` over ``chunk_steps`` steps) recompiles only when the buffer is
resized: it starts at the smallest power of two holding the initial points; with
``FitConfig.buffer`` "compact" (the CPU's default) it grows to the power of two a
densification needs and halves when pruning leaves it 3/4 empty, with "roomy" (a GPU's
default) it grows to twice that and never shrinks.

Determinism: all randomness derives from the key and the step, so a fit continued from a
saved state reproduces the uninterrupted one. Steps count from 1 as in 3DGS.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from ..data.types import PosedViews
from ..gaussians import Gaussians, init_random_gaussians
from ..render import resolve_backend
from . import train as _train
from .config import FitConfig
from .densify import DensifyRule, DensifyStrategy
from .schedule import FitSchedule, schedule
from .train import TrainState, scene_extent

__all__ = ["MIN_CAPACITY", "schedule_for", "strategy_for", "initial_capacity", "resize_floor", "train_view_indices", "ChunkReport", "FitResult", "buffer_is_roomy", "new_state", "state_template", "fit"]

_INIT_STREAM = 0
MIN_CAPACITY = 1024


def schedule_for(config: FitConfig) -> FitSchedule:
    """The schedule of a fit with ``config`` (explicit fields replace scaled values)."""
    return schedule(config.iterations, densify_every=config.densify_every, densify_from=config.densify_from,
                    densify_until=config.densify_until, opacity_reset_every=config.opacity_reset_every,
                    white_background=all(b == 1.0 for b in config.background))


def strategy_for(config: FitConfig) -> DensifyStrategy:
    """The density-control strategy (thresholds + schedule) of ``config``."""
    rule = DensifyRule(**{f.name: getattr(config, f.name) for f in dataclasses.fields(DensifyRule)})
    return DensifyStrategy(rule=rule, schedule=schedule_for(config))


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def initial_capacity(num_gaussians: int, config: FitConfig) -> int:
    """Buffer slots to start with: ``config.capacity`` (at least the initial count) or
    the smallest power of two >= the initial count (at least 1024)."""
    if config.capacity is not None:
        return max(config.capacity, num_gaussians)
    return max(MIN_CAPACITY, _pow2(num_gaussians))


def resize_floor(config: FitConfig) -> int:
    """The smallest buffer a shrink after pruning may leave: ``config.capacity`` or
    :data:`MIN_CAPACITY` (growing rounds up to at least this, too)."""
    return MIN_CAPACITY if config.capacity is None else config.capacity


def train_view_indices(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted seeded subset of round(fraction x n) views (at least 1); all views at 1.0."""
    if fraction >= 1.0:
        return np.arange(n)
    k = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


@dataclasses.dataclass(frozen=True)
class ChunkReport:
    """What the callback sees after each chunk (and its events)."""

    step: int  # optimisation steps done
    iterations: int
    state: TrainState  # the state after this step's events (checkpoint it to resume here)
    record: dict | None  # metrics record when one is due (log_every, validation, end)
    events: tuple[dict, ...]  # densification / resize / reset events after this step
    completed: bool


@dataclasses.dataclass(frozen=True)
class FitResult:
    """The fitted model and how the fit went (steps and seconds: this call only)."""

    gaussians: Gaussians  # the active Gaussians, compacted
    state: TrainState  # the final training state (buffer, optimiser, step)
    completed: bool  # all iterations done (False when the callback stopped it)
    steps: int  # steps done in total
    steps_run: int  # steps done by this call
    seconds: float
    steady_steps_per_second: float  # without the first (compiling) chunk
    final_loss: float  # mean over the last chunk
    final_psnr: float
    val_psnr: float | None
    val_ssim: float | None
    history: tuple[dict, ...]  # the records of this call
    events: tuple[dict, ...]  # densification, resize and reset events of this call
    extent: float
    train_views: tuple[int, ...]
    backend: str

    @property
    def num_gaussians(self) -> int:
        return self.gaussians.num


@dataclasses.dataclass(frozen=True)
class _Setup:
    config: FitConfig  # backend resolved
    compiled: FitConfig
    strategy: DensifyStrategy
    extent: float
    key: jax.Array
    images: jax.Array
    cameras: object
    val: tuple | None
    val_subset: np.ndarray | None
    train_views: tuple[int, ...]
    roomy: bool  # the buffer policy: grow with headroom and never shrink (each new size recompiles)


def buffer_is_roomy(config: FitConfig, backend: str) -> bool:
    """Whether a fit of ``config`` on the concrete ``backend`` resizes its buffer the
    "roomy" way: on a GPU the inactive slots cost next to nothing while every new buffer
    size recompiles the training programs; on the CPU every slot is projected each step."""
    return config.buffer == "roomy" or (config.buffer == "auto" and backend == "cuda")


def _setup(scene: PosedViews, config: FitConfig, key, val: PosedViews | None) -> _Setup:
    config = dataclasses.replace(config, backend=resolve_backend(config.backend))
    idx = train_view_indices(len(scene), config.train_fraction, config.seed)
    views = scene.subset(idx) if len(idx) < len(scene) else scene
    key = jax.random.PRNGKey(config.seed) if key is None else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    val_data, subset = None, None
    if val is not None and len(val):
        val_data = (jnp.asarray(val.images, jnp.float32), val.cameras)
        k = config.val_views
        subset = np.arange(len(val)) if k is None or k >= len(val) else np.unique(
            np.round(np.linspace(0, len(val) - 1, k)).astype(int))
    return _Setup(config=config, compiled=_train.compiled_config(config), strategy=strategy_for(config),
                  extent=scene_extent(views.c2w) if len(views) > 1 else 1.0, key=key,
                  images=jnp.asarray(views.images, jnp.float32), cameras=views.cameras, val=val_data,
                  val_subset=subset, train_views=tuple(int(i) for i in idx),
                  roomy=buffer_is_roomy(config, config.backend))


def _initial_gaussians(init, config: FitConfig, key) -> Gaussians:
    if isinstance(init, Gaussians):
        return init
    k = jax.random.fold_in(key, _INIT_STREAM)
    if init is None:
        return init_random_gaussians(config.init_points, key=k, extent=config.init_extent,
                                     opacity=config.init_opacity, sh_degree=config.sh_degree)
    pts = np.asarray(init, np.float32)
    if pts.ndim != 2 or pts.shape[1] not in (3, 6):
        raise ValueError(f"init point cloud must be [M, 3] (xyz) or [M, 6] (xyz rgb in [0, 1]), got {pts.shape}")
    return init_random_gaussians(pts.shape[0], key=k, opacity=config.init_opacity, points=pts[:, :3],
                                 colors=pts[:, 3:] if pts.shape[1] == 6 else None, sh_degree=config.sh_degree)


def new_state(scene: PosedViews, config: FitConfig = FitConfig(), *, key: jax.Array | None = None,
              init: Gaussians | Float[np.ndarray, "M _"] | None = None, capacity: int | None = None) -> TrainState:
    """The step-0 training state :func:`fit` starts from (``capacity`` slots, at least the
    initial count; default :func:`initial_capacity`). To restore a saved state use
    :func:`state_template`."""
    return _fresh_state(_setup(scene, config, key, None), init, capacity)


def state_template(config: FitConfig, capacity: int) -> TrainState:
    """The structure, shapes and dtypes (``jax.ShapeDtypeStruct`` leaves, nothing
    allocated) of a training state of ``config`` with a ``capacity``-slot buffer: the
    template for restoring a saved state, whatever resizes it went through."""
    one = init_random_gaussians(1, key=jax.random.PRNGKey(0), sh_degree=config.sh_degree)
    return jax.eval_shape(lambda g: _train.init_state(g, config, 1.0, int(capacity)), one)


def _fresh_state(s: _Setup, init, capacity: int | None) -> TrainState:
    g = _initial_gaussians(init, s.config, s.key)
    cap = initial_capacity(g.num, s.config) if capacity is None else max(capacity, g.num)
    return _train.init_state(g, s.config, s.extent, cap)


def _resize_for_densify(state: TrainState, s: _Setup, size_prune, floor: int):
    """Grow the buffer to a power of two holding what the densification needs."""
    need = int(_train.densify_demand(state, size_prune, strategy=s.strategy, extent=s.extent))
    if need <= state.capacity:
        return state, None
    cap = max(_pow2(need * (2 if s.roomy else 1)), floor)
    return _train.resize_state(state, cap, s.compiled, s.extent), {"resize": cap, "needed": need}


def _apply_events(state: TrainState, s: _Setup, step: int, floor: int) -> tuple[TrainState, list[dict]]:
    """Densification (growing the buffer first, shrinking it after heavy pruning) and
    opacity resets due after ``step``."""
    densify, size_prune, reset = s.strategy.events(step)
    events = []
    if densify:
        sp = jnp.asarray(size_prune)
        state, grown = _resize_for_densify(state, s, sp, floor)
        if grown:
            events.append({"step": step, **grown})
        state, counts = _train.densify_state(state, s.key, sp, strategy=s.strategy, config=s.compiled,
                                             extent=s.extent)
        c = {f: int(v) for f, v in jax.device_get({f: getattr(counts, f) for f in _COUNT_FIELDS}).items()}
        events.append({"step": step, "densify": c})
        target = max(floor, _pow2(2 * c["active"]))
        if not s.roomy and 4 * c["active"] <= state.capacity and target < state.capacity:
            state = _train.resize_state(state, target, s.compiled, s.extent)
            events.append({"step": step, "resize": target})
    if reset:
        state = _train.reset_state(state, strategy=s.strategy, config=s.compiled, extent=s.extent)
        events.append({"step": step, "reset_opacity": True})
    return state, events


_COUNT_FIELDS = ("cloned", "split", "pruned", "dropped", "candidates", "active")


def _validate(s: _Setup, params: Gaussians, final: bool) -> tuple[float, float]:
    imgs, cams = s.val
    if not final and len(s.val_subset) < imgs.shape[0]:
        imgs = imgs[s.val_subset]
        cams = jax.tree_util.tree_map(lambda x: x[s.val_subset], cams)
    p, q = _train.evaluate(params, imgs, cams, backend=s.config.backend, background=s.config.background,
                           supersample=s.config.supersample)
    return float(np.mean(np.asarray(p))), float(np.mean(np.asarray(q)))


def _crossed(prev: int, step: int, every: int) -> bool:
    """True when a multiple of ``every`` lies in (prev, step]."""
    return step // every > prev // every


def _record(s: _Setup, state: TrainState, prev: int, step: int, losses, psnrs, dt: float) -> dict | None:
    c = s.config
    done = step >= c.iterations
    val_due = s.val is not None and (_crossed(prev, step, c.val_every) or done)
    if not (done or val_due or _crossed(prev, step, c.log_every)):
        return None
    rec = {"step": step, "loss": _nanmean(losses), "psnr": _nanmean(psnrs),
           "num_gaussians": int(jnp.sum(state.active)), "capacity": state.capacity,
           "steps_per_second": (step - prev) / dt}
    if c.sh_degree > 0:
        rec["sh_degree"] = s.strategy.schedule.sh_degree_at(step, c.sh_degree)
    if val_due:
        rec["val_psnr"], rec["val_ssim"] = _validate(s, state.params, final=done)
    return rec


def fit(
    scene: PosedViews,
    config: FitConfig = FitConfig(),
    *,
    key: jax.Array | None = None,
    val: PosedViews | None = None,
    init: Gaussians | Float[np.ndarray, "M _"] | None = None,
    state: TrainState | None = None,
    callback: Callable[[ChunkReport], bool | None] | None = None,
) -> FitResult:
    """Fit 3D Gaussians to the posed views of ``scene`` (images [V, H, W, 3] in [0, 1]).

    key: the run's random key (default ``PRNGKey(config.seed)``; ``config.seed`` also
    draws the ``train_fraction`` subset). val: held-out views, scored (PSNR in dB and
    SSIM, renders clipped to [0, 1], mean over views) every ``val_every`` steps on
    ``val_views`` of them and at the end on all. init: initial Gaussians or point cloud
    [M, 3|6] (xyz, rgb in [0, 1]) instead of the random cube. state: continue from this
    state (e.g. a restored checkpoint; ``init`` is then ignored). callback: called after
    every chunk with a :class:`ChunkReport`; a true return value stops the fit there.
    """
    s = _setup(scene, config, key, val)
    if state is None:
        state = _fresh_state(s, init, None)
    floor = resize_floor(config)
    step = start = int(state.step)
    total = config.iterations
    history, events = [], []
    losses = psnrs = np.full(1, np.nan)
    t0 = time.perf_counter()
    steady_t = 0.0
    stopped = False
    while step < total and not stopped:
        tc = time.perf_counter()
        state, losses, psnrs = _train.train_chunk(state, s.images, s.cameras, s.key, jnp.int32(total),
                                                  jnp.int32(s.strategy.schedule.sh_degree_every),
                                                  config=s.compiled, extent=s.extent,
                                                  guarded=step + config.chunk_steps > total)
        prev, step = step, min(step + config.chunk_steps, total)
        losses, psnrs = np.asarray(losses), np.asarray(psnrs)  # the one sync per chunk
        dt = time.perf_counter() - tc
        steady_t += dt if prev > start else 0.0
        state, new_events = _apply_events(state, s, step, floor)
        events += new_events
        rec = _record(s, state, prev, step, losses, psnrs, dt)
        if rec is not None:
            history.append(rec)
        if callback is not None:
            stopped = bool(callback(ChunkReport(step=step, iterations=total, state=state, record=rec,
                                                events=tuple(new_events), completed=step >= total)))
    return _result(s, state, start, step, t0, steady_t, losses, psnrs, history, events)


def _nanmean(x) -> float:
    x = np.asarray(x, np.float64)
    return float(np.mean(x[np.isfinite(x)])) if np.isfinite(x).any() else float("nan")


def _result(s: _Setup, state, start, step, t0, steady_t, losses, psnrs, history, events) -> FitResult:
    seconds = time.perf_counter() - t0
    steady_steps = max(0, step - start - s.config.chunk_steps)
    last_val = next((r for r in reversed(history) if "val_psnr" in r), None)
    completed = step >= s.config.iterations
    final_val = last_val is not None and last_val["step"] >= s.config.iterations
    gaussians = state.params.take(jnp.asarray(np.flatnonzero(np.asarray(state.active))))
    return FitResult(
        gaussians=gaussians, state=state, completed=completed, steps=step, steps_run=step - start,
        seconds=seconds, steady_steps_per_second=steady_steps / steady_t if steady_t > 0 else float("nan"),
        final_loss=_nanmean(losses), final_psnr=_nanmean(psnrs),
        val_psnr=last_val["val_psnr"] if final_val else None, val_ssim=last_val["val_ssim"] if final_val else None,
        history=tuple(history), events=tuple(events), extent=s.extent, train_views=s.train_views,
        backend=s.config.backend,
    )
