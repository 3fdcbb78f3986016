"""scripts/threshold_study.py: its threshold rules and the verdicts it counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from script_modules import load_script

from splatjax.anomaly.calibration import heldout_threshold


@pytest.fixture(scope="module")
def study():
    return load_script("threshold_study")


def test_the_lognormal_rule_is_the_librarys(study):
    s = np.random.default_rng(0).lognormal(8.0, 0.4, 30)
    assert study.lognormal(s, 0.05) == pytest.approx(heldout_threshold(s, 0.05), rel=1e-12)


def test_robust_rules_ignore_one_outlier_the_plain_one_follows(study):
    s = np.random.default_rng(1).lognormal(8.0, 0.3, 30)
    high = np.concatenate([s, [np.exp(8.0) * 20]])
    assert study.lognormal(high, 0.05) > 1.5 * study.lognormal(s, 0.05)
    for rule in (study.robust_lognormal, study.trimmed_lognormal):
        assert rule(high, 0.05) == pytest.approx(rule(s, 0.05), rel=0.15)
    assert study.empirical(np.arange(1.0, 102.0), 0.05) == pytest.approx(96.0)


def test_verdicts_flag_trusted_scores_above_the_threshold_only(study):
    rows = [{"label": "0", "score": "5", "pose_trusted": "1"}, {"label": "0", "score": "50", "pose_trusted": "1"},
            {"label": "1", "score": "50", "pose_trusted": "1"}, {"label": "1", "score": "50", "pose_trusted": "0"},
            {"label": "1", "score": "9", "pose_trusted": "1"}]
    v = study.verdicts(rows, 10.0)
    assert (v["false_positives"], v["good"], v["caught"], v["defective"]) == (1, 2, 1, 3)
    assert v["false_positive_rate"] == 0.5 and v["recall"] == pytest.approx(1 / 3)


def test_residual_trusted_drops_the_queries_the_residual_rule_would_not_trust(study):
    s = np.random.default_rng(2).lognormal(8.0, 0.3, 20)
    res = np.full(20, 0.01)
    high, res_high = np.concatenate([s, [np.exp(8.0) * 20]]), np.concatenate([res, [0.05]])  # 5x the median
    assert study.residual_trusted(high, res_high, 0.05) == pytest.approx(study.lognormal(s, 0.05))
    res_high[-1] = 0.02  # 2x: trusted, so it counts
    assert study.residual_trusted(high, res_high, 0.05) == pytest.approx(study.lognormal(high, 0.05))


def test_the_prediction_bound_is_above_the_plug_in_quantile_and_meets_it_with_many_samples(study):
    s = np.random.default_rng(3).lognormal(8.0, 0.4, 32)
    plug = study.lognormal(s, 0.05)
    assert study.prediction_bound(s, 0.05, 8) > study.prediction_bound(s, 0.05, 32) > plug
    assert study.prediction_bound(s, 0.05, 10**6) == pytest.approx(plug, rel=2e-3)


def test_the_prior_rule_is_the_librarys_with_one_view_per_rolled_set(study):
    from splatjax.anomaly import MapConfig

    mc = MapConfig()
    s = np.random.default_rng(5).lognormal(8.0, 0.1, 32)
    res = np.full(32, 0.01)
    want = heldout_threshold(s, 0.05, views=32 // (mc.calibration_rolls + 1), prior_log_sd=mc.heldout_prior_log_sd,
                             prior_views=mc.heldout_prior_views)
    assert study.residual_trusted_prior(s, res, 0.05) == pytest.approx(want)
    assert study.residual_trusted_prior(s, res, 0.05, prior_views=0) == pytest.approx(study.lognormal(s, 0.05))


def test_rescored_rows_take_the_new_scores_by_image_path(study, monkeypatch):
    import importlib
    import types

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    score_variants = importlib.import_module("score_variants")

    import splatjax.anomaly
    import splatjax.pose

    paths = ["test/good/0.png", "test/Stains/0.png", "test/good/1.png"]
    images = np.zeros((3, 4, 4, 3), np.float32)
    seen = {}
    monkeypatch.setattr(score_variants, "evaluated_poses", lambda path, data, cls: (None, f"cams of {path.name}"))
    monkeypatch.setattr(splatjax.pose, "render_views", lambda g, cams, **k: seen.setdefault("cams", cams) and images)
    monkeypatch.setattr(splatjax.anomaly, "compute_maps",
                        lambda r, q, mc, **k: types.SimpleNamespace(scores=np.array([1.0, 2.0, 3.0])))
    setting = types.SimpleNamespace(
        cls=types.SimpleNamespace(test=types.SimpleNamespace(paths=paths, images=images),
                                  train=types.SimpleNamespace(background=(1.0, 1.0, 1.0))),
        data=None, g=None, pc=types.SimpleNamespace(batch_size=2), mc=None, ext=None,
        base=types.SimpleNamespace(residual=None, highlight_cap=0.3))
    rows = [{"path": p, "score": "9", "label": lab} for p, lab in zip(reversed(paths), "010")]
    out = study.rescored(rows, Path("/some/eval"), setting)
    assert seen["cams"] == "cams of poses.json"
    assert [(r["path"], float(r["score"]), r["label"]) for r in out] == [
        ("test/good/1.png", 3.0, "0"), ("test/Stains/0.png", 2.0, "1"), ("test/good/0.png", 1.0, "0")]


def test_table_sums_each_rule_over_the_studies(study, tmp_path):
    import json

    def v(fp, tp):
        return {"false_positives": fp, "good": 12, "caught": tp, "defective": 36}

    for name, a, b in (("one", v(1, 30), v(0, 20)), ("two", v(2, 33), v(1, 25))):
        (tmp_path / f"{name}.json").write_text(json.dumps({"rules": {"old": a, "new": b}}))
    out = study.table([tmp_path / "one.json", tmp_path / "two.json"]).splitlines()
    assert out[0] == "| rule | one | two | all: FP | all: recall |"
    assert out[2] == "| old | 1/12, 30/36 | 2/12, 33/36 | 3/24 = 12.5 % | 63/72 = 0.88 |"
    assert out[3] == "| new | 0/12, 20/36 | 1/12, 25/36 | 1/24 = 4.2 % | 45/72 = 0.62 |"
