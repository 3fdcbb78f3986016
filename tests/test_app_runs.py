"""splatjax.app.runs: training cameras in run folders, model lookup, test-pose files."""

import numpy as np
import pytest
from app_toy import toy_dataset

from splatjax.app import runs
from splatjax.errors import DatasetError, UserError


def test_cameras_round_trip(tmp_path):
    from splatjax.data import load_mad_train

    train = load_mad_train(toy_dataset(), None)
    runs.save_cameras(tmp_path / "run", train)
    back = runs.load_cameras(tmp_path / "run")
    np.testing.assert_allclose(back["c2w"], train.c2w)
    assert back["camera_angle_x"] == pytest.approx(train.camera_angle_x)
    assert back["paths"] == [str(p) for p in train.paths]
    assert runs.load_cameras(tmp_path / "nothing") is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cameras.json").write_text("{}")
    with pytest.raises(DatasetError, match="cameras.json"):
        runs.load_cameras(tmp_path / "bad")


def test_missing_model_and_bad_test_poses_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="no fitted model"):
        runs.resolve_model(tmp_path)
    bad = tmp_path / "poses.json"
    bad.write_text('{"poses": {"test/good/0.png": [[1, 0], [0, 1]]}}')
    with pytest.raises(DatasetError, match="4x4"):
        runs.load_test_poses(bad)
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="malformed JSON"):
        runs.load_test_poses(bad)
