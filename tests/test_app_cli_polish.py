"""The command line's surface: ``--version``, ``--help`` (one default per flag, named
metavars, true texts), one log stream (logs and progress on stderr, results on stdout,
``--quiet`` silences the logs) and the demo's printed numbers read from its report."""

from __future__ import annotations

import functools
import re
import time
import tomllib
from pathlib import Path

import pytest
from app_toy import FAST_POSE, evaluated_toy, toy_dataset, verdict_line

import splatjax as sj
from splatjax.app import cli
from splatjax.app.logs import progress_bars
from splatjax.files import read_json

COMMANDS = ("demo", "toy", "fit", "evaluate", "detect")
# the flags of FAST_POSE / FAST_MAP (tests/app_toy.py), so the compiled programs are shared
FAST_FLAGS = ["--steps", "4", "--screen-steps", "4", "--batch-size", "4", "--coarse", "render", "--coarse-resolution", "16",
              "--inplane-rotations", "0", "--no-keypoints", "--features", "weights-free", "--calibration-views", "6"]


def _subparser(name: str):
    parser = cli.build_parser()
    [sub] = [a for a in parser._actions if a.dest == "command"]
    return sub.choices[name]


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"splatjax {sj.__version__}\n"
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert sj.__version__ == pyproject["project"]["version"]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_each_default_once_and_named_metavars(name):
    sub = _subparser(name)
    text = " ".join(sub.format_help().split())
    assert not re.search(r"\(default[^)]*\) \(default", text), text
    assert not re.search(r"\bSTR\b", text)
    for action in sub._actions:
        assert (action.help or "").count("(default") <= 1, action.option_strings
        # every flag a help text names is a flag of this command
        for flag in re.findall(r"--[a-z][a-z0-9-]*", action.help or ""):
            assert flag in sub._option_string_actions, (action.option_strings, flag)


def test_help_texts_of_resolution_flags_are_true():
    fit = _subparser("fit")
    helps = {a.dest: " ".join((a.help or "").split()) for a in fit._actions}
    assert "capped" not in helps["upsample"] and "refused" in helps["upsample"]  # fit_run: refused, not capped
    assert not re.search(r"(?<!FitConfig\.)\binit_extent\b", helps["init_points"])  # no such flag
    metavars = {a.dest: a.metavar for a in _subparser("evaluate")._actions}
    assert metavars["model"] == metavars["test_poses"] == "PATH" and metavars["init_ply"] == "FILE"
    assert metavars["out"] == "DIR" and metavars["efficientnet_weights"] == "FILE"


# ----------------------------------------------------------------------------- progress lines
def test_progress_on_a_non_terminal_is_plain_lines_at_a_modest_rate(capsys, monkeypatch):
    clock = iter(range(0, 10**6, 1))  # one "second" per update
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    progress = progress_bars(True)
    for done in range(1, 201):
        progress("fine pose", done, 200)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert all(line.startswith("[splatjax] fine pose: ") for line in lines)
    assert lines[-1].startswith("[splatjax] fine pose: 200/200 (100%)")
    assert "ETA" in lines[1] and "elapsed" in lines[1] and "ETA" not in lines[-1]
    # 200 updates, one a second: a line at most every 10 s or 10 %, plus the first and the end
    assert 10 <= len(lines) <= 2 + 200 / 10
    assert progress_bars(False) is None


# ----------------------------------------------------------------------------- one log stream
@pytest.fixture(scope="module")
def model() -> Path:
    out, _ = evaluated_toy()
    return out / "model"


@pytest.fixture
def fresh_messages(monkeypatch):
    """Messages said once per process (the feature choice) said again, as in a fresh process."""
    from splatjax.anomaly import features

    monkeypatch.setattr(features, "_ANNOUNCED", set())


