"""Property-based tests (hypothesis) of the command line with damaged inputs (issue 19,
item 6): every damaged file ends `splatjax fit|detect|evaluate` with exit status 2 and one
line on stderr naming the file (or passes the checks: the patched first step of the real
work raises WorkStarted), and leaves the file as it was. Bounded, derandomised; CPU only."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import jax
import pytest
from app_toy import toy_dataset
from dataset_builders import make_blender
from fuzzing import FUZZ, FUZZ_FEW, WorkStarted, damaged_bytes, damaged_json, refuse_work, tree_hash
from hypothesis import given
from hypothesis import strategies as st

import splatjax as sj
from splatjax.app import cli
from splatjax.context import QUIET


@pytest.fixture
def no_work(monkeypatch):
    refuse_work(monkeypatch, ("splatjax.app.detect", "make_feature_extractor"),
                ("splatjax.app.evaluate", "make_feature_extractor"), ("splatjax.app.fit_run", "fit"))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    from splatjax.app.runs import save_cameras
    from splatjax.data import load_mad_train

    root = tmp_path_factory.mktemp("cli_fuzz")
    run = root / "run"
    run.mkdir()
    sj.save_ply(sj.init_random_gaussians(30, key=jax.random.key(0)), run / "model.ply")
    save_cameras(run, load_mad_train(toy_dataset()))
    return {"blender": make_blender(root / "blender", n=3), "run": run, "toy": toy_dataset()}


def _cli(argv, inputs: Path, names, capsys) -> bool:
    """Run the command line on damaged ``inputs``: False when the checks passed (WorkStarted),
    True after exit status 2 with one stderr line naming one of ``names``; the inputs are
    unchanged either way."""
    before = tree_hash(inputs)
    try:
        status = cli.main([str(a) for a in argv])
    except WorkStarted:
        status = None
    err = capsys.readouterr().err
    assert tree_hash(inputs) == before, "an input file was modified"
    if status is None:
        return False
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[splatjax")]
    assert status == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and any(str(n) in lines[0] for n in names), err
    return True


@FUZZ
@given(data=st.data())
def test_fuzz_fit_with_damaged_transforms(base, data, no_work, capsys):
    text = data.draw(damaged_json(json.loads((base["blender"] / "transforms_train.json").read_text())))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(base["blender"], Path(tmp) / "blender"))
        (root / "transforms_train.json").write_text(text)
        _cli(["fit", root, "--out", Path(tmp) / "out", "--quiet"], root, [root], capsys)


@FUZZ
@given(data=st.data())
def test_fuzz_detect_and_evaluate_with_a_damaged_model(base, data, no_work, capsys):
    raw = (base["run"] / "model.ply").read_bytes()
    damaged = data.draw(damaged_bytes(raw, head=raw.index(b"end_header") + 11))
    command = data.draw(st.sampled_from(["detect", "evaluate"]))
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(shutil.copytree(base["run"], Path(tmp) / "run"))
        (run / "model.ply").write_bytes(damaged)
        query = base["toy"] / "test" / "good" / "0.png"
        argv = (["detect", "--model", run, query] if command == "detect"
                else ["evaluate", base["toy"], "--model", run])
        _cli([*argv, "--out", Path(tmp) / "out", "--quiet"], run, ["model.ply"], capsys)


@FUZZ
@given(data=st.data())
def test_fuzz_detect_with_a_damaged_query(base, data, no_work, capsys):
    src = base["toy"] / "test" / "Burrs" / "0.png"
    damaged = data.draw(damaged_bytes(src.read_bytes(), head=64))
    with tempfile.TemporaryDirectory() as tmp:
        q = Path(tmp) / "q" / "0.png"
        q.parent.mkdir()
        q.write_bytes(damaged)
        _cli(["detect", "--model", base["run"], q, "--out", Path(tmp) / "out", "--quiet"], q.parent, [q], capsys)


@FUZZ
@given(data=st.data())
def test_fuzz_evaluate_with_damaged_test_poses(base, data, no_work, capsys):
    from splatjax.data import load_mad_test

    test = load_mad_test(base["toy"])
    poses = {"camera_angle_x": 0.6911112070083618, "poses": {p: [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 4.0],
                                                                  [0, 0, 0, 1.0]] for p in test.paths[:2]}}
    poses["poses"].update({p: poses["poses"][test.paths[0]] for p in test.paths})
    text = data.draw(damaged_json(poses))
    with tempfile.TemporaryDirectory() as tmp:
        tp = Path(tmp) / "tp" / "test_poses.json"
        tp.parent.mkdir()
        tp.write_text(text)
        _cli(["evaluate", base["toy"], "--model", base["run"], "--test-poses", tp, "--out", Path(tmp) / "out",
              "--quiet"], tp.parent, ["test_poses.json"], capsys)


@FUZZ_FEW
@given(data=st.data())
def test_fuzz_detect_with_damaged_cameras_json(base, data, no_work, capsys):
    text = data.draw(damaged_json(json.loads((base["run"] / "cameras.json").read_text())))
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(shutil.copytree(base["run"], Path(tmp) / "run"))
        (run / "cameras.json").write_text(text)
        query = base["toy"] / "test" / "good" / "0.png"
        _cli(["detect", "--model", run, query, "--out", Path(tmp) / "out", "--quiet"], run, ["cameras.json"], capsys)


# ----------------------------------------------------------------------------- checkpoints
FIT_FLAGS = ["--iterations", "200", "--init-points", "300", "--capacity", "1024", "--densify-until", "0",
             "--checkpoint-every", "100", "--quiet"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """A tiny fit of the toy stopped half way (its checkpoint at step 100 of 200), so that
    ``--resume`` has to read the checkpoint (resuming a finished fit reads nothing)."""
    from splatjax.app.fit_run import run_fit
    from splatjax.app.flags import config_from_flags

    run = tmp_path_factory.mktemp("ckpt") / "run"
    args = cli.build_parser().parse_args(["fit", str(toy_dataset()), "--out", str(run), *FIT_FLAGS])
    summary = run_fit(toy_dataset(), run, config_from_flags(sj.FitConfig, args), stop_at=100, context=QUIET)
    assert not summary["completed"] and summary["steps"] == 100
    return run


@FUZZ_FEW
@given(data=st.data())
def test_fuzz_resume_from_a_damaged_checkpoint(fitted, data, capsys):
    files = sorted(str(p.relative_to(fitted)) for p in (fitted / "checkpoints").rglob("*") if p.is_file())
    name = data.draw(st.sampled_from(files))
    damaged = data.draw(damaged_bytes((fitted / name).read_bytes()))
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(shutil.copytree(fitted, Path(tmp) / "run"))
        (run / name).write_bytes(damaged)
        before = tree_hash(run / "checkpoints")
        status = cli.main(["fit", str(toy_dataset()), "--out", str(run), "--resume", *FIT_FLAGS])
        err = capsys.readouterr().err
        assert "Traceback" not in err and status in (0, 2), err
        if status == 2:
            lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[splatjax")]
            assert len(lines) == 1 and str(run) in lines[0], err
            assert tree_hash(run / "checkpoints") == before


# ----------------------------------------------------------------------------- the crashes found, one each
def test_cameras_json_with_infinite_width_is_one_line(base, no_work, tmp_path, capsys):
    run = Path(shutil.copytree(base["run"], tmp_path / "run"))
    cams = json.loads((run / "cameras.json").read_text())
    (run / "cameras.json").write_text(json.dumps({**cams, "width": float("inf")}))
    assert _cli(["detect", "--model", run, base["toy"] / "test" / "good" / "0.png", "--out", tmp_path / "o",
                 "--quiet"], run, ["cameras.json"], capsys)


@pytest.mark.parametrize("name, content", [("meta/metadata", b""), ("arrays/_METADATA", b"{")])
def test_resume_from_a_damaged_checkpoint_file_is_one_line(fitted, name, content, tmp_path, capsys):
    run = Path(shutil.copytree(fitted, tmp_path / "run"))
    step = next(p for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    (step / name).write_bytes(content)
    status = cli.main(["fit", str(toy_dataset()), "--out", str(run), "--resume", *FIT_FLAGS])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and str(run) in err, err
