"""The ``splatjax`` command line: ``demo | toy | synth | fit | evaluate | detect``.

Flags of the engine's options are generated from the config dataclasses
(:mod:`splatjax.app.flags`); this module adds only what belongs to the application (data
paths, output folders, ``--resume``, ``--quiet``) and turns errors into messages:

- a :class:`~splatjax.errors.UserError` (bad data, bad option, missing weights) prints one
  line ``splatjax <command>: error: <message>`` and exits with status 2;
- a bad flag value or unknown flag (argparse) prints one line and exits with status 2;
- SIGINT (Ctrl-C) and SIGTERM print one line and exit with status 130 / 143 (``fit`` and
  ``evaluate`` first keep their finished work and say how to ``--resume``);
- ``--debug`` (before or after the command) shows the full traceback instead.

``splatjax --version`` prints ``splatjax X.Y.Z``. Log and progress lines go to stderr,
results to stdout, and ``--quiet`` silences the logs (:mod:`splatjax.app.commands`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import ConfigError, UserError

__all__ = ["main", "build_parser"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the flag, not usage + error."""

    def error(self, message: str):  # noqa: D102 (argparse API)
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USER_ERROR)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks for errors")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (flags generated from FitConfig, PoseConfig and MapConfig)."""
    from .. import __version__
    from . import commands

    parser = _OneLineParser(
        prog="splatjax",
        description="Pose-agnostic 3D anomaly detection with 3D Gaussian splatting (SplatPose) in JAX.",
    )
    _common(parser)
    parser.add_argument("--version", action="version", version=f"splatjax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    for name, (helptext, add, run) in commands.COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        _common(p)
        add(p)
        p.set_defaults(func=run)
    return parser


def _message(err: UserError) -> str:
    if isinstance(err, ConfigError):
        return f"{err.flag}: {err.detail}"
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 user error, 130 / 143
    interrupted by SIGINT / SIGTERM)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = build_parser().parse_args(argv)
    prog = f"splatjax {args.command}"
    from .interrupts import StopSignals

    try:
        from ..render import placement

        # SIGINT (even when ignored at start) and SIGTERM end the command cleanly; `--backend
        # cpu` on a GPU machine runs every program on the CPU device
        with StopSignals(), placement(getattr(args, "backend", "auto")):
            return int(args.func(args) or 0)
    except UserError as err:
        if debug:
            raise
        sys.stderr.write(f"{prog}: error: {_message(err)}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt as stop:
        if debug:
            raise
        name = getattr(stop, "signal_name", "SIGINT")
        sys.stderr.write(f"{prog}: interrupted ({name})\n")
        return getattr(stop, "status", EXIT_INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
