"""evaluate survives interrupts: SIGINT / SIGTERM stop it at once (also when SIGINT was
ignored at start) with exit status 130 / 143 and a resume line, the finished query batches
stay in OUT/.partial, and --resume gives the report, per_image.csv and poses.json of an
uninterrupted run; a fit-less evaluate interrupted during its fit resumes the fit."""

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from app_toy import FAST_MAP, FAST_POSE, TINY_FIT, toy_dataset
from test_app_evaluate import _fixed_model

from splatjax.app.evaluate import evaluate
from splatjax.errors import UserError
from splatjax.context import QUIET, Context

PARTIAL = ".partial"  # splatjax.app.evaluate.PARTIAL, spelled out so that the tests run (and fail) on older code

METRICS = ("image_auroc", "pixel_auroc", "aupro", "threshold", "heatmap_scale", "pose", "pose_diverged")


def _rows(out: Path) -> list[dict]:
    with open(out / "per_image.csv") as f:
        return list(csv.DictReader(f))


def _batches(out: Path) -> list[str]:
    return sorted(p.name for p in (out / PARTIAL).glob("queries_*.npz"))


class _Stop(Exception):
    pass


def test_resume_after_a_stop_between_batches_gives_the_uninterrupted_results(tmp_path):
    model = _fixed_model(tmp_path / "run")
    kw = dict(model=model, pose_config=replace(FAST_POSE, batch_size=2, steps=3), map_config=FAST_MAP, seed=3,
              heatmaps=False, context=QUIET)
    [whole] = evaluate(toy_dataset(), tmp_path / "whole", **kw)

    def stop_after_two(name, done, total):  # 8 queries, batches of 2: stop after the second of four
        assert total == 8
        if done == 4:
            raise _Stop

    with pytest.raises(_Stop):
        evaluate(toy_dataset(), tmp_path / "cut", on_batch=stop_after_two, **kw)
    assert _batches(tmp_path / "cut") == ["queries_000000_000002.npz", "queries_000002_000004.npz"]
    assert not (tmp_path / "cut" / "report.json").exists()
    with pytest.raises(UserError, match="--resume"):
        evaluate(toy_dataset(), tmp_path / "cut", **kw)
    with pytest.raises(UserError, match="other settings"):
        evaluate(toy_dataset(), tmp_path / "cut", resume=True, **{**kw, "seed": 4})
    said = []
    [resumed] = evaluate(toy_dataset(), tmp_path / "cut", resume=True, **{**kw, "context": Context(log=said.append)})
    assert any("4 of 8 queries done earlier" in m for m in said)
    assert not (tmp_path / "cut" / PARTIAL).exists()
    for k in METRICS:
        assert resumed[k] == whole[k], k
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "whole")
    assert (tmp_path / "cut" / "poses.json").read_text() == (tmp_path / "whole" / "poses.json").read_text()


def _evaluate_cmd(toy: Path, out: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "splatjax.app.cli", "evaluate", str(toy), "--out", str(out), "--model", str(model),
            "--steps", "40", "--batch-size", "1", "--coarse", "render", "--coarse-resolution", "16",
            "--inplane-rotations", "0", "--no-keypoints", "--features", "weights-free", "--calibration-views", "6",
            "--no-heatmaps", "--quiet"]


@pytest.mark.parametrize("sig,ignore_sigint,status", [
    pytest.param("SIGTERM", False, 143, marks=pytest.mark.slow),  # the same handler as the next
    ("SIGINT", True, 130),  # a background job of a non-interactive shell starts with SIGINT ignored
    pytest.param("SIGINT", False, 130, marks=pytest.mark.slow),
])
def test_a_signal_stops_evaluate_at_once_keeping_finished_batches(tmp_path, sig, ignore_sigint, status):
    model, out = _fixed_model(tmp_path / "run"), tmp_path / "out"
    cmd = _evaluate_cmd(toy_dataset(), out, model)  # python -m: splatjax from the current folder, as here
    if ignore_sigint:  # what `cmd &` in a script does (a shell, not preexec_fn: no fork of this JAX process)
        cmd = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *cmd]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / PARTIAL).is_dir() or not _batches(out):  # the first batch is on disk: stop it now
        assert proc.poll() is None and time.monotonic() < deadline, "no batch was written"
        time.sleep(0.02)
    sent = time.monotonic()
    proc.send_signal(getattr(signal, sig))
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{sig} did not stop evaluate")
    print(f"\n{sig}{' (SIGINT ignored at start)' if ignore_sigint else ''}: exited {proc.returncode} "
          f"{time.monotonic() - sent:.2f} s after the signal")
    assert proc.returncode == status, err
    [line] = [m for m in err.splitlines() if "resume with:" in m]
    assert f"stopped by {sig}" in line
    assert _batches(out) and len(_batches(out)) < 8 and not (out / "report.json").exists()
    if sig == "SIGTERM":  # the printed command resumes the evaluation
        from splatjax.app.cli import main

        argv = shlex.split(line.split("resume with: ", 1)[1])
        assert argv[0] == "splatjax" and argv[-1] == "--resume"
        assert main(argv[1:]) == 0
        assert len(_rows(out)) == 8 and not (out / PARTIAL).exists()


@pytest.mark.slow  # the fit's checkpoint on a signal: test_app_fit_run; evaluate's resume: the SIGINT test
def test_a_fit_less_evaluate_interrupted_in_its_fit_resumes_it(tmp_path):
    # SIGTERM while run_fit fits (sent at its first progress line): the chunk ends, a checkpoint
    # is written and evaluate raises Interrupted (143); --resume continues the fit and completes
    fit = replace(TINY_FIT, capacity=8192)  # no buffer resize in these few steps
    kw = dict(fit_config=fit, pose_config=FAST_POSE, map_config=FAST_MAP, heatmaps=False)
    said, sent = [], []
    ticks = lambda *a: None  # noqa: E731  (progress on: the fit's lines are progress, logged only with it)

    def log(msg):
        said.append(msg)
        if msg.startswith("[splatjax fit] step") and not sent:
            sent.append(msg)
            os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt) as stop:  # splatjax.app.interrupts.Interrupted
        evaluate(toy_dataset(), out, context=Context(log=log, progress=ticks), **kw)
    assert type(stop.value).__name__ == "Interrupted" and stop.value.status == 143
    assert not (out / "model" / "model.ply").exists() and any((out / "model" / "checkpoints").iterdir())
    [estimate] = [m for m in said if "--model RUN" in m]
    assert "60 steps" in estimate and "warm-up" in estimate
    with pytest.raises(UserError, match="--resume"):
        evaluate(toy_dataset(), out, context=QUIET, **kw)
    said.clear()
    [r] = evaluate(toy_dataset(), out, resume=True, context=Context(log=said.append, progress=ticks), **kw)
    assert any(m.startswith("[splatjax] resuming the fit at step") and "--model RUN" in m for m in said)
    info = json.loads((out / "model" / "info.json").read_text())
    assert info["completed"] and info["session"] == 2 and info["steps"] == 60
    assert r["fit"]["steps"] == 60 and (out / "report.json").is_file()
