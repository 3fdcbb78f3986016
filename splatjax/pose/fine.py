"""Fine pose, SplatPose's core (the paper's section on pose estimation), batched.

Keep the camera at the coarse pose and move the object by the screw (w, v, theta), each
entry initialised from N(0, init_std^2) (reference: 1e-6). The reference moves the
Gaussian means by ``x @ R + t`` (row vectors), i.e. ``x -> R^T x + t``, and composes the
Gaussian rotations with R^-1; with degree-0 colour this is the same as rendering the
untouched Gaussians from the moved camera :func:`splatjax.se3.transform_camera`
(camera, R^T, t). Adam (0.9, 0.999), learning rate 1e-3 for the first step then
0.01 * 0.8^(s / 100) for step s >= 1 (:func:`fine_lr_schedule`), k = 175 steps, no early
stop, loss 0.8 L1 + 0.2 (1 - SSIM) on the full image (the default objective; any
objective of :mod:`splatjax.pose.objectives` may replace it). Steps run in ``lax.scan``; queries
are refined in fixed-size chunks under ``jax.vmap`` (the last chunk is padded, so one
compilation serves every chunk). With several local devices (:class:`ParallelConfig`) each
chunk is split evenly over them by :func:`splatjax.sharding.shard_over_queries`; one
device runs the plain jitted ``vmap`` (no ``shard_map``).

Beyond the reference: the returned pose is the best iterate (lowest loss seen), not the
last; a step with a non-finite loss or gradient is skipped, so a diverging query keeps
finite parameters and cannot disturb the others; a query whose loss became non-finite or
grew (by more than 1 %) is flagged ``diverged`` (:class:`Refinement`). Optionally the first steps run at
reduced resolution (``fine_levels``, :func:`fine_level_plan`), Adam state and screw
carried across levels (one ``lax.scan`` per level inside one compiled program).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int

from .. import se3
from ..camera import Camera
from ..context import QUIET, Context
from ..gaussians import Gaussians
from ..image import resize
from ..render import render
from ..sharding import ParallelConfig, ceil_div, map_padded_chunks, query_mesh, shard_over_queries
from .cameras import as_batch, num_cameras
from .config import PoseConfig
from .objectives import Objective, PoseRender, resolve_objective

__all__ = ["fine_lr_schedule", "init_screw", "screw_motion", "moved_camera", "refine_pose", "refine_poses",
           "refine_poses_detailed", "Refinement", "fine_level_plan", "query_keys", "compiled_config", "ScanState",
           "start_scan", "scan_poses"]

GROWTH_TOLERANCE = 0.01  # a refinement "grew" (diverged) when its last loss exceeds the first by more than 1 %


def fine_lr_schedule(count, *, lr_first: float = 1e-3, lr: float = 0.01, lr_decay: float = 0.8):
    """The reference learning rate as an optax schedule of the update count: ``lr_first``
    for the first step (count 0), then ``lr * lr_decay^(count / 100)``, i.e.
    0.01 * 0.8^((i + 1) / 100) after step i with the defaults."""
    count = jnp.asarray(count, jnp.float32)
    return jnp.where(count < 0.5, lr_first, lr * jnp.power(lr_decay, count / 100.0))


def init_screw(*, key: jax.Array, std: float = 1e-6, theta: float = 0.0, dtype=jnp.float32) -> dict[str, Array]:
    """Screw parameters {"w": [3], "v": [3], "theta": []}, each entry ~ N(0, std^2), theta's
    around ``theta`` (the reference: std 1e-6, theta 0)."""
    kw, kv, kt = jax.random.split(key, 3)
    return {
        "w": std * jax.random.normal(kw, (3,), dtype),
        "v": std * jax.random.normal(kv, (3,), dtype),
        "theta": theta + std * jax.random.normal(kt, (), dtype),
    }


def _theta0(config: PoseConfig) -> float:
    """The screw's initial theta: ``config.init_theta`` with the reference map, 0 with the
    exact exponential (where theta is the rotation angle itself)."""
    return 0.0 if config.exact_exp else float(config.init_theta)


def screw_motion(params: dict[str, Array], *, exact_exp: bool = False) -> tuple[Float[Array, "3 3"], Float[Array, " 3"]]:
    """The object motion x -> A x + b of the screw parameters, A = R^T and b = t, where
    (R, t) is the reference screw map (``exact_exp=False``, w not normalised) or the SE(3)
    exponential with normalised w (``exact_exp=True``). The reference applies R in the
    row-vector form ``x @ R + t``, hence the transpose."""
    fn = se3.screw_to_transform if exact_exp else se3.screw_to_transform_reference
    R, t = fn(params["w"], params["v"], params["theta"])
    return R.T, t


def moved_camera(camera: Camera, params: dict[str, Array], *, exact_exp: bool = False) -> Camera:
    """The camera that sees the untouched Gaussians as ``camera`` sees the object moved
    by the screw ``params``."""
    A, b = screw_motion(params, exact_exp=exact_exp)
    return se3.transform_camera(camera, A.astype(camera.R.dtype), b.astype(camera.t.dtype))


def _optimizer(lr_first: float = 1e-3, lr: float = 0.01, lr_decay: float = 0.8):
    schedule = functools.partial(fine_lr_schedule, lr_first=lr_first, lr=lr, lr_decay=lr_decay)
    return optax.adam(schedule, b1=0.9, b2=0.999)


#: The :class:`PoseConfig` fields the compiled refinement reads.
COMPILED_FIELDS = ("steps", "exact_exp", "backend", "background", "supersample", "lr_first", "lr", "lr_decay",
                   "fine_levels", "fine_level_steps", "stop_patience", "stop_tolerance")


def compiled_config(config: PoseConfig) -> PoseConfig:
    """``config`` with only :data:`COMPILED_FIELDS` kept (the rest at their defaults): the
    static argument of the compiled refinement, so that configs differing elsewhere (batch
    size, coarse options, ...) share one compilation."""
    return PoseConfig(**{name: getattr(config, name) for name in COMPILED_FIELDS})


def _static(config: PoseConfig, objective: str | Objective | None = None) -> dict:
    """The compiled refinement's static arguments: the :func:`compiled_config` and the
    objective (``None``: ``config.objective``; a function, hashed by identity)."""
    return dict(config=compiled_config(config), objective=resolve_objective(objective, config.objective))


def fine_level_plan(width: int, height: int, steps: int, levels: int = 1,
                    level_steps: int = 25) -> tuple[tuple[int, int, int], ...]:
    """The coarse-to-fine schedule: ``(width, height, steps)`` per level, coarsest first.
    Level l of L (l = 0 .. L-1) renders at 1/2^(L-1-l) of the image size (at least 1 px);
    the L-1 reduced levels get ``level_steps`` steps each, the full-resolution level the
    rest of ``steps``. ``levels=1``: ``((width, height, steps),)``."""
    if levels < 1 or steps - (levels - 1) * level_steps < 1:
        raise ValueError(f"fine_level_plan: {levels} levels of {level_steps} steps leave no full-resolution step "
                         f"of {steps}")
    plan = [(max(1, round(width / 2 ** (levels - 1 - lv))), max(1, round(height / 2 ** (levels - 1 - lv))),
             level_steps) for lv in range(levels - 1)]
    return tuple(plan) + ((width, height, steps - (levels - 1) * level_steps),)


def _where(ok, new, old):
    """Per-leaf ``where(ok, new, old)`` over two pytrees of one structure."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)


