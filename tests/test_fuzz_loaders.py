"""Property-based tests (hypothesis) of every file reader (issue 19, item 6): damaged
transforms.json (Blender, MAD-Sim), COLMAP sparse models (text and binary), test_poses.json, PLY models, PNG images, cameras.json and
map_calibration.json either load or fail with one line naming the file, and are never
modified. Bounded, derandomised examples; CPU only."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest
from dataset_builders import make_blender, make_colmap, make_mad
from fuzzing import FUZZ, FUZZ_KNOWN_BAD, damaged_bytes, damaged_json, tree_hash, works_or_one_line_error
from hypothesis import given
from hypothesis import strategies as st

import splatjax as sj
from splatjax.data import load_blender, load_colmap, load_mad_class
from splatjax.data.images import read_mask, read_rgb


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """Pristine inputs, copied for every example."""
    root = tmp_path_factory.mktemp("fuzz")
    blender = make_blender(root / "blender", n=3)
    mad = make_mad(root / "mad", n_train=3, n_test={"good": 1, "Burrs": 1}, test_poses=True)
    sj.save_ply(sj.init_random_gaussians(12, key=jax.random.key(0), sh_degree=1), root / "model.ply")
    make_colmap(root / "colmap_txt", binary=False)
    make_colmap(root / "colmap_bin", binary=True)
    return {"blender": blender, "mad": mad, "ply": root / "model.ply", "colmap_txt": root / "colmap_txt",
            "colmap_bin": root / "colmap_bin"}


def _copy(src: Path, tmp: str) -> Path:
    dst = Path(tmp) / src.name
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)
    return dst


def _checked(root: Path, damage, load, *names):
    """Damage a copy, hash it, load it: works or one line naming a file; nothing modified."""
    damage(root)
    before = tree_hash(root)
    result = works_or_one_line_error(load, *names)
    assert tree_hash(root) == before, "an input file was modified"
    return result


# ----------------------------------------------------------------------------- JSON pose files
@FUZZ
@given(data=st.data())
def test_fuzz_blender_transforms(base, data):
    orig = json.loads((base["blender"] / "transforms_train.json").read_text())
    text = data.draw(damaged_json(orig))
    with tempfile.TemporaryDirectory() as tmp:
        root = _copy(base["blender"], tmp)
        views = _checked(root, lambda r: (r / "transforms_train.json").write_text(text),
                         lambda: load_blender(root, "train"), root)
        if views is not None:
            assert views.images.ndim == 4 and np.all(np.isfinite(views.c2w)) and len(views.paths) == len(views)


@FUZZ
@given(data=st.data())
def test_fuzz_mad_transforms(base, data):
    orig = json.loads((base["mad"] / "transforms.json").read_text())
    text = data.draw(damaged_json(orig))
    with tempfile.TemporaryDirectory() as tmp:
        root = _copy(base["mad"], tmp)
        cls = _checked(root, lambda r: (r / "transforms.json").write_text(text), lambda: load_mad_class(root), root)
        if cls is not None:
            assert len(cls.train) == 3 and np.all(np.isfinite(cls.train.c2w))


@FUZZ
@given(data=st.data())
def test_fuzz_colmap_model(base, data):
    form = data.draw(st.sampled_from(["txt", "bin"]))
    name = data.draw(st.sampled_from(["cameras", "images", "points3D"])) + "." + form
    with tempfile.TemporaryDirectory() as tmp:
        root = _copy(base[f"colmap_{form}"], tmp)
        target = root / "sparse" / "0" / name
        raw = data.draw(damaged_bytes(target.read_bytes()))
        got = _checked(root, lambda r: target.write_bytes(raw), lambda: load_colmap(root, 8), root)
        if got is not None:
            v = got.train
            assert v.images.shape[1:] == (6, 8, 3) and np.all(np.isfinite(v.c2w)) and np.all(v.intrinsics > 0)
            assert got.points is None or np.all(np.isfinite(got.points))


@FUZZ
@given(data=st.data())
def test_fuzz_test_poses(base, data):
    orig = json.loads((base["mad"] / "test_poses.json").read_text())
    text = data.draw(damaged_json(orig))
    with tempfile.TemporaryDirectory() as tmp:
        root = _copy(base["mad"], tmp)
        cls = _checked(root, lambda r: (r / "test_poses.json").write_text(text),
                       lambda: load_mad_class(root, test_poses=root / "test_poses.json"), "test_poses.json")
        if cls is not None:
            assert cls.test.c2w.shape == (len(cls.test), 4, 4) and np.all(np.isfinite(cls.test.c2w))


# ----------------------------------------------------------------------------- binary files
@FUZZ
@given(data=st.data())
def test_fuzz_ply(base, data):
    raw = base["ply"].read_bytes()
    damaged = data.draw(damaged_bytes(raw, head=raw.index(b"end_header") + 11))
    with tempfile.TemporaryDirectory() as tmp:
        ply = Path(tmp) / "model.ply"
        g = _checked(ply.parent, lambda _: ply.write_bytes(damaged), lambda: sj.load_ply(ply), ply)
        if g is not None:
            leaves = jax.tree_util.tree_leaves(g)
            assert g.num > 0 and all(np.all(np.isfinite(np.asarray(x))) for x in leaves)


@FUZZ
@given(data=st.data())
def test_fuzz_png_image(base, data):
    src = base["blender"] / "train" / "r_1.png"
    damaged = data.draw(damaged_bytes(src.read_bytes(), head=64))
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "r_1.png"
        out = _checked(p.parent, lambda _: p.write_bytes(damaged),
                       lambda: (read_rgb(p, resolution=4), read_mask(p)), p)
        if out is not None:
            (rgb, _), (mask, native) = out
            assert rgb.shape[1] == 4 and np.all((rgb >= 0) & (rgb <= 1)) and mask.shape == native[::-1]


@FUZZ
@given(data=st.data())
def test_fuzz_png_in_a_dataset(base, data):
    src = base["blender"] / "train" / "r_2.png"
    damaged = data.draw(damaged_bytes(src.read_bytes(), head=64))
    with tempfile.TemporaryDirectory() as tmp:
        root = _copy(base["blender"], tmp)
        views = _checked(root, lambda r: (r / "train" / "r_2.png").write_bytes(damaged),
                         lambda: load_blender(root, "train"), "r_2.png")
        if views is not None:
            assert np.all(np.isfinite(views.images))


# ----------------------------------------------------------------------------- run-folder files
@FUZZ
@given(data=st.data())
def test_fuzz_cameras_json(base, data):
    from splatjax.app.runs import load_cameras, save_cameras

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        save_cameras(run, load_blender(base["blender"], "train"))
        text = data.draw(damaged_json(json.loads((run / "cameras.json").read_text())))
        cams = _checked(run, lambda r: (r / "cameras.json").write_text(text), lambda: load_cameras(run),
                        "cameras.json")
        if cams is not None:
            assert cams["width"] > 0 and cams["height"] > 0 and 0 < cams["camera_angle_x"] < np.pi
            assert cams["c2w"].shape[1:] == (4, 4) and np.all(np.isfinite(cams["c2w"]))


def _calibration_entry() -> tuple[str, dict]:
    from splatjax.anomaly import MapCalibration

    cal = MapCalibration(threshold=0.5, vmin=0.1, vmax=0.9, features="weights-free", map_size=224, map_sigma=4.0,
                         score="max", views=6, train_score_max=0.4, train_score_median=0.2)
    return "key", cal.to_dict()


@FUZZ
@given(data=st.data())
def test_fuzz_map_calibration_json(base, data):
    """A damaged calibration is ours to recompute: read as missing (None), never a crash;
    a value read back is a usable scale."""
    from splatjax.app.calibration import _stored
    from splatjax.files import file_sha256

    with tempfile.TemporaryDirectory() as tmp:
        run = _copy(base["ply"], tmp).parent
        key, entry = _calibration_entry()
        digest = file_sha256(run / "model.ply")
        text = data.draw(damaged_json({key: {**entry, "model_sha256": digest}}))
        path = run / "map_calibration.json"
        cal = _checked(run, lambda _: path.write_text(text), lambda: _stored(path, key, digest),
                       "map_calibration.json")
        if cal is not None:
            assert np.isfinite(cal.threshold) and cal.vmin < cal.vmax
