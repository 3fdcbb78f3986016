"""The ``splatjax`` command line: ``demo | fit | evaluate | detect | toy | bench``.

Nothing imports this module; it only wires arguments to library functions.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _cmd_toy(args: argparse.Namespace) -> int:
    from .data import make_toy_dataset, write_toy_preview

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