def _all_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def _level_scan(loss_fn, opt, carry, first: int, n: int, track: bool):
    """``n`` Adam steps (global step indices ``first`` ..) from ``carry`` = (params, state,
    best params, best loss, best step, non-finite seen). A step whose loss or gradient is
    not finite is skipped (params and Adam state kept), so NaN cannot enter the
    parameters. ``track``: the iterate of each step is a candidate for the best (lowest
    loss; NaN never compares lower). Returns (carry, losses [n])."""

    return jax.lax.scan(_step_fn(loss_fn, opt, track), carry, jnp.arange(first, first + n, dtype=jnp.int32))


def _step_fn(loss_fn, opt, track: bool):
    """One Adam step of :func:`_level_scan`: (carry, global step i) -> (carry, loss before it)."""

    def step(c, i):
        params, state, best, best_loss, best_step, bad = c
        loss, grad = jax.value_and_grad(loss_fn)(params)
        if track:
            better = loss < best_loss
            best = _where(better, params, best)
            best_loss, best_step = jnp.where(better, loss, best_loss), jnp.where(better, i, best_step)
        ok = jnp.isfinite(loss) & _all_finite(grad)
        updates, new_state = opt.update(grad, state, params)
        params, state = _where(ok, (optax.apply_updates(params, updates), new_state), (params, state))
        return (params, state, best, best_loss, best_step, bad | ~ok), loss

    return step


