"""The ``splatjax`` command line: ``demo | fit | evaluate | detect | toy | bench``.

Nothing imports this module; it only wires arguments to library functions.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _cmd_toy(args: argparse.Namespace) -> int:
    from ..data import make_toy_dataset, write_toy_preview

    root = make_toy_dataset(args.out, seed=args.seed, resolution=args.resolution)
    preview = write_toy_preview(root, root.parent / f"{root.name}_preview.png")
    print(f"toy dataset: {root}\npreview:     {preview}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splatjax",
        description="Pose-agnostic 3D anomaly detection with 3D Gaussian splatting (SplatPose) in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    toy = sub.add_parser("toy", help="generate the built-in toy object (MAD-Sim layout) and a preview image")
    toy.add_argument("--out", default="demo_out/toy", help="output folder (default: demo_out/toy)")
    toy.add_argument("--seed", type=int, default=0)
    toy.add_argument("--resolution", type=int, default=128)
    toy.set_defaults(func=_cmd_toy)

    from ..fitting import add_fit_arguments, run_fit_from_args

    fit_p = sub.add_parser("fit", help="fit the defect-free 3DGS model to a Blender/NeRF or MAD-Sim class folder")
    add_fit_arguments(fit_p)
    fit_p.set_defaults(func=run_fit_from_args)

    from .pipeline import (
        add_demo_arguments,
        add_detect_arguments,
        add_evaluate_arguments,
        run_demo,
        run_detect,
        run_evaluate,
    )

    ev = sub.add_parser("evaluate", help="pose-agnostic evaluation of MAD-Sim class folder(s)")
    add_evaluate_arguments(ev)
    ev.set_defaults(func=run_evaluate)
    det = sub.add_parser("detect", help="anomaly maps and scores for new images of a fitted object")
    add_detect_arguments(det)
    det.set_defaults(func=run_detect)
    demo = sub.add_parser("demo", help="toy object end to end: generate, fit, evaluate, print the numbers")
    add_demo_arguments(demo)
    demo.set_defaults(func=run_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
