"""Run folders: orbax checkpoints of a training state, the config and a metrics log.

Layout of a run folder ``RUN``::

    RUN/config.json        the configuration the run was started with
    RUN/metrics.jsonl      one JSON object per logged step
    RUN/checkpoints/<step>/  orbax checkpoints (the newest few are kept)
    RUN/info.json          the summary of the latest session
    RUN/model.ply          the final model (see :mod:`splatjax.app.fit_run`)

A checkpoint stores any pytree of arrays: its leaves are saved as a flat dict
``{"000000": array, ...}`` (portable names, no dependence on the pytree classes) next to a
JSON item holding the leaf paths and free-form metadata; restoring needs a template pytree
of the same structure (shapes and dtypes are checked).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..errors import DatasetError
from ..files import atomic_write

__all__ = [
    "DamagedCheckpointError",
    "RunCheckpointer",
    "append_metrics",
    "json_safe",
    "read_metrics",
    "truncate_metrics",
]


def _shape_dtype(x: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an array or a ``jax.ShapeDtypeStruct`` (abstract template leaf)."""
    if isinstance(x, jax.ShapeDtypeStruct):
        return tuple(x.shape), np.dtype(x.dtype)
    return tuple(np.shape(x)), np.asarray(x).dtype


def json_safe(obj: Any) -> Any:
    """``obj`` (JSON-able containers and scalars) with every non-finite float (NaN,
    infinity) replaced by None, so it serialises to strict JSON (``null``)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


class DamagedCheckpointError(DatasetError, ValueError):
    """A checkpoint that cannot be read back (damaged files, another structure, shape or
    dtype): one line naming its folder. A ``ValueError`` too, as it was before."""


def _leaf_paths(tree: Any) -> tuple[list[str], list[Any], Any]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(p) for p, _ in flat], [x for _, x in flat], treedef


class RunCheckpointer:
    """Save and restore pytrees of arrays with orbax under ``directory`` (created when
    missing), keeping the newest ``max_to_keep`` steps. Saves are asynchronous: arrays are
    copied to host memory before :meth:`save` returns, so the caller may donate or
    overwrite its device buffers right away. Call :meth:`close` (or use ``with``) to wait
    for pending writes."""

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).resolve()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_names=("arrays", "meta"),
        )

    def __enter__(self) -> "RunCheckpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def latest_step(self) -> int | None:
        """The newest complete checkpoint step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, tree: Any, metadata: dict | None = None) -> None:
        """Checkpoint ``tree`` (pytree of arrays) at ``step`` with JSON-able ``metadata``."""
        ocp = self._ocp
        paths, leaves, _ = _leaf_paths(tree)
        host = [np.asarray(x) for x in jax.device_get(leaves)]
        arrays = {f"{i:06d}": x for i, x in enumerate(host)}
        meta = {"step": int(step), "leaf_paths": paths, "metadata": metadata or {}}
        self._manager.save(
            int(step),
            args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)),
        )

    def metadata(self, step: int | None = None) -> dict:
        """The metadata saved with the checkpoint at ``step`` (default: newest), without
        reading its arrays (e.g. to build the restore template)."""
        ocp = self._ocp
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to resume from")
        return dict(self._meta(step)["metadata"])

    def _damaged(self, step: int, detail: object) -> "DamagedCheckpointError":
        first = str(detail).strip().splitlines()[0] if str(detail).strip() else type(detail).__name__
        return DamagedCheckpointError(
            f"{self.directory}/{step}: damaged or unreadable checkpoint ({first}); delete that step folder to resume "
            "from an older one, or start the fit again")

    def _meta(self, step: int) -> dict:
        """The JSON item of the checkpoint at ``step``, checked for its keys."""
        ocp = self._ocp
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            if not (isinstance(meta, dict) and isinstance(meta.get("leaf_paths"), list)
                    and isinstance(meta.get("metadata"), dict)):
                raise ValueError("its meta item lacks leaf_paths / metadata")
        except Exception as exc:  # orbax / json raise several types on damaged files
            raise self._damaged(step, exc) from exc
        return meta

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict, int]:
        """Restore the checkpoint at ``step`` (default: newest) into the structure of
        ``template`` (arrays or ``jax.ShapeDtypeStruct`` leaves). Returns (tree of numpy arrays, metadata, step). Raises
        ``FileNotFoundError`` when there is no checkpoint and :class:`DamagedCheckpointError`
        (a ValueError) when its files are damaged or the saved structure, shapes or dtypes
        differ from the template."""
        ocp = self._ocp
        if step is None:
            step = self.latest_step()
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to resume from")
        paths, leaves, treedef = _leaf_paths(template)
        specs = [_shape_dtype(x) for x in leaves]
        meta = self._meta(step)
        saved = [str(p) for p in meta["leaf_paths"]]
        if saved != paths:
            where = (f"{len(saved)} saved leaves vs {len(paths)}" if len(saved) != len(paths) else
                     next(f"saved leaf {a} where {b} is expected" for a, b in zip(saved, paths) if a != b))
            raise DamagedCheckpointError(
                f"{self.directory}/{step}: checkpoint structure differs from the current training state ({where}); "
                "was it written by another version or configuration?")
        abstract = {f"{i:06d}": jax.ShapeDtypeStruct(*spec) for i, spec in enumerate(specs)}
        try:
            arrays = self._manager.restore(
                step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(abstract))
            )["arrays"]
        except Exception as exc:  # orbax raises several types on damaged files and shape/dtype mismatch
            raise self._damaged(step, exc) from exc
        out = []
        for i, (path, (shape, dtype)) in enumerate(zip(paths, specs)):
            arr = np.asarray(arrays[f"{i:06d}"])
            if arr.shape != shape or arr.dtype != dtype:
                raise DamagedCheckpointError(
                    f"{self.directory}/{step}: leaf {path} has shape {arr.shape} {arr.dtype}, expected {shape} {dtype}"
                )
            out.append(arr)
        return jax.tree_util.tree_unflatten(treedef, out), dict(meta["metadata"]), int(step)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


# ----------------------------------------------------------------------------- metrics log
def append_metrics(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line to a metrics log (non-finite numbers as ``null``)."""
    with open(path, "a") as f:
        f.write(json.dumps(json_safe(record), sort_keys=True, allow_nan=False) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All records of a metrics log (empty list when the file does not exist); a torn
    last line (interrupted write) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_metrics(path: str | os.PathLike, step: int) -> list[dict]:
    """Drop the records logged after ``step`` (on resume from a checkpoint at ``step``:
    the resumed run logs those steps again) and any torn line; earlier records are kept.
    Returns the records kept."""
    kept = [r for r in read_metrics(path) if int(r.get("step", 0)) <= step]
    if Path(path).exists():
        atomic_write(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    return kept