def _idle_camera(camera: Camera, idle) -> Camera:
    """``camera``, or where ``idle`` the same camera moved 10^4 units back along its
    axis: every point is then behind the near plane and culled before any binning."""
    t = camera.t.at[..., 2].add(jnp.where(idle, -1e4, 0.0).astype(camera.t.dtype))
    return Camera(camera.R, t, camera.fx, camera.fy, camera.cx, camera.cy, camera.width, camera.height)


def _level_until_stall(loss_for, opt, carry, first: int, n: int, patience: int, tol: float):
    """Like :func:`_level_scan` (tracking the best) but stops after the step at which the
    best loss has improved by less than ``tol`` (relative) over the last ``patience``
    steps, counted from the first step whose iterate beats the start: with s0 that step,
    at step s >= s0 + ``patience`` stop when best(s - patience) - best(s) < tol * best(s),
    best(s) the lowest loss of the iterates 0 .. s of this level. A query that has not
    left its start yet never stops early: a screw that starts at the saddle of its
    w x theta product (w ~ 0, theta 0) can take more than ``patience`` steps to get
    going, and a stall counted from step 0 ended such a query on its start. Returns
    (carry, losses [n], NaN after the stop, steps taken). Under ``vmap`` every query stops
    on its own: the batch runs until its last query stops and the stopped ones are left
    unchanged (``lax.while_loop``'s batching). ``loss_for(idle)`` gives the loss function;
    a stopped query's steps are still computed under ``vmap`` (and thrown away), so with
    ``idle`` set it renders a camera that sees nothing (:func:`_idle_camera`), which costs
    the kernel next to nothing."""
    dtype = carry[3].dtype

    def cond(c):
        _, _, i, done, _, _ = c
        return (i < n) & ~done

    def body(c):
        inner, trace, i, done, ring, left = c
        inner, loss = _step_fn(loss_for(done | (i >= n)), opt, True)(inner, first + i)
        best, best_step = inner[3], inner[4]
        left = jnp.where((best_step > 0) & (left > i), i, left)  # the first step whose iterate beat the start
        slot = i % patience
        done = (i >= left + patience) & (ring[slot] - best < tol * best)
        return inner, trace.at[i].set(loss), i + 1, done, ring.at[slot].set(best), left

    init = (carry, jnp.full((n,), jnp.nan, dtype), jnp.zeros((), jnp.int32), jnp.zeros((), bool),
            jnp.full((patience,), jnp.inf, dtype), jnp.asarray(n, jnp.int32))
    carry, trace, taken, _, _, _ = jax.lax.while_loop(cond, body, init)
    return carry, trace, taken


