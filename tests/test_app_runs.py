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


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no fitted model"):
        runs.resolve_model(tmp_path)
