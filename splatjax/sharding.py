"""Queries sharded over the local devices: a 1-D device mesh over the query axis.

A stage that is already vmapped over a leading query axis (batched fine pose, rendering a
camera stack, anomaly maps) runs under :func:`jax.shard_map` on a mesh of the local
devices: each device gets an equal slice of the queries and runs the vmapped function on
it, with its own FFI rasterizer launches; arguments without a query axis (the Gaussians)
are replicated. The batch is padded with copies of its last query to a multiple of the
device count, and the padding is stripped from the results, so a query's result does not
depend on how many devices there are (the rasterizer renders each camera of a stack
exactly as a single-camera call).

Processes (hosts) are the application's business (:mod:`splatjax.app.distributed`): each
process shards its own share of the work over its own devices; :class:`ParallelConfig`
holds the options of both layers.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from .context import QUIET, Context
from .errors import ConfigError
from .host_rows import concat_rows, take_rows
from .validation import require, require_ints

__all__ = ["ParallelConfig", "query_mesh", "shard_over_queries", "padded_batch", "ceil_div", "map_padded_chunks"]

#: Name of the mesh axis the queries are sharded over.
QUERY_AXIS = "queries"


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
    """Devices and processes of an evaluation.

    ``devices`` local devices shard the queries (None: all of this process's devices);
    ``per_device_batch`` queries go to each device per launch (None: in
    :func:`shard_over_queries`, a device's whole share at once; in the evaluation stages,
    the stage's own chunk, ``PoseConfig.batch_size`` for fine pose and renders and
    ``MapConfig.chunk`` for maps).

    Several processes (hosts) join through :func:`jax.distributed.initialize`: give
    ``coordinator_address`` ("host:port" of process 0), ``num_processes`` and
    ``process_id`` explicitly, or set ``distributed`` alone to let JAX detect them on a
    cluster (SLURM, Open MPI, Kubernetes, TPU pods). Neither: one process.
    """

    devices: int | None = dataclasses.field(
        default=None, metadata={"help": "local devices to shard the queries over (none: all of them)"})
    per_device_batch: int | None = dataclasses.field(
        default=None, metadata={"help": "queries per device per launch (none: --batch-size for fine pose and "
                                         "renders, the map chunk for maps)"})
    distributed: bool = dataclasses.field(
        default=False, metadata={"help": "join a multi-process job; without --coordinator-address the "
                                         "coordinator, process count and id are detected from the cluster"})
    coordinator_address: str | None = dataclasses.field(
        default=None, metadata={"help": "host:port of process 0 of a multi-process job"})
    num_processes: int | None = dataclasses.field(
        default=None, metadata={"help": "number of processes of a multi-process job"})
    process_id: int | None = dataclasses.field(
        default=None, metadata={"help": "this process's index in a multi-process job, 0 .. num-processes - 1"})
    initialization_timeout: int = 300  # seconds to wait for every process to join

    def __post_init__(self):
        owner = type(self).__name__
        require_ints(self, ("devices", "per_device_batch", "num_processes", "initialization_timeout"), 1,
                     allow_none=True)
        require_ints(self, ("process_id",), 0, allow_none=True)
        address = self.coordinator_address
        require(address is None or re.fullmatch(r"[^\s:]+:\d{1,5}|\[[0-9a-fA-F:.]+\]:\d{1,5}", address) is not None,
                self, "coordinator_address", "host:port")
        explicit = {"coordinator_address": self.coordinator_address, "num_processes": self.num_processes,
                    "process_id": self.process_id}
        given = [k for k, v in explicit.items() if v is not None]
        if given and len(given) < 3:
            missing = next(k for k in explicit if k not in given)
            raise ConfigError(missing, f"is needed with {', '.join(given)} (give all three of coordinator_address, "
                                       "num_processes and process_id, or set distributed alone to detect "
                                       "them on a cluster)", owner=owner)
        if given and self.process_id >= self.num_processes:
            raise ConfigError("process_id", f"must be < num_processes = {self.num_processes} "
                                            f"(got {self.process_id})", owner=owner)

    @property
    def multi_process(self) -> bool:
        """Whether this configuration asks for :func:`jax.distributed.initialize`."""
        if self.num_processes is not None:
            return self.num_processes > 1
        return self.distributed


def query_mesh(devices: int | None = None) -> Mesh:
    """A 1-D mesh (axis ``"queries"``) over the first ``devices`` of this process's local
    devices (None: all). More devices than there are raises :class:`ConfigError`."""
    local = jax.local_devices()
    n = len(local) if devices is None else int(devices)
    if n < 1 or n > len(local):
        hint = (" (CPU: set XLA_FLAGS=--xla_force_host_platform_device_count=N before starting Python "
                "to split the host into N devices)") if local[0].platform == "cpu" else ""
        raise ConfigError("devices", f"must be between 1 and the {len(local)} local "
                                     f"{local[0].platform} device(s) (got {n}){hint}", owner="ParallelConfig")
    return Mesh(np.array(local[:n]), (QUERY_AXIS,))


def ceil_div(a: int, b: int) -> int:
    """The integer ceil(a / b) for b > 0."""
    return -(-int(a) // int(b))


def map_padded_chunks(run: Callable, n: int, size: int, args: tuple, in_axes=0, *,
                      context: Context = QUIET, stage: str = ""):
    """``run`` over consecutive chunks of ``size`` rows of the arguments with a leading
    axis of ``n`` rows (``in_axes`` 0; None: passed whole to every call), the last chunk
    padded with copies of the last row, so that every call has one shape (one compiled
    program); the outputs' rows for the ``n`` inputs, concatenated in order (pytrees too).
    ``context.tick(stage, done, total)`` after each chunk. The one padded-batch loop of the
    pose, render and map stages and of :func:`shard_over_queries`."""
    axes = tuple(in_axes) if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
    n_chunks = ceil_div(n, size)
    outs = []
    for c in range(n_chunks):
        idx = np.minimum(np.arange(c * size, (c + 1) * size), n - 1)
        chunk = [jax.tree_util.tree_map(lambda x: take_rows(x, idx), a) if ax == 0 else a for a, ax in zip(args, axes)]
        outs.append(jax.tree_util.tree_map(lambda x: take_rows(x, slice(0, min(size, n - c * size))), run(*chunk)))
        context.tick(stage, c + 1, n_chunks)
    return outs[0] if n_chunks == 1 else jax.tree_util.tree_map(lambda *xs: concat_rows(xs), *outs)


def padded_batch(n_queries: int, n_devices: int, per_device_batch: int | None = None) -> tuple[int, int]:
    """(per-device batch, number of launches) for ``n_queries`` over ``n_devices``: every
    launch holds ``per_device_batch * n_devices`` queries (the last one padded), None
    meaning one launch with ``ceil(n_queries / n_devices)`` queries per device."""
    if n_queries < 1 or n_devices < 1:
        raise ValueError(f"need at least one query and one device (got {n_queries}, {n_devices})")
    per = ceil_div(n_queries, n_devices)
    per = per if per_device_batch is None else min(int(per_device_batch), per)
    return per, ceil_div(n_queries, per * n_devices)


def _shard_map(fn, mesh, in_specs, out_specs):
    # check_vma is off: the body has no collectives, and the engine's custom_vjp rules
    # (losses, rasterizer) are not typed for varying manual axes
    if hasattr(jax, "shard_map"):  # jax >= 0.7, including 0.10 and 0.11
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map  # older jax

    return shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


@functools.lru_cache(maxsize=64)
def _sharded(fn: Callable, mesh: Mesh, in_axes: tuple) -> Callable:
    specs = tuple(PartitionSpec(QUERY_AXIS) if a == 0 else PartitionSpec() for a in in_axes)
    return jax.jit(_shard_map(fn, mesh, specs, PartitionSpec(QUERY_AXIS)))


def _batch_size(args: Sequence[Any], in_axes: tuple) -> int:
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None
             for a, ax in zip(args, in_axes) if ax == 0 for leaf in jax.tree_util.tree_leaves(a)}
    if not sizes:
        raise ValueError("shard_over_queries: no argument has a query axis (in_axes are all None)")
    if None in sizes or len(sizes) != 1:
        raise ValueError(f"shard_over_queries: the query-axis arguments disagree on the batch size: {sizes}")
    return sizes.pop()


def shard_over_queries(
    fn: Callable,
    *args: Any,
    in_axes: int | None | Sequence[int | None] = 0,
    mesh: Mesh | None = None,
    config: ParallelConfig | None = None,
) -> Any:
    """``fn(*args)`` with the leading query axis sharded over a device mesh.

    ``fn`` maps a batch to a batch: every output leaf has the leading query axis of the
    inputs (e.g. ``jax.vmap`` of a per-query refinement, rendering or map). ``in_axes``
    (0 or None, per argument or one for all) marks the arguments with a query axis (0,
    split over the devices) and those replicated on every device (None: Gaussians,
    options). ``mesh`` defaults to :func:`query_mesh` of ``config.devices``. Queries are
    padded with copies of the last one to ``per_device_batch * devices`` per launch (see
    :func:`padded_batch`) and the padding is dropped, so the result equals ``fn(*args)``
    on one device, query by query. Reuse the same ``fn`` object to reuse its compiled
    program.
    """
    config = config or ParallelConfig()
    mesh = mesh if mesh is not None else query_mesh(config.devices)
    axes = tuple(in_axes) if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
    if len(axes) != len(args) or any(a not in (0, None) for a in axes):
        raise ValueError(f"shard_over_queries: in_axes must be 0 or None per argument, got {in_axes!r} "
                         f"for {len(args)} arguments")
    b = _batch_size(args, axes)
    per, _ = padded_batch(b, mesh.size, config.per_device_batch)
    return map_padded_chunks(_sharded(fn, mesh, axes), b, per * mesh.size, args, axes)