def _refine_core(gaussians, camera, query, params0, *, config: PoseConfig, objective):
    """One query's refinement with the fine-pose fields of ``config``: (best camera,
    ``objective`` before each step [steps], its value at the best iterate at full
    resolution, its step, diverged)."""
    steps, exact_exp = config.steps, config.exact_exp
    opt = _optimizer(config.lr_first, config.lr, config.lr_decay)
    query = jnp.asarray(query, gaussians.means.dtype)

    def loss_at(cam, target, idle=None):
        return _pose_loss(gaussians, cam, target, config, objective, idle)

    full_loss = loss_at(camera, query)
    plan = fine_level_plan(camera.width, camera.height, steps, config.fine_levels, config.fine_level_steps)
    zero = jnp.zeros((), jnp.int32)
    carry = _initial_carry(opt, params0, query.dtype)
    first_loss, traces, done = None, [], 0
    for w, h, n in plan[:-1]:  # reduced levels: no best tracking (their losses are not comparable)
        target = resize(query, h, w)
        carry, tr = _level_scan(loss_at(camera.scaled(w, h), target), opt, carry, done, n, track=False)
        traces.append(tr)
        done += n
    if len(plan) > 1:  # the start's full-resolution loss: a candidate and the divergence reference
        first_loss = full_loss(params0)
        better = first_loss < carry[3]
        carry = carry[:2] + _where(better, (params0, first_loss, zero), carry[2:5]) + carry[5:]
    if config.stop_patience > 0:
        carry, tr, taken = _level_until_stall(lambda idle: loss_at(camera, query, idle), opt, carry, done,
                                              plan[-1][2], config.stop_patience, config.stop_tolerance)
    else:
        carry, tr = _level_scan(full_loss, opt, carry, done, plan[-1][2], track=True)
        taken = jnp.asarray(plan[-1][2], jnp.int32)
    traces.append(tr)
    first_loss = tr[0] if first_loss is None else first_loss
    taken = taken + done
    ended = _end(full_loss, carry, camera, taken, first_loss, exact_exp)
    trace = traces[0] if len(traces) == 1 else jnp.concatenate(traces)
    return ended[0], trace, *ended[1:], taken


def _initial_carry(opt, params0: dict, dtype=jnp.float32) -> tuple:
    """A refinement's carry before its first step: (screw, Adam state, best screw, best
    loss inf, best step 0, no non-finite value seen)."""
    return (params0, opt.init(params0), params0, jnp.asarray(jnp.inf, dtype), jnp.zeros((), jnp.int32),
            jnp.zeros((), bool))


def _pose_loss(gaussians, camera, target, config: PoseConfig, objective, idle=None):
    """The loss of the screw parameters: ``objective`` of the model rendered from ``camera``
    moved by them (seeing nothing where ``idle``; :func:`_idle_camera`) against ``target``."""
    bg = jnp.asarray(config.background, target.dtype)

    def loss_fn(params):
        moved = moved_camera(camera, params, exact_exp=config.exact_exp)
        if idle is not None:
            moved = _idle_camera(moved, idle)
        rgb, alpha = render(gaussians, moved, background=config.background, backend=config.backend,
                            supersample=config.supersample)
        return objective(PoseRender(rgb=rgb, alpha=alpha, camera=moved, background=bg), target)
    return loss_fn


def _end(full_loss, carry, camera, taken, first_loss, exact_exp: bool):
    """(best camera, best loss, best step, diverged) of a refinement stopped with ``carry``
    after ``taken`` steps: the last iterate (the scan evaluates each iterate before its
    step) is a candidate too; diverged: a non-finite loss or gradient was seen, or the last
    loss exceeds the start's ``first_loss`` by more than ``GROWTH_TOLERANCE``."""
    params, _, best, best_loss, best_step, bad = carry
    last = full_loss(params)
    better = last < best_loss
    best, best_loss = _where(better, params, best), jnp.where(better, last, best_loss)
    best_step = jnp.where(better, taken, best_step)
    diverged = bad | ~jnp.isfinite(last) | (last > first_loss * (1.0 + GROWTH_TOLERANCE))
    return moved_camera(camera, best, exact_exp=exact_exp), best_loss, best_step, diverged


def _scan_core(gaussians, camera, query, state, *, config: PoseConfig, objective, first: int):
    """One query's ``config.steps`` steps of :func:`scan_poses`: (new state, (best camera,
    trace, best loss, best step, diverged) as :func:`_refine_core` would end here)."""
    opt = _optimizer(config.lr_first, config.lr, config.lr_decay)
    full_loss = _pose_loss(gaussians, camera, jnp.asarray(query, gaussians.means.dtype), config, objective)
    carry, trace = _level_scan(full_loss, opt, tuple(state)[:6], first, config.steps, track=True)
    start = trace[0] if first == 0 else state.start_loss
    camera, best_loss, best_step, diverged = _end(full_loss, carry, camera, first + config.steps, start,
                                                  config.exact_exp)
    return ScanState(*carry, start), (camera, trace, best_loss, best_step, diverged)


