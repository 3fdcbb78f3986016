"""Context: where a long stage reports, passed as one value instead of separate ``log`` and
``progress`` arguments through every layer.

A stage never prints: it calls ``context.say(message)`` for one-off notes (which coarse
method "auto" chose, a weights file it loaded) and ``context.tick(stage, done, total)``
after each unit of work (a chunk of queries, a training view). The default
:data:`QUIET` drops both; the command line builds one with a stderr log and progress bars
(:func:`splatjax.app.logs.run_context`). A context never changes a result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

__all__ = ["Log", "Progress", "Context", "QUIET"]

#: A sink for one-line messages.
Log = Callable[[str], object]
#: ``progress(stage, done, total)``: ``done`` of ``total`` units of ``stage`` finished.
Progress = Callable[[str, int, int], object]


@dataclasses.dataclass(frozen=True)
class Context:
    """``log`` (None: messages dropped) and ``progress`` (None: no progress reports)."""

    log: Log | None = None
    progress: Progress | None = None

    def say(self, message: str) -> None:
        """Send ``message`` to the log, if there is one."""
        if self.log is not None:
            self.log(message)

    def tick(self, stage: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` units of ``stage``, if progress is wanted."""
        if self.progress is not None:
            self.progress(stage, done, total)


#: The context that reports nothing.
QUIET = Context()
