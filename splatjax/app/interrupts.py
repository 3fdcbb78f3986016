"""Stopping long application runs at once on SIGINT / SIGTERM, keeping finished work.

:class:`StopSignals` installs handlers for both signals explicitly (so a job started in
the background, where a non-interactive shell starts it with SIGINT ignored, stops too)
that raise :class:`Interrupted` in the main thread. A Python signal handler runs only
between bytecodes of the main thread, so a long compiled (XLA) call would delay it until
the call returns; :func:`run_in_worker` therefore runs such work in a daemon thread while
the main thread waits in short ``join`` slices, and on a signal leaves the worker behind.
Finished work must be persisted with atomic writes under :func:`run_in_worker`'s
``lock``: the main thread takes the lock before it lets the interrupt propagate, so a
write in progress completes and none begins afterwards (``cancelled`` is then set).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Interrupted", "StopSignals", "Worker", "run_in_worker"]


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal. ``signal_name`` ("SIGINT", "SIGTERM"), ``status``
    (128 + the signal number: 130, 143), ``worker_alive``: a worker thread was left
    running a compiled call (a command line should then end with ``os._exit``)."""

    def __init__(self, signal_name: str, *, worker_alive: bool = False):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.worker_alive = worker_alive

    @property
    def status(self) -> int:
        return 128 + int(signal.Signals[self.signal_name])


class StopSignals:
    """While active in the main thread, SIGINT and SIGTERM raise :class:`Interrupted`
    (the previous handlers come back on exit); elsewhere a no-op. A nested handler
    (e.g. :func:`splatjax.app.fit_run.run_fit`'s own) takes over while it is installed."""

    def __init__(self):
        self._old: dict = {}

    def _handle(self, signum, frame):
        """Raise :class:`Interrupted` (subclasses may record the request instead)."""
        raise Interrupted(signal.Signals(signum).name)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


class Worker:
    """The lock that guards persisting finished work, and whether the run was cancelled."""

    def __init__(self):
        self.lock = threading.Lock()
        self.cancelled = False


def run_in_worker(fn: Callable[[], Any], worker: Worker, *, slice_s: float = 0.2) -> Any:
    """``fn()`` in a daemon thread, the calling (main) thread waiting in ``slice_s``
    slices so that signal handlers run at once. An exception in the wait (e.g.
    :class:`Interrupted`) takes ``worker.lock``, sets ``worker.cancelled`` and propagates
    with ``worker_alive`` set; ``fn``'s own exceptions propagate as they are. Outside
    the main thread ``fn`` runs directly."""
    if threading.current_thread() is not threading.main_thread():
        return fn()
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 (handed to the waiting thread)
            box["error"] = e

    thread = threading.Thread(target=target, name="splatjax-worker", daemon=True)
    try:
        thread.start()
        while thread.is_alive():
            thread.join(slice_s)
    except BaseException as e:
        with worker.lock:
            worker.cancelled = True
        if isinstance(e, Interrupted):
            e.worker_alive = thread.is_alive()
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]