_STATIC = ("config", "objective")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _refine_one_jit(gaussians, camera, query, params0, **static):
    return _refine_core(gaussians, camera, query, params0, **static)


@functools.partial(jax.jit, static_argnames=("core",) + _STATIC + ("first",))
def _batch_jit(gaussians, cameras, queries, per_query, **static):
    """``static["core"]`` (:func:`_refine_core` or :func:`_scan_core`) vmapped over a chunk
    of queries and compiled once per core and static settings."""
    return _batch_fn(**static)(gaussians, cameras, queries, per_query)


@functools.lru_cache(maxsize=32)
def _batch_fn(core: Callable, **static) -> Callable:
    """The vmapped ``core`` of one compiled config and objective (and first step), one
    function object per combination so that the sharded program is compiled once and reused."""
    return jax.vmap(functools.partial(core, **static), in_axes=(None, 0, 0, 0))


def _check_query(query, camera: Camera, where: str):
    shape = tuple(query.shape[-3:])
    if shape != (camera.height, camera.width, 3):
        raise ValueError(f"{where}: query images are {shape[1]}x{shape[0]} (shape {tuple(query.shape)}) but "
                         f"the camera is {camera.width}x{camera.height}; resize the queries or use "
                         "camera.scaled(width, height)")


class Refinement(NamedTuple):
    """The fine pose of B queries (:func:`refine_poses_detailed`).

    cameras: the best iterate of each query (lowest full-resolution loss among the start,
    every step's iterate and the last; a non-finite loss is never the best); traces [B, k]:
    the loss before each step (with ``fine_levels`` > 1 the first steps' losses are at
    reduced resolution); loss [B]: the full-resolution loss of the returned iterate (inf
    when no loss was finite); best_step [B]: its number of steps taken (0: the start, k:
    the last); diverged [B]: a loss or gradient became NaN/inf, or the last iterate's loss
    exceeds the start's by more than ``GROWTH_TOLERANCE`` (1 %; a start at the optimum
    wobbles by less); steps [B]: the steps taken (k, or fewer where ``stop_patience``
    stopped the query early; its trace is NaN after that)."""

    cameras: Camera
    traces: Float[Array, "B k"]
    loss: Float[Array, " B"]
    best_step: Int[Array, " B"]
    diverged: Bool[Array, " B"]
    steps: Int[Array, " B"]


def query_keys(key: jax.Array, b: int) -> jax.Array:
    """B per-query keys: ``key`` itself when it already holds B keys (typed [B] or raw
    [B, 2]), else ``jax.random.split(key, b)`` (whose i-th key does not depend on b)."""
    key = jnp.asarray(key)
    batched = key.ndim == (1 if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else 2)
    if not batched:
        return jax.random.split(key, b)
    if key.shape[0] != b:
        raise ValueError(f"refine_poses: {key.shape[0]} keys for {b} queries")
    return key


def refine_pose(
    gaussians: Gaussians,
    camera: Camera,
    query: Float[Array, "H W 3"],
    config: PoseConfig = PoseConfig(),
    *,
    key: jax.Array,
    objective: str | Objective | None = None,
) -> tuple[Camera, Float[Array, " k"]]:
    """Refine one query's pose from the starting ``camera`` (SplatPose fine pose; the
    fine-pose fields of ``config``: steps, learning rates, exact_exp, init_std, init_theta, backend,
    fine_levels, fine_level_steps, objective, background). ``objective``: a function
    ``objective(render, query) -> loss`` or a registered name
    (:mod:`splatjax.pose.objectives`); None: ``config.objective``.

    Returns the refined camera, the best iterate (see :class:`Refinement`; it sees the
    untouched model as the query shows it; use :func:`splatjax.pose.camera_to_c2w` for a
    Blender camera-to-world), and the loss before each step [k]."""
    _check_query(query, camera, "refine_pose")
    params0 = init_screw(key=key, std=config.init_std, theta=_theta0(config))
    cam, trace, *_ = _refine_one_jit(gaussians, camera, query, params0, **_static(config, objective))
    return cam, trace


