"""Run folders: the files a fitted model's folder holds beside ``model.ply``, test-pose
files, fitting-or-reusing a model for ``evaluate``, and progress bars.

A run folder (written by ``splatjax fit`` or by ``evaluate`` into ``OUT/model``)::

    model.ply              the Gaussians (INRIA 3DGS PLY)
    config.json, info.json the fit's settings and summary (fitting)
    cameras.json           training cameras (:func:`save_cameras`): coarse-pose candidates
                           for ``detect`` and the views of the heatmap calibration
    map_calibration.json   the model's fixed heatmap scales (:mod:`splatjax.app.calibration`)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..errors import DatasetError, UserError
from ..files import read_json, write_json
from ..gaussians import load_ply
from ..render.backends import MAX_SUPERSAMPLE, valid_supersample
from .checkpoint import read_metrics
from .fit_run import fit_config_changes, run_fit
from ..context import QUIET, Context

__all__ = [
    "save_cameras",
    "load_cameras",
    "resolve_model",
    "model_supersample",
    "model_for",
    "check_out_dir",
    "recorded_data_dir",
]

CAMERAS_FILE = "cameras.json"


def check_out_dir(out_dir: Path, data_path: Path) -> None:
    """UserError when the output folder lies inside the (read-only) dataset folder."""
    if out_dir.resolve().is_relative_to(data_path.resolve()):
        raise UserError(f"{out_dir}: the output folder must not be inside the (read-only) dataset folder "
                        f"{data_path}")


def save_cameras(run_dir: str | os.PathLike, views) -> Path:
    """Write ``RUN/cameras.json``: ``{"camera_angle_x", "width", "height", "c2w": [N x 4 x 4]
    (Blender/OpenGL camera-to-world), "paths": [...], "paths_from_run": [...]}`` of the
    training views (:class:`splatjax.data.PosedViews`). ``paths`` are the images' absolute
    resolved paths (a copied run folder still finds the dataset, from any folder);
    ``paths_from_run`` the same relative to the run folder (a run moved together with its
    dataset). See :func:`load_cameras` for how they are read back."""
    run_dir = Path(run_dir)
    absolute = [Path(p).resolve() for p in views.paths]
    here = run_dir.resolve()
    data = {"camera_angle_x": float(views.camera_angle_x), "width": int(views.width), "height": int(views.height),
            "c2w": np.asarray(views.c2w, np.float64).tolist(), "paths": [str(p) for p in absolute],
            "paths_from_run": [os.path.relpath(p, here) for p in absolute]}
    return write_json(run_dir / CAMERAS_FILE, data, indent=None)


def recorded_data_dir(run_dir: Path) -> Path | None:
    """The dataset folder of the fit (``info.json``'s ``data``: absolute, resolved), if recorded."""
    try:
        data = read_json(run_dir / "info.json")["data"]
        return Path(data) if isinstance(data, str) and Path(data).is_absolute() else None
    except (DatasetError, KeyError, TypeError):
        return None


def _find_image(path: str, from_run: str | None, run_dir: Path, data_dir: Path | None) -> str | None:
    """The first existing file of: ``path`` (absolute, or relative to the current folder as
    cameras.json files before relocatable runs wrote it), ``from_run`` under the run folder,
    then ``path`` re-rooted in the dataset folder (its parts after the dataset folder's
    name; a relative path also as a whole)."""
    p = Path(path)
    candidates = [p]
    if from_run:
        candidates.append(run_dir / from_run)
    if data_dir is not None:
        parts = [q for q in p.parts if q not in ("..", ".", p.anchor)]
        candidates += [data_dir.joinpath(*parts[i + 1:]) for i, q in enumerate(parts) if q == data_dir.name]
        if not p.is_absolute():
            candidates.append(data_dir / p)
    for c in candidates:
        if c.is_file():
            return str(c)
    return None


def _fit_image_paths(data_dir: Path, json_path: Path, frames: list) -> list:
    """Training image paths of every frame, found as the fit's loader finds them."""
    if json_path.name == "transforms.json" and (data_dir / "train" / "good").is_dir():
        from ..data.mad import _train_image_paths

        return _train_image_paths(data_dir, frames, json_path)
    from ..data.blender import frame_image_path

    return [frame_image_path(data_dir, fr["file_path"], json_path=json_path, index=i) for i, fr in enumerate(frames)]


def _cameras_from_fit(run_dir: Path) -> dict | None:
    """Training cameras (and, when found, image paths) from the dataset named in
    ``info.json`` and the views in ``config.json``."""
    try:
        info = read_json(run_dir / "info.json")
        config = read_json(run_dir / "config.json")
        from ..data.blender import parse_pose, read_transforms

        data_dir = Path(info["data"])
        json_path = data_dir / "transforms.json"
        if not json_path.is_file():
            json_path = data_dir / "transforms_train.json"
        fov, frames = read_transforms(json_path)
        c2w = np.stack([parse_pose(fr, i, json_path) for i, fr in enumerate(frames)])
        idx = np.asarray(config.get("train_views", range(len(c2w))), np.int64)
        h, w = config["image_size"]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    try:
        paths = [str(p) for p in np.asarray(_fit_image_paths(data_dir, json_path, frames), object)[idx]]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        paths = None
    return {"camera_angle_x": float(fov), "width": int(w), "height": int(h), "c2w": c2w[idx], "paths": paths}


def _size(value, name: str) -> int:
    """A positive whole pixel count from JSON (ValueError otherwise; 200.0 is accepted)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() or value <= 0:
        raise ValueError(f"{name} {value!r} is not a positive whole number of pixels")
    return int(value)


def load_cameras(run_dir: str | os.PathLike) -> dict | None:
    """Training cameras of a run folder: ``cameras.json`` (see :func:`save_cameras`), else
    the poses of the training views named in ``config.json`` read from the dataset named in
    ``info.json`` (when it is still there). Returns ``{"camera_angle_x", "width", "height",
    "c2w", "paths"}`` or None. ``paths`` (None when none are recorded) holds, per view, the
    image found first as: the recorded path (absolute; relative to the current folder in
    older files), the path relative to the run folder, the path re-rooted in the dataset
    folder named in ``info.json``; None for an image found nowhere."""
    run_dir = Path(run_dir)
    path = run_dir / CAMERAS_FILE
    if not path.is_file():
        return _cameras_from_fit(run_dir)
    data = read_json(path, "cameras file")
    try:
        c2w = np.asarray(data["c2w"], np.float64).reshape(-1, 4, 4)
        paths = data.get("paths")
        paths = [str(p) for p in paths] if paths and len(paths) == len(c2w) else None
        from_run = data.get("paths_from_run")
        from_run = [str(p) for p in from_run] if paths and from_run and len(from_run) == len(paths) else None
        cams = {"camera_angle_x": float(data["camera_angle_x"]), "width": _size(data["width"], "width"),
                "height": _size(data["height"], "height"), "c2w": c2w}
        if not 0.0 < cams["camera_angle_x"] < np.pi:
            raise ValueError(f"camera_angle_x {cams['camera_angle_x']!r} is not an angle in (0, pi) radians")
        if len(c2w) == 0 or not np.all(np.isfinite(c2w)):
            raise ValueError("c2w needs at least one finite 4 x 4 pose")
    except (ValueError, KeyError, TypeError, OverflowError, AttributeError) as exc:
        raise DatasetError(f"{str(path)!r}: not a valid cameras file ({exc}); delete it or rewrite it with "
                           "splatjax.app.runs.save_cameras") from exc
    if paths is not None:
        data_dir = recorded_data_dir(run_dir)
        paths = [_find_image(p, from_run[i] if from_run else None, run_dir, data_dir) for i, p in enumerate(paths)]
    return {**cams, "paths": paths}


def resolve_model(model: str | os.PathLike, class_name: str | None = None) -> Path:
    """model.ply of a run folder (or a .ply path; or ``model/<class>[/model]`` for
    several classes)."""
    p = Path(model)
    candidates = [p] if p.suffix == ".ply" else [p / "model.ply"]
    if class_name is not None:
        candidates += [p / class_name / "model.ply", p / class_name / "model" / "model.ply"]
    for c in candidates:
        if c.is_file():
            return c
    raise DatasetError(f"{p}: no fitted model found (looked for {', '.join(str(c) for c in candidates)}); "
                       "give a run folder written by `splatjax fit` or a 3DGS .ply file")


def model_supersample(ply: Path) -> int:
    """Samples per pixel side the model at ``ply`` was fitted with (``FitConfig.supersample``
    in the ``config.json`` of its run folder; 1 for a .ply without one, e.g. from another
    3DGS code): the pose and anomaly stages render it the same way."""
    path = Path(ply).parent / "config.json"
    if not path.is_file():
        return 1
    data = read_json(path, "fit settings")
    saved = data.get("fit_config") if isinstance(data, dict) else None
    value = saved.get("supersample", 1) if isinstance(saved, dict) else 1
    if not valid_supersample(value):
        raise DatasetError(f"{path}: fit_config.supersample must be an integer in 1..{MAX_SUPERSAMPLE}, "
                           f"got {value!r}")
    return value


def _same_fit(run_dir: Path, config) -> bool:
    """Whether ``run_dir`` holds a completed fit (model.ply) made with ``config``."""
    try:
        saved = read_json(run_dir / "config.json")["fit_config"]
    except (DatasetError, KeyError, TypeError):
        return False
    return not fit_config_changes(saved, config) and (run_dir / "model.ply").is_file()


def _checkpoint_step(run_dir: Path) -> int | None:
    """The step of the newest checkpoint of an unfinished fit in ``run_dir`` (None: none)."""
    ckpts = run_dir / "checkpoints"
    steps = [int(d.name) for d in ckpts.iterdir() if d.name.isdigit()] if ckpts.is_dir() else []
    return max(steps) if steps and not (run_dir / "model.ply").is_file() else None


def _minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{max(1, round(seconds / 60))} min"


def _fit_estimate(run_dir: Path, fit_config, train, resume_step: int | None, context: Context) -> None:
    """Log one line: how long the fit will take and that ``--model`` skips it. A fresh fit
    is timed by a warm-up of two chunks (the second chunk's steps/s, compilation excluded
    and kept for the fit); a resumed one by the rate of its last metrics record."""
    from ..fitting import fit
    from .interrupts import Worker, run_in_worker

    todo = fit_config.iterations - (resume_step or 0)
    how, rate = None, None
    if resume_step is not None:
        records = read_metrics(run_dir / "metrics.jsonl")  # a torn last line (the interrupt) is skipped
        rates = [r["steps_per_second"] for r in records if r.get("steps_per_second")]
        if rates:
            rate, how = float(rates[-1]), "the rate of its last logged steps"
    elif train is not None and fit_config.iterations > 2 * fit_config.chunk_steps:
        chunks = []
        res = run_in_worker(lambda: fit(train, fit_config, callback=lambda rep: chunks.append(rep) or
                                        len(chunks) >= 2), Worker())
        rate = res.steady_steps_per_second
        how = (f"the {rate:.1f} steps/s of a warm-up of two {fit_config.chunk_steps}-step chunks, the second "
               "timed; later steps run slower as densification grows the model")
    start = f"resuming the fit at step {resume_step}: " if resume_step is not None else "fitting: "
    if rate and np.isfinite(rate) and rate > 0:
        eta = f"{todo} steps, about {_minutes(todo / rate)} (estimated from {how})"
    else:
        eta = f"{todo} steps (no time estimate)"
    context.say(f"[splatjax] {start}{eta}; pass --model RUN (a fitted run folder) to skip the fit")


def model_for(data_path: Path, out_dir: Path, *, model, fit_config, class_name, context: Context, resume=False,
              train=None):
    """(gaussians, model.ply path, fit seconds, fit info or None): the given model, or a
    fit of ``data_path`` into ``out_dir/model`` (reused when a completed fit with the same
    settings is already there; an interrupted one is continued with ``resume``, else
    refused). Before fitting, one log line estimates its duration (``train``: the training
    views, for the warm-up that times it). A fit stopped by a signal raises
    :class:`splatjax.app.interrupts.Interrupted` (its checkpoint is written)."""
    from .interrupts import Interrupted

    if model is not None:
        ply = resolve_model(model, class_name)
        return load_ply(ply), ply, 0.0, None
    run_dir = out_dir / "model"
    step = _checkpoint_step(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        if _same_fit(run_dir, fit_config):
            context.say(f"[splatjax] reusing the model fitted earlier with the same settings: {run_dir / 'model.ply'} "
                        "(delete that folder to fit again)")
            return load_ply(run_dir / "model.ply"), run_dir / "model.ply", 0.0, None
        if step is not None and not resume:
            raise UserError(f"{run_dir}: holds an interrupted fit; pass --resume to continue it (same settings), "
                            "or delete the folder to fit again")
        started = (run_dir / "config.json").is_file()  # stopped before its first checkpoint
        if step is None and not (resume and started):
            raise UserError(f"{run_dir}: holds another (or an unfinished) fit with different settings; delete the "
                            "folder, choose another output folder, or pass it as the model")
        resume = resume and (step is not None or started)
    else:
        resume = False
    _fit_estimate(run_dir, fit_config, train, step, context)
    context.say(f"[splatjax] fitting {data_path} ({fit_config.iterations} iterations) into {run_dir}")
    t0 = time.perf_counter()
    info = run_fit(data_path, run_dir, fit_config, resume=resume,
                   context=context if context.progress is not None else QUIET)  # its lines are progress
    if not info["completed"]:
        raise Interrupted(info.get("interrupted") or "SIGINT")  # run_fit has written the checkpoint
    gaussians = load_ply(run_dir / "model.ply")
    return gaussians, run_dir / "model.ply", time.perf_counter() - t0, info
