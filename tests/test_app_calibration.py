"""splatjax.app.calibration: a model's heatmap scale is measured once, stored in its run
folder, reused (also by a copy of the run folder: keyed on the model's content), and
measured again for another setting, a changed model, an old mtime-keyed entry, or when
images are found after the moved-render stand-in was stored."""

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from app_toy import FAST_MAP, FAST_POSE, evaluated_toy

from splatjax.anomaly.features import WeightsFreeFeatures
from splatjax.app import calibration
from splatjax.context import QUIET
from splatjax.data import load_mad_train
from splatjax.gaussians import load_ply, save_ply


def test_calibration_is_stored_reused_and_refreshed(tmp_path, monkeypatch):
    out, report = evaluated_toy()
    run = tmp_path / "run"
    shutil.copytree(out / "model", run)
    train = load_mad_train(json.loads((run / "info.json").read_text())["data"], None)
    g = load_ply(run / "model.ply")
    args = dict(extractor=WeightsFreeFeatures(), pose_config=FAST_POSE)
    # the training-view calibration alone (the default rule would read evaluate's stored held-out entry)
    train_max = replace(FAST_MAP, threshold_rule="train-max")
    cal = calibration.model_calibration(run / "model.ply", g, train.cameras, train.images, train_max, **args)
    entries = json.loads((run / calibration.CALIBRATION_FILE).read_text())
    [base] = [v for k, v in entries.items() if "/held-out-" not in k]
    assert cal.rule == "train-max" and cal.threshold == pytest.approx(base["threshold"])  # as evaluate stored it
    assert cal.views == train_max.calibration_views and cal.vmax == pytest.approx(2 * cal.threshold)

    def boom(*a, **k):
        raise AssertionError("recomputed")

    with monkeypatch.context() as m:  # stored: read back, not recomputed
        m.setattr(calibration, "compute_maps", boom)
        assert calibration.model_calibration(run / "model.ply", g, train.cameras, None, train_max, **args) == cal
    other = calibration.model_calibration(run / "model.ply", g, train.cameras, train.images,
                                          replace(train_max, map_sigma=2.0), **args)
    assert other.map_sigma == 2.0 and other.threshold != cal.threshold
    stored = json.loads((run / calibration.CALIBRATION_FILE).read_text())
    assert {k.split("/")[2] for k in stored} >= {"sigma4", "sigma2"}  # one entry per setting
    st = os.stat(run / "model.ply")
    os.utime(run / "model.ply", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched (copied): same content
    with monkeypatch.context() as m:
        m.setattr(calibration, "compute_maps", boom)
        assert calibration.model_calibration(run / "model.ply", g, train.cameras, None, train_max, **args) == cal
    save_ply(replace(g, opacity_logits=g.opacity_logits - 0.01), run / "model.ply")  # "refitted": new content
    with monkeypatch.context() as m:
        m.setattr(calibration, "compute_maps", boom)
        with pytest.raises(AssertionError, match="recomputed"):
            calibration.model_calibration(run / "model.ply", g, train.cameras, train.images, train_max, **args)


def test_normalised_calibration_stores_the_residual_scales(tmp_path, monkeypatch):
    """normalise="level": the residual scales of the calibration pairs are measured first,
    the calibration maps use them, and both are stored under their own key and read back."""
    from splatjax.anomaly import compute_maps, highlight_cap, residual_scales

    out, _ = evaluated_toy()
    run = tmp_path / "run"
    shutil.copytree(out / "model", run)
    train = load_mad_train(json.loads((run / "info.json").read_text())["data"], None)
    g = load_ply(run / "model.ply")
    ext = WeightsFreeFeatures()
    config = replace(FAST_MAP, normalise="level", score="topk", score_k=20)
    seen = {}
    real = calibration.compute_maps

    def spy(renders, reference, cfg, **kw):
        seen["pairs"] = (renders, reference)
        return real(renders, reference, cfg, **kw)

    with monkeypatch.context() as m:
        m.setattr(calibration, "compute_maps", spy)
        cal = calibration.model_calibration(run / "model.ply", g, train.cameras, train.images, config,
                                            extractor=ext, pose_config=FAST_POSE)
    want = residual_scales(*seen["pairs"], ext, size=config.map_size)
    assert cal.residual == want and cal.normalise == "level" and cal.residual.views == config.calibration_views
    # the highlight cap of the same pairs (the default highlights="calibrated"), kept beside them
    assert cal.highlight_cap == highlight_cap(*seen["pairs"], FAST_POSE.background, config.highlight_percentile,
                                              config.highlight_saturation, "linear") > 0
    assert cal.highlight_saturation == config.highlight_saturation == 0.998 and cal.highlight_space == "linear"
    maps = compute_maps(*seen["pairs"], config, extractor=ext, residual=cal.residual, highlight_cap=cal.highlight_cap)
    assert cal.train_score_max == pytest.approx(float(maps.scores.max()), rel=1e-5)
    stored = json.loads((run / calibration.CALIBRATION_FILE).read_text())
    [key] = [k for k in stored if "norm-level" in k]
    assert "/topk/k20/norm-level/" in key
    with monkeypatch.context() as m:  # read back, residual included, not recomputed
        m.setattr(calibration, "compute_maps", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
        again = calibration.model_calibration(run / "model.ply", g, train.cameras, None, config, extractor=ext,
                                              pose_config=FAST_POSE)
    assert again == cal


def test_the_heldout_threshold_runs_the_views_held_out_of_the_fit_through_the_pipeline(tmp_path):
    """evaluate's fit held views out (info.json val_views); its threshold comes from their
    scores (and rolled copies) as queries, looked for among the other training cameras."""
    from splatjax.anomaly import heldout_log_sd, heldout_threshold, with_heldout

    out, report = evaluated_toy()
    run = out / "model"
    val = json.loads((run / "info.json").read_text())["val_views"]
    rule = report["threshold_rule"]
    assert rule["rule"] == "held-out" and rule["target_false_positive_rate"] == FAST_MAP.false_positive_rate
    total = len(val) * (1 + FAST_MAP.calibration_rolls)  # those with a trusted pose count (all, if under two)
    assert 2 <= rule["heldout_queries"] <= total
    assert set(report["verdicts"]) == {"false_positive_rate", "recall", "flagged", "pose_not_found"}
    train = load_mad_train(json.loads((run / "info.json").read_text())["data"], None)
    g = load_ply(run / "model.ply")
    held = calibration.heldout_views(run / "model.ply", train.paths, train.images, train.cameras, FAST_POSE)
    assert len(held.images) == len(val) and held.candidates.R.shape[0] == len(train) - len(val)
    # the data folder copied elsewhere (plain cp -r): the same views, found by their path inside it
    data = Path(json.loads((run / "info.json").read_text())["data"])
    copy = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(data, copy)
    moved = load_mad_train(copy, None)
    again_held = calibration.heldout_views(run / "model.ply", moved.paths, moved.images, moved.cameras, FAST_POSE)
    np.testing.assert_array_equal(again_held.images, held.images)
    assert calibration.held_out_in_moved_data(run / "model.ply", moved.paths) == \
        calibration.held_out_among(val, train.paths)
    assert calibration.held_out_among(val, moved.paths) == []  # the recorded absolute paths name the old copy
    ext = WeightsFreeFeatures()
    base = calibration.model_calibration(run / "model.ply", g, train.cameras, train.images,
                                         replace(FAST_MAP, threshold_rule="train-max"), extractor=ext,
                                         pose_config=FAST_POSE)
    hs = calibration.heldout_scores(g, held, FAST_POSE, FAST_MAP, extractor=ext, highlight_cap=base.highlight_cap)
    assert hs.scores.shape == hs.losses.shape == hs.residuals.shape == hs.silhouette_ok.shape == (total,)
    assert np.all(hs.losses > 0) and np.all(hs.residuals >= 0)
    assert hs.mismatches.shape == (total,) and np.all((hs.mismatches >= 0) & (hs.mismatches <= 1))
    ref, counted = hs.references, hs.counted(FAST_POSE.max_residual_ratio, FAST_POSE.residual_outline_ratio)
    assert not (counted & ~ref).any()  # the residual rule only ever removes silhouette-trusted queries
    scores, losses, residuals = hs.scores[counted], hs.losses[ref], hs.residuals[ref]
    assert with_heldout(base, scores, FAST_MAP).threshold == pytest.approx(report["threshold"], rel=1e-5)
    views = -(-scores.size // (FAST_MAP.calibration_rolls + 1))  # one per held-out view and its rolled copies
    assert rule["heldout_log_sd"] == pytest.approx(heldout_log_sd(
        scores, views=views, prior_log_sd=FAST_MAP.heldout_prior_log_sd, prior_views=FAST_MAP.heldout_prior_views),
        rel=1e-5)
    assert rule["heldout_queries"] == counted.sum()
    assert report["highlight_cap"] == pytest.approx(base.highlight_cap) and base.highlight_cap >= 0
    again = calibration.model_calibration(run / "model.ply", g, train.cameras, train.images, FAST_MAP, extractor=ext,
                                          pose_config=FAST_POSE, heldout=held)  # stored: read back
    assert again.rule == "held-out" and again.threshold == pytest.approx(report["threshold"])
    assert again.heldout_pose_loss == pytest.approx(float(np.median(losses)), rel=1e-5)  # the loss rule's reference
    assert again.heldout_pose_residual == pytest.approx(float(np.median(residuals)), rel=1e-5)  # the residual rule's
    assert again.heldout_pose_mismatch == pytest.approx(float(np.median(hs.mismatches[ref])), rel=1e-5)  # outline's
    assert again.describe() == "5 % FPR" and again.vmax == pytest.approx(2 * again.threshold)
    # without the held-out images (the data folder gone) the stored held-out calibration is still read back ...
    gone = calibration.model_calibration(run / "model.ply", g, train.cameras, train.images,
                                         replace(FAST_MAP, threshold_rule="held-out"), extractor=ext,
                                         pose_config=FAST_POSE)
    assert gone.rule == "held-out" and gone.threshold == pytest.approx(report["threshold"])
    # ... and where none is stored for the setting, the held-out rule says what it needs
    with pytest.raises(Exception, match="held out"):
        calibration.model_calibration(run / "model.ply", g, train.cameras, train.images,
                                      replace(FAST_MAP, threshold_rule="held-out", false_positive_rate=0.1),
                                      extractor=ext, pose_config=FAST_POSE)
    assert heldout_threshold([1.0, 1.0 + 1e-9], 0.05) == pytest.approx(1.0)


def test_held_out_queries_and_the_key_of_their_pose_settings():
    """The calibration's queries are the views, then each roll's block; its stored entry is
    keyed by the pose settings that pose those queries (not by the loss rule, applied only
    to test queries)."""
    from splatjax.pose import PoseConfig

    images = np.random.default_rng(0).uniform(0.2, 0.8, (2, 16, 16, 3)).astype(np.float32)
    q = calibration.heldout_queries(images, 3, (1.0, 1.0, 1.0))
    assert q.shape == (8, 16, 16, 3) and np.array_equal(q[:2], images)
    np.testing.assert_allclose(calibration.roll_angles(3), [0.0, np.pi / 2, np.pi, 3 * np.pi / 2])
    digest = calibration._pose_digest
    assert digest(PoseConfig()) == digest(PoseConfig(max_loss_ratio=2.5)) == digest(PoseConfig(max_residual_ratio=0))
    assert digest(PoseConfig()) == digest(PoseConfig(residual_outline_ratio=0))  # in the key's tail instead
    assert digest(PoseConfig()) != digest(PoseConfig(screen_steps=0))


def test_held_out_queries_count_for_the_threshold_as_a_test_query_would_be_trusted():
    """The references are the silhouette-trusted queries; the threshold counts those of them
    whose residual is at most max_residual_ratio x the references' median and loss at most
    max_loss_ratio x theirs (the residual and loss rules as they judge a test query); with
    fewer than two left, the references."""
    ok = np.array([True, True, True, True, False])
    held = calibration.HeldOutScores(scores=np.arange(1.0, 6.0), losses=np.ones(5),
                                     residuals=np.array([0.01, 0.012, 0.011, 0.05, 0.5]), silhouette_ok=ok)
    assert held.references.tolist() == ok.tolist()  # median residual of the references: 0.0115
    assert held.counted(3.0).tolist() == [True, True, True, False, False]  # 0.05 > 3 x 0.0115
    assert held.counted(5.0).tolist() == ok.tolist() and held.counted(0.0).tolist() == ok.tolist()
    lone = calibration.HeldOutScores(scores=np.ones(3), losses=np.ones(3), residuals=np.array([0.01, 0.1, 0.1]),
                                     silhouette_ok=np.array([True, False, False]))
    assert lone.references.all() and lone.counted(3.0).all()  # one trusted: all count, as before the rule
    few = calibration.HeldOutScores(scores=np.ones(3), losses=np.ones(3), residuals=np.array([0.01, 0.01, 1.0]),
                                    silhouette_ok=np.ones(3, bool))
    assert few.counted(3.0).tolist() == [True, True, False]
    # with outline mismatches the residual rule asks the outline too, as for a test query: the fourth query's
    # residual is high but its outline is the references' (a defect-like difference), the fifth's both are high
    outl = calibration.HeldOutScores(scores=np.ones(5), losses=np.ones(5),
                                     residuals=np.array([0.01, 0.01, 0.012, 1.0, 1.0]), silhouette_ok=np.ones(5, bool),
                                     mismatches=np.array([0.02, 0.02, 0.021, 0.02, 0.5]))
    assert outl.counted(3.0, 3.0).tolist() == [True, True, True, True, False]
    assert outl.counted(3.0).tolist() == outl.counted(3.0, 0.0).tolist() == [True, True, True, False, False]
    # the loss rule likewise: the fourth query's loss is high with the references' outline, the fifth's both
    lossy = calibration.HeldOutScores(scores=np.ones(5), losses=np.array([0.01, 0.01, 0.012, 0.1, 0.1]),
                                      residuals=np.full(5, 0.01), silhouette_ok=np.ones(5, bool),
                                      mismatches=np.array([0.02, 0.02, 0.021, 0.02, 0.5]))
    assert lossy.counted(3.0, 3.0, 3.5).tolist() == [True, True, True, True, False]
    assert lossy.counted(3.0, 0.0, 3.5).tolist() == [True, True, True, False, False]  # the loss alone
    assert lossy.counted(3.0, 3.0, 0.0).all()  # no loss rule


def test_detect_keeps_the_held_out_threshold_once_the_data_folder_has_moved(tmp_path):
    """A run folder whose class folder has moved away since evaluate calibrated it (its
    info.json and cameras.json name files that are gone): detect, which poses with its own
    settings (render-and-compare; here also another batch size, so another pose digest),
    reads the held-out threshold evaluate stored in the run folder, and says so, instead of
    falling back to the training maximum."""
    from splatjax.app.detect import detect
    from splatjax.context import Context

    out, report = evaluated_toy()
    run = tmp_path / "run"
    shutil.copytree(out / "model", run)
    old = json.loads((run / "info.json").read_text())["data"]
    gone = str(tmp_path / "moved_away" / "toy")
    for name in ("info.json", "cameras.json"):
        (run / name).write_text((run / name).read_text().replace(old, gone))
    assert not Path(gone).exists() and json.loads((run / "info.json").read_text())["val_views"]
    query = Path(old) / "test" / "good" / "0.png"
    log = []
    own = replace(FAST_POSE, batch_size=FAST_POSE.batch_size + 1)
    assert calibration._pose_digest(replace(own, coarse="render")) != calibration._pose_digest(FAST_POSE)
    result = detect(run, [query], tmp_path / "det", pose_config=own, map_config=FAST_MAP,
                    say=lambda line: None, context=Context(log=log.append))
    assert report["threshold_rule"]["rule"] == "held-out"
    assert result["threshold"] == pytest.approx(report["threshold"]) and result["threshold_rule"] == "5 % FPR"
    assert any("measured with other pose settings" in line for line in log)