def refine_poses(
    gaussians: Gaussians,
    cameras: Camera,
    queries: Float[Array, "B H W 3"],
    config: PoseConfig = PoseConfig(),
    *,
    key: jax.Array,
    context: Context = QUIET,
    parallel: ParallelConfig | None = None,
    objective: str | Objective | None = None,
) -> tuple[Camera, Float[Array, "B k"]]:
    """:func:`refine_poses_detailed` reduced to (refined cameras, loss traces [B, k])."""
    ref = refine_poses_detailed(gaussians, cameras, queries, config, key=key, context=context, parallel=parallel,
                                objective=objective)
    return ref.cameras, ref.traces


def refine_poses_detailed(
    gaussians: Gaussians,
    cameras: Camera,
    queries: Float[Array, "B H W 3"],
    config: PoseConfig = PoseConfig(),
    *,
    key: jax.Array,
    context: Context = QUIET,
    parallel: ParallelConfig | None = None,
    objective: str | Objective | None = None,
    stage: str = "fine pose",
    full_chunks: bool = False,
) -> Refinement:
    """Refine B queries: ``jax.vmap`` over chunks of ``config.batch_size`` queries (the
    last chunk padded to full size; fewer than ``batch_size`` queries make one chunk of B,
    unless ``full_chunks``, which pads them to ``batch_size`` too: one compiled shape for
    calls of any size, at the padding's cost). Query i uses the screw initialisation of
    ``jax.random.split(key, B)[i]``, so the result equals :func:`refine_pose` called with
    that key (up to float rounding); queries do not affect each other (a diverging one
    included). ``key`` may also be B keys, one per query (e.g. a slice of
    ``jax.random.split(key, N)`` for queries taken from N: the same numbers as in the
    whole). ``context.tick(stage, done, total)`` is called after each chunk. Returns a
    :class:`Refinement`.

    ``parallel``: shard every chunk over ``parallel.devices`` local devices (None: one
    device, as ``ParallelConfig(devices=1)``); a chunk then holds
    ``parallel.per_device_batch`` (default ``config.batch_size``) queries per device, at
    most an equal share of the B queries. A query's result does not depend on the device
    count (float rounding aside); one device gives exactly the unsharded numbers.

    ``objective``: what is minimised, ``objective(render, query) -> loss`` (a
    :class:`~splatjax.pose.objectives.PoseRender` of one query and its image; vmapped and
    compiled once per function object, so reuse one function rather than a new ``lambda``
    per call) or a registered name; None: ``config.objective`` (default "photometric",
    SplatPose's loss). The traces, losses, best iterate and divergence use it. ``stage``:
    the progress label."""
    cams, queries, b = _batch(cameras, queries, "refine_poses")
    params0 = _init_screws(config, key, b)
    static = _static(config, objective)
    return Refinement(*_map_queries(dict(static, core=_refine_core), gaussians, (cams, queries, params0),
                                    config.batch_size, context=context, parallel=parallel, stage=stage,
                                    full_chunks=full_chunks))


def _batch(cameras: Camera, queries, where: str) -> tuple[Camera, Array, int]:
    """(camera batch, query array, B) of a batched refinement; the counts and sizes checked."""
    cams = as_batch(cameras)
    queries = jnp.asarray(queries)
    b = queries.shape[0]
    if num_cameras(cams) != b:
        raise ValueError(f"{where}: {num_cameras(cams)} cameras for {b} queries")
    _check_query(queries, cams, where)
    return cams, queries, b


def _init_screws(config: PoseConfig, key: jax.Array, b: int) -> dict:
    """B screw initialisations (:func:`init_screw`) from ``key`` (one key split B ways, or B keys)."""
    return jax.vmap(lambda k: init_screw(key=k, std=config.init_std, theta=_theta0(config)))(query_keys(key, b))


