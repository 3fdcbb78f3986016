"""Run folders are relocatable: a model copied anywhere (``cp -r``, ``cp`` of its files,
``rsync -a``) and used from another folder finds its training images, keeps its heatmap
calibration (keyed on the model's content, not its file time) and gives byte-identical
``detect`` output; missing training images are said, and the moved-render stand-in
calibration never takes the place of the image-based one. detect's files have the umask's
mode."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from app_toy import random_run, toy_dataset
from test_files_mode import umask

from splatjax.app import cli
from splatjax.app.calibration import CALIBRATION_FILE
from splatjax.app.runs import CAMERAS_FILE, load_cameras, save_cameras
from splatjax.data import load_mad_train

MOVED_RENDERS = "/moved-renders"  # key suffix of the stand-in calibration in map_calibration.json
FAST_FLAGS = ["--features", "weights-free", "--calibration-views", "6", "--steps", "4", "--batch-size", "4",
              "--coarse", "render", "--coarse-resolution", "16", "--inplane-rotations", "0", "--no-keypoints",
              "--quiet"]


def _detect_cli(model, queries, out, *, quiet: bool = True) -> None:
    flags = FAST_FLAGS if quiet else [f for f in FAST_FLAGS if f != "--quiet"]
    assert cli.main(["detect", "--model", str(model), *map(str, queries), "--out", str(out), *flags]) == 0


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_copied_model_gives_byte_identical_detections_from_any_folder(tmp_path, monkeypatch):
    toy = toy_dataset()
    monkeypatch.chdir(toy.parent)  # the fit's folder: the dataset is given relative to it
    run = random_run(tmp_path / "project" / "run", Path(toy.name))
    queries = [Path(toy.name) / "test" / "good" / "0.png", Path(toy.name) / "test" / "Burrs" / "1.png"]
    with umask(0o027):  # and every file of the run is written with the user's umask
        _detect_cli(run, queries, tmp_path / "det0")
    reference = _outputs(tmp_path / "det0")
    assert set(reference) == {"detections.json", "maps.npy", "heatmaps/good_0.png", "heatmaps/Burrs_1.png"}
    assert {f: stat.S_IMODE((tmp_path / "det0" / f).stat().st_mode) for f in reference} == dict.fromkeys(
        reference, 0o640)
    assert stat.S_IMODE((run / CALIBRATION_FILE).stat().st_mode) == 0o640
    [key] = json.loads((run / CALIBRATION_FILE).read_text())
    assert not key.endswith(MOVED_RENDERS)  # calibrated on the training images

    copies = tmp_path / "copies"
    copies.mkdir()
    subprocess.run(["cp", "-r", str(run), str(copies / "cp_r")], check=True)
    (copies / "cp_files").mkdir()
    subprocess.run(["cp", *[str(p) for p in run.iterdir() if p.is_file()], str(copies / "cp_files")], check=True)
    (copies / "cp_model_and_cameras").mkdir()  # no calibration, no info.json: measured again, the same
    subprocess.run(["cp", str(run / "model.ply"), str(run / CAMERAS_FILE), str(copies / "cp_model_and_cameras")],
                   check=True)
    if shutil.which("rsync"):
        subprocess.run(["rsync", "-a", f"{run}/", str(copies / "rsync_a")], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a third folder; the queries given as absolute paths now
    for copy in sorted(copies.iterdir()):
        _detect_cli(Path("..") / "copies" / copy.name, [toy / q.relative_to(toy.name) for q in queries],
                    Path(f"det_{copy.name}"))
        got = _outputs(elsewhere / f"det_{copy.name}")
        assert sorted(got) == sorted(reference), copy.name
        assert [f for f in reference if got[f] != reference[f]] == [], copy.name
    detections = json.loads(reference["detections.json"])
    assert "model" not in detections and len(detections["model_sha256"]) == 64
    assert [i["path"] for i in detections["images"]] == [str(toy / q.relative_to(toy.name)) for q in queries]


def test_missing_training_images_are_said_and_never_mixed_with_found_ones(tmp_path, capsys):
    data = Path(shutil.copytree(toy_dataset(), tmp_path / "data" / "toy"))
    run = random_run(tmp_path / "run", data)
    query = [toy_dataset() / "test" / "good" / "0.png"]

    def run_detect(name):
        capsys.readouterr()
        _detect_cli(run, query, tmp_path / name, quiet=False)
        said = capsys.readouterr()
        lines = (said.out + said.err).splitlines()
        return json.loads((tmp_path / name / "detections.json").read_text())["threshold"], lines

    (tmp_path / "data").rename(tmp_path / "away")
    stand_in, lines = run_detect("det_missing")
    assert sum("training images not found" in m for m in lines) == 1
    assert any("moved poses" in m for m in lines)
    assert [k.endswith(MOVED_RENDERS) for k in json.loads((run / CALIBRATION_FILE).read_text())] == [True]

    (tmp_path / "away").rename(tmp_path / "data")  # found again: measured on the images, under its own key
    with_images, lines = run_detect("det_found")
    assert not any("not found" in m or "moved poses" in m for m in lines)
    assert with_images != stand_in
    stored = json.loads((run / CALIBRATION_FILE).read_text())
    assert sorted(k.endswith(MOVED_RENDERS) for k in stored) == [False, True]

    (tmp_path / "data").rename(tmp_path / "away")  # missing again: the image-based scale is kept
    again, lines = run_detect("det_missing_again")
    assert again == with_images
    assert any("training images not found" in m for m in lines) and not any("moved poses" in m for m in lines)


def test_cameras_files_are_read_from_any_folder(tmp_path, monkeypatch):
    toy = toy_dataset()
    train = load_mad_train(toy)
    wanted = [str(toy / "train" / "good" / Path(p).name) for p in train.paths]
    # an older cameras.json: paths relative to the folder the fit ran from
    run = tmp_path / "old_run"
    run.mkdir()
    monkeypatch.chdir(toy.parent)
    save_cameras(run, train)
    data = json.loads((run / CAMERAS_FILE).read_text())
    data["paths"] = [f"{toy.name}/train/good/{Path(p).name}" for p in train.paths]
    del data["paths_from_run"]
    (run / CAMERAS_FILE).write_text(json.dumps(data))
    assert load_cameras(run)["paths"] == data["paths"]  # from the original folder: as recorded
    monkeypatch.chdir(tmp_path)
    assert load_cameras(run)["paths"] == [None] * len(wanted)  # elsewhere, and no dataset recorded
    (run / "info.json").write_text(json.dumps({"data": str(toy.resolve())}))
    assert load_cameras(run)["paths"] == [str(Path(p).resolve()) for p in wanted]  # re-rooted in info.json's
    # a run folder moved together with its dataset: found relative to the run folder
    project = tmp_path / "project"
    shutil.copytree(toy, project / "data" / "toy")
    save_cameras(project / "run", load_mad_train(project / "data" / "toy"))
    assert json.loads((project / "run" / CAMERAS_FILE).read_text())["paths"][0] == str(
        (project / "data" / "toy" / "train" / "good" / Path(train.paths[0]).name).resolve())
    project.rename(tmp_path / "moved")
    found = load_cameras(tmp_path / "moved" / "run")["paths"]
    assert found == [str(tmp_path / "moved" / "run" / ".." / "data" / "toy" / "train" / "good" / Path(p).name)
                     for p in train.paths]
    assert all(Path(p).is_file() for p in found)


def test_a_fit_run_without_cameras_json_finds_its_training_images(tmp_path):
    """``splatjax fit`` writes no cameras.json: the views come from config.json and the
    dataset named in info.json, now with their image paths (so detect calibrates on them)."""
    toy = toy_dataset()
    run = tmp_path / "run"
    run.mkdir()
    (run / "info.json").write_text(json.dumps({"data": str(toy.resolve())}))
    (run / "config.json").write_text(json.dumps({"image_size": [32, 32], "train_views": [0, 2, 5]}))
    cams = load_cameras(run)
    train = load_mad_train(toy)
    assert cams["c2w"].shape == (3, 4, 4)
    assert [Path(p).resolve() for p in cams["paths"]] == [Path(train.paths[i]).resolve() for i in (0, 2, 5)]


@pytest.mark.parametrize("mode", ["cp", "touch"])
def test_old_or_touched_calibration_entries(tmp_path, mode):
    """An entry keyed on the file time (older runs) is measured again; a copy with a new
    file time but the same content reuses the stored one."""
    run = random_run(tmp_path / "run")
    q = [toy_dataset() / "test" / "good" / "0.png"]
    _detect_cli(run, q, tmp_path / "a")
    first = json.loads((tmp_path / "a" / "detections.json").read_text())["threshold"]
    stored = json.loads((run / CALIBRATION_FILE).read_text())
    [key] = stored
    if mode == "cp":  # an older file: size + mtime instead of the content's hash, and a wrong value
        st = os.stat(run / "model.ply")
        entry = {k: v for k, v in stored[key].items() if k != "model_sha256"}
        stored[key] = {**entry, "threshold": 1e9, "model_bytes": st.st_size, "model_mtime_ns": st.st_mtime_ns}
    else:  # the same content, a new file time: the stored (here marked) value is reused
        stored[key]["threshold"] = 1e9
        st = os.stat(run / "model.ply")
        os.utime(run / "model.ply", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    (run / CALIBRATION_FILE).write_text(json.dumps(stored))
    _detect_cli(run, q, tmp_path / "b")
    second = json.loads((tmp_path / "b" / "detections.json").read_text())["threshold"]
    assert second == (first if mode == "cp" else 1e9)
