"""splatjax.data.mad: the MAD-Sim class layout, test images / masks / test poses that must
match up, class folders with one name, and read-only loading of every kind of folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from dataset_builders import make_blender, make_mad, pose, raises, rgba, tree_state
from splatjax.data import (
    class_folders,
    load_blender,
    load_mad_class,
    load_mad_test,
    load_mad_train,
    load_test_poses,
    make_toy_dataset,
    write_toy_preview,
)
from splatjax.errors import ConfigError, DatasetError, DatasetNotFoundError

# ----------------------------------------------------------------------------- layout


def test_mad_layout_labels_masks_order(tmp_path):
    root = make_mad(tmp_path / "01Toy")
    mad = load_mad_class(root)
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
    assert t.c2w is None


def test_mad_file_path_variants_and_mask_resize(tmp_path):
    # "r_0" does not point into train/good, so frame 2 <-> train/good/2.png; frames 0 and 1
    # name swapped images.
    fps = ["./train/good/1", "train/good/0.png", "r_0", "./train/good/3.png"]
    root = make_mad(tmp_path / "c", size=(16, 16), file_paths=fps)
    mad = load_mad_class(root, resolution=8)
    np.testing.assert_allclose(mad.train.images[:, 0, 0, 0] * 255, [10, 0, 20, 30], atol=1e-3)
    assert [Path(p).name for p in mad.train.paths] == ["1.png", "0.png", "2.png", "3.png"]
    assert mad.test.images.shape[1:3] == (8, 8) and mad.test.masks.shape[1:] == (8, 8)
    k = mad.test.paths.index("test/Stains/12.png")   # 12 of 16 pixels of row 0 -> 6 of 8
    assert mad.test.masks[k].sum() == 6 and mad.test.masks[k, 0, :6].all()  # nearest


def test_resolution_policy_train_and_test_agree(tmp_path):
    root = make_mad(tmp_path / "c", size=(16, 16))
    mad = load_mad_class(root)
    assert mad.train.images.shape[1:3] == mad.test.images.shape[1:3] == (16, 16)
    raises(ConfigError, lambda: load_mad_class(root, resolution=32), "would upsample 16 px wide")
    up = load_mad_class(root, resolution=32, upsample=True)
    assert up.test.masks.shape[1:] == (32, 32)
    assert load_mad_train(root, 8).images.shape[1:3] == load_mad_test(root, 8).images.shape[1:3]


# ----------------------------------------------------------------------------- mismatches


def test_frames_and_train_images(tmp_path):
    root = make_mad(tmp_path / "c")
    rgba(99).save(root / "train" / "good" / "4.png")
    msg = raises(DatasetError, lambda: load_mad_class(root), root / "transforms.json", root / "train" / "good")
    assert "4 frames" in msg and "5 images" in msg
    (root / "train" / "good" / "4.png").unlink()
    os.rename(root / "train" / "good" / "3.png", root / "train" / "good" / "7.png")
    raises(DatasetNotFoundError, lambda: load_mad_class(root), "frame 3", root / "train" / "good" / "3.png")
    dup = make_mad(tmp_path / "d", file_paths=["train/good/2.png", "train/good/1", "x", "train/good/3"])
    raises(DatasetError, lambda: load_mad_class(dup), "frames 0 and 2 both use image")


def test_missing_folders(tmp_path):
    raises(DatasetNotFoundError, lambda: load_mad_class(tmp_path / "nope"), tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    raises(DatasetNotFoundError, lambda: load_mad_class(tmp_path / "empty"), tmp_path / "empty" / "transforms.json")
    root = make_mad(tmp_path / "c")
    shutil.rmtree(root / "test")
    raises(DatasetNotFoundError, lambda: load_mad_class(root), root / "test", "does not exist")


def test_defective_image_without_mask(tmp_path):
    root = make_mad(tmp_path / "c")
    gone = root / "ground_truth" / "Missing" / "1_mask.png"
    gone.unlink()
    raises(DatasetNotFoundError, lambda: load_mad_class(root), gone, root / "test" / "Missing" / "1.png",
           "has no mask")


def test_mask_without_test_image(tmp_path):
    # the case: a deleted test image whose mask (and pose) were silently ignored
    root = make_mad(tmp_path / "c")
    (root / "test" / "Burrs" / "2.png").unlink()
    raises(DatasetError, lambda: load_mad_test(root), root / "ground_truth" / "Burrs" / "2_mask.png",
           root / "test" / "Burrs" / "2.png", "has no test image")
    root = make_mad(tmp_path / "d")
    (root / "ground_truth" / "Holes").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "ground_truth" / "Holes" / "1_mask.png")
    raises(DatasetError, lambda: load_mad_test(root), root / "ground_truth" / "Holes" / "1_mask.png",
           root / "test" / "Holes" / "1")
    root = make_mad(tmp_path / "e")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "ground_truth" / "Stains" / "3.png")
    raises(DatasetError, lambda: load_mad_test(root), root / "ground_truth" / "Stains" / "3.png",
           "is not named <n>_mask.png")


def test_mask_size_mismatch_and_good_masks(tmp_path):
    root = make_mad(tmp_path / "c")
    bad = root / "ground_truth" / "Burrs" / "2_mask.png"
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(bad)
    msg = raises(DatasetError, lambda: load_mad_class(root), bad, root / "test" / "Burrs" / "2.png")
    assert "8x9" in msg and "8x8" in msg
    root = make_mad(tmp_path / "d")
    (root / "ground_truth" / "good").mkdir()
    blank = np.zeros((8, 8), np.uint8)
    Image.fromarray(blank).save(root / "ground_truth" / "good" / "1_mask.png")
    assert load_mad_test(root).masks.sum() == 2 + 4 + 2 + sum(2 * min(k, 8) for k in range(1, 13))
    blank[3, 3] = 255
    Image.fromarray(blank).save(root / "ground_truth" / "good" / "2_mask.png")
    raises(DatasetError, lambda: load_mad_test(root), root / "ground_truth" / "good" / "2_mask.png",
           "marks defective pixels", root / "test" / "good" / "2.png")


def test_two_test_images_with_one_name(tmp_path):
    root = make_mad(tmp_path / "c")
    rgba(3).convert("RGB").save(root / "test" / "Stains" / "3.jpg", quality=95)
    raises(DatasetError, lambda: load_mad_test(root), root / "test" / "Stains" / "3.jpg",
           root / "test" / "Stains" / "3.png", "share the name '3'")


def test_test_and_train_sizes_must_match(tmp_path):
    root = make_mad(tmp_path / "c", size=(16, 16))
    for p in (root / "test").rglob("*.png"):
        rgba(1, (8, 8)).save(p)
    raises(DatasetError, lambda: load_mad_class(root), "8x8", "16x16", "share one size")


@pytest.mark.parametrize("where", ["train", "test", "mask"])
def test_corrupt_png(tmp_path, where):
    root = make_mad(tmp_path / "c")
    bad = {"train": root / "train" / "good" / "1.png",
           "test": root / "test" / "Stains" / "10.png",
           "mask": root / "ground_truth" / "Stains" / "3_mask.png"}[where]
    bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
    raises(DatasetError, lambda: load_mad_class(root), bad, "corrupt or truncated")


# ----------------------------------------------------------------------------- test poses


def _write_poses(root: Path, change=None) -> Path:
    p = root / "test_poses.json"
    data = json.loads(p.read_text())
    p.write_text(json.dumps(change(data) if change else data))
    return p


def test_test_poses_align_with_test_set(tmp_path):
    root = make_mad(tmp_path / "c", test_poses=True)
    data = json.loads((root / "test_poses.json").read_text())
    data["poses"] = {("./" + k if i % 2 else k): v for i, (k, v) in enumerate(reversed(data["poses"].items()))}
    (root / "test_poses.json").write_text(json.dumps(data))
    mad = load_mad_class(root, test_poses=root / "test_poses.json")
    assert mad.test.c2w.shape == (18, 4, 4) and not mad.test.c2w.flags.writeable
    for p, m in zip(mad.test.paths, mad.test.c2w):
        assert m[2, 3] == pytest.approx(3.0 + 0.01 * (100 + int(Path(p).stem)))
    c2w = load_test_poses(root / "test_poses.json", mad.test, camera_angle_x=0.7)
    np.testing.assert_array_equal(c2w, mad.test.c2w)


def _drop_pose(d):
    del d["poses"]["test/Burrs/2.png"]
    return d


def _extra_pose(d):
    d["poses"]["test/Burrs/9.png"] = pose(0)
    return d


def _nan_pose(d):
    d["poses"]["test/good/1.png"][0][3] = float("nan")
    return d


@pytest.mark.parametrize("change, what", [
    (_drop_pose, "has no pose for 1 test images: ['test/Burrs/2.png']"),
    (_extra_pose, "has poses for 1 images that are not in the test set (deleted or renamed?): ['test/Burrs/9.png']"),
    (_nan_pose, "pose of 'test/good/1.png' has non-finite entries"),
    (lambda d: {**d, "poses": [1, 2]}, "is not a test-pose file"),
    (lambda d: {"camera_angle_x": 0.7}, "is not a test-pose file"),
    (lambda d: {**d, "camera_angle_x": -1}, "camera_angle_x = -1 is not a number in (0, pi)"),
    (lambda d: {**d, "camera_angle_x": 0.9}, "differs from the training views' 0.7"),
    (lambda d: {**d, "poses": {**d["poses"], "test/good/1.png": [[1, 0], [0, 1]]}}, "has shape (2, 2)"),
])
def test_bad_test_poses(tmp_path, change, what):
    root = make_mad(tmp_path / "c", test_poses=True)
    p = _write_poses(root, change)
    raises(DatasetError, lambda: load_mad_class(root, test_poses=p), p, what)


def test_deleted_test_image_with_pose_file(tmp_path):
    root = make_mad(tmp_path / "c", test_poses=True)
    (root / "test" / "good" / "2.png").unlink()
    raises(DatasetError, lambda: load_mad_class(root, test_poses=root / "test_poses.json"),
           "test/good/2.png", "not in the test set")


# ----------------------------------------------------------------------------- class folders


def test_class_folders(tmp_path):
    a = make_mad(tmp_path / "sim" / "01Gorilla")
    b = make_mad(tmp_path / "sim" / "02Unicorn")
    assert class_folders([a, b]) == [("01Gorilla", a), ("02Unicorn", b)]
    assert class_folders([tmp_path / "sim"]) == [("01Gorilla", a), ("02Unicorn", b)]  # a MAD-Sim root
    assert class_folders([Path(str(a) + "/")])[0][0] == "01Gorilla"
    other = make_mad(tmp_path / "copy" / "01Gorilla")
    raises(DatasetError, lambda: class_folders([a, b, other]), a, other, "same class name '01Gorilla'")
    raises(DatasetError, lambda: class_folders([a, a]), "same class name")
    raises(DatasetError, lambda: class_folders([tmp_path / "sim", a]), "same class name")
    lower = make_mad(tmp_path / "lower" / "01gorilla")
    raises(DatasetError, lambda: class_folders([a, lower]), "same class name")
    raises(DatasetNotFoundError, lambda: class_folders([tmp_path / "lower" / "01gorilla" / "test"]),
           "is not a MAD class folder")
    raises(DatasetNotFoundError, lambda: class_folders([tmp_path / "nope"]), tmp_path / "nope")
    raises(DatasetNotFoundError, lambda: class_folders([]), "no class folder")


# ----------------------------------------------------------------------------- read-only


def test_loading_leaves_every_kind_of_folder_untouched(tmp_path):
    import splatjax as sj

    mad = make_mad(tmp_path / "c", test_poses=True)
    nerf = make_blender(tmp_path / "nerf")
    make_blender(nerf, split="val")
    toy = make_toy_dataset(tmp_path / "toy", seed=2, resolution=24, num_train=4, num_test_per_type=1)
    g = sj.init_random_gaussians(20, key=jax.random.key(0))
    sj.save_ply(g, tmp_path / "model" / "model.ply")
    (tmp_path / "model" / "model.ply").chmod(0o444)
    before = tree_state(tmp_path)
    load_mad_class(mad, test_poses=mad / "test_poses.json")
    load_mad_class(mad, resolution=4)
    load_blender(nerf)
    load_blender(nerf, "val", resolution=4)
    load_mad_class(toy, test_poses=toy / "test_poses.json")
    make_toy_dataset(toy, seed=2, resolution=24, num_train=4, num_test_per_type=1)   # reused as is
    sj.load_ply(tmp_path / "model" / "model.ply")
    class_folders([mad, toy])
    write_toy_preview(toy, tmp_path.parent / f"{tmp_path.name}_preview.png", num_train=2)
    assert tree_state(tmp_path) == before
