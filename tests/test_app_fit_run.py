"""The fit's run folder: files written, resolution defaults, resume rules, time-cadence
checkpoints, and an interrupted `splatjax fit` (SIGINT in a subprocess) resumed to the same
model as an uninterrupted fit (tiny scenes, reference renderer)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_fitting import TOY, toy_views

import splatjax as sj
from splatjax.app.checkpoint import read_metrics
from splatjax.app.fit_run import fit_config_changes, run_fit
from splatjax.errors import ConfigError, UserError
from splatjax.fitting import FitConfig
from splatjax.context import QUIET, Context

REPO = Path(__file__).resolve().parents[1]


def _write_blender(root: Path, views, split: str) -> Path:
    from PIL import Image

    (root / split).mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (img, m) in enumerate(zip(views.images, views.c2w)):
        rgba = np.concatenate([np.round(img * 255), np.full(img.shape[:2] + (1,), 255.0)], -1)
        Image.fromarray(rgba.astype(np.uint8), "RGBA").save(root / split / f"r_{i}.png")
        frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": m.tolist()})
    (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": views.camera_angle_x, "frames": frames}))
    return root


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    views = toy_views()
    root = tmp_path_factory.mktemp("data") / "scene"
    _write_blender(root, views, "train")
    _write_blender(root, views.subset([0, 3]), "val")
    return root


def test_run_folder_files(scene, tmp_path):
    run, lines = tmp_path / "run", []
    summary = run_fit(scene, run, TOY, context=Context(log=lines.append))
    assert summary["completed"] and summary["steps_this_session"] == 60 and summary["session"] == 1
    g = sj.load_ply(run / "model.ply")
    assert g.num == summary["num_gaussians"] and json.loads((run / "info.json").read_text()) == json.loads(
        json.dumps(summary))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["fit_config"]["iterations"] == 60 and cfg["image_size"] == [24, 24] and cfg["resolution"] == 24
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [10, 20, 30, 40, 50, 60] and {r["session"] for r in records} == {1}
    assert {"loss", "psnr", "num_gaussians", "capacity", "steps_per_second"} <= set(records[0])
    assert records[-1]["val_psnr"] == summary["val_psnr"]
    assert any(line.startswith("[splatjax fit] step 60/60") for line in lines)
    with pytest.raises(UserError, match="inside the dataset folder"):
        run_fit(scene, scene / "run", TOY)
    with pytest.raises(UserError, match="neither a Blender/NeRF folder"):
        run_fit(run, tmp_path / "run2", TOY)


def test_resolution_follows_the_data(scene, tmp_path):
    lines = []
    cfg = dataclasses.replace(TOY, iterations=10, resolution=48)
    with pytest.raises(ConfigError, match="would upsample 24 px"):
        run_fit(scene, tmp_path / "a", cfg, context=Context(log=lines.append))
    assert not (tmp_path / "a").exists()
    run_fit(scene, tmp_path / "b", dataclasses.replace(cfg, upsample=True), context=Context(log=lines.append))
    assert json.loads((tmp_path / "b" / "config.json").read_text())["image_size"] == [48, 48]


def test_mad_class_folder(tmp_path):
    from PIL import Image

    views = toy_views(n_views=24)
    data = tmp_path / "01Toy"
    (data / "train" / "good").mkdir(parents=True)
    frames = []
    for i, (img, m) in enumerate(zip(views.images, views.c2w)):
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(data / "train" / "good" / f"{i}.png")
        frames.append({"file_path": f"train/good/{i}.png", "transform_matrix": m.tolist()})
    (data / "transforms.json").write_text(json.dumps({"camera_angle_x": views.camera_angle_x, "frames": frames}))
    n = len(views)
    summary = run_fit(data, tmp_path / "run", dataclasses.replace(TOY, iterations=20, holdout_views=3), context=QUIET)
    assert summary["completed"] and (tmp_path / "run" / "model.ply").is_file()
    # no validation split in a MAD folder: 3 views evenly spread are held out and scored
    held = [f"train/good/{i}.png" for i in np.round(np.linspace(0, n - 1, 5)[1:-1]).astype(int)]
    assert [str(Path(p).relative_to(data)) for p in summary["val_views"]] == held
    assert all(os.path.isabs(p) for p in summary["val_views"])  # usable from any working directory
    assert np.isfinite(summary["val_psnr"]) and 0.0 < summary["val_ssim"] <= 1.0
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert len(record["train_views"]) == n - 3
    off = run_fit(data, tmp_path / "off", dataclasses.replace(TOY, iterations=20), context=QUIET, val_split=None)
    assert off["val_psnr"] is None and off["val_views"] is None  # --no-val: every view is fitted
    capped = run_fit(data, tmp_path / "all", dataclasses.replace(TOY, iterations=20, holdout_views=n), context=QUIET)
    assert len(capped["val_views"]) == n // 8  # at most an eighth of the views is held out


def test_resume_rules(scene, tmp_path):
    quiet = dict(context=QUIET)
    with pytest.raises(UserError, match="nothing to resume"):
        run_fit(scene, tmp_path / "missing", TOY, resume=True, **quiet)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="nothing to resume"):
        run_fit(scene, tmp_path / "empty", TOY, resume=True, **quiet)
    cfg = dataclasses.replace(TOY, iterations=20, checkpoint_every=10)
    run_fit(scene, tmp_path / "run", cfg, **quiet)
    with pytest.raises(UserError, match="earlier fit.*--resume"):
        run_fit(scene, tmp_path / "run", cfg, **quiet)
    with pytest.raises(UserError, match=r"different settings \(iterations: 20 -> 30; percent_dense"):
        run_fit(scene, tmp_path / "run", dataclasses.replace(cfg, iterations=30, percent_dense=0.02), resume=True,
                **quiet)
    # logging and checkpoint cadences may change; resuming a finished fit changes nothing
    again = run_fit(scene, tmp_path / "run", dataclasses.replace(cfg, log_every=20), resume=True, **quiet)
    assert again["completed"] and again["already_complete"] and again["session"] == 1


def test_resume_of_a_run_from_before_a_setting_existed(scene, tmp_path):
    """A run's config.json written before a FitConfig field was added resumes with that
    field at its default (which is what the run used), and only then."""
    quiet = dict(context=QUIET)
    cfg = dataclasses.replace(TOY, iterations=20, checkpoint_every=10)
    run_fit(scene, tmp_path / "run", cfg, **quiet)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    for new_field in ("sh_degree", "lr_sh_rest_factor"):
        del record["fit_config"][new_field]
    (tmp_path / "run" / "config.json").write_text(json.dumps(record))
    again = run_fit(scene, tmp_path / "run", cfg, resume=True, **quiet)
    assert again["completed"] and again["already_complete"]
    with pytest.raises(UserError, match=r"different settings \(sh_degree: 0 -> 1\)"):
        run_fit(scene, tmp_path / "run", dataclasses.replace(cfg, sh_degree=1), resume=True, **quiet)
    assert fit_config_changes(record["fit_config"], cfg) == []


def test_time_cadence_checkpoints(scene, tmp_path):
    cfg = dataclasses.replace(TOY, iterations=30, densify_until=0, checkpoint_every=10**6, checkpoint_minutes=1e-9)
    run_fit(scene, tmp_path / "run", cfg, context=QUIET)
    steps = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [20, 30]  # every chunk (the newest two are kept)


def test_sigint_writes_checkpoint_and_resume_matches_uninterrupted(scene, tmp_path):
    """`splatjax fit` in a subprocess gets SIGINT after its first progress line: it ends the
    chunk, checkpoints, prints one line and exits 130; resuming gives the uninterrupted model."""
    cfg = FitConfig(iterations=600, init_points=48, capacity=64, backend="reference", val_every=500)
    run = tmp_path / "run"
    cmd = [sys.executable, "-u", "-m", "splatjax.app.cli", "fit", str(scene), "--out", str(run), "--iterations",
           "600", "--init-points", "48", "--capacity", "64", "--backend", "reference", "--val-every", "500"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith("[splatjax fit] step") and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            break
    out += proc.stdout.readlines()
    assert proc.wait(timeout=120) == 130, "".join(out)
    text = "".join(out)
    stops = [line for line in out if line.startswith("interrupted at step")]
    assert len(stops) == 1 and "Traceback" not in text and "KeyboardInterrupt" not in text, text
    step = int(stops[0].split()[3].rstrip(";"))
    assert 100 <= step < 600 and stops[0].strip().endswith(f"resume with: splatjax fit {run} --resume")
    assert json.loads((run / "info.json").read_text())["interrupted"] == "SIGINT"

    resumed = run_fit(scene, run, cfg, resume=True, context=QUIET)
    assert resumed["completed"] and resumed["steps_this_session"] == 600 - step and resumed["session"] == 2
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(100, 601, 100))  # appended, none lost or doubled
    assert {r["session"] for r in records if r["step"] <= step} == {1}
    assert {r["session"] for r in records if r["step"] > step} == {2}

    run_fit(scene, tmp_path / "full", cfg, context=QUIET)
    a, b = sj.load_ply(run / "model.ply"), sj.load_ply(tmp_path / "full" / "model.ply")
    assert a.num == b.num
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh0"):
        np.testing.assert_allclose(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), rtol=1e-6, atol=1e-7)


def test_runs_made_before_holdout_views_existed_held_none_out():
    saved = json.loads(json.dumps(dataclasses.asdict(FitConfig())))
    del saved["holdout_views"]  # a config.json written before the field was added
    assert fit_config_changes(saved, FitConfig(holdout_views=0)) == []
    assert [c[0] for c in fit_config_changes(saved, FitConfig())] == ["holdout_views"]


def test_a_supersampled_fit_records_its_samples_and_scores_with_them(scene, tmp_path):
    """--supersample 2: config.json records it (what evaluate and detect render the model
    with), and the validation PSNR is that of 2 x 2-sample renders of the saved model."""
    from splatjax.app.runs import model_supersample
    from splatjax.data import load_blender
    from splatjax.fitting.train import evaluate as score

    with pytest.raises(ConfigError, match="supersample"):
        dataclasses.replace(TOY, supersample=0)
    run = tmp_path / "run"
    summary = run_fit(scene, run, dataclasses.replace(TOY, iterations=20, supersample=2))
    assert json.loads((run / "config.json").read_text())["fit_config"]["supersample"] == 2
    assert model_supersample(run / "model.ply") == 2
    val = load_blender(scene, "val")
    g = sj.load_ply(run / "model.ply")
    psnr = {k: float(np.mean(np.asarray(score(g, val.images, val.cameras, backend=TOY.backend,
                                              background=tuple(TOY.background), supersample=k)[0])))
            for k in (1, 2)}
    assert summary["val_psnr"] == pytest.approx(psnr[2], abs=1e-4) and abs(psnr[1] - psnr[2]) > 1e-3
    bare = tmp_path / "bare"
    bare.mkdir()
    sj.save_ply(g, bare / "model.ply")
    assert model_supersample(bare / "model.ply") == 1  # a .ply without a run folder: one sample per pixel