def _run(argv, capsys) -> tuple[str, str]:
    capsys.readouterr()
    assert cli.main([str(a) for a in argv]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


@pytest.mark.parametrize("quiet", [True, False])
def test_detect_says_verdicts_on_stdout_and_logs_on_stderr(quiet, model, tmp_path, capsys, fresh_messages):
    images = [toy_dataset() / "test" / "good" / "0.png", toy_dataset() / "test" / "Burrs" / "0.png"]
    out, err = _run(["detect", "--model", model, *images, "--out", tmp_path / "det", *FAST_FLAGS,
                     *(["--quiet"] if quiet else [])], capsys)
    result = read_json(tmp_path / "det" / "detections.json")
    verdicts = [verdict_line(i, result) for i in result["images"]]
    assert out.splitlines() == [*verdicts, f"heatmaps: {tmp_path / 'det' / 'heatmaps'}/, "
                                           f"details: {tmp_path / 'det' / 'detections.json'}"]
    if quiet:
        assert err == ""
    else:
        assert "[splatjax] heatmaps: 2/2 (100%)" in err  # progress lines on a non-terminal stderr
        assert "[splatjax] anomaly features: weights-free" in err


@pytest.mark.parametrize("quiet", [True, False])
def test_evaluate_says_the_table_on_stdout_and_logs_on_stderr(quiet, model, tmp_path, capsys, fresh_messages):
    out, err = _run(["evaluate", toy_dataset(), "--model", model, "--out", tmp_path / "ev", "--no-heatmaps",
                     *FAST_FLAGS, *(["--quiet"] if quiet else [])], capsys)
    assert "[splatjax" not in out
    assert out.rstrip().endswith(f"report: {tmp_path / 'ev' / 'report.json'}")
    assert read_json(tmp_path / "ev" / "report.json")["class"] in out  # the table
    if quiet:
        assert err == ""
    else:
        assert "training views" in err and "[splatjax] queries: 8/8 (100%)" in err


@pytest.mark.parametrize("quiet", [True, False])
def test_fit_logs_to_stderr_and_says_its_summary_on_stdout(quiet, tmp_path, capsys):
    steps = 100  # one compiled chunk, no densification
    flags = ["--iterations", steps, "--init-points", 600, "--capacity", 2048, "--densify-from", 0, "--densify-until", 0,
             "--opacity-reset-every", 3000, "--checkpoint-every", 10**6, "--val-every", 10**6]
    out, err = _run(["fit", toy_dataset(), "--out", tmp_path / "run", *flags, *(["--quiet"] if quiet else [])],
                    capsys)
    summary = read_json(tmp_path / "run" / "info.json")
    assert out.splitlines() == [sj.app.fit_run.summary_line(summary), f"model: {tmp_path / 'run' / 'model.ply'}"]
    if quiet:
        assert err == ""
    else:
        assert f"[splatjax fit] step {steps}/{steps}" in err


def test_demo_prints_its_reports_numbers_and_is_quiet_with_quiet(model, tmp_path, capsys, monkeypatch, fresh_messages):
    from splatjax.app import demo as demo_module

    # a small toy object, and the fitted toy model instead of a fit (the demo's own is minutes)
    tiny = functools.partial(demo_module.demo, pose_config=FAST_POSE,
                             toy={"resolution": 32, "num_train": 12, "num_test_per_type": 2})
    monkeypatch.setattr(demo_module, "demo", tiny)
    monkeypatch.setattr(demo_module, "evaluate_class", functools.partial(demo_module.evaluate_class, model=model))
    out, err = _run(["demo", "--out", tmp_path / "d", "--features", "weights-free", "--calibration-views", "6",
                     "--quiet"], capsys)
    assert err == ""
    report = read_json(tmp_path / "d" / "eval" / "report.json")
    assert out == demo_module.summary_text(report, tmp_path / "d", tmp_path / "d" / "toy_preview.png") + "\n"
    assert f"{report['seconds']['total']:.1f} s" in out and f"{report['queries_per_second']:.2f} queries/s" in out


def test_demo_summary_numbers_are_the_reports():
    from splatjax.app.demo import summary_text

    out, report = evaluated_toy()
    text = summary_text(report, out.parent, out.parent / "toy_preview.png")
    sec = report["seconds"]
    assert f"time         {sec['total']:.1f} s evaluation in total (fit {sec['fit']:.1f} s)" in text
    assert f"{report['queries_per_second']:.2f} queries/s over {report['num_test_images']} test images" in text
    assert f"image AUROC  {report['image_auroc']:.3f}" in text and f"threshold    {report['threshold']:.4g}" in text


def test_quiet_fit_still_says_how_to_resume_after_an_interrupt(tmp_path, capsys, monkeypatch):
    from splatjax.app import fit_run

    def interrupted(data, out, config, *, resume, context, val_split, stop_at=None):
        context.say("a log line --quiet silences")
        return {"steps_this_session": 40, "steps": 40, "iterations": 100, "seconds": 2.0, "steps_per_second": 20.0,
                "num_gaussians": 600, "final_psnr": 10.0, "completed": False, "interrupted": "SIGINT"}

    monkeypatch.setattr(fit_run, "run_fit", interrupted)
    assert cli.main(["fit", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--quiet"]) == 130
    captured = capsys.readouterr()
    assert captured.out.startswith("40 steps this session (40 of 100)")
    assert captured.err == f"splatjax fit: interrupted at step 40; resume with: splatjax fit {tmp_path / 'run'} --resume\n"
