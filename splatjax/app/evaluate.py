"""``evaluate``: labelled MAD-Sim class folders through the stages, with metrics and reports.

Per class: load -> fit (when no model is given) -> poses (coarse + fine, batched) ->
renders -> anomaly maps (224 x 224) and image scores -> image AUROC, pixel AUROC (masks
resized nearest to the map size), AUPRO and, with a test-pose file, pose errors of the
coarse and the fine poses. Output folder::

    report.json        metrics, per-stage seconds, queries per second, settings, pose errors,
                       ``pose_diverged`` (count and paths of queries whose fine pose diverged;
                       also said as a warning through the context, stderr by default),
                       ``pose_retried`` (count and paths of the distrusted queries retried,
                       ``moved``: those whose pose a retry replaced), ``pose_half_turn`` (count
                       and paths of the queries whose fine pose the half-turn check turned)
    per_image.csv      path, label, defect type, score, verdict, coarse index, final loss (of the kept
                       iterate), pose_residual_median / pose_residual_p90 (silhouette_residual),
                       pose_diverged (0/1), pose_best_step, pose_steps (fine-pose steps taken),
                       pose_hypothesis, pose_retried (candidates a retry of an untrusted pose
                       refined, 0: none) / pose_retry_rank (the kept retried candidate's rank, -1:
                       the first pose kept), pose_half_turn (the model axis a half-turn of the fine
                       pose was taken about, -1: none) / pose_half_turn_ratio (the best turn's
                       screened loss over the pose's, NaN: not checked), pose errors
    heatmaps/<type>_<n>.png   query | render | anomaly map on the model's fixed scale
    roc.png            image and pixel ROC curves
    pose_convergence.png      fine-pose loss per step (+ coarse vs fine errors)
    poses.json         estimated camera-to-world poses (Blender/OpenGL), coarse and fine

Several class folders in one call: one such folder per class under ``out/<class>``, plus
``out/table.md`` and ``out/report.json`` (per-class rows and the mean, like Table 1 of
the paper). Two class folders with the same name are refused (their outputs would collide).

Devices and processes (:class:`splatjax.sharding.ParallelConfig`): the fine pose, the
renders and the weights-free maps of a class are sharded over the local devices; several
processes joined with ``jax.distributed`` split the classes between them
(:func:`splatjax.app.distributed.run_classes`), every process gets every class's report and
process 0 writes ``table.md`` and the summary. A class whose ``out/<class>/report.json``
exists is not evaluated again (resume per class). Within a class, the queries go through
the stages in batches of ``batch_size`` x devices, each persisted under ``OUT/.partial/``
(:data:`PARTIAL`, removed once the class report is written); SIGINT / SIGTERM stop at
once (:mod:`splatjax.app.interrupts`) and ``resume=True`` skips the finished batches, to
the results of an uninterrupted run. Each class report has a ``parallel``
entry: devices, processes, and queries per second per process and per device over the
sharded stages (fine pose, render, maps).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

from ..anomaly import MapConfig, Maps
from ..anomaly.features import make_feature_extractor
from ..data import class_folders
from ..context import Context
from ..errors import UserError
from ..files import atomic_write, file_sha256, read_json, write_json
from ..fitting import FitConfig
from ..metrics import evaluate_detection, pose_errors, resize_masks, summarize_pose_errors
from ..pose import PoseConfig, candidate_cameras, render_candidates, resolve_coarse
from ..render import resolve_backend
from ..sharding import ParallelConfig, query_mesh
from .calibration import heldout_views, model_calibration
from .distributed import gather_reports, initialize_distributed, parallel_info, run_classes
from .outdir import check_writable_out
from .interrupts import StopSignals, Worker, run_in_worker
from .report import format_table, plot_pose_convergence, plot_roc_curves, verdict, write_heatmaps, write_per_image_csv
from .logs import console_context
from .runs import check_out_dir, model_for, model_supersample, save_cameras
from .stages import pose_trust, run_stages

__all__ = ["evaluate", "evaluate_class", "PARTIAL"]

#: Per-class folder of the finished query batches of an unfinished evaluation.
PARTIAL = ".partial"


def _model_resolution(model, data_path: Path, context: Context) -> int | None:
    """The image width a given model was fitted at (its run folder's ``config.json``), so
    that queries are compared at the resolution the model can render; None (the data's
    own width, capped at 400) for a bare .ply or a run folder without one."""
    from .runs import resolve_model

    try:
        ply = resolve_model(model, Path(data_path).name)
    except UserError:
        return None
    cfg = ply.parent / "config.json"
    if not cfg.is_file():
        return None
    width = read_json(cfg).get("resolution")
    if isinstance(width, int) and width > 0:
        context.say(f"[splatjax] images read at {width} px wide, the model's fit resolution (--resolution to override)")
        return width
    return None


def _test_pose_file(data_path: Path, test_poses) -> Path | None:
    """The test-pose file to use: the one given, else ``<data>/test_poses.json`` when present."""
    if test_poses is None and (data_path / "test_poses.json").is_file():
        return data_path / "test_poses.json"
    return None if test_poses is None else Path(test_poses)


def _pose_report(est, true_c2w, test_poses) -> tuple[dict, tuple]:
    e_coarse = pose_errors(est.coarse_c2w, true_c2w)
    e_fine = pose_errors(est.c2w, true_c2w)
    better = (e_fine["rotation_rad"] < e_coarse["rotation_rad"]) & (e_fine["translation"] < e_coarse["translation"])
    return ({"coarse": summarize_pose_errors(e_coarse), "fine": summarize_pose_errors(e_fine),
             "fine_better_fraction": float(better.mean()), "test_poses": test_poses}, (e_coarse, e_fine))


def _warn_diverged(name: str, paths, diverged, context: Context) -> None:
    """One warning line naming the queries whose fine pose diverged (none: silent)."""
    bad = [p for p, d in zip(paths, diverged) if d]
    if bad:
        context.say(f"[splatjax] {name}: warning: the fine pose diverged for {len(bad)} of {len(paths)} queries "
                    f"(loss became NaN/inf or grew; each keeps its best iterate, its score may be unreliable): "
                    f"{', '.join(bad)}")


def _write_tables(out_dir: Path, cls, det, cal, errs, trust) -> None:
    test, est = cls.test, det.poses
    iou, trusted = trust.iou, trust.trusted
    cols = {"path": list(test.paths), "label": [int(x) for x in test.labels], "defect_type": list(test.defect_types),
            "score": [float(s) for s in det.maps.scores],
            "score_over_threshold": [float(s) / cal.threshold for s in det.maps.scores],  # comparable across models
            "verdict": [verdict(s, cal, t) for s, t in zip(det.maps.scores, trusted)],
            "silhouette_iou": [float(x) for x in iou], "pose_loss_ratio": [float(x) for x in trust.loss_ratio],
            "pose_residual_median": [float(x) for x in trust.residual[:, 0]],
            "pose_residual_ratio": [float(x) for x in trust.residual_ratio],
            "pose_residual_p90": [float(x) for x in trust.residual[:, 1]],
            "pose_outline_ratio": [float(x) for x in trust.outline_ratio],
            "pose_trusted": [int(x) for x in trusted], "pose_untrusted_reason": list(trust.reasons),
            "coarse_index": [int(i) for i in est.coarse_index], "coarse_score": [float(s) for s in est.coarse_score],
            "final_loss": [float(x) for x in est.loss], "pose_diverged": [int(x) for x in est.diverged],
            "pose_best_step": [int(x) for x in est.best_step], "pose_steps": [int(x) for x in est.fine_steps],
            "pose_hypothesis": [int(x) for x in est.chosen], "pose_retried": [int(x) for x in est.retried],
            "pose_retry_rank": [int(x) for x in est.retry_rank],
            "pose_half_turn": [int(x) for x in est.half_turn],
            "pose_half_turn_ratio": [float(x) for x in est.half_turn_ratio]}
    if errs:
        for name, e, key in (("coarse_translation", errs[0], "translation"), ("coarse_rotation_rad", errs[0],
                             "rotation_rad"), ("fine_translation", errs[1], "translation"),
                             ("fine_rotation_rad", errs[1], "rotation_rad"),
                             ("fine_rotation_half_rad", errs[1], "rotation_half_rad")):
            cols[name] = [float(x) for x in e[key]]
    write_per_image_csv(out_dir / "per_image.csv", cols)
    write_json(out_dir / "poses.json", {
        "camera_angle_x": cls.train.camera_angle_x, "convention": "Blender/OpenGL camera-to-world",
        "coarse": {p: est.coarse_c2w[i].tolist() for i, p in enumerate(test.paths)},
        "fine": {p: est.c2w[i].tolist() for i, p in enumerate(test.paths)}}, indent=None)


def _write_pictures(out_dir: Path, cls, det, cal, errs, trusted, *, heatmaps: bool, context: Context) -> None:
    test = cls.test
    labels = np.asarray(test.labels).astype(bool)
    masks = resize_masks(test.masks, det.maps.maps.shape[-1])
    plot_roc_curves(out_dir / "roc.png", det.maps.scores, labels, det.maps.maps, masks, title=cls.name)
    plot_pose_convergence(out_dir / "pose_convergence.png", det.poses.loss_traces,
                          coarse_errors=errs[0] if errs else None, fine_errors=errs[1] if errs else None,
                          diverged=det.poses.diverged, title=cls.name)
    if heatmaps:
        names = [f"{t}_{Path(p).stem}" for p, t in zip(test.paths, test.defect_types)]
        write_heatmaps(out_dir / "heatmaps", names, test.images, det.renders, det.maps.maps, det.maps.scores, cal,
                       masks=test.masks, trusted=trusted, context=context)


def _verdict_rates(scores: np.ndarray, labels: np.ndarray, threshold: float, trusted: np.ndarray) -> dict:
    """The verdicts' rates: ANOMALOUS among the good queries (false positives) and among
    the defective ones (recall), and how many of each got "pose not found"."""
    flagged = (scores > threshold) & trusted
    return {"false_positive_rate": float(flagged[~labels].mean()) if (~labels).any() else None,
            "recall": float(flagged[labels].mean()) if labels.any() else None,
            "flagged": int(flagged.sum()),
            "pose_not_found": {"good": int((~trusted & ~labels).sum()), "defective": int((~trusted & labels).sum())}}


def _report(cls, data_path, model_ply, det, metrics, cal, pose_config, seed, trust) -> dict:
    labels, trusted = np.asarray(cls.test.labels).astype(bool), trust.trusted
    return {
        "class": cls.name, "data": str(data_path.resolve()), "model": str(model_ply),
        "num_test_images": len(cls.test), "num_defective": int(labels.sum()), "num_train_views": len(cls.train),
        "image_size": [cls.train.width, cls.train.height],
        **dataclasses.asdict(metrics),
        "threshold": cal.threshold, "heatmap_scale": [cal.vmin, cal.vmax],
        "highlight_cap": cal.highlight_cap if cal.highlights == "calibrated" else None,
        "threshold_rule": {"rule": cal.rule, "describe": cal.describe(), "heldout_queries": cal.heldout_queries,
                           "heldout_log_sd": cal.heldout_log_sd if cal.rule == "held-out" else None,
                           "target_false_positive_rate": cal.false_positive_rate if cal.rule == "held-out" else None},
        "verdicts": _verdict_rates(np.asarray(det.maps.scores), labels, cal.threshold, trusted),
        "pose_untrusted": {"count": int((~trusted).sum()),
                           "paths": [p for p, t in zip(cls.test.paths, trusted) if not t],
                           "reasons": {p: r for p, r in zip(cls.test.paths, trust.reasons) if r},
                           "rule": trust.rule},
        "features": det.maps.features, "coarse_method": det.poses.method,
        "pose_config": dataclasses.asdict(pose_config),
        "pose_diverged": {"count": int(det.poses.diverged.sum()),
                          "paths": [p for p, d in zip(cls.test.paths, det.poses.diverged) if d]},
        "pose_retried": {"count": int((det.poses.retried > 0).sum()),
                         "paths": [p for p, r in zip(cls.test.paths, det.poses.retried) if r > 0],
                         "moved": [p for p, r in zip(cls.test.paths, det.poses.retry_rank) if r >= 0]},
        "pose_half_turn": {"count": int((det.poses.half_turn >= 0).sum()),
                           "paths": [p for p, h in zip(cls.test.paths, det.poses.half_turn) if h >= 0]},
        "render_backend": resolve_backend(pose_config.backend), "seed": int(seed),
    }


def _check_unfinished(out_dir: Path, resume: bool) -> None:
    """UserError when ``out_dir`` holds an interrupted evaluation and ``resume`` is off."""
    if not resume and (out_dir / PARTIAL).is_dir():
        raise UserError(f"{out_dir / PARTIAL}: holds an interrupted evaluation; pass --resume to continue it, or "
                        "delete that folder to start again")


class _Partial:
    """``OUT/.partial``: ``settings.json`` and one ``queries_<start>_<end>.npz`` per finished
    batch of queries (atomic writes), read back by a resumed run."""

    ARRAYS = ("coarse_index", "coarse_score", "coarse_c2w", "c2w", "loss_traces", "loss", "best_step", "diverged",
              "chosen", "fine_steps", "retried", "retry_rank", "half_turn", "half_turn_ratio")

    def __init__(self, folder: Path, settings: dict):
        self.folder = folder
        settings = json.loads(json.dumps(settings, default=str))
        path = folder / "settings.json"
        if path.is_file():
            saved = read_json(path, "settings of an interrupted evaluation")
            diff = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
            if diff:
                raise UserError(f"cannot resume {folder}: it was started with other settings ({', '.join(diff)}); "
                                "use the original settings, or delete that folder to start again")
        else:
            write_json(path, settings)

    def done(self) -> list[tuple[int, int, Path]]:
        out = []
        for f in sorted(self.folder.glob("queries_*.npz")):
            parts = f.stem.split("_")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                out.append((int(parts[1]), int(parts[2]), f))
        return out

    def save(self, start: int, end: int, det) -> None:
        est = det.poses
        arrays = {k: np.asarray(getattr(est, k)) for k in self.ARRAYS}
        arrays.update(renders=np.asarray(det.renders, np.float32), maps=det.maps.maps, scores=det.maps.scores,
                      meta=np.asarray(json.dumps({"method": est.method, "features": det.maps.features,
                                                  "seconds": det.seconds})))
        atomic_write(self.folder / f"queries_{start:06d}_{end:06d}.npz", lambda f: np.savez_compressed(f, **arrays))

    def load(self, q: int):
        """The detection of all ``q`` queries from the batch files (every query once)."""
        parts, seconds, meta = [], {}, {}
        for start, end, f in self.done():
            with np.load(f, allow_pickle=False) as z:
                parts.append((start, {k: z[k] for k in z.files if k != "meta"}))
                meta = json.loads(str(z["meta"]))
            for k, v in meta["seconds"].items():
                seconds[k] = seconds.get(k, 0.0) + float(v)
        parts.sort(key=lambda p: p[0])
        cat = {k: np.concatenate([a[k] for _, a in parts]) for k in parts[0][1]}
        if len(cat["scores"]) != q:
            raise UserError(f"{self.folder}: its batches do not cover the {q} queries once; delete that folder to "
                            "start again")
        poses = types.SimpleNamespace(**{k: cat[k] for k in self.ARRAYS}, method=meta["method"])
        return types.SimpleNamespace(poses=poses, renders=cat["renders"], seconds=seconds,
                                     maps=Maps(maps=cat["maps"], scores=cat["scores"], features=meta["features"]))


def _todo(q: int, done: list[tuple[int, int, Path]], size: int) -> list[tuple[int, int]]:
    """The query ranges still to run: every maximal run of queries no batch file covers,
    cut into batches of ``size`` from its start."""
    covered = np.zeros(q, bool)
    for start, end, _ in done:
        covered[start:end] = True
    out, i = [], 0
    while i < q:
        if covered[i]:
            i += 1
            continue
        j = i
        while j < q and not covered[j] and j - i < size:
            j += 1
        out.append((i, j))
        i = j
    return out


def _settings(cls, model_sha256: str, pose_config, map_config, seed: int) -> dict:
    """What a resumed evaluation must share with the interrupted one: the model by its
    content, as its calibration is keyed (the batch size and the devices may change: a
    query's result does not depend on them, float rounding aside)."""
    pose = dataclasses.asdict(pose_config)
    pose.pop("batch_size")
    if pose["supersample"] == 1:
        pose.pop("supersample")  # evaluations interrupted before the option resume as they were
    return {"queries": list(cls.test.paths), "image_size": [cls.train.width, cls.train.height],
            "model_sha256": model_sha256, "pose_config": pose,
            "map_config": dataclasses.asdict(map_config), "seed": int(seed)}


def _detect_batches(out_dir, cls, gaussians, model_sha256, cal, extractor, pose_config, map_config, seed, *, parallel,
                    devices, worker, context: Context, on_batch):
    """The stages over the queries in batches of ``batch_size`` x devices, each batch
    persisted in ``out_dir/.partial`` as it finishes; batches found there are skipped.
    Query i's fine-pose keys are those of the whole run (``split(key(seed), Q * K)``), so
    the results do not depend on where a run was interrupted."""
    test, train = cls.test, cls.train
    store = _Partial(out_dir / PARTIAL, _settings(cls, model_sha256, pose_config, map_config, seed))
    q, k = len(test), pose_config.hypotheses
    done = store.done()
    if done:
        n = sum(e - s for s, e, _ in done)
        context.say(f"[splatjax] {cls.name}: resuming, {n} of {q} queries done earlier (kept in {store.folder})")
    keys = jax.random.split(jax.random.key(seed), q * k)
    cands = candidate_cameras(train.cameras, pose_config)
    todo = _todo(q, done, pose_config.batch_size * devices)
    finished = q - sum(e - s for s, e in todo)
    searched = []  # the candidates as searched: rendered once (render-and-compare) in the first batch's worker
    for n_batch, (s, e) in enumerate(todo):
        def one(s=s, e=e, first=n_batch == 0):
            ctx = Context(log=context.log if first else None)
            t0 = time.perf_counter()
            if not searched:
                method = resolve_coarse(pose_config.coarse, pose_config.loftr_weights, context=ctx)
                searched.append(render_candidates(gaussians, cands, pose_config) if method == "render" else cands)
            prepared = time.perf_counter() - t0
            det = run_stages(gaussians, test.images[s:e], searched[0], pose_config, map_config,
                             key=keys[s * k:e * k], extractor=extractor, candidate_images=train.images,
                             context=ctx, parallel=parallel, residual=cal.residual,
                             highlight_cap=cal.highlight_cap, calibration=cal)
            det.seconds["coarse"] += prepared  # the candidates' renders count as coarse pose
            with worker.lock:
                if not worker.cancelled:
                    store.save(s, e, det)

        run_in_worker(one, worker)
        finished += e - s
        context.tick("queries", finished, q)
        if on_batch is not None:
            on_batch(cls.name, finished, q)
    return store.load(q)


def _check_before_work(data_path: Path, out_dir: Path, resume: bool, parallel: ParallelConfig) -> int:
    """The checks of an evaluation that need no loading (the output folder, an unfinished
    evaluation there, the devices asked for); returns the device count."""
    check_writable_out(out_dir)
    check_out_dir(out_dir, data_path)
    _check_unfinished(out_dir, resume)
    return query_mesh(parallel.devices).size  # more than there are: ConfigError before any work


def _load_class(data_path: Path, fit_config: FitConfig, pose_file, context: Context):
    from ..data import load_mad_class

    cls = load_mad_class(data_path, fit_config.resolution, fit_config.background, upsample=fit_config.upsample,
                         test_poses=pose_file)
    context.say(f"[splatjax] {cls.name}: {len(cls.train)} training views, {len(cls.test)} test images at "
                f"{cls.train.width}x{cls.train.height}")
    return cls


def _calibration(model_ply: Path, gaussians, train, extractor, pose_config, map_config, worker, context: Context):
    """(the model's SHA-256, its map calibration), measured in ``worker`` (interruptible)."""
    digest = file_sha256(model_ply)  # keys the calibration and the finished batches
    heldout = heldout_views(model_ply, train.paths, train.images, train.cameras, pose_config)
    cal = run_in_worker(lambda: model_calibration(
        model_ply, gaussians, train.cameras, train.images, map_config, extractor=extractor,
        pose_config=pose_config, heldout=heldout, context=context, model_sha256=digest), worker)
    return digest, cal


def evaluate_class(
    data_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    test_poses: str | os.PathLike | None = None,
    fit_config: FitConfig = FitConfig(),
    pose_config: PoseConfig = PoseConfig(),
    map_config: MapConfig = MapConfig(),
    seed: int = 0,
    heatmaps: bool = True,
    context: Context | None = None,
    parallel: ParallelConfig = ParallelConfig(),
    resume: bool = False,
    on_batch: Callable[[str, int, int], object] | None = None,
) -> dict:
    """Evaluate one MAD-Sim class folder (see the module docstring); returns the report
    dict that is also written to ``out_dir/report.json``. ``model``: run folder (or .ply)
    of a fitted model; None fits one first into ``out_dir/model`` with ``fit_config``
    (images read at ``fit_config.resolution``). ``test_poses``: test-pose file; None uses
    ``<data>/test_poses.json`` when present. ``seed`` keys the screw initialisations.
    ``parallel.devices``: local devices the queries are sharded over (None: all).
    ``resume``: continue an interrupted evaluation (its fit, its finished batches in
    ``out_dir/.partial``); without it such a folder is refused. ``on_batch(class, done,
    total)`` is called after each batch is persisted (raising there stops the run);
    ``context`` gets messages and progress (None: stderr). SIGINT / SIGTERM (main thread)
    raise :class:`splatjax.app.interrupts.Interrupted` at once, the finished batches kept."""
    data_path, out_dir = Path(data_path), Path(out_dir)
    devices = _check_before_work(data_path, out_dir, resume, parallel)
    context = console_context() if context is None else context
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    pose_file = _test_pose_file(data_path, test_poses)
    if model is not None and fit_config.resolution is None:
        fit_config = dataclasses.replace(fit_config, resolution=_model_resolution(model, data_path, context))
    with StopSignals():
        cls = _load_class(data_path, fit_config, pose_file, context)
        seconds["load"] = time.perf_counter() - t0
        train, test = cls.train, cls.test
        pose_config = dataclasses.replace(pose_config, background=train.background)  # the model's background
        gaussians, model_ply, seconds["fit"], fit_info = model_for(
            data_path, out_dir, model=model, fit_config=fit_config, class_name=cls.name, context=context,
            resume=resume, train=train)
        if model is None:
            save_cameras(model_ply.parent, train)
        pose_config = dataclasses.replace(pose_config, supersample=model_supersample(model_ply))  # as it was fitted
        extractor, worker = make_feature_extractor(map_config.features, map_config.efficientnet_weights,
                                                   context=context), Worker()
        t0 = time.perf_counter()  # before the maps: a normalised map needs the calibration's residual scales
        digest, cal = _calibration(model_ply, gaussians, train, extractor, pose_config, map_config, worker, context)
        seconds["calibration"] = time.perf_counter() - t0
        det = _detect_batches(out_dir, cls, gaussians, digest, cal, extractor, pose_config, map_config, seed,
                              parallel=parallel, devices=devices, worker=worker, context=context,
                              on_batch=on_batch)
        seconds.update(det.seconds)
        _warn_diverged(cls.name, test.paths, det.poses.diverged, context)
        report = _score_and_write(out_dir, cls, det, cal, (data_path, model_ply, pose_config, seed, pose_file),
                                  seconds, heatmaps=heatmaps, context=context)
        report = _finish_report(out_dir, report, seconds, len(test), fit_info, heatmaps, devices)
        shutil.rmtree(out_dir / PARTIAL, ignore_errors=True)
    return report


def _score_and_write(out_dir: Path, cls, det, cal, settings: tuple, seconds: dict, *, heatmaps: bool,
                     context: Context) -> dict:
    """The detection metrics and pose errors of a finished class, its tables and pictures
    written into ``out_dir``; returns its report (``seconds`` gets "metrics", "write").
    ``settings``: (data path, model .ply, PoseConfig, seed, test-pose file or None)."""
    data_path, model_ply, pose_config, seed, pose_file = settings
    test, test_poses = cls.test, (None if pose_file is None else str(pose_file))
    t0 = time.perf_counter()
    metrics = evaluate_detection(det.maps.scores, det.maps.maps, test.labels, test.masks)
    pose_part, errs = _pose_report(det.poses, test.c2w, test_poses) if test.c2w is not None else (None, None)
    seconds["metrics"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    trust = pose_trust(det.renders, test.images, pose_config, det.poses.loss, cal)
    _write_tables(out_dir, cls, det, cal, errs, trust)
    _write_pictures(out_dir, cls, det, cal, errs, trust.trusted, heatmaps=heatmaps, context=context)
    seconds["write"] = time.perf_counter() - t0
    report = _report(cls, data_path, model_ply, det, metrics, cal, pose_config, seed, trust)
    if pose_part is not None:
        report["pose"] = pose_part
    return report


def _finish_report(out_dir: Path, report: dict, seconds: dict, m: int, fit_info, heatmaps: bool,
                   devices: int) -> dict:
    sharded = (seconds.get("screen", 0.0) + seconds["fine"] + seconds.get("retry", 0.0) + seconds["render"]
               + seconds["maps"])
    infer = seconds["coarse"] + seconds.get("polish", 0.0) + sharded
    report["parallel"] = {**parallel_info(devices, m, sharded), "stages": ["screen", "fine", "retry", "render", "maps"]}
    seconds["total"] = float(sum(seconds.values()))
    report["seconds"] = seconds
    report["queries_per_second"] = m / infer if infer > 0 else None
    report["seconds_per_query_without_coarse"] = sharded / m
    if fit_info is not None:
        report["fit"] = {k: fit_info.get(k) for k in ("steps", "num_gaussians", "seconds", "final_psnr", "backend")}
    report["files"] = {"report": "report.json", "per_image": "per_image.csv", "roc": "roc.png",
                       "pose_convergence": "pose_convergence.png", "poses": "poses.json",
                       "heatmaps": "heatmaps/" if heatmaps else None}
    report = json.loads(json.dumps(report, default=float))  # numpy scalars -> JSON numbers
    write_json(out_dir / "report.json", report, indent=1)
    return report


def evaluate(
    data_paths: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    test_poses: str | os.PathLike | None = None,
    fit_config: FitConfig = FitConfig(),
    pose_config: PoseConfig = PoseConfig(),
    map_config: MapConfig = MapConfig(),
    seed: int = 0,
    heatmaps: bool = True,
    context: Context | None = None,
    parallel: ParallelConfig = ParallelConfig(),
    say: Callable[[str], object] = print,
    resume: bool = False,
    on_batch: Callable[[str, int, int], object] | None = None,
) -> list[dict]:
    """Evaluate one class folder (report in ``out``) or several (one folder per class under
    ``out``, plus ``table.md`` and a summary ``report.json`` with per-class rows and the
    mean). Returns the per-class reports. With several classes, ``model`` is a folder
    holding ``<class>/model.ply`` (or ``<class>/model/model.ply``) and ``test_poses`` a
    folder holding ``<class>/test_poses.json``; a class whose ``out/<class>/report.json``
    exists is read back, not evaluated again (resume). ``say`` gets the results table
    (stdout by default), ``context`` the messages and progress (None: stderr).

    ``parallel``: devices to shard each class's queries over, and the multi-process job
    to join (:func:`splatjax.app.distributed.initialize_distributed`, done first): each
    process evaluates its share of the classes (one class: process 0), every process
    returns every class's report, and process 0 writes the summary. Other options: see
    :func:`evaluate_class` (``resume``, ``on_batch``: there; an interrupted class folder
    anywhere under ``out`` is refused before any work unless ``resume``)."""
    check_writable_out(out)
    index, _ = initialize_distributed(parallel)
    if isinstance(data_paths, (str, os.PathLike)):
        data_paths = [data_paths]
    if not data_paths:
        raise UserError("evaluate: no class folder given")
    classes = class_folders(data_paths)  # refuses two classes of one name
    out = Path(out)
    context = console_context() if context is None else context
    kwargs = dict(model=model, fit_config=fit_config, pose_config=pose_config, map_config=map_config, seed=seed,
                  heatmaps=heatmaps, context=context, parallel=parallel, resume=resume, on_batch=on_batch)
    if len(classes) == 1:
        name, path = classes[0]
        mine = {name: evaluate_class(path, out, test_poses=test_poses, **kwargs)} if index == 0 else {}
        reports = list(gather_reports(mine).values())
    else:
        reports = _evaluate_classes(dict(classes), out, test_poses, kwargs, resume=resume, context=context)
        if index == 0:
            _write_summary(out, reports)
    if index == 0:
        say(format_table(reports))
    return reports


def _evaluate_classes(paths: dict, out: Path, test_poses, kwargs: dict, *, resume: bool,
                      context: Context) -> list[dict]:
    """Several classes, one folder each under ``out`` (shared between processes by
    :func:`run_classes`); a class whose report exists is read back."""
    for name, path in paths.items():
        check_out_dir(out, path)
        _check_unfinished(out / name, resume)

    def one_class(name: str) -> dict:
        tp = None if test_poses is None else Path(test_poses) / name / "test_poses.json"
        return evaluate_class(paths[name], out / name, test_poses=tp if tp and tp.is_file() else None, **kwargs)

    def said(name: str, state: str) -> None:
        if state == "resumed":
            context.say(f"[splatjax] {name}: {out / name / 'report.json'} exists, not evaluated again (resume; delete "
                        "it to evaluate the class again)")

    by_name = run_classes(list(paths), one_class, out, on_class=said)
    return [by_name[name] for name in paths]


def _write_summary(out: Path, reports: list[dict]) -> None:
    write_json(out / "report.json", {
        "classes": [r["class"] for r in reports],
        "mean": {k: (float(np.mean([r[k] for r in reports if r.get(k) is not None]))
                     if any(r.get(k) is not None for r in reports) else None)
                 for k in ("image_auroc", "pixel_auroc", "aupro", "queries_per_second")},
        "per_class": {r["class"]: {k: r.get(k) for k in ("image_auroc", "pixel_auroc", "aupro", "pose",
                                                         "queries_per_second", "seconds", "parallel")}
                      for r in reports},
        "table": "table.md"}, indent=1)
    atomic_write(out / "table.md", format_table(reports))
