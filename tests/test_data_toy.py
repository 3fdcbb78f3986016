"""The built-in toy dataset: generation, read-back through the MAD loader, defect masks
against the generator's own ray caster, camera conventions, determinism, reuse/refusal."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from splatjax.camera import camera_from_blender, look_at_c2w
from splatjax.data import (
    TOY_DEFECT_TYPES,
    DatasetError,
    load_mad_class,
    make_toy_dataset,
    make_toy_scene,
    render_toy,
    write_toy_preview,
)
from splatjax.data import madwrite
from splatjax.data import toy as toy_mod

SMALL = dict(seed=3, resolution=48, num_train=10, num_test_per_type=2)


@pytest.fixture(scope="session")
def default_toy(tmp_path_factory):
    """The toy dataset at its default size, generated once per session (time printed)."""
    t0 = time.perf_counter()
    path = make_toy_dataset(tmp_path_factory.mktemp("toy_default") / "toy")
    print(f"\ntoy dataset at default size generated in {time.perf_counter() - t0:.2f} s")
    return path


@pytest.fixture(scope="session")
def small_toy(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy_small") / "toy", **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_default_layout_and_loader(default_toy):
    root = default_toy
    meta = json.loads((root / "toy_meta.json").read_text())
    p = meta["params"]
    assert (p["resolution"], p["num_train"], p["num_test_per_type"]) == (128, 100, 6)
    mad = load_mad_class(root, resolution=None)
    assert mad.train.images.shape == (100, 128, 128, 3)
    assert mad.test.images.shape == (24, 128, 128, 3)
    assert mad.test.defect_types == tuple(t for t in ("good",) + TOY_DEFECT_TYPES for _ in range(6))
    np.testing.assert_array_equal(mad.test.labels, [0] * 6 + [1] * 18)
    assert not mad.test.masks[:6].any()
    min_px = p["min_defect_fraction"] * 128 * 128
    assert all(m.sum() >= min_px for m in mad.test.masks[6:])
    # white background, object in the middle, reasonable coverage
    assert np.all(mad.train.images[:, 0, 0] == 1.0)
    cover = (mad.train.images < 0.99).any(-1).mean(axis=(1, 2))
    assert 0.05 < cover.min() and cover.max() < 0.7
    # transforms.json and test_poses.json
    tp = json.loads((root / "test_poses.json").read_text())
    assert set(tp["poses"]) == set(mad.test.paths)
    assert tp["camera_angle_x"] == pytest.approx(mad.train.camera_angle_x)
    # RGBA PNGs with alpha from coverage
    from PIL import Image

    with Image.open(root / "train" / "good" / "0.png") as im:
        assert im.mode == "RGBA"
    # loading at half resolution also works (intrinsics follow the width)
    half = load_mad_class(root, resolution=64)
    assert half.train.images.shape[1:3] == (64, 64) and half.test.masks.shape[1:] == (64, 64)


def test_cameras(default_toy):
    tf = json.loads((default_toy / "transforms.json").read_text())
    assert [f["file_path"] for f in tf["frames"]] == [f"train/good/{i}.png" for i in range(100)]
    c2w = np.array([f["transform_matrix"] for f in tf["frames"]])
    r = np.linalg.norm(c2w[:, :3, 3], axis=1)
    assert r.min() >= 3.0 and r.max() <= 3.5
    # rotation part orthonormal, camera looks at the origin (OpenGL: looks down -z)
    np.testing.assert_allclose(np.einsum("nji,njk->nik", c2w[:, :3, :3], c2w[:, :3, :3]),
                               np.broadcast_to(np.eye(3), (100, 3, 3)), atol=1e-9)
    np.testing.assert_allclose(c2w[:, :3, 2], c2w[:, :3, 3] / r[:, None], atol=1e-9)
    # test poses differ from every training pose by at least 3 degrees of direction
    tp = json.loads((default_toy / "test_poses.json").read_text())["poses"]
    dirs = c2w[:, :3, 3] / r[:, None]
    for pose in tp.values():
        p = np.asarray(pose)[:3, 3]
        assert 3.0 <= np.linalg.norm(p) <= 3.5
        cosines = dirs @ (p / np.linalg.norm(p))
        assert np.degrees(np.arccos(np.clip(cosines.max(), -1, 1))) >= 3.0 - 1e-9


def test_projection_matches_splatjax_camera():
    """The ray caster's pixel model equals splatjax.camera's: the silhouette's bounding box
    matches the projected box corners within 1.5 px (studs stick out a little)."""
    scene = make_toy_scene(0)
    c2w = look_at_c2w(np.array([2.0, -2.2, 1.3]), roll=0.2)
    fov, res = 0.69, 96
    _, alpha = render_toy(scene, c2w, fov, res)
    cam = camera_from_blender(c2w, fov, res, res)
    boxes = scene.kind == 0
    sel = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], bool)
    corners = np.concatenate([np.where(sel, hi, lo) for lo, hi in zip(scene.lo[boxes], scene.hi[boxes])])
    x = corners @ np.asarray(cam.R).T + np.asarray(cam.t)
    u = float(cam.fx) * x[:, 0] / x[:, 2] + float(cam.cx)
    v = float(cam.fy) * x[:, 1] / x[:, 2] + float(cam.cy)
    rows, cols = np.nonzero(alpha > 0.5)
    assert abs(cols.min() - u.min()) < 1.5 and abs(cols.max() + 1 - u.max()) < 1.5
    assert abs(rows.min() - v.min()) < 1.5 and abs(rows.max() + 1 - v.max()) < 1.5


def test_scene_size_and_shading_view_independent():
    scene = make_toy_scene(0)
    lo, hi = scene.lo.min(0), scene.hi.max(0)
    np.testing.assert_allclose(0.5 * (lo + hi), 0.0, atol=1e-9)
    assert 1.4 <= (hi - lo).max() <= 2.1
    # same surface point seen from two cameras has the same colour (no specular, no
    # camera-attached light): the centre of the top face of the highest box
    top = np.argmax(np.where(scene.kind == 0, scene.hi[:, 2], -np.inf))
    p = 0.5 * (scene.lo[top] + scene.hi[top])
    p[2] = scene.hi[top, 2] + 1e-4
    colours = []
    for pos in ([0.5, 0.3, 3.2], [-1.2, 0.8, 2.9]):
        c2w = look_at_c2w(np.asarray(pos) + p, roll=0.0)
        c2w[:3, 3] = p + 3.0 * c2w[:3, 2]  # camera looking straight at p
        rgb, alpha = render_toy(scene, c2w, 0.3, 33, supersample=1)
        assert alpha[16, 16] == 1.0
        colours.append(rgb[16, 16])
    np.testing.assert_allclose(colours[0], colours[1], atol=1e-6)


def test_images_and_masks_match_ray_caster(small_toy):
    """Every test image equals the generator's defect-free render at its pose outside its
    mask; defective images differ clearly inside their masks; train images match too."""
    root = small_toy
    mad = load_mad_class(root, resolution=None)
    scene = make_toy_scene(SMALL["seed"])
    tp = json.loads((root / "test_poses.json").read_text())
    res = SMALL["resolution"]
    for img, mask, path, kind in zip(mad.test.images, mad.test.masks, mad.test.paths,
                                     mad.test.defect_types):
        good, _ = render_toy(scene, np.asarray(tp["poses"][path]), tp["camera_angle_x"], res)
        diff = np.abs(img - good).max(-1)
        assert diff[~mask].max() < 0.02, path  # 8-bit PNG rounding only
        if kind == "good":
            assert not mask.any()
        else:
            assert mask.sum() >= 0.004 * res * res, path
            assert (diff[mask] > 0.1).sum() >= 0.5 * 0.004 * res * res, path
    for i in (0, SMALL["num_train"] - 1):
        ref, _ = render_toy(scene, mad.train.c2w[i], mad.train.camera_angle_x, res)
        assert np.abs(mad.train.images[i] - ref).max() < 0.02


def test_determinism_and_seed(tmp_path, small_toy):
    again = make_toy_dataset(tmp_path / "again", **SMALL)
    assert _files(again) == _files(small_toy)
    other = make_toy_dataset(tmp_path / "other", **{**SMALL, "seed": 4})
    a, b = _files(other), _files(small_toy)
    assert a.keys() == b.keys() and a["train/good/0.png"] != b["train/good/0.png"]
    assert not np.allclose(make_toy_scene(4).lo[:5], make_toy_scene(3).lo[:5])


def test_reuse_replace_refuse_and_atomic(tmp_path, monkeypatch):
    params = dict(seed=1, resolution=32, num_train=4, num_test_per_type=1)
    out = make_toy_dataset(tmp_path / "t", **params)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert make_toy_dataset(tmp_path / "t", **params) == out          # reused as is
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamp
    make_toy_dataset(tmp_path / "t", **{**params, "num_train": 5})    # replaced
    assert len(list((out / "train" / "good").iterdir())) == 5
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="refusing"):
        make_toy_dataset(foreign, **params)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    make_toy_dataset(empty, **params)
    assert (empty / "toy_meta.json").is_file()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(madwrite, "write_png", boom)  # the layout writer shared with synth
    with pytest.raises(KeyboardInterrupt):
        make_toy_dataset(tmp_path / "interrupted", **params)
    assert not (tmp_path / "interrupted").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mine", "t"]  # no temp left


def test_preview(tmp_path, small_toy):
    out = write_toy_preview(small_toy, tmp_path / "preview.png", num_train=4)
    from PIL import Image

    with Image.open(out) as im:
        assert im.size[0] > 200 and im.size[1] > 300
    with pytest.raises(DatasetError):
        write_toy_preview(tmp_path, tmp_path / "x.png")


@pytest.mark.parametrize("option, value", [("resolution", 4), ("num_train", 0), ("num_test_per_type", -1),
                                           ("supersample", 1.5), ("min_defect_fraction", 0.7),
                                           ("camera_angle_x", 0.0)])
def test_bad_generator_options(tmp_path, option, value):
    from splatjax.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        make_toy_dataset(tmp_path / "t", **{**SMALL, option: value})
    assert info.value.option == option and f"make_toy_dataset.{option}" in str(info.value)
    assert not (tmp_path / "t").exists()


def test_preview_names_a_missing_pose(tmp_path, small_toy):
    import shutil

    copy = tmp_path / "toy"
    shutil.copytree(small_toy, copy)
    poses = json.loads((copy / "test_poses.json").read_text())
    del poses["poses"]["test/Burrs/0.png"]
    (copy / "test_poses.json").write_text(json.dumps(poses))
    with pytest.raises(DatasetError, match="no usable pose of 'test/Burrs/0.png'"):
        write_toy_preview(copy, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()
