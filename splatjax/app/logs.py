"""The application's one log stream: log lines and progress go to stderr, results to stdout.

:func:`console_context` is the default :class:`~splatjax.context.Context` of every
application function (``run_fit``, ``evaluate``, ``detect``, ``demo``): ``log_stderr`` for
messages and ``progress_bars``; with ``quiet`` (``--quiet``) it says nothing. ``progress_bars``
draws tqdm bars when stderr is a terminal and writes plain progress lines otherwise (a
log file, a pipe, a batch job), at most one per stage every ``PROGRESS_SECONDS`` or every
``PROGRESS_FRACTION`` of the work, plus the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from ..context import QUIET, Context

__all__ = ["console_context", "log_stderr", "no_log", "progress_bars", "PROGRESS_SECONDS", "PROGRESS_FRACTION"]

#: On a non-terminal stderr, a progress line at most this often (seconds) ...
PROGRESS_SECONDS = 10.0
#: ... or when this much more of the stage is done (and always at its end).
PROGRESS_FRACTION = 0.1

_LINE = "{n_fmt}/{total_fmt} ({percentage:.0f}%), {elapsed} elapsed"


def log_stderr(msg: str) -> None:
    """The default ``log`` of the application: one line to stderr."""
    print(msg, file=sys.stderr, flush=True)


def no_log(msg: str) -> None:
    """The ``--quiet`` ``log``: says nothing."""


def _progress_lines(write: Callable[[str], object]) -> Callable[[str, int, int], None]:
    """``progress(stage, done, total)`` writing ``[splatjax] STAGE: done/total (p%), elapsed,
    ETA`` lines (ETA once a rate is known, not at the end); elapsed time and rate count
    from the stage's first report."""
    from tqdm import tqdm

    stages: dict[str, dict] = {}

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        s = stages.get(stage)
        if s is None or s["total"] != total or done < s["done"]:
            s = stages[stage] = {"total": total, "t0": now, "first": done, "done": done, "said_t": None,
                                 "said_done": 0}
        s["done"] = done
        end = done >= total
        due = (s["said_t"] is None or now - s["said_t"] >= PROGRESS_SECONDS
               or (done - s["said_done"]) >= PROGRESS_FRACTION * total)
        if end or due:
            eta = not end and done > s["first"]  # a rate is known
            line = tqdm.format_meter(done, total, now - s["t0"], initial=s["first"],
                                     bar_format=_LINE + (", ETA {remaining}" if eta else ""))
            write(f"[splatjax] {stage}: {line}")
            s["said_t"], s["said_done"] = now, done
        if end:
            del stages[stage]

    return progress


def progress_bars(enabled: bool = True) -> Callable[[str, int, int], None] | None:
    """A ``progress(stage, done, total)`` callback on stderr (None when disabled): one tqdm
    bar per stage on a terminal, plain lines (:data:`PROGRESS_SECONDS`,
    :data:`PROGRESS_FRACTION`) otherwise."""
    if not enabled:
        return None
    if not _is_terminal(sys.stderr):
        return _progress_lines(log_stderr)
    from tqdm.auto import tqdm

    bars: dict[str, object] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
                bar.close()
            bar = bars[stage] = tqdm(total=total, desc=stage, leave=False, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            del bars[stage]

    return progress


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def console_context(quiet: bool = False) -> Context:
    """The application's context: messages (:func:`log_stderr`) and progress
    (:func:`progress_bars`) on stderr; ``quiet``: neither (:data:`~splatjax.context.QUIET`)."""
    return QUIET if quiet else Context(log=log_stderr, progress=progress_bars(True))