def _map_queries(static: dict, gaussians: Gaussians, args: tuple, batch_size: int, *, context: Context,
                 parallel: ParallelConfig | None, stage: str = "fine pose", full_chunks: bool = False):
    """``_batch_jit(gaussians, *args, **static)`` over the queries of ``args`` (each with a
    leading query axis) in padded chunks of ``batch_size`` (or ``parallel.per_device_batch``)
    queries (fewer queries: one chunk of them, unless ``full_chunks``), each chunk sharded over
    ``parallel.devices`` local devices with the vmapped ``_batch_fn(**static)`` where there
    are several: the chunk loop of the refinements (progress as ``stage``)."""
    b = num_cameras(args[0])
    mesh = None if parallel is None else query_mesh(parallel.devices)
    per = int(batch_size if parallel is None or parallel.per_device_batch is None else parallel.per_device_batch)
    if mesh is None or mesh.size == 1:
        run = functools.partial(_batch_jit, gaussians, **static)
        return map_padded_chunks(run, b, per if full_chunks else min(per, b), args, context=context, stage=stage)
    fn = _batch_fn(**static)
    shard = ParallelConfig(devices=mesh.size)  # one launch per chunk: the chunk is a multiple of the devices
    size = (per if full_chunks else min(per, ceil_div(b, mesh.size))) * mesh.size

    def run(*chunk):
        return shard_over_queries(fn, gaussians, *chunk, in_axes=(None,) + (0,) * len(chunk), mesh=mesh, config=shard)

    return map_padded_chunks(run, b, size, args, context=context, stage=stage)


class ScanState(NamedTuple):
    """Queries part-way through a one-level refinement without early stop (the screening):
    the screw parameters, Adam state, best iterate so far, its loss and step, whether a
    non-finite loss or gradient was seen, and the start's loss (inf before the first step);
    every leaf has a leading query axis."""

    params: dict
    opt_state: tuple
    best: dict
    best_loss: Array
    best_step: Array
    bad: Array
    start_loss: Array


def start_scan(config: PoseConfig, *, key: jax.Array, b: int) -> ScanState:
    """The :class:`ScanState` of B queries before their first step: the screw initialisation
    of :func:`refine_poses_detailed` (``key``: one key split B ways, or B keys)."""
    opt = _optimizer(config.lr_first, config.lr, config.lr_decay)
    carry = jax.vmap(functools.partial(_initial_carry, opt))(_init_screws(config, key, b))
    return ScanState(*carry, jnp.full((b,), jnp.inf, jnp.float32))


def scan_poses(
    gaussians: Gaussians,
    cameras: Camera,
    queries: Float[Array, "B H W 3"],
    state: ScanState,
    config: PoseConfig,
    first: int,
    *,
    context: Context = QUIET,
    parallel: ParallelConfig | None = None,
    objective: str | Objective | None = None,
    stage: str = "screening",
) -> tuple[ScanState, Refinement]:
    """``config.steps`` more Adam steps (global steps ``first`` ..) of B queries from
    ``state``, at the cameras' size, one level, no early stop (``fine_levels`` and
    ``stop_patience`` are not read). Returns the new state and the :class:`Refinement` the
    queries would end with if they stopped here. ``scan_poses`` from :func:`start_scan` for
    s steps, then for k - s more from its state, gives the numbers of
    :func:`refine_poses_detailed` with k steps, fine_levels 1 and stop_patience 0 (the
    screening's settings): a refinement that can be stopped part-way for some queries.
    ``stage``: the progress label."""
    cams, queries, b = _batch(cameras, queries, "scan_poses")
    static = dict(_static(config, objective), first=int(first), core=_scan_core)
    out = _map_queries(static, gaussians, (cams, queries, state), config.batch_size, context=context,
                       parallel=parallel, stage=stage)
    new, (camera, trace, loss, best_step, diverged) = out
    return new, Refinement(camera, trace, loss, best_step, diverged, jnp.full((b,), first + config.steps, jnp.int32))
