"""The evaluate / detect pipelines end to end on a tiny toy dataset with a tiny fit, the
run-folder camera files, the report table, the CLI wiring helpers and LoFTR retrieval
mechanics (randomly initialised weights)."""

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from splatjax.app import pipeline as ev
from splatjax import pose
from splatjax.data import make_toy_dataset
from splatjax.fitting import FitConfig

TINY_FIT = FitConfig(iterations=60, resolution=None, init_points=600, capacity=2048, chunk_steps=20,
                     densify_from=20, densify_every=20, densify_until=60, opacity_reset_every=3000,
                     checkpoint_every=10**6, val_every=10**6, log_every=20)
FAST = dict(steps=4, batch_size=4, coarse="render", coarse_resolution=16, features="weights-free",
            resolution=None, progress=False)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", seed=1, resolution=32, num_train=12,
                            num_test_per_type=2)


@pytest.fixture(scope="module")
def evaluated(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "out"
    report = ev.evaluate(toy, out_dir=out, fit_config=TINY_FIT, log=lambda m: None, **FAST)
    return out, report


def test_evaluate_writes_report_csv_and_pictures(evaluated, toy):
    out, report = evaluated
    on_disk = json.loads((out / "report.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro", "seconds", "queries_per_second", "pose", "features",
                "coarse_method", "fine_steps"):
        assert key in on_disk, key
    for stage in ("load", "fit", "coarse", "fine", "render", "maps", "metrics"):
        assert on_disk["seconds"][stage] >= 0.0
    assert on_disk["num_test_images"] == 8 and on_disk["num_defective"] == 6
    for v in (on_disk["image_auroc"], on_disk["pixel_auroc"], on_disk["aupro"]):
        assert 0.0 <= v <= 1.0
    for stage in ("coarse", "fine"):
        for k in ("translation", "rotation_rad", "rotation_half_rad"):
            assert set(on_disk["pose"][stage][k]) == {"median", "mean"}
    assert on_disk["fine_steps"] == 4 and on_disk["coarse_method"] == "render"
    assert on_disk["features"] == "weights-free"
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    assert {"path", "label", "defect_type", "score", "fine_translation", "fine_rotation_rad"} <= set(rows[0])
    assert {r["defect_type"] for r in rows} == {"good", "Burrs", "Missing", "Stains"}
    assert all(float(r["score"]) >= 0 for r in rows)
    for png in ("roc.png", "pose_convergence.png", "heatmaps/good_0.png", "heatmaps/Stains_1.png"):
        assert (out / png).is_file() and (out / png).stat().st_size > 0, png
    poses = json.loads((out / "poses.json").read_text())
    assert np.asarray(poses["fine"]["test/good/0.png"]).shape == (4, 4)
    # the fitted run folder got its cameras
    cams = ev.load_cameras(out / "model")
    assert cams["c2w"].shape == (12, 4, 4) and cams["width"] == 32
    # the dataset was not written to
    assert not any(p.name in ("report.json", "model.ply") for p in Path(toy).rglob("*"))


def test_detect_on_new_images(evaluated, toy, tmp_path):
    out, _ = evaluated
    images = [Path(toy) / "test" / "good" / "0.png", Path(toy) / "test" / "Missing" / "1.png"]
    result = ev.detect(out / "model", images, tmp_path / "det", steps=3, coarse_resolution=16, features="weights-free",
                       progress=False, log=lambda m: None)
    assert [Path(i["path"]) for i in result["images"]] == images
    assert all(np.isfinite(i["score"]) for i in result["images"])
    assert (tmp_path / "det" / "detections.json").is_file()
    assert (tmp_path / "det" / result["images"][1]["heatmap"]).is_file()
    assert np.load(tmp_path / "det" / "maps.npy").shape == (2, 224, 224)


def test_cameras_round_trip_and_sphere_fallback(tmp_path, toy):
    from splatjax.data import load_mad_train

    train = load_mad_train(toy, None)
    ev.save_cameras(tmp_path / "run", train)
    back = ev.load_cameras(tmp_path / "run")
    np.testing.assert_allclose(back["c2w"], train.c2w)
    assert back["camera_angle_x"] == pytest.approx(train.camera_angle_x)
    assert ev.load_cameras(tmp_path / "nothing") is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cameras.json").write_text("{}")
    with pytest.raises(ValueError, match="cameras.json"):
        ev.load_cameras(tmp_path / "bad")


def test_missing_model_and_bad_test_poses_are_clear_errors(tmp_path, toy):
    with pytest.raises(FileNotFoundError, match="no fitted model"):
        ev._resolve_model(tmp_path)
    bad = tmp_path / "poses.json"
    bad.write_text('{"poses": {"test/good/0.png": [[1, 0], [0, 1]]}}')
    with pytest.raises(ValueError, match="4x4"):
        ev.load_test_poses(bad)
    with pytest.raises(ValueError, match="inside the"):
        ev.evaluate(toy, out_dir=Path(toy) / "out", model=tmp_path, log=lambda m: None, **FAST)


def test_table_has_rows_and_mean():
    reports = [{"class": "A", "image_auroc": 0.9, "pixel_auroc": 0.99, "aupro": 0.8, "seconds_per_query_without_coarse": 2.0,
                "pose": {"fine": {"translation": {"median": 0.01}, "rotation_rad": {"median": 0.002}}}},
               {"class": "B", "image_auroc": 0.7, "pixel_auroc": 0.97, "aupro": None}]
    table = ev.format_table(reports)
    assert "| A | 90.0 | 99.0 | 80.0 | 0.0100 | 0.0020 | 2.00 |" in table
    assert "| **mean** | 80.0 | 98.0 | 80.0 |" in table


def test_cli_argument_helpers_parse():
    p = ev.add_evaluate_arguments(argparse.ArgumentParser())
    a = p.parse_args(["D1", "D2", "--out", "O", "--steps", "25", "--train-fraction", "0.4", "--coarse", "render"])
    assert a.data == ["D1", "D2"] and a.steps == 25 and a.train_fraction == 0.4 and a.model is None
    d = ev.add_detect_arguments(argparse.ArgumentParser()).parse_args(["--model", "R", "x.png", "y.png"])
    assert d.images == ["x.png", "y.png"] and d.coarse == "render"
    m = ev.add_demo_arguments(argparse.ArgumentParser()).parse_args([])
    assert m.out == "demo_out"


def test_loftr_retrieval_mechanics_with_random_weights(tmp_path):
    torch = pytest.importorskip("torch")
    kornia_feature = pytest.importorskip("kornia.feature")
    from splatjax.anomaly.weights import loftr_indoor_new_config

    torch.manual_seed(0)
    net = kornia_feature.LoFTR(pretrained=None, config=loftr_indoor_new_config())
    path = tmp_path / "loftr_random.ckpt"
    torch.save({"state_dict": net.state_dict()}, path)
    rng = np.random.default_rng(0)
    cands = rng.uniform(0, 1, (3, 64, 64, 3)).astype(np.float32)
    queries = cands[[2, 0]]
    idx, counts = pose.coarse_pose_loftr(queries, cands, weights=str(path), size=64)
    assert idx.shape == (2,) and counts.shape == (2,)
    assert np.all((idx >= 0) & (idx < 3)) and np.all(counts >= 0)
    assert pose.resolve_coarse("auto", str(path)) == "loftr"
    with pytest.raises(Exception, match="does not exist"):
        pose.resolve_coarse("auto", str(tmp_path / "missing.ckpt"))


def test_several_classes_give_a_table(evaluated, toy, tmp_path):
    import shutil

    out, _ = evaluated
    classes = []
    for name in ("01Toy", "02Toy"):
        shutil.copytree(toy, tmp_path / "data" / name)
        classes.append(tmp_path / "data" / name)
    summary = ev.evaluate(classes, out_dir=tmp_path / "res", model=out / "model", heatmaps=False,
                          log=lambda m: None, **FAST)
    assert summary["classes"] == ["01Toy", "02Toy"]
    assert set(summary["mean"]) >= {"image_auroc", "pixel_auroc", "aupro"}
    table = (tmp_path / "res" / "table.md").read_text()
    assert "| 01Toy |" in table and "| 02Toy |" in table and "**mean**" in table
    for name in ("01Toy", "02Toy"):
        assert (tmp_path / "res" / name / "report.json").is_file()
        assert not (tmp_path / "res" / name / "heatmaps").exists()


def test_detect_without_training_cameras_uses_a_sphere(evaluated, toy, tmp_path):
    import shutil

    out, _ = evaluated
    (tmp_path / "bare").mkdir()
    shutil.copy(out / "model" / "model.ply", tmp_path / "bare" / "model.ply")
    assert ev.load_cameras(tmp_path / "bare") is None
    messages = []
    result = ev.detect(tmp_path / "bare" / "model.ply", [Path(toy) / "test" / "Burrs" / "0.png"], tmp_path / "det",
                       steps=2, coarse_resolution=16, features="weights-free", progress=False, log=messages.append)
    assert any("sphere" in m for m in messages)
    assert np.isfinite(result["images"][0]["score"])
