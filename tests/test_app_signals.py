"""Every command ends cleanly on SIGINT (also when a background job started with it
ignored) and SIGTERM: one line on stderr, exit status 130 / 143, no traceback."""

from __future__ import annotations

import os
import signal
import time

import pytest

from splatjax.app import cli, commands


@pytest.mark.parametrize("sig, ignored_first, status", [(signal.SIGTERM, False, 143), (signal.SIGINT, True, 130),
                                                        (signal.SIGINT, False, 130)],
                         ids=["SIGTERM", "SIGINT-ignored-at-start", "SIGINT"])
def test_a_signal_ends_any_command_with_its_status(sig, ignored_first, status, monkeypatch, capsys):
    def toy_that_gets_a_signal(args):
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler raises during the sleep
        raise AssertionError("the signal did not stop the command")

    helptext, add, _ = commands.COMMANDS["toy"]
    monkeypatch.setitem(commands.COMMANDS, "toy", (helptext, add, toy_that_gets_a_signal))
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if ignored_first:  # as `cmd &` in a non-interactive shell starts it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert cli.main(["toy", "--out", "unused"]) == status
    finally:
        for s, h in before.items():
            signal.signal(s, h)
    err = capsys.readouterr().err
    assert err == f"splatjax toy: interrupted ({sig.name})\n"


def test_handlers_are_given_back_after_the_command(monkeypatch):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    helptext, add, _ = commands.COMMANDS["toy"]
    monkeypatch.setitem(commands.COMMANDS, "toy", (helptext, add, lambda args: 0))
    assert cli.main(["toy"]) == 0
    assert {s: signal.getsignal(s) for s in before} == before
