"""Interim command-line adapters for ``evaluate``, ``detect`` and ``demo`` (to be replaced
by the flags that ``app/cli.py`` generates from FitConfig / PoseConfig / MapConfig), and
the names the package's public namespace still imports from here.

The work is done in :mod:`.evaluate`, :mod:`.detect`, :mod:`.demo` and :mod:`.runs`.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..anomaly import MapConfig
from ..pose import PoseConfig
from .demo import demo
from .detect import detect
from .evaluate import evaluate
from .runs import load_cameras, save_cameras

__all__ = ["evaluate", "detect", "demo", "save_cameras", "load_cameras", "add_evaluate_arguments",
           "add_detect_arguments", "add_demo_arguments", "run_evaluate", "run_detect", "run_demo"]


def _add_config_arguments(parser: argparse.ArgumentParser, *configs) -> None:
    """One flag per documented field of each config (``metadata["help"]``)."""
    for cls, default in configs:
        group = parser.add_argument_group(cls.__name__)
        for f in dataclasses.fields(cls):
            if "help" not in f.metadata:
                continue
            flag = "--" + f.name.replace("_", "-")
            value = getattr(default, f.name)
            if f.type in ("bool", bool):
                group.add_argument(flag, action="store_true", default=value, help=f.metadata["help"])
                continue
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            group.add_argument(flag, type=kind, default=value, choices=f.metadata.get("choices"),
                               help=f"{f.metadata['help']} (default {value})")


def _configs(args) -> tuple[PoseConfig, MapConfig]:
    pick = lambda cls: cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)  # noqa: E731
                              if "help" in f.metadata})
    return pick(PoseConfig), pick(MapConfig)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``splatjax evaluate DATA... [--model RUN] [--test-poses FILE] --out DIR [...]``."""
    parser.add_argument("data", nargs="+", help="MAD-Sim class folder(s)")
    parser.add_argument("--out", required=True, help="output folder (report.json, per_image.csv, PNGs)")
    parser.add_argument("--model", default=None, help="fitted run folder (model.ply); default: fit first")
    parser.add_argument("--test-poses", default=None, help="test-pose file (default: DATA/test_poses.json)")
    parser.add_argument("--resolution", type=int, default=400, help="image width (default 400, as the paper)")
    parser.add_argument("--no-heatmaps", action="store_true", help="do not write per-image heatmap PNGs")
    parser.add_argument("--iterations", type=int, default=None, help="fit iterations (default 30000)")
    parser.add_argument("--train-fraction", type=float, default=None, help="fraction of training views used")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_config_arguments(parser, (PoseConfig, PoseConfig()), (MapConfig, MapConfig()))
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    from ..fitting import FitConfig

    fit = FitConfig(resolution=args.resolution)
    if args.iterations is not None:
        fit = dataclasses.replace(fit, iterations=args.iterations)
    if args.train_fraction is not None:
        fit = dataclasses.replace(fit, train_fraction=args.train_fraction)
    pose_config, map_config = _configs(args)
    evaluate(args.data, args.out, model=args.model, test_poses=args.test_poses, fit_config=fit,
             pose_config=pose_config, map_config=map_config, seed=args.seed, heatmaps=not args.no_heatmaps,
             progress=not args.quiet)
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0


def add_detect_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``splatjax detect --model RUN IMAGES... --out DIR [...]``."""
    parser.add_argument("images", nargs="+", help="query images")
    parser.add_argument("--model", required=True, help="fitted run folder (model.ply, cameras.json)")
    parser.add_argument("--out", default="detect_out", help="output folder (default detect_out)")
    parser.add_argument("--resolution", type=int, default=None, help="image width (default: the training width)")
    parser.add_argument("--camera-angle-x", type=float, default=None, help="horizontal field of view, radians")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_config_arguments(parser, (PoseConfig, PoseConfig(coarse="render")), (MapConfig, MapConfig()))
    return parser


def run_detect(args: argparse.Namespace) -> int:
    pose_config, map_config = _configs(args)
    result = detect(args.model, args.images, args.out, pose_config=pose_config, map_config=map_config,
                    resolution=args.resolution, camera_angle_x=args.camera_angle_x, seed=args.seed,
                    progress=not args.quiet)
    print(f"heatmaps: {Path(args.out) / 'heatmaps'}/, details: {Path(args.out) / 'detections.json'}")
    return 0 if result else 1


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``splatjax demo [--out DIR] [--seed N]``."""
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run_demo(args: argparse.Namespace) -> int:
    demo(args.out, seed=args.seed, progress=not args.quiet)
    return 0
