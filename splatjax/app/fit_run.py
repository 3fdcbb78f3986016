"""The fit's run folder: ``splatjax fit DATA --out RUN [--resume]``.

Layout of ``RUN``: ``config.json`` (the settings, image size and training views the fit
started with), ``metrics.jsonl`` (one record per ``log_every`` steps, appended across
sessions, each tagged with its session number), orbax ``checkpoints/<step>/`` (every
``checkpoint_every`` steps, at least every ``checkpoint_minutes``, at the end and on an
interrupt), ``info.json`` (the summary of the latest session) and, once complete,
``model.ply`` (the INRIA 3DGS PLY).

Interrupts: SIGINT (Ctrl-C) and SIGTERM let the current chunk finish, write a checkpoint
and end the session with one line giving the command that resumes it (a second Ctrl-C
aborts at once). Resuming (``splatjax fit RUN --resume``) continues from the newest
checkpoint with the settings and data folder stored in ``config.json`` (each checkpoint's
metadata also holds them, with its buffer capacity) to the same result as an uninterrupted
fit; it is an error when there is nothing to resume or when given settings differ from the
stored ones (apart from ``RESUME_FREE_FIELDS``). Resuming a complete run changes nothing.
Files written are strict JSON: non-finite numbers become ``null``.

Resolution: by default the data's own image width, capped at the paper's 400 px; a larger
``resolution`` than the data's is refused (ConfigError) unless ``upsample`` is set.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import time
from pathlib import Path

import numpy as np

from ..context import Context
from ..errors import DatasetError, UserError
from ..files import read_json, require_dir, write_json
from ..fitting import ChunkReport, FitConfig, FitResult, fit, resize_floor, state_template
from ..gaussians import Gaussians, save_ply
from .checkpoint import DamagedCheckpointError, RunCheckpointer, append_metrics, json_safe, truncate_metrics
from .interrupts import Interrupted, StopSignals
from .logs import console_context
from .outdir import check_writable_out

__all__ = ["run_fit", "stored_settings", "resume_command", "summary_line", "exit_status", "load_init_ply"]

#: FitConfig fields that may differ between an interrupted fit and its resumption.
RESUME_FREE_FIELDS = frozenset({"checkpoint_every", "checkpoint_minutes", "val_every", "val_views",
                                "log_every", "backend"})


def _as_stored(fields: dict) -> dict:
    """``fields`` as config.json stores them (tuples become lists)."""
    return json.loads(json.dumps(fields))


#: Fields added to FitConfig after runs were made whose default then differs from the
#: behaviour of those runs: a stored config without the field had this value.
LEGACY_VALUES = {"holdout_views": 0}


def fit_config_changes(saved: dict, now: FitConfig) -> list[tuple[str, object, object]]:
    """(field, saved value, current value) for every setting that differs between a stored
    ``fit_config`` (JSON, from a run's config.json) and ``now``, apart from the
    ``RESUME_FREE_FIELDS``. A field missing from the stored config was added to FitConfig
    after that run was made, so the run used the field's default (or its
    :data:`LEGACY_VALUES` entry)."""
    current = _as_stored(dataclasses.asdict(now))
    defaults = _as_stored({**{f.name: f.default for f in dataclasses.fields(FitConfig)
                              if f.default is not dataclasses.MISSING}, **LEGACY_VALUES})
    changes = []
    for k in sorted(set(saved) | set(current)):
        if k in RESUME_FREE_FIELDS:
            continue
        old = saved.get(k, defaults.get(k))
        if old != current.get(k):
            changes.append((k, old, current.get(k)))
    return changes


# ----------------------------------------------------------------------------- data
def _load(data: Path, config: FitConfig, val_split: str | None):
    """(dataset format, :class:`~splatjax.data.FitData`) of the folder ``data``, read by
    the format :func:`splatjax.data.detect_format` finds. The loaders apply the resolution
    policy (:func:`splatjax.data.choose_resolution`): the data's own width capped at 400
    by default, an explicit width above the data's is a ConfigError unless ``upsample``.
    Without a validation split in the data, ``config.holdout_views`` training views are
    held out as the validation views (:meth:`~splatjax.data.FitData.holding_out`), unless
    validation is off (``val_split`` None, ``--no-val``)."""
    from ..data import LoadOptions, detect_format

    fmt = detect_format(data)
    options = LoadOptions(resolution=config.resolution, background=tuple(config.background), upsample=config.upsample,
                          val_split=val_split)
    loaded = fmt.load_fit_data(data, options)
    return fmt, loaded if val_split is None else loaded.holding_out(config.holdout_views)


def _initial_points(config: FitConfig, points, context: Context) -> tuple[object, dict]:
    """(the ``init`` of :func:`~splatjax.fitting.fit`, its description for info.json):
    ``config.init_ply`` when set, else the dataset's points (COLMAP points3D), else None
    (random points)."""
    if config.init_ply:
        init = load_init_ply(config.init_ply)
        return init, {"source": "init_ply", "path": str(config.init_ply), "points": int(
            init.num if isinstance(init, Gaussians) else len(init))}
    if points is not None:
        context.say(f"[splatjax fit] starting from the dataset's {len(points):,} points")
        return points, {"source": "dataset", "points": int(len(points))}
    return None, {"source": "random", "points": config.init_points}


def load_init_ply(path: str | os.PathLike) -> Gaussians | np.ndarray:
    """A 3DGS PLY (``f_dc_0`` present) as Gaussians, otherwise a point cloud PLY (x y z
    and optional red green blue, 0-255 integers or 0-1 floats) as an [M, 3|6] array."""
    from plyfile import PlyData

    from ..files import require_file
    from ..gaussians import load_ply

    path = require_file(path, "initial point cloud")
    try:
        v = PlyData.read(str(path))["vertex"].data
    except Exception as e:  # plyfile raises several types on malformed files
        raise DatasetError(f"cannot read the point cloud {str(path)!r}: {e}") from e
    names = v.dtype.names
    if "f_dc_0" in names:
        return load_ply(path)
    if not all(n in names for n in "xyz"):
        raise DatasetError(f"{str(path)!r}: a point cloud PLY needs x, y, z vertex properties (found {names})")
    cols = [np.asarray(v[n], np.float32) for n in "xyz"]
    if all(n in names for n in ("red", "green", "blue")):
        scale = 255.0 if np.issubdtype(v["red"].dtype, np.integer) else 1.0
        cols += [np.asarray(v[n], np.float32) / scale for n in ("red", "green", "blue")]
    return np.stack(cols, -1)


# ----------------------------------------------------------------------------- interrupts
class _StopRequest(StopSignals):
    """While active (main thread only), SIGINT / SIGTERM set ``signal_name`` instead of
    raising, so the fit ends its chunk and checkpoints; a second signal raises
    :class:`~splatjax.app.interrupts.Interrupted` at once."""

    def __init__(self):
        super().__init__()
        self.signal_name: str | None = None

    def _handle(self, signum, frame):
        if self.signal_name is not None:
            self.__exit__()
            raise Interrupted(signal.Signals(signum).name)
        self.signal_name = signal.Signals(signum).name


# ----------------------------------------------------------------------------- run folder
def _run_record(config: FitConfig, data: Path, val_split: str | None, train, width: int, views) -> dict:
    return {"fit_config": _as_stored(dataclasses.asdict(config)), "data": str(data.resolve()),
            "val_split": val_split, "resolution": width, "image_size": [int(train.height), int(train.width)],
            "train_views": list(views)}


def _read_record(run: Path) -> dict:
    return read_json(run / "config.json", "run configuration")


def stored_settings(run: str | os.PathLike) -> tuple[Path | None, FitConfig, str | None]:
    """(data folder or None for runs made before it was stored, FitConfig, validation
    split) that the fit in run folder ``run`` was started with, from its ``config.json``;
    fields missing there (added to FitConfig later) take their defaults, or the
    :data:`LEGACY_VALUES` that such runs had."""
    run = Path(run)
    _check_run_folder(run, resume=True)
    record = _read_record(run)
    fields = {f.name for f in dataclasses.fields(FitConfig)}
    stored = record.get("fit_config")
    unknown = sorted(set(stored) - fields) if isinstance(stored, dict) else None
    if unknown is None or unknown:
        raise UserError(f"{str(run / 'config.json')!r}: fit_config is not a FitConfig of this version"
                        + (f" (unknown fields {', '.join(unknown)})" if unknown else ""))
    config = FitConfig(**{**LEGACY_VALUES, **{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}})
    data = record.get("data")
    return (Path(data) if data else None), config, record.get("val_split", "val")


def resume_command(run: str | os.PathLike) -> str:
    """The shell command that resumes the fit in ``run`` (its settings and data are stored)."""
    return f"splatjax fit {shlex.quote(str(run))} --resume"


def _check_same_settings(run: Path, saved: dict, now: dict | None, config: FitConfig) -> None:
    """Refuse to resume with settings (FitConfig, and with ``now`` the image size and
    training views) other than the stored run record ``saved``."""
    diff = fit_config_changes(saved.get("fit_config", {}), config)
    if now is not None:
        diff += [(k, saved.get(k), now[k]) for k in ("image_size", "train_views") if saved.get(k) != now[k]]
    if diff:
        detail = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in diff)
        raise UserError(f"cannot resume {str(run)!r}: it was started with different settings ({detail}); "
                        "use the original settings or another --out")


def _has_checkpoint(run: Path) -> bool:
    return (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())


def _check_run_folder(run: Path, resume: bool) -> None:
    """--resume needs a fit started in ``run`` (its config.json; a fit stopped before its
    first checkpoint starts again from step 0); a fresh fit needs a folder without a
    checkpoint."""
    has_ckpt = _has_checkpoint(run)
    if resume and not has_ckpt and not (run / "config.json").is_file():
        raise UserError(f"nothing to resume in {str(run)!r}: no fit was started there (no config.json, no "
                        "checkpoint); run without --resume to start a new fit")
    if not resume and has_ckpt:
        raise UserError(f"{str(run)!r} holds an earlier fit; pass --resume to continue it or choose another --out")


def _open_run(run: Path, config: FitConfig, data: Path, val_split: str | None, train, width: int, resume: bool):
    """(checkpointer, restored checkpoint metadata or None, run record)."""
    from ..fitting import train_view_indices

    views = train_view_indices(len(train), config.train_fraction, config.seed)
    record = _run_record(config, data, val_split, train, width, [int(i) for i in views])
    _check_run_folder(run, resume)
    ckpt = RunCheckpointer(run / "checkpoints")
    if not resume:
        (run / "metrics.jsonl").unlink(missing_ok=True)
        write_json(run / "config.json", record)
        return ckpt, None, record
    try:
        saved = _read_record(run)
        _check_same_settings(run, saved, record, config)
        meta = ckpt.metadata() if _has_checkpoint(run) else None
        if meta is None:  # stopped before its first checkpoint: nothing to keep, start again
            (run / "metrics.jsonl").unlink(missing_ok=True)
        if saved.get("data") != record["data"]:  # the data folder moved (or an older run): remember it
            write_json(run / "config.json", {**saved, "data": record["data"]})
    except BaseException:
        ckpt.close()
        raise
    return ckpt, meta, record


def _restore(ckpt: RunCheckpointer, meta: dict, config: FitConfig):
    """(training state, step) of the newest checkpoint, whose metadata gives its buffer
    capacity (the buffer grows and shrinks during a fit)."""
    import jax
    import jax.numpy as jnp

    try:
        capacity = int(meta["capacity"])
        if capacity <= 0:
            raise ValueError(f"capacity {capacity}")
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise DamagedCheckpointError(f"{ckpt.directory}/{ckpt.latest_step()}: damaged checkpoint metadata (no valid "
                                     f"buffer capacity: {exc}); delete that step folder to resume from an older one, "
                                     "or start the fit again") from exc
    tree, _, step = ckpt.restore({"state": state_template(config, capacity)})
    return jax.tree_util.tree_map(jnp.asarray, tree["state"]), step


class _Session:
    """The per-chunk side of a fit session: metrics, checkpoints, progress, stop requests."""

    def __init__(self, run: Path, ckpt, config: FitConfig, record: dict, meta: dict | None, stop: _StopRequest,
                 context: Context, stop_at: int | None = None):
        self.run, self.ckpt, self.config, self.record, self.stop = run, ckpt, config, record, stop
        self.context = context
        self.stop_at, self.stopped_at = stop_at, None
        self.session = 1 + int((meta or {}).get("sessions", 0))
        self.seconds_before = float((meta or {}).get("seconds_total", 0.0))
        self.t0 = self.last_ckpt_time = time.perf_counter()
        self.prev_step = int((meta or {}).get("step", 0))
        n = config.iterations
        self.progress_every = max(config.log_every, (n // 20 // config.chunk_steps) * config.chunk_steps)

    def __call__(self, rep: ChunkReport) -> bool:
        if rep.record is not None:
            append_metrics(self.run / "metrics.jsonl", {**rep.record, "session": self.session})
            self._progress(rep)
        c = self.config
        if self.stop_at is not None and rep.step >= self.stop_at and not rep.completed:
            self.stopped_at = rep.step
        stop = self.stop.signal_name is not None or self.stopped_at is not None
        due = (rep.completed or stop
               or rep.step // c.checkpoint_every > self.prev_step // c.checkpoint_every
               or time.perf_counter() - self.last_ckpt_time >= 60.0 * c.checkpoint_minutes)
        self.prev_step = rep.step
        if due:
            self.save(rep)
        return stop

    def save(self, rep: ChunkReport) -> None:
        import jax.numpy as jnp

        # everything a restore needs: the buffer capacity (it grows and shrinks), the
        # shrink floor, and the run record (settings, data folder, views)
        meta = {"step": rep.step, "capacity": rep.state.capacity, "floor": resize_floor(self.config),
                "num_gaussians": int(jnp.sum(rep.state.active)), "sessions": self.session,
                "seconds_total": self.seconds_total(), "run": self.record}
        self.ckpt.save(rep.step, {"state": rep.state}, meta)
        self.last_ckpt_time = time.perf_counter()

    def seconds_total(self) -> float:
        return self.seconds_before + time.perf_counter() - self.t0

    def _progress(self, rep: ChunkReport) -> None:
        r = rep.record
        if not (rep.completed or "val_psnr" in r or rep.step % self.progress_every == 0):
            return
        line = (f"[splatjax fit] step {rep.step}/{rep.iterations}  loss {r['loss']:.4f}  PSNR {r['psnr']:.2f} dB  "
                f"{r['num_gaussians']:,} Gaussians  {r['steps_per_second']:.1f} steps/s")
        if "val_psnr" in r:
            line += f"  val PSNR {r['val_psnr']:.2f} dB"
        self.context.say(line)


def _summary(result: FitResult, session: _Session, data: Path, width: int) -> dict:
    return json_safe({
        "data": str(data.resolve()), "resolution": width, "steps": result.steps, "iterations": session.config.iterations,
        "steps_this_session": result.steps_run, "session": session.session, "completed": result.completed,
        "interrupted": session.stop.signal_name if not result.completed else None,
        "stopped_at": session.stopped_at if not result.completed else None,
        "seconds": result.seconds, "seconds_total": session.seconds_total(),
        "steps_per_second": result.steps_run / result.seconds if result.seconds > 0 else float("nan"),
        "steady_steps_per_second": result.steady_steps_per_second, "num_gaussians": result.num_gaussians,
        "capacity": result.state.capacity, "final_loss": result.final_loss, "final_psnr": result.final_psnr,
        "val_psnr": result.val_psnr, "val_ssim": result.val_ssim, "backend": result.backend,
        "extent": result.extent, "events": list(result.events),
    })


def _already_complete(run: Path, config: FitConfig) -> dict | None:
    """The stored summary (``already_complete`` added) when the fit in ``run`` is done:
    its newest checkpoint is at the last step and model.ply and info.json are written."""
    if not ((run / "model.ply").is_file() and (run / "info.json").is_file()):
        return None
    with RunCheckpointer(run / "checkpoints") as ckpt:
        step = ckpt.latest_step()
    if step is None or step < config.iterations:
        return None
    return {**read_json(run / "info.json", "run summary"), "already_complete": True, "run": str(run)}


def _reached_stop(run: Path, config: FitConfig, stop_at: int | None) -> dict | None:
    """A session summary that runs nothing (``stopped_at`` set, exit 0) when the newest
    checkpoint of ``run`` is already at or past ``stop_at``."""
    if stop_at is None or not _has_checkpoint(run):
        return None
    with RunCheckpointer(run / "checkpoints") as ckpt:
        step = ckpt.latest_step()
        if step is None or step < stop_at:
            return None
        meta = ckpt.metadata()
    return {"steps": int(step), "iterations": config.iterations, "steps_this_session": 0, "seconds": 0.0,
            "steps_per_second": None, "num_gaussians": int(meta.get("num_gaussians", 0)), "final_psnr": None,
            "completed": False, "interrupted": None, "stopped_at": int(step), "run": str(run)}


def _resumed_settings(run: Path, data, config: FitConfig | None, stop_at: int | None, context: Context):
    """(data folder, config, None) of a run to resume (the stored ones where not given;
    other settings than the stored ones are refused), or (.., .., its summary) when there
    is nothing to do: the run is complete, or already at or past ``stop_at``."""
    stored_data, stored_config, _ = stored_settings(run)
    config = stored_config if config is None else config
    _check_same_settings(run, _read_record(run), None, config)
    if data is None and stored_data is None:
        raise UserError(f"{str(run / 'config.json')!r} does not record the dataset folder (a run from an older "
                        f"version); give it: splatjax fit DATA --out {shlex.quote(str(run))} --resume")
    data = stored_data if data is None else data
    done = _already_complete(run, config)
    if done is not None:
        return data, config, done
    reached = _reached_stop(run, config, stop_at)
    if reached is not None:
        context.say(f"[splatjax fit] {run} is at step {reached['steps']}, not before --stop-at {stop_at}: nothing to do")
    return data, config, reached


def _data_folder(data, run: Path) -> Path:
    """The dataset folder of a new fit: given, a folder, and not holding the run folder."""
    if data is None:
        raise UserError("a new fit needs the dataset folder: splatjax fit DATA --out RUN")
    data = require_dir(Path(data), "dataset folder")
    if run.resolve().is_relative_to(data.resolve()):
        raise UserError(f"the run folder {str(run)!r} must not be inside the dataset folder {str(data)!r}")
    return data


def run_fit(
    data: str | os.PathLike | None,
    out: str | os.PathLike,
    config: FitConfig | None = None,
    *,
    resume: bool = False,
    context: Context | None = None,
    val_split: str | None = "val",
    stop_at: int | None = None,
) -> dict:
    """Fit a dataset folder of any registered format (:func:`splatjax.data.detect_format`:
    Blender/NeRF with validation on ``transforms_<val_split>.json`` when present, MAD-Sim
    class, COLMAP, whose points3D are the initial Gaussians unless ``config.init_ply``) into
    the run folder ``out`` (see the module docstring); returns the summary also written to
    ``out/info.json`` (``interrupted``: the signal name when a signal ended the session).

    config: default ``FitConfig()``, with ``resume`` the stored settings. data: with ``resume``
    None means the stored data folder. Resuming a complete run returns its stored summary
    with ``already_complete`` set and writes nothing. stop_at: end the session like an
    interrupt (checkpoint, resumable, exit status 0) after the chunk that reaches this step
    (the schedule follows ``config.iterations``). context: log and progress (None: stderr)."""
    check_writable_out(out)
    context = console_context() if context is None else context
    run = Path(out)
    _check_run_folder(run, resume)  # before the (slow) loading; checked again when opening
    if resume:
        data, config, finished = _resumed_settings(run, data, config, stop_at, context)
        if finished is not None:
            return finished
    config = FitConfig() if config is None else config
    data = _data_folder(data, run)
    fmt, loaded = _load(data, config, val_split)
    train, val, width = loaded.train, loaded.val, loaded.train.width
    init, init_info = _initial_points(config, loaded.points, context)
    run.mkdir(parents=True, exist_ok=True)
    ckpt, meta, record = _open_run(run, config, data, val_split, train, width, resume)
    try:
        state = None
        if meta is not None:
            state, step = _restore(ckpt, meta, config)
            truncate_metrics(run / "metrics.jsonl", step)
            context.say(f"[splatjax fit] resuming {run} from step {step}")
        elif resume:
            context.say(f"[splatjax fit] {run}: stopped before its first checkpoint; starting again from step 0")
        with _StopRequest() as stop:
            session = _Session(run, ckpt, config, record, meta, stop, context, stop_at)
            result = fit(train, config, val=val, init=init, state=state, callback=session)
    finally:
        ckpt.close()
    summary = {**_summary(result, session, data, width), "format": fmt.name, "init": init_info,
               "val_views": None if val is None else [os.path.abspath(p) for p in val.paths]}  # any cwd can use them
    write_json(run / "info.json", summary)
    if result.completed:
        save_ply(result.gaussians, run / "model.ply")
    else:
        how = "interrupted" if session.stopped_at is None else "stopped (stop_at)"
        context.say(f"{how} at step {result.steps}; checkpoint written; resume with: {resume_command(run)}")
    return summary


def summary_line(summary: dict) -> str:
    """One line for the end of a session."""
    if summary.get("already_complete"):
        return (f"{summary['run']}: the fit is already complete ({summary['steps']} of {summary['iterations']} "
                "steps); nothing to do")

    def num(v, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    line = (f"{summary['steps_this_session']} steps this session ({summary['steps']} of {summary['iterations']}) "
            f"in {summary['seconds']:.1f} s ({num(summary['steps_per_second'], '.1f')} steps/s), "
            f"{summary['num_gaussians']:,} Gaussians, train PSNR {num(summary['final_psnr'], '.2f')} dB")
    if summary.get("val_psnr") is not None:
        line += f", val PSNR {summary['val_psnr']:.2f} dB, SSIM {summary['val_ssim']:.4f}"
    return line


def exit_status(summary: dict) -> int:
    """The command's exit status for a :func:`run_fit` summary: 0 when the session ended
    normally, 128 + the signal number after an interrupt (130 for Ctrl-C)."""
    name = summary.get("interrupted")
    return 128 + int(signal.Signals[name]) if name else 0
