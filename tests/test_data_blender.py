"""splatjax.data.blender: Blender/NeRF folders (the shared lego data when present, tiny
folders written here otherwise), the resolution policy and every malformed pose file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset_builders import find_lego, make_blender, pose, raises, rgba
from splatjax.data import load_blender
from splatjax.errors import ConfigError, DatasetError, DatasetNotFoundError

LEGO = find_lego()
needs_lego = pytest.mark.skipif(LEGO is None, reason="shared lego data not present")


# ----------------------------------------------------------------------------- lego


@needs_lego
def test_lego_loads():
    v = load_blender(LEGO, "train")        # default: the data's own 400 px
    assert len(v) == 100 and v.images.shape == (100, 400, 400, 3)
    assert v.images.dtype == np.float32
    assert v.images.min() >= 0.0 and v.images.max() <= 1.0
    for corner in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        np.testing.assert_allclose(v.images[:, corner[0], corner[1]], 1.0, atol=1e-3)
    assert v.c2w.shape == (100, 4, 4) and v.c2w.dtype == np.float64
    meta = json.loads((LEGO / "transforms_train.json").read_text())
    np.testing.assert_array_equal(v.c2w[7], np.asarray(meta["frames"][7]["transform_matrix"]))
    assert v.camera_angle_x == pytest.approx(meta["camera_angle_x"])
    np.testing.assert_allclose(np.asarray(v.camera(0).center), v.c2w[0, :3, 3], atol=1e-5)
    for i in (0, 33, 99):   # the lego cameras look at the origin: it projects near the centre
        c = v.camera(i)
        x = np.asarray(c.t, np.float64)
        assert x[2] > 0
        assert abs(float(c.fx) * x[0] / x[2] + float(c.cx) - 200) < 20
        assert abs(float(c.fy) * x[1] / x[2] + float(c.cy) - 200) < 20
    assert not v.images.flags.writeable


@needs_lego
def test_lego_resize_and_no_upsampling():
    half = load_blender(LEGO, "val", resolution=200)
    assert half.images.shape == (100, 200, 200, 3)
    native = load_blender(LEGO, "val", resolution=400, workers=1)
    assert float(half.camera(0).fx) == pytest.approx(0.5 * float(native.camera(0).fx), rel=1e-6)
    np.testing.assert_allclose(half.images[3], native.images[3].reshape(200, 2, 200, 2, 3).mean((1, 3)),
                               atol=2e-6)
    raises(ConfigError, lambda: load_blender(LEGO, "val", resolution=800), "resolution",
           "would upsample 400 px wide images", str(LEGO / "val"))


# ----------------------------------------------------------------------------- layout


def test_extension_handling_and_fallback(tmp_path):
    root = make_blender(tmp_path / "d", file_paths=["./train/r_0", "train/r_1.png", "./train/r_2.png"],
                        json_name="transforms.json")
    v = load_blender(root, "train")  # no transforms_train.json -> transforms.json
    assert len(v) == 3 and v.images.shape == (3, 8, 8, 3)
    assert [Path(p).name for p in v.paths] == ["r_0.png", "r_1.png", "r_2.png"]
    np.testing.assert_allclose(v.images[:, 0, 0, 0], [0, 10 / 255, 20 / 255], atol=1e-6)
    make_blender(root, split="val", n=2)   # transforms_<split>.json wins over transforms.json
    assert len(load_blender(root, "val")) == 2


def test_alpha_compositing_rgb_and_aspect(tmp_path):
    root = tmp_path / "d"
    (root / "train").mkdir(parents=True)
    a = np.zeros((20, 40, 4), np.uint8)
    a[..., 0] = 200
    a[:, :20, 3] = 255     # left half opaque red-ish, right half transparent
    Image.fromarray(a).save(root / "train" / "a.png")
    b = np.zeros((20, 40, 3), np.uint8)
    b[..., 1:] = [128, 255]                  # an opaque RGB view on the same background
    b[5:15, 10:30] = 50
    Image.fromarray(b).save(root / "train" / "b.png")
    frames = [{"file_path": "train/a.png", "transform_matrix": pose(0)},
              {"file_path": "train/b", "transform_matrix": pose(1)}]
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.5, "frames": frames}))
    v = load_blender(root, resolution=20, background=(0.0, 128 / 255, 1.0))
    assert v.images.shape == (2, 10, 20, 3)      # width 20, aspect kept
    np.testing.assert_allclose(v.images[0, 5, 2], [200 / 255, 0, 0], atol=1e-6)
    np.testing.assert_allclose(v.images[0, 5, 17], [0.0, 128 / 255, 1.0], atol=1e-6)
    np.testing.assert_allclose(v.images[1, 5, 10], 50 / 255, atol=1e-6)  # RGB as is
    assert v.background == (0.0, 128 / 255, 1.0)
    assert v.camera(0).width == 20 and v.camera(0).height == 10


def test_resolution_policy(tmp_path):
    root = make_blender(tmp_path / "n", size=(16, 8))
    assert load_blender(root).images.shape == (3, 8, 16, 3)          # own width (< 400)
    assert load_blender(root, resolution=8).images.shape == (3, 4, 8, 3)
    msg = raises(ConfigError, lambda: load_blender(root, resolution=32), "resolution: 32 would upsample",
                 "16 px wide", root / "train", "upsample=True")
    assert "--upsample" in msg
    assert load_blender(root, resolution=32, upsample=True).images.shape == (3, 16, 32, 3)
    raises(ConfigError, lambda: load_blender(root, resolution=0), "positive image width")
    raises(ConfigError, lambda: load_blender(root, background=(1.0, 2.0, 0.0)), "background")


# ----------------------------------------------------------------------------- bad input


def test_missing_folder_json_and_image(tmp_path):
    missing = tmp_path / "nope"
    raises(DatasetNotFoundError, lambda: load_blender(missing), missing, "does not exist")
    (tmp_path / "empty").mkdir()
    raises(DatasetNotFoundError, lambda: load_blender(tmp_path / "empty"), "transforms_train.json",
           "transforms.json")
    nerf = make_blender(tmp_path / "n")
    (nerf / "train" / "r_1.png").unlink()
    raises(DatasetNotFoundError, lambda: load_blender(nerf), "frame 1", nerf / "train" / "r_1")


def _edit(root: Path, change) -> Path:
    p = root / "transforms_train.json"
    meta = json.loads(p.read_text())
    meta = change(meta)
    p.write_text(json.dumps(meta))
    return p


def _rot(deg):
    m = np.eye(4)
    m[:3, 3] = [0, 0, 3]
    m[0, 0] = 2.0
    return m.tolist()


@pytest.mark.parametrize("change, what", [
    (lambda m: [m], "expected a JSON object"),
    (lambda m: {**m, "frames": None}, "'frames' must be a non-empty list"),
    (lambda m: {k: v for k, v in m.items() if k != "frames"}, "'frames' must be a non-empty list"),
    (lambda m: {**m, "frames": []}, "'frames' must be a non-empty list"),
    (lambda m: {k: v for k, v in m.items() if k != "camera_angle_x"}, "missing key 'camera_angle_x'"),
    (lambda m: {**m, "camera_angle_x": 0.0}, "camera_angle_x = 0.0 is not in (0, pi)"),
    (lambda m: {**m, "camera_angle_x": -0.7}, "is not in (0, pi)"),
    (lambda m: {**m, "camera_angle_x": "wide"}, "'camera_angle_x' is not a number"),
    (lambda m: {**m, "frames": [{"file_path": "./train/r_0"}]}, "frame 0 has no 'transform_matrix'"),
    (lambda m: {**m, "frames": [{"transform_matrix": pose(0)}]}, "frame 0 has no 'file_path'"),
    (lambda m: {**m, "frames": [{"file_path": 3, "transform_matrix": pose(0)}]}, "is not a string"),
    (lambda m: {**m, "frames": [{"file_path": "", "transform_matrix": pose(0)}]}, "empty file_path"),
    (lambda m: {**m, "frames": [{"file_path": "./train/r_0", "transform_matrix": _rot(0)}]},
     "not a rigid camera pose"),
    (lambda m: {**m, "frames": [{"file_path": "./train/r_0",
                                 "transform_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [1, 0, 0, 1]]}]},
     "last row"),
    (lambda m: {**m, "frames": m["frames"] + [m["frames"][0]]}, "frames 0 and 3 both use image"),
])
def test_bad_pose_file(tmp_path, change, what):
    root = make_blender(tmp_path / "n")
    p = _edit(root, change)
    raises(DatasetError, lambda: load_blender(root), p, what)


def test_malformed_and_unreadable_json(tmp_path):
    root = make_blender(tmp_path / "n")
    p = root / "transforms_train.json"
    p.write_text('{"camera_angle_x": 0.7, "frames": [')
    msg = raises(DatasetError, lambda: load_blender(root), p, "malformed JSON")
    assert "line 1" in msg
    p.write_bytes(b'{"camera_angle_x": 0.7, "frames": "\xff"}')
    raises(DatasetError, lambda: load_blender(root), p, "not UTF-8")
    if os.geteuid() != 0:   # root reads anything
        p.write_text("{}")
        p.chmod(0)
        try:
            raises(DatasetError, lambda: load_blender(root), p, "permission denied")
        finally:
            p.chmod(0o644)


def test_corrupt_and_mixed_size_images(tmp_path):
    junk = make_blender(tmp_path / "n")
    (junk / "train" / "r_2.png").write_bytes(b"not a png at all")
    raises(DatasetError, lambda: load_blender(junk), junk / "train" / "r_2.png", "is not an image file")
    odd = make_blender(tmp_path / "m")
    rgba(5, (8, 9)).save(odd / "train" / "r_1.png")
    raises(DatasetError, lambda: load_blender(odd), odd / "train" / "r_1.png", "8x9", "8x8")
