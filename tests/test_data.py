"""Loaders: Blender/NeRF (shared lego data when present) and MAD-Sim layout on small
synthetic folders, including every bad input the loaders must reject clearly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from splatjax.data import (
    DatasetError,
    DatasetNotFoundError,
    load_blender,
    load_mad_class,
)

LEGO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nerf_synthetic_lego_400"
needs_lego = pytest.mark.skipif(not (LEGO / "transforms_train.json").is_file(),
                                reason="shared lego data not present")


# ----------------------------------------------------------------------------- helpers


def _rgba(value: int, size=(8, 8), alpha=255) -> Image.Image:
    a = np.zeros((size[1], size[0], 4), np.uint8)
    a[..., 0] = value
    a[..., 1] = 255 - value
    a[..., 2] = 7
    a[..., 3] = alpha
    return Image.fromarray(a)


def _pose(i: int) -> list:
    m = np.eye(4)
    m[:3, 3] = [0.0, 0.0, 3.0 + 0.01 * i]
    return m.tolist()


def make_mad(root: Path, *, n_train=4, n_test=None, size=(8, 8), file_paths=None) -> Path:
    """A tiny MAD-Sim class; train image i has red channel 10 * i so frames can be matched."""
    n_test = n_test or {"good": 3, "Burrs": 2, "Missing": 1, "Stains": 12}
    (root / "train" / "good").mkdir(parents=True)
    for i in range(n_train):
        _rgba(10 * i, size).save(root / "train" / "good" / f"{i}.png")
    fps = file_paths or [f"train/good/{i}.png" for i in range(n_train)]
    frames = [{"file_path": fp, "transform_matrix": _pose(i)} for i, fp in enumerate(fps)]
    (root / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))
    for t, n in n_test.items():
        (root / "test" / t).mkdir(parents=True)
        if t != "good":
            (root / "ground_truth" / t).mkdir(parents=True)
        for k in range(1, n + 1):
            _rgba(k, size).save(root / "test" / t / f"{k}.png")
            if t != "good":
                m = np.zeros((size[1], size[0]), np.uint8)
                m[:2, : min(k, size[0])] = 255
                Image.fromarray(m).save(root / "ground_truth" / t / f"{k}_mask.png")
    return root


def make_blender(root: Path, *, split="train", n=3, size=(8, 8), file_paths=None,
                 json_name=None) -> Path:
    (root / split).mkdir(parents=True)
    fps = file_paths or [f"./{split}/r_{i}" for i in range(n)]
    for i, fp in enumerate(fps):
        name = Path(fp).name if Path(fp).suffix else Path(fp).name + ".png"
        _rgba(10 * i, size).save(root / split / name)
    frames = [{"file_path": fp, "transform_matrix": _pose(i)} for i, fp in enumerate(fps)]
    name = json_name or f"transforms_{split}.json"
    (root / name).write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))
    return root


def _tree_state(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(root.rglob("*"))}


# ----------------------------------------------------------------------------- lego


@needs_lego
def test_lego_loads():
    v = load_blender(LEGO, "train")
    assert len(v) == 100 and v.images.shape == (100, 400, 400, 3)
    assert v.images.dtype == np.float32
    assert v.images.min() >= 0.0 and v.images.max() <= 1.0
    for corner in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        np.testing.assert_allclose(v.images[:, corner[0], corner[1]], 1.0, atol=1e-3)
    assert v.c2w.shape == (100, 4, 4) and v.c2w.dtype == np.float64
    meta = json.loads((LEGO / "transforms_train.json").read_text())
    np.testing.assert_array_equal(v.c2w[7], np.asarray(meta["frames"][7]["transform_matrix"]))
    assert v.camera_angle_x == pytest.approx(meta["camera_angle_x"])
    cam = v.camera(0)
    np.testing.assert_allclose(np.asarray(cam.center), v.c2w[0, :3, 3], atol=1e-5)
    # the lego cameras look at the origin: it projects near the image centre
    for i in (0, 33, 99):
        c = v.camera(i)
        x = np.asarray(c.t, np.float64)  # R @ 0 + t
        u = float(c.fx) * x[0] / x[2] + float(c.cx)
        w = float(c.fy) * x[1] / x[2] + float(c.cy)
        assert x[2] > 0
        assert abs(u - 200) < 20 and abs(w - 200) < 20
    assert not v.images.flags.writeable


@needs_lego
def test_lego_resize_and_native():
    half = load_blender(LEGO, "val", resolution=200)
    assert half.images.shape == (100, 200, 200, 3)
    native = load_blender(LEGO, "val", resolution=None, workers=1)
    assert native.images.shape == (100, 400, 400, 3)
    assert float(half.camera(0).fx) == pytest.approx(0.5 * float(native.camera(0).fx), rel=1e-6)
    # area averaging: the half-size image is the 2 x 2 mean of the full one
    np.testing.assert_allclose(half.images[3], native.images[3].reshape(200, 2, 200, 2, 3).mean((1, 3)),
                               atol=2e-6)


# ----------------------------------------------------------------------------- blender


def test_extension_handling_and_fallback(tmp_path):
    root = make_blender(tmp_path / "d", file_paths=["./train/r_0", "train/r_1.png", "./train/r_2.png"],
                        json_name="transforms.json")
    v = load_blender(root, "train", resolution=None)  # no transforms_train.json -> transforms.json
    assert len(v) == 3 and v.images.shape == (3, 8, 8, 3)
    assert [Path(p).name for p in v.paths] == ["r_0.png", "r_1.png", "r_2.png"]
    np.testing.assert_allclose(v.images[:, 0, 0, 0], [0, 10 / 255, 20 / 255], atol=1e-6)
    # transforms_<split>.json wins over transforms.json when both exist
    make_blender(root, split="val", n=2)
    assert len(load_blender(root, "val")) == 2


def test_alpha_compositing_rgb_and_aspect(tmp_path):
    root = tmp_path / "d"
    (root / "train").mkdir(parents=True)
    a = np.zeros((20, 40, 4), np.uint8)
    a[..., 0] = 200
    a[:, :20, 3] = 255     # left half opaque red-ish, right half transparent
    a[:, 20:, 3] = 0
    Image.fromarray(a).save(root / "train" / "a.png")
    Image.fromarray(np.full((20, 40, 3), 50, np.uint8)).save(root / "train" / "b.png")
    frames = [{"file_path": "train/a.png", "transform_matrix": _pose(0)},
              {"file_path": "train/b", "transform_matrix": _pose(1)}]
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.5, "frames": frames}))
    v = load_blender(root, resolution=20, background=(0.0, 0.5, 1.0))
    assert v.images.shape == (2, 10, 20, 3)      # width 20, aspect kept
    np.testing.assert_allclose(v.images[0, 5, 2], [200 / 255, 0, 0], atol=1e-6)
    np.testing.assert_allclose(v.images[0, 5, 17], [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(v.images[1], 50 / 255, atol=1e-6)  # RGB as is
    assert v.background == (0.0, 0.5, 1.0)
    assert v.camera(0).width == 20 and v.camera(0).height == 10


# ----------------------------------------------------------------------------- MAD


def test_mad_layout_labels_masks_order(tmp_path):
    root = make_mad(tmp_path / "01Toy")
    mad = load_mad_class(root, resolution=None)
    assert mad.name == "01Toy"
    assert len(mad.train) == 4
    np.testing.assert_allclose(mad.train.images[:, 0, 0, 0], np.arange(4) * 10 / 255, atol=1e-6)
    np.testing.assert_array_equal(mad.train.c2w[:, 2, 3], 3.0 + 0.01 * np.arange(4))
    t = mad.test
    assert t.defect_types[0] == "good" and t.defect_types.count("good") == 3
    assert sorted(set(t.defect_types)) == ["Burrs", "Missing", "Stains", "good"]
    stains = [p for p in t.paths if p.startswith("test/Stains/")]
    assert stains == [f"test/Stains/{k}.png" for k in range(1, 13)]   # 2 before 10
    for p, label, m, typ, img in zip(t.paths, t.labels, t.masks, t.defect_types, t.images):
        k = int(Path(p).stem)
        assert label == (0 if typ == "good" else 1)
        assert img[0, 0, 0] == pytest.approx(k / 255, abs=1e-6)
        if typ == "good":
            assert not m.any()
        else:
            assert m[:2].sum() == 2 * min(k, 8) and m[2:].sum() == 0
    assert t.images.shape == (18, 8, 8, 3) and t.masks.dtype == bool


def test_mad_file_path_variants_and_mask_resize(tmp_path):
    # frames name their image in different spellings; "r_<i>" does not point into
    # train/good, so frame i <-> train/good/<i>.png. Frames 0 and 1 name swapped images.
    fps = ["./train/good/1", "train/good/0.png", "r_0", "./train/good/3.png"]
    root = make_mad(tmp_path / "c", size=(16, 16), file_paths=fps)
    mad = load_mad_class(root, resolution=8)
    np.testing.assert_allclose(mad.train.images[:, 0, 0, 0] * 255, [10, 0, 20, 30], atol=1e-3)
    assert [Path(p).name for p in mad.train.paths] == ["1.png", "0.png", "2.png", "3.png"]
    assert mad.test.images.shape[1:3] == (8, 8) and mad.test.masks.shape[1:] == (8, 8)
    k = mad.test.paths.index("test/Stains/12.png")   # 12 of 16 pixels of row 0 -> 6 of 8
    assert mad.test.masks[k].sum() == 6 and mad.test.masks[k, 0, :6].all()  # nearest


def test_duplicate_image_is_rejected(tmp_path):
    # frame 2 has no usable file_path -> 2.png, which frame 0 already uses
    root = make_mad(tmp_path / "c", file_paths=["train/good/2.png", "train/good/1", "x", "train/good/3"])
    with pytest.raises(DatasetError, match="both use image"):
        load_mad_class(root)


def test_read_only(tmp_path):
    root = make_mad(tmp_path / "c")
    make_blender(root / "nerf")
    before = _tree_state(tmp_path)
    load_mad_class(root, resolution=4)
    load_blender(root / "nerf", resolution=4)
    load_blender(root, resolution=None)
    assert _tree_state(tmp_path) == before


# ----------------------------------------------------------------------------- bad inputs


def _raises(exc, fn, *names):
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for n in names:
        assert str(n) in msg, msg
    return msg


def test_missing_folder_and_files(tmp_path):
    missing = tmp_path / "nope"
    e = _raises(DatasetNotFoundError, lambda: load_blender(missing), missing)
    assert "does not exist" in e
    with pytest.raises(FileNotFoundError):
        load_mad_class(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    _raises(DatasetNotFoundError, lambda: load_blender(empty), "transforms_train.json", "transforms.json")
    _raises(DatasetNotFoundError, lambda: load_mad_class(empty), empty / "transforms.json")
    root = make_mad(tmp_path / "c")
    import shutil

    shutil.rmtree(root / "test")
    _raises(DatasetNotFoundError, lambda: load_mad_class(root), root / "test")


def test_frame_count_mismatch(tmp_path):
    root = make_mad(tmp_path / "c")
    _rgba(99).save(root / "train" / "good" / "4.png")
    msg = _raises(DatasetError, lambda: load_mad_class(root), root / "transforms.json",
                  root / "train" / "good")
    assert "4 frames" in msg and "5 images" in msg


def test_frame_image_missing(tmp_path):
    root = make_mad(tmp_path / "c")
    os.rename(root / "train" / "good" / "3.png", root / "train" / "good" / "7.png")
    _raises(DatasetNotFoundError, lambda: load_mad_class(root), "frame 3",
            root / "train" / "good" / "3.png")
    nerf = make_blender(tmp_path / "n")
    (nerf / "train" / "r_1.png").unlink()
    _raises(DatasetNotFoundError, lambda: load_blender(nerf), "frame 1", nerf / "train" / "r_1")


def test_mask_size_mismatch(tmp_path):
    root = make_mad(tmp_path / "c")
    bad = root / "ground_truth" / "Burrs" / "2_mask.png"
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(bad)
    msg = _raises(DatasetError, lambda: load_mad_class(root), bad, root / "test" / "Burrs" / "2.png")
    assert "8x9" in msg and "8x8" in msg


def test_missing_mask(tmp_path):
    root = make_mad(tmp_path / "c")
    gone = root / "ground_truth" / "Missing" / "1_mask.png"
    gone.unlink()
    _raises(DatasetNotFoundError, lambda: load_mad_class(root), gone, root / "test" / "Missing" / "1.png")


@pytest.mark.parametrize("where", ["train", "test", "mask"])
def test_corrupt_png(tmp_path, where):
    root = make_mad(tmp_path / "c")
    bad = {"train": root / "train" / "good" / "1.png",
           "test": root / "test" / "Stains" / "10.png",
           "mask": root / "ground_truth" / "Stains" / "3_mask.png"}[where]
    bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
    msg = _raises(DatasetError, lambda: load_mad_class(root), bad)
    assert "cannot read image" in msg
    junk = make_blender(tmp_path / "n")
    (junk / "train" / "r_2.png").write_bytes(b"not a png at all")
    _raises(DatasetError, lambda: load_blender(junk), junk / "train" / "r_2.png")


def test_malformed_json(tmp_path):
    root = make_mad(tmp_path / "c")
    (root / "transforms.json").write_text('{"camera_angle_x": 0.7, "frames": [')
    msg = _raises(DatasetError, lambda: load_mad_class(root), root / "transforms.json")
    assert "malformed JSON" in msg and "line 1" in msg
    nerf = make_blender(tmp_path / "n")
    (nerf / "transforms_train.json").write_text('{"frames": []}')
    _raises(DatasetError, lambda: load_blender(nerf), "camera_angle_x", nerf / "transforms_train.json")


@pytest.mark.parametrize("matrix, what", [
    ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3]], "(3, 4)"),
    ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, float("nan")], [0, 0, 0, 1]], "non-finite"),
    ("identity", "not a numeric"),
    ([[1, 0], [0, 1, 2]], "not a numeric"),
])
def test_bad_pose(tmp_path, matrix, what):
    root = make_mad(tmp_path / "c")
    meta = json.loads((root / "transforms.json").read_text())
    meta["frames"][2]["transform_matrix"] = matrix
    (root / "transforms.json").write_text(json.dumps(meta))  # NaN is written as NaN
    msg = _raises(DatasetError, lambda: load_mad_class(root), root / "transforms.json", "frame 2")
    assert what in msg


def test_bad_resolution(tmp_path):
    with pytest.raises(ValueError):
        load_blender(make_blender(tmp_path / "n"), resolution=0)
