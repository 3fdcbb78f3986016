"""Several processes (hosts): join, split the classes, resume, gather the reports.

Each process evaluates its share of the classes (:func:`process_share`) on its own
devices (:func:`splatjax.sharding.shard_over_queries`), writes one ``<out>/<class>/report.json``
per class as soon as the class is done (atomic writes), and the per-class reports are
gathered on every process with one :func:`jax.experimental.multihost_utils.process_allgather`
of their JSON text; process 0 writes the combined report. A rerun of the same command
skips every class whose report is already on disk, so an interrupted job resumes class
by class.

Gathering through JAX's collectives rather than through the output folder: it needs no
file system shared between the hosts, and the allgather is itself the barrier (no
polling for files, no clock or timeout to choose); the payload is a few kilobytes of JSON.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..errors import ConfigError
from ..files import read_json, write_json
from ..sharding import ParallelConfig

__all__ = ["initialize_distributed", "process_share", "gather_reports", "run_classes", "parallel_info", "timed"]

REPORT = "report.json"


def _wait_for_coordinator(address: str, timeout: float) -> None:
    """Raise :class:`ConfigError` unless ``host:port`` accepts a TCP connection within
    ``timeout`` seconds (JAX aborts the whole process when its own join times out)."""
    host, port = address.rsplit(":", 1)
    host = host.strip("[]")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, timeout)):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise ConfigError("coordinator_address", f"nothing answers at {address} after {timeout:g} s ({e}); "
                                  "start process 0 there first, or fix the address", owner="ParallelConfig") from e
            time.sleep(0.5)


def initialize_distributed(config: ParallelConfig) -> tuple[int, int]:
    """Join the multi-process job ``config`` asks for and return (process index, process
    count); a no-op giving (0, 1) for a single process, and for a job already joined.

    Explicit ``coordinator_address`` / ``num_processes`` / ``process_id``, or, with
    ``distributed`` alone, :func:`jax.distributed.initialize` without arguments (the
    cluster environment provides them). Call it before any other JAX computation."""
    if config.multi_process and not jax.distributed.is_initialized():
        kw = {}
        if config.coordinator_address is not None:
            kw = dict(coordinator_address=config.coordinator_address, num_processes=config.num_processes,
                      process_id=config.process_id)
        if kw and config.process_id != 0:
            _wait_for_coordinator(config.coordinator_address, config.initialization_timeout)
        try:
            jax.distributed.initialize(**kw, initialization_timeout=config.initialization_timeout)
        except (RuntimeError, ValueError) as e:  # unreachable coordinator, no cluster detected, ...
            hint = ("is process 0 running with the same address?" if kw else
                    "outside a cluster JAX can detect (SLURM, Open MPI, Kubernetes, TPU) give coordinator_address, "
                    "num_processes and process_id")
            raise ConfigError("coordinator_address" if kw else "distributed",
                              f"could not join the multi-process job ({e}); {hint}", owner="ParallelConfig") from e
    return jax.process_index(), jax.process_count()


def process_share(items: Sequence[Any], process_index: int, process_count: int) -> list[Any]:
    """The items process ``process_index`` of ``process_count`` works on: consecutive
    blocks in order, sizes differing by at most one (earlier processes take the extra
    ones), every item in exactly one share. Deterministic, so a resumed job splits alike."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_share: process {process_index} of {process_count} does not exist")
    n = len(items)
    base, extra = divmod(n, process_count)
    start = process_index * base + min(process_index, extra)
    return list(items[start:start + base + (process_index < extra)])


def gather_reports(reports: dict[str, Any]) -> dict[str, Any]:
    """Merge the JSON-able ``{name: report}`` dicts of every process (process order, then
    each process's own order); every process gets the merged dict. One process: a copy.
    Collective: every process of the job must call it."""
    if jax.process_count() == 1:
        return dict(reports)
    from jax.experimental import multihost_utils

    payload = np.frombuffer(json.dumps(reports).encode("utf-8"), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.int64(payload.size))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:payload.size] = payload
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    merged: dict[str, Any] = {}
    for row, size in zip(gathered, sizes):
        for name, report in json.loads(bytes(row[:int(size)]).decode("utf-8")).items():
            if name in merged:
                raise ValueError(f"gather_reports: two processes reported {name!r}")
            merged[name] = report
    return merged


def run_classes(
    classes: Sequence[str],
    evaluate_class: Callable[[str], dict[str, Any]],
    out_dir: str | Path,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
    on_class: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate this process's share of ``classes`` and gather every class's report.

    ``evaluate_class(name)`` returns the class's JSON-able report; it is written to
    ``out_dir/<name>/report.json`` at once, and a class whose file exists is read back
    instead of evaluated (resume). Process index and count default to JAX's. Returns
    ``{name: report}`` for all ``classes`` in their order, on every process.
    ``on_class(name, "done" | "resumed")`` reports progress.

    Index and count may also be given without :func:`jax.distributed.initialize` (e.g.
    the tasks of a job array sharing a folder): each returns its own share only, and a
    final single-process run over the same folder gathers them by resuming."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if len(set(classes)) != len(classes):
        raise ValueError(f"run_classes: class names repeat: {list(classes)}")
    mine: dict[str, Any] = {}
    for name in process_share(list(classes), index, count):
        path = Path(out_dir) / name / REPORT
        if path.is_file():
            mine[name] = read_json(path, f"report of class {name!r}")
            state = "resumed"
        else:
            mine[name] = evaluate_class(name)
            write_json(path, mine[name])
            state = "done"
        if on_class is not None:
            on_class(name, state)
    merged = gather_reports(mine)
    return {name: merged[name] for name in classes if name in merged}


def parallel_info(devices: int, queries: int, seconds: float) -> dict[str, Any]:
    """Report fields for ``queries`` evaluated in ``seconds`` by this process on
    ``devices`` devices: devices, device kind, processes, and throughput per process and
    per device (queries per second)."""
    rate = queries / seconds if seconds > 0 else None
    return {
        "devices": int(devices),
        "device_kind": jax.local_devices()[0].device_kind,
        "platform": jax.local_devices()[0].platform,
        "processes": jax.process_count(),
        "process_index": jax.process_index(),
        "queries": int(queries),
        "seconds": float(seconds),
        "queries_per_s": rate,
        "queries_per_s_per_device": None if rate is None else rate / max(1, int(devices)),
    }


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)``, the result blocked until ready (for throughput fields)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start
