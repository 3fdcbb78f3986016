"""COLMAP folders: text and binary sparse models give the same views, cameras equal the
Blender loader's for the same lego views, points3D seed a fit, the format registry picks
the right loader, distortion and damaged files are refused with one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dataset_builders import colmap_pose, find_lego, make_blender, make_colmap, make_mad, raises, write_colmap
from PIL import Image

from splatjax.data import (
    FORMATS,
    DatasetError,
    DatasetNotFoundError,
    detect_format,
    load_blender,
    load_colmap,
    read_rgb,
)
from splatjax.data.colmap import read_model

BG = (0.2, 0.4, 0.6)


def test_text_and_binary_models_load_the_same_views(tmp_path):
    """No shared data: both forms, in sparse/0 and in sparse/, give identical views; the
    cameras are COLMAP's (R, t, intrinsics scaled to the loaded size); views are ordered by
    name; alpha is composited on the background; points come through with rgb in [0, 1]."""
    truth = make_colmap(tmp_path / "txt", binary=False)
    make_colmap(tmp_path / "bin", binary=True, sparse="sparse")
    a = load_colmap(tmp_path / "txt", 8, BG)
    b = load_colmap(tmp_path / "bin", 8, BG)
    for x, y in ((a.train.images, b.train.images), (a.train.c2w, b.train.c2w),
                 (a.train.intrinsics, b.train.intrinsics), (a.points, b.points)):
        np.testing.assert_array_equal(x, y)
    v = a.train
    assert [Path(p).name for p in v.paths] == ["a.png", "b.png", "c.png"] and (v.width, v.height) == (8, 6)
    by_name = {im[4]: im for im in truth["images"]}
    for i, p in enumerate(v.paths):
        iid, q, t, cid, name = by_name[Path(p).name]
        cam = v.camera(i)
        np.testing.assert_allclose(np.asarray(cam.R), truth["rots"][iid - 1].as_matrix(), atol=1e-6)
        np.testing.assert_allclose(np.asarray(cam.t), t, atol=1e-6)
        _, model, w, h, params = truth["cameras"][cid]
        fx, fy, cx, cy = params if model == "PINHOLE" else (params[0], params[0], params[1], params[2])
        np.testing.assert_allclose([float(cam.fx), float(cam.fy), float(cam.cx), float(cam.cy)],
                                   [fx / 2, fy / 2, cx / 2, cy / 2], rtol=1e-6)
        assert (cam.width, cam.height) == (8, 6)
        np.testing.assert_array_equal(v.images[i], read_rgb(p, background=BG, resolution=8)[0])
    assert not np.allclose(v.images[1][:, :4], v.images[2][:, :4])  # transparent half shows BG
    np.testing.assert_allclose(v.images[1][:, :4], np.broadcast_to(BG, (6, 4, 3)), atol=1e-6)
    np.testing.assert_allclose(a.points[:, :3], truth["points"], rtol=1e-6)
    np.testing.assert_allclose(a.points[:, 3:], truth["colors"] / 255.0, rtol=1e-6)
    assert detect_format(tmp_path / "txt").name == detect_format(tmp_path / "bin").name == "colmap"


def test_registry_picks_one_format(tmp_path):
    make_colmap(tmp_path / "colmap", binary=False)
    make_blender(tmp_path / "blender")
    make_mad(tmp_path / "mad")
    for name in ("colmap", "blender", "mad"):
        assert detect_format(tmp_path / name) is FORMATS[name]
    (tmp_path / "empty").mkdir()
    msg = raises(DatasetNotFoundError, lambda: detect_format(tmp_path / "empty"), "empty", "Blender/NeRF",
                 "MAD-Sim", "COLMAP")
    assert "\n" not in msg
    shutil.copytree(tmp_path / "colmap" / "sparse", tmp_path / "blender" / "sparse")
    raises(DatasetError, lambda: detect_format(tmp_path / "blender"), "blender, colmap")


@pytest.mark.parametrize("binary", [False, True])
def test_distortion_and_other_models(tmp_path, binary):
    cams = [(1, "SIMPLE_RADIAL", 16, 12, [18.0, 8.0, 6.0, 0.01])]
    make_colmap(tmp_path / "d", binary=binary, cameras=cams)
    ext = "bin" if binary else "txt"
    msg = raises(DatasetError, lambda: load_colmap(tmp_path / "d", 8), f"cameras.{ext}", "camera 1",
                 "image_undistorter")
    assert "\n" not in msg
    make_colmap(tmp_path / "f", binary=binary, cameras=[(2, "OPENCV_FISHEYE", 16, 12, [18.0] * 4 + [0.1] * 4)])
    raises(DatasetError, lambda: load_colmap(tmp_path / "f", 8), f"cameras.{ext}", "camera 2", "OPENCV_FISHEYE")
    # radial models without distortion are pinhole cameras
    make_colmap(tmp_path / "z", binary=binary, cameras=[(1, "RADIAL", 16, 12, [18.0, 8.0, 6.0, 0.0, 0.0])])
    cam = load_colmap(tmp_path / "z", 16).train.camera(0)
    assert (float(cam.fx), float(cam.fy), float(cam.cx), float(cam.cy)) == (18.0, 18.0, 8.0, 6.0)


def _cut(path: Path, n: int) -> None:
    path.write_bytes(path.read_bytes()[:-n])


@pytest.mark.parametrize("damage,file", [
    (lambda p: _cut(p, 5), "cameras.bin"),
    (lambda p: _cut(p, 30), "images.bin"),
    (lambda p: _cut(p, 3), "points3D.bin"),
    (lambda p: p.write_bytes(p.read_bytes() + b"junk"), "images.bin"),
    (lambda p: p.write_bytes(b"\xff" * 40), "cameras.bin"),
    (lambda p: p.write_bytes(b""), "points3D.bin"),
    (lambda p: p.write_text(p.read_text().replace(" PINHOLE ", " PINHOLE x ", 1)), "cameras.txt"),
    (lambda p: p.write_text(p.read_text().replace("c.png", "c.png\n1 2", 1)), "images.txt"),
    (lambda p: p.write_text(p.read_text() + "7 0.1 nan-ish 3 4 5\n"), "points3D.txt"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "images.txt"),
], ids=["cut-cameras", "cut-images", "cut-points", "trailing-bytes", "bad-model-id", "empty-points",
        "bad-camera-line", "bad-points2d-line", "bad-point-line", "not-utf8"])
def test_damaged_files_name_the_file(tmp_path, damage, file):
    make_colmap(tmp_path, binary=file.endswith(".bin"))
    damage(tmp_path / "sparse" / "0" / file)
    msg = raises(DatasetError, lambda: load_colmap(tmp_path), file)
    assert "\n" not in msg


def test_inconsistent_models_are_refused(tmp_path):
    truth = make_colmap(tmp_path / "a", binary=False)
    (tmp_path / "a" / "images" / "b.png").unlink()
    raises(DatasetNotFoundError, lambda: load_colmap(tmp_path / "a"), "images.txt", "b.png")
    imgs = [(iid, q, t, 9, name) for iid, q, t, _, name in truth["images"]]
    make_colmap(tmp_path / "b", binary=True)
    write_colmap(tmp_path / "b" / "sparse" / "0", list(truth["cameras"].values()), imgs, binary=True)
    raises(DatasetError, lambda: load_colmap(tmp_path / "b"), "images.bin", "camera 9")
    make_colmap(tmp_path / "c", binary=False, cameras=[(1, "PINHOLE", 32, 24, [20.0, 22.0, 16.0, 12.0])])
    raises(DatasetError, lambda: load_colmap(tmp_path / "c"), "cameras.txt", "camera 1 is 32x24", "16x12")
    (tmp_path / "d" / "sparse").mkdir(parents=True)
    (tmp_path / "d" / "sparse" / "cameras.txt").write_text("")
    raises(DatasetNotFoundError, lambda: load_colmap(tmp_path / "d"), "images.txt")


# ----------------------------------------------------------------------------- lego
LEGO_VIEWS = (0, 17, 33, 50, 66, 83)


@pytest.fixture(scope="module")
def lego_colmap(tmp_path_factory):
    """Six lego train views as a Blender folder and as COLMAP text and binary folders
    (PINHOLE from camera_angle_x; 300 random points in the scene box)."""
    lego_path = find_lego()
    if lego_path is None:
        pytest.skip("shared lego data (../shared/data/nerf_synthetic_lego_400) not present")
    root = tmp_path_factory.mktemp("lego")
    meta = json.loads((lego_path / "transforms_train.json").read_text())
    frames = [meta["frames"][i] for i in LEGO_VIEWS]
    (root / "blender" / "train").mkdir(parents=True)
    for d in ("txt", "bin"):
        (root / d / "images").mkdir(parents=True)
    images = []
    for k, fr in enumerate(frames):
        src = lego_path / (fr["file_path"].removeprefix("./") + ".png")
        for d in ("blender/train", "txt/images", "bin/images"):
            shutil.copy(src, root / d / f"v{k}.png")
        images.append((10 + k, *colmap_pose(fr["transform_matrix"]), 1, f"v{k}.png"))
    (root / "blender" / "transforms_train.json").write_text(json.dumps(
        {"camera_angle_x": meta["camera_angle_x"],
         "frames": [{"file_path": f"./train/v{k}", "transform_matrix": fr["transform_matrix"]}
                    for k, fr in enumerate(frames)]}))
    w, h = Image.open(root / "txt" / "images" / "v0.png").size
    f = 0.5 * w / np.tan(0.5 * meta["camera_angle_x"])
    cams = [(1, "PINHOLE", w, h, [f, f, w / 2, h / 2])]
    rng = np.random.default_rng(0)
    pts, cols = rng.uniform(-0.7, 0.7, (300, 3)), rng.integers(0, 256, (300, 3))
    write_colmap(root / "txt" / "sparse" / "0", cams, images, pts, cols, binary=False)
    write_colmap(root / "bin" / "sparse" / "0", cams, images, pts, cols, binary=True)
    return root, pts, cols


def test_lego_cameras_equal_the_blender_loaders(lego_colmap):
    root, pts, cols = lego_colmap
    ref = load_blender(root / "blender", "train", 50)
    for d in ("txt", "bin"):
        got = load_colmap(root / d, 50)
        v = got.train
        assert (v.width, v.height) == (ref.width, ref.height) == (50, 50)
        np.testing.assert_array_equal(v.images, ref.images)
        a, b = v.cameras, ref.cameras
        for field in ("R", "t", "fx", "fy", "cx", "cy"):
            np.testing.assert_allclose(np.asarray(getattr(a, field)), np.asarray(getattr(b, field)), atol=1e-5,
                                       err_msg=field)
        np.testing.assert_allclose(v.c2w, ref.c2w, atol=2e-6)  # lego stores float32 poses
        np.testing.assert_allclose(got.points[:, :3], pts, rtol=1e-6)
        np.testing.assert_allclose(got.points[:, 3:], cols / 255.0, rtol=1e-6)
    assert len(read_model(root / "bin" / "sparse" / "0").images) == len(LEGO_VIEWS)
    assert detect_format(root / "txt") is FORMATS["colmap"] and detect_format(root / "blender") is FORMATS["blender"]


def test_fit_starts_from_the_points3D(lego_colmap, tmp_path, capsys):
    """`splatjax fit COLMAP_DIR` seeds the Gaussians with points3D (densification off, so
    the model keeps one Gaussian per point, near its point)."""
    from splatjax.app.cli import main
    from splatjax.gaussians import load_ply

    root, pts, _ = lego_colmap
    run = tmp_path / "run"
    rc = main(["fit", str(root / "bin"), "--out", str(run), "--iterations", "20", "--resolution", "25",
               "--densify-until", "0", "--log-every", "10", "--checkpoint-every", "20", "--quiet"])
    assert rc == 0
    info = json.loads((run / "info.json").read_text())
    assert info["completed"] and info["format"] == "colmap"
    assert info["init"] == {"source": "dataset", "points": len(pts)} and info["num_gaussians"] == len(pts)
    g = load_ply(run / "model.ply")
    assert g.num == len(pts)
    np.testing.assert_allclose(np.sort(np.asarray(g.means), 0), np.sort(pts, 0), atol=0.05)
