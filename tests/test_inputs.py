"""Input checks done before any work (issue 19, item 3): an unusable --out, a query of
another aspect ratio or flattened onto another background for `detect`, and Blender splits
whose backgrounds disagree. Each is one line naming the file, exit status 2, inputs untouched."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from app_toy import toy_dataset
from dataset_builders import pose, tree_state
from PIL import Image

import splatjax as sj
from splatjax.app import cli
from fuzzing import WorkStarted, refuse_work  # noqa: E402
from splatjax.app.detect import detect
from splatjax.data import load_blender
from splatjax.errors import DatasetError, UserError
from splatjax.context import QUIET


@pytest.fixture
def no_work(monkeypatch):
    """The commands' first slow steps raise WorkStarted."""
    refuse_work(monkeypatch, ("splatjax.app.detect", "make_feature_extractor"), ("splatjax.data", "load_mad_class"),
                ("splatjax.app.fit_run", "fit"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder: a small random model and cameras.json naming the toy's (RGBA, 32 x 32)
    training views, as `fit` writes it."""
    from splatjax.app.runs import save_cameras
    from splatjax.data import load_mad_train

    run = tmp_path_factory.mktemp("run")
    sj.save_ply(sj.init_random_gaussians(50, key=jax.random.key(0)), run / "model.ply")
    save_cameras(run, load_mad_train(toy_dataset()))
    return run


def _cli(argv, capsys) -> tuple[int, list[str]]:
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return status, [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[splatjax")]


def _blender(root: Path, n=2, size=(8, 8)) -> Path:
    """A tiny Blender folder with transparent train and val views."""
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        frames = []
        for i in range(n):
            a = np.zeros((size[1], size[0], 4), np.uint8)
            a[2:-2, 2:-2] = [200, 40, 40, 255]
            Image.fromarray(a).save(root / split / f"r_{i}.png")
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose(i)})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))
    return root


def _flatten(src: Path, dst: Path, colour=(0, 0, 0)) -> Path:
    rgba = Image.open(src).convert("RGBA")
    flat = Image.new("RGB", rgba.size, colour)
    flat.paste(rgba, mask=rgba.split()[3])
    flat.save(dst, format="PNG")
    return dst


# ----------------------------------------------------------------------------- --out
def _out_cases(tmp_path: Path, run_dir: Path) -> list[list]:
    data = _blender(tmp_path / "blend")
    query = toy_dataset() / "test" / "good" / "0.png"
    return [["fit", data, "--quiet"], ["detect", "--model", run_dir, query, "--quiet"],
            ["evaluate", toy_dataset(), "--quiet"]]


@pytest.mark.parametrize("command", ["fit", "detect", "evaluate"])
@pytest.mark.parametrize("where", ["file", "under a file"])
def test_out_that_is_a_file_is_refused_before_any_work(command, where, tmp_path, run_dir, no_work, capsys):
    blocker = tmp_path / "taken.txt"
    blocker.write_text("keep me")
    out = blocker if where == "file" else blocker / "sub" / "run"
    argv = next(c for c in _out_cases(tmp_path, run_dir) if c[0] == command)
    status, lines = _cli([*argv, "--out", out], capsys)
    assert status == 2 and len(lines) == 1, lines
    assert str(out) in lines[0] and "existing file" in lines[0], lines
    assert blocker.read_text() == "keep me"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into a read-only folder")
@pytest.mark.parametrize("command", ["fit", "detect", "evaluate"])
def test_out_in_a_read_only_folder_is_refused(command, tmp_path, run_dir, no_work, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        argv = next(c for c in _out_cases(tmp_path, run_dir) if c[0] == command)
        status, lines = _cli([*argv, "--out", locked / "out"], capsys)
    finally:
        locked.chmod(0o755)
    assert status == 2 and len(lines) == 1 and "not writable" in lines[0], lines


def test_out_check_leaves_nothing_behind(tmp_path):
    from splatjax.app.outdir import check_writable_out

    assert check_writable_out(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []  # neither the folder nor the probe file
    (tmp_path / "run").mkdir()
    check_writable_out(tmp_path / "run")
    assert list((tmp_path / "run").iterdir()) == []


# ----------------------------------------------------------------------------- detect queries
def test_detect_refuses_a_query_of_another_aspect_ratio(tmp_path, run_dir, no_work, capsys):
    query = tmp_path / "wide.png"
    Image.fromarray(np.full((150, 200, 4), 255, np.uint8)).save(query)  # 200 x 150 for a 32 x 32 model
    before = query.read_bytes()
    with pytest.raises(UserError) as info:
        detect(run_dir, [query], tmp_path / "det", context=QUIET)
    msg = str(info.value)
    assert "\n" not in msg and str(query) in msg and "200x150" in msg and "32x32" in msg, msg
    status, lines = _cli(["detect", "--model", run_dir, query, "--out", tmp_path / "det2", "--quiet"], capsys)
    assert status == 2 and len(lines) == 1 and "200x150" in lines[0]
    assert query.read_bytes() == before and not (tmp_path / "det").exists()


def test_detect_accepts_a_query_of_the_models_aspect_at_another_size(tmp_path, run_dir, no_work):
    query = tmp_path / "big.png"
    Image.open(toy_dataset() / "test" / "good" / "0.png").resize((64, 64)).save(query)
    with pytest.raises(WorkStarted):  # passed the checks
        detect(run_dir, [query], tmp_path / "det", context=QUIET)


def test_detect_refuses_a_query_flattened_on_black_as_fit_does(tmp_path, run_dir, no_work):
    src = toy_dataset() / "test" / "good" / "0.png"
    black = _flatten(src, tmp_path / "on_black.png")
    with pytest.raises(DatasetError) as info:
        detect(run_dir, [src, black], tmp_path / "det", context=QUIET)
    assert str(black) in str(info.value) and "\n" not in str(info.value)
    # the same rule as the loaders apply to an image among transparent ones
    from splatjax.data.images import _read_stack

    with pytest.raises(DatasetError, match="on_black.png"):
        _read_stack([src, black], background=(1.0, 1.0, 1.0), resolution=None)
    white = _flatten(src, tmp_path / "on_white.png", (255, 255, 255))
    with pytest.raises(WorkStarted):  # transparent, or flattened on the background: accepted
        detect(run_dir, [src, white], tmp_path / "det", context=QUIET)


def test_detect_without_cameras_names_the_query_of_another_aspect(tmp_path, run_dir, no_work):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "model.ply", bare / "model.ply")
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(np.full((32, 32, 4), 0, np.uint8)).save(a)
    Image.fromarray(np.full((24, 32, 4), 0, np.uint8)).save(b)
    with pytest.raises(UserError) as info:
        detect(bare / "model.ply", [a, b], tmp_path / "det", context=QUIET)
    msg = str(info.value)
    assert str(b) in msg and "32x24" in msg and "resolution" not in msg, msg
    Image.fromarray(np.full((64, 64, 4), 0, np.uint8)).save(b)  # same aspect, other size: one shape
    with pytest.raises(WorkStarted):
        detect(bare / "model.ply", [a, b], tmp_path / "det", context=QUIET)


# ----------------------------------------------------------------------------- Blender splits
def test_blender_train_on_black_with_transparent_val_is_refused(tmp_path, no_work, capsys):
    root = _blender(tmp_path / "blend")
    for i in range(2):
        _flatten(root / "train" / f"r_{i}.png", root / "train" / f"r_{i}.png")
    before = tree_state(root)
    with pytest.raises(DatasetError) as info:
        load_blender(root, "train")
    msg = str(info.value)
    assert "r_0.png" in msg and "transforms_val.json" in msg and "\n" not in msg, msg
    status, lines = _cli(["fit", root, "--out", tmp_path / "run", "--quiet"], capsys)
    assert status == 2 and len(lines) == 1 and "r_0.png" in lines[0], lines
    assert tree_state(root) == before


def test_blender_val_on_black_with_transparent_train_is_refused(tmp_path):
    root = _blender(tmp_path / "blend")
    _flatten(root / "val" / "r_1.png", root / "val" / "r_1.png")
    load_blender(root, "train")  # the train split itself is fine
    with pytest.raises(DatasetError, match="r_1.png"):
        load_blender(root, "val")


def test_blender_splits_on_the_background_or_all_transparent_are_accepted(tmp_path):
    root = _blender(tmp_path / "blend")
    assert load_blender(root, "val").images.shape == (2, 8, 8, 3)
    for i in range(2):  # opaque, flattened on the (white) background: consistent
        _flatten(root / "train" / f"r_{i}.png", root / "train" / f"r_{i}.png", (255, 255, 255))
    assert load_blender(root, "train").images.shape == (2, 8, 8, 3)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (a folder no one can write into)")
@pytest.mark.parametrize("command", ["fit", "detect", "evaluate"])
def test_out_where_no_file_can_be_created_is_refused(command, tmp_path, run_dir, no_work, capsys):
    """Works as root too (/proc takes no new files)."""
    argv = next(c for c in _out_cases(tmp_path, run_dir) if c[0] == command)
    status, lines = _cli([*argv, "--out", "/proc/splatjax-out"], capsys)
    assert status == 2 and len(lines) == 1 and "/proc/splatjax-out" in lines[0] and "not writable" in lines[0], lines
