"""The commands of the ``splatjax`` command line: for each, its flags (the application's
own here; the engine's generated from FitConfig, PoseConfig and MapConfig) and the
application function it runs. :mod:`splatjax.app.cli` turns errors into messages.

One log stream: log and progress lines go to stderr (:mod:`splatjax.app.logs`), ``--quiet``
silences them; stdout gets only each command's results (toy, synth: their paths; fit: the summary
line and the model path; evaluate: the table and the report path; detect: one verdict line
per image and the output paths; demo: the headline numbers)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from ..anomaly import MapConfig
from ..fitting import FitConfig
from ..pose import PoseConfig
from ..sharding import ParallelConfig
from .flags import add_config_flags, config_from_flags
from .logs import console_context, log_stderr

__all__ = ["COMMANDS"]

_DETECT_POSE = PoseConfig(coarse="render")


def _quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true",
                   help="no log or progress lines on stderr (results still go to stdout, errors to stderr)")


def _context(args):
    return console_context(quiet=args.quiet)


# ----------------------------------------------------------------------------- toy
def _add_toy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out/toy", metavar="DIR", help="output folder (default: demo_out/toy)")
    p.add_argument("--seed", type=int, metavar="INT", default=0, help="generator seed (default: 0)")
    p.add_argument("--resolution", type=int, metavar="INT", default=128, help="image width in pixels (default: 128)")


def _run_toy(args) -> int:
    from ..data import make_toy_dataset, write_toy_preview

    root = make_toy_dataset(args.out, seed=args.seed, resolution=args.resolution)
    preview = write_toy_preview(root, root.parent / f"{root.name}_preview.png")
    print(f"toy dataset: {root}\npreview:     {preview}")
    return 0


# ----------------------------------------------------------------------------- synth
def _add_synth(p: argparse.ArgumentParser) -> None:
    from ..data.synth import SynthConfig

    p.add_argument("mesh", metavar="MESH", help="the object: an OBJ or PLY mesh (read only)")
    p.add_argument("--out", required=True, metavar="DIR", help="the new MAD-Sim class folder (must not exist or be empty)")
    _quiet(p)
    add_config_flags(p, SynthConfig, title="benchmark class settings")


def _run_synth(args) -> int:
    from ..data.synth import SynthConfig, make_synth_dataset
    from ..errors import UserError
    from .outdir import check_writable_out

    out = check_writable_out(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {str(out)!r} exists and is not empty; choose a new folder")
    config = config_from_flags(SynthConfig, args)
    root = make_synth_dataset(args.mesh, out, config, context=_context(args))
    print(f"class folder: {root}\nmanifest:     {root / 'synth.json'}")
    return 0


# ----------------------------------------------------------------------------- fit
def _add_fit(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", default=None, metavar="DATA",
                   help="dataset folder: Blender/NeRF (transforms_train.json), MAD-Sim class or COLMAP (sparse/0/ + images/); with --resume and no "
                        "--out: the run folder (`splatjax fit RUN --resume`)")
    p.add_argument("--out", default=None, metavar="RUN", help="run folder (model.ply, config.json, metrics.jsonl, checkpoints/)")
    p.add_argument("--resume", action="store_true",
                   help="continue the fit in the run folder with its stored settings and data folder")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="end this session after the chunk that reaches STEP, as an interrupt does (checkpoint "
                        "written, exit 0, continue with --resume); the schedule stays that of --iterations")
    p.add_argument("--no-val", action="store_true", default=None,
                   help="do not score the validation split (default with --resume: as the run was started)")
    _quiet(p)
    add_config_flags(p, FitConfig, title="fit settings (defaults: the INRIA 3DGS / SplatPose schedule)")


def _run_fit(args) -> int:
    from ..errors import ConfigError, UserError
    from .fit_run import exit_status, resume_command, run_fit, stored_settings, summary_line

    data, out = args.data, args.out
    if out is None and not args.resume:
        raise UserError("--out RUN is required: the run folder (splatjax fit DATA --out RUN)")
    if out is None:
        if data is None:
            raise UserError("give the run folder to resume: splatjax fit RUN --resume")
        data, out = None, data
    if args.resume:  # the stored settings, with the flags given replacing them (differences are refused)
        _, stored, stored_val = stored_settings(out)
        config = config_from_flags(FitConfig, args, base=stored)
        val_split = None if args.no_val else stored_val
    else:
        if data is None:
            raise UserError("DATA is required: the dataset folder (splatjax fit DATA --out RUN)")
        config = config_from_flags(FitConfig, args)
        val_split = None if args.no_val else "val"
    if args.stop_at is not None and args.stop_at <= 0:
        raise ConfigError("stop_at", f"must be a positive step (got {args.stop_at})")
    summary = run_fit(data, out, config, resume=args.resume, context=_context(args), val_split=val_split,
                      stop_at=args.stop_at)
    print(summary_line(summary))
    if summary["completed"] and not summary.get("already_complete"):
        print(f"model: {Path(out) / 'model.ply'}")
    elif not summary["completed"] and args.quiet:  # run_fit's resume line went to the silenced log
        how = "interrupted" if summary.get("interrupted") else "stopped (--stop-at)"
        log_stderr(f"splatjax fit: {how} at step {summary['steps']}; resume with: {resume_command(out)}")
    return exit_status(summary)


# ----------------------------------------------------------------------------- evaluate
def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="+", metavar="DATA",
                   help="MAD-Sim class folder(s), or a MAD-Sim root folder holding them")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (report.json, per_image.csv, PNGs)")
    p.add_argument("--model", default=None, metavar="PATH",
                   help="fitted run folder or .ply; several classes: a folder holding CLASS/model.ply or "
                        "CLASS/model/model.ply (default: fit one first into DIR/model)")
    p.add_argument("--test-poses", default=None, metavar="PATH",
                   help="test-pose file; several classes: a folder holding CLASS/test_poses.json (default: "
                        "DATA/test_poses.json when present)")
    p.add_argument("--no-heatmaps", action="store_true", help="do not write per-image heatmap PNGs")
    p.add_argument("--resume", action="store_true", help="continue the interrupted evaluation in --out (its fit and "
                   "its finished query batches)")
    _quiet(p)
    add_config_flags(p, PoseConfig, title="pose (coarse retrieval, fine Adam on the SE(3) screw)")
    add_config_flags(p, MapConfig, title="anomaly maps and scores")
    add_config_flags(p, FitConfig, title="fitting, when no --model is given (defaults: the paper's)")
    add_config_flags(p, ParallelConfig, title="devices and processes")


def _resume_command(args) -> str:
    """The command line that resumes this evaluation: this process's own arguments when it
    is the ``evaluate`` command line, else the data, --out and --model, plus --resume."""
    argv = sys.argv[1:]
    if "evaluate" not in argv:
        argv = ["evaluate", *args.data, "--out", args.out] + (["--model", args.model] if args.model else [])
    return shlex.join(["splatjax", *argv] + ([] if "--resume" in argv else ["--resume"]))


def _run_evaluate(args) -> int:
    from .evaluate import evaluate
    from .interrupts import Interrupted

    fit_config = config_from_flags(FitConfig, args)
    try:
        evaluate(args.data, args.out, model=args.model, test_poses=args.test_poses, fit_config=fit_config,
                 pose_config=config_from_flags(PoseConfig, args), map_config=config_from_flags(MapConfig, args),
                 seed=fit_config.seed, heatmaps=not args.no_heatmaps, context=_context(args),
                 parallel=config_from_flags(ParallelConfig, args), resume=args.resume, say=print)
    except Interrupted as stop:
        sys.stderr.write(f"splatjax evaluate: stopped by {stop.signal_name}; finished work is kept in {args.out}; "
                         f"resume with: {_resume_command(args)}\n")
        # the finished work is on disk (atomic writes); a compiled call may still run in a worker
        # thread, and the interpreter's shutdown would wait for it or abort under it: end here
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stop.status)
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0


# ----------------------------------------------------------------------------- detect
def _add_detect(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="query images")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="fitted run folder (model.ply, cameras.json) or a .ply file")
    p.add_argument("--out", default="detect_out", metavar="DIR", help="output folder (default: detect_out)")
    p.add_argument("--resolution", type=int, metavar="INT", default=None,
                   help="image width (default: the training width)")
    p.add_argument("--camera-angle-x", type=float, metavar="FLOAT", default=None,
                   help="horizontal field of view in radians (default: the training views')")
    p.add_argument("--seed", type=int, metavar="INT", default=0,
                   help="seed of the fine-pose initialisation (default: 0)")
    _quiet(p)
    add_config_flags(p, PoseConfig, title="pose (coarse retrieval, fine Adam on the SE(3) screw)", base=_DETECT_POSE)
    add_config_flags(p, MapConfig, title="anomaly maps and scores")


def _run_detect(args) -> int:
    from .detect import detect

    detect(args.model, args.images, args.out, pose_config=config_from_flags(PoseConfig, args, base=_DETECT_POSE),
           map_config=config_from_flags(MapConfig, args), resolution=args.resolution,
           camera_angle_x=args.camera_angle_x, seed=args.seed, context=_context(args))
    print(f"heatmaps: {Path(args.out) / 'heatmaps'}/, details: {Path(args.out) / 'detections.json'}")
    return 0


# ----------------------------------------------------------------------------- demo
def _add_demo(p: argparse.ArgumentParser) -> None:
    from .demo import DEMO_MAP

    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default: demo_out)")
    p.add_argument("--seed", type=int, metavar="INT", default=0, help="seed of the toy object and the fit (default: 0)")
    _quiet(p)
    add_config_flags(p, MapConfig, title="anomaly maps and scores", base=DEMO_MAP)


def _run_demo(args) -> int:
    from .demo import DEMO_MAP, demo

    demo(args.out, seed=args.seed, map_config=config_from_flags(MapConfig, args, base=DEMO_MAP),
         context=_context(args))
    return 0


COMMANDS = {
    "demo": ("the toy object end to end: generate, fit, evaluate, print the numbers", _add_demo, _run_demo),
    "toy": ("generate the built-in toy object (MAD-Sim layout) and a preview image", _add_toy, _run_toy),
    "synth": ("render a mesh into a MAD-Sim class folder with 3D defects and exact masks (needs Mitsuba 3)",
              _add_synth, _run_synth),
    "fit": ("fit the defect-free 3DGS model to a Blender/NeRF, MAD-Sim class or COLMAP folder", _add_fit, _run_fit),
    "evaluate": ("pose-agnostic evaluation of MAD-Sim class folder(s): poses, maps, metrics, reports",
                 _add_evaluate, _run_evaluate),
    "detect": ("anomaly maps, scores and verdicts for new images of a fitted object", _add_detect, _run_detect),
}
