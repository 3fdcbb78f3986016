"""splatjax.app.detect: new images against a fitted toy model (verdicts, files, the fixed
scale shared with evaluate), and the sphere fallback for a bare .ply."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from app_toy import FAST_MAP, FAST_POSE, evaluated_toy, toy_dataset, verdict_line

from splatjax.app.detect import detect
from splatjax.app.runs import load_cameras
from splatjax.errors import UserError
from splatjax.context import QUIET, Context


def test_detect_gives_a_verdict_per_image_on_the_models_scale(tmp_path):
    out, report = evaluated_toy()
    toy = toy_dataset()
    images = [Path(toy) / "test" / "good" / "0.png", Path(toy) / "test" / "Missing" / "1.png"]
    lines = []
    result = detect(out / "model", images, tmp_path / "det", pose_config=FAST_POSE, map_config=FAST_MAP,
                    context=QUIET, say=lines.append)
    assert [Path(i["path"]) for i in result["images"]] == images
    assert result["threshold"] == pytest.approx(report["threshold"])  # one scale per model, stored in the run
    for item in result["images"]:
        assert np.isfinite(item["score"])
        expected = "ANOMALOUS" if item["score"] > result["threshold"] else "normal"
        assert item["verdict"] == (expected if item["pose_trusted"] else "pose not found")
        silhouette_ok = item["silhouette_iou"] >= FAST_POSE.min_silhouette_iou
        outline = item["pose_outline_ratio"]  # NaN: no reference mismatch measured, the ratio alone
        outline_moved = np.isnan(outline) or outline > FAST_POSE.residual_outline_ratio
        # NaN loss ratio: no reference measured; inf: no finite loss
        loss_ok = not (item["pose_loss_ratio"] > FAST_POSE.max_loss_ratio
                       and (outline_moved or np.isinf(item["pose_loss_ratio"])))
        residual_ok = not (item["pose_residual_ratio"] > FAST_POSE.max_residual_ratio and outline_moved)
        assert item["pose_trusted"] == (silhouette_ok and loss_ok and residual_ok)
        assert (item["pose_untrusted_reason"] == "") == item["pose_trusted"]
        assert verdict_line(item, result) in lines
        assert (tmp_path / "det" / item["heatmap"]).is_file()
    assert json.loads((tmp_path / "det" / "detections.json").read_text())["images"][1]["verdict"] in (
        "ANOMALOUS", "normal", "pose not found")
    assert np.load(tmp_path / "det" / "maps.npy").shape == (2, 224, 224)
    assert result["pose_config"]["objective"] == "photometric"


def test_detect_notes_a_diverged_pose(tmp_path):
    from dataclasses import replace

    out, _ = evaluated_toy()
    lines = []
    result = detect(out / "model", [Path(toy_dataset()) / "test" / "good" / "1.png"], tmp_path / "det",
                    pose_config=replace(FAST_POSE, lr=30.0, lr_first=30.0), map_config=FAST_MAP,
                    context=Context(log=lines.append))
    [item] = result["images"]
    assert item["pose_diverged"] is True and 0 <= item["pose_best_step"] < FAST_POSE.steps
    assert any(line.startswith(f"{item['path']}: note: the fine pose diverged") for line in lines)
    calm = detect(out / "model", [Path(toy_dataset()) / "test" / "good" / "1.png"], tmp_path / "det2",
                  pose_config=FAST_POSE, map_config=FAST_MAP, context=Context(log=lines.append))
    assert calm["images"][0]["pose_diverged"] is False


def test_detect_without_training_cameras_uses_a_sphere(tmp_path):
    out, _ = evaluated_toy()
    (tmp_path / "bare").mkdir()
    shutil.copy(out / "model" / "model.ply", tmp_path / "bare" / "model.ply")
    assert load_cameras(tmp_path / "bare") is None
    messages = []
    result = detect(tmp_path / "bare" / "model.ply", [Path(toy_dataset()) / "test" / "Burrs" / "0.png"],
                    tmp_path / "det", pose_config=FAST_POSE, map_config=FAST_MAP, context=Context(log=messages.append))
    assert any("sphere" in m for m in messages)
    assert any("moved poses" in m for m in messages)  # calibrated without training images
    assert np.isfinite(result["images"][0]["score"]) and result["threshold"] > 0
    assert (tmp_path / "bare" / "map_calibration.json").is_file()


def test_detect_input_errors_are_user_errors(tmp_path):
    out, _ = evaluated_toy()
    with pytest.raises(UserError, match="no images"):
        detect(out / "model", [], tmp_path / "det", context=QUIET)
    with pytest.raises(UserError, match="no fitted model"):
        detect(tmp_path, [Path(toy_dataset()) / "test" / "good" / "0.png"], tmp_path / "det", context=QUIET)


def test_detect_renders_a_supersampled_model_as_it_was_fitted(tmp_path):
    """A model whose config.json says --supersample 2 is posed, calibrated and mapped with
    2 x 2 samples per pixel (its calibration under its own key); a bare .ply with one."""
    out, _ = evaluated_toy()
    image = [Path(toy_dataset()) / "test" / "Burrs" / "0.png"]
    (tmp_path / "ss").mkdir()
    shutil.copy(out / "model" / "model.ply", tmp_path / "ss" / "model.ply")
    one = detect(tmp_path / "ss" / "model.ply", image, tmp_path / "det1", pose_config=FAST_POSE, map_config=FAST_MAP,
                 context=QUIET)
    (tmp_path / "ss" / "config.json").write_text(json.dumps({"fit_config": {"supersample": 2}}))
    two = detect(tmp_path / "ss" / "model.ply", image, tmp_path / "det2", pose_config=FAST_POSE, map_config=FAST_MAP,
                 context=QUIET)
    assert one["pose_config"]["supersample"] == 1 and two["pose_config"]["supersample"] == 2
    keys = list(json.loads((tmp_path / "ss" / "map_calibration.json").read_text()))
    assert len(keys) == 2 and sum("/supersample2" in k for k in keys) == 1
    assert one["images"][0]["score"] != two["images"][0]["score"]
