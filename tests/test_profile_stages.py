"""scripts/profile_stages.py (a step of scripts/gpu_check.sh) runs end to end on a tiny scene:
the fine-pose breakdown and the cost-against-work sweeps (fine pose, training step)."""

from __future__ import annotations

import json

from script_modules import load_script
from test_app_fit_run import _write_blender
from test_fitting import random_scene, toy_views

import splatjax as sj


def test_profile_stages_breakdown_and_sweep(tmp_path):
    views = toy_views()
    data = tmp_path / "scene"
    _write_blender(data, views, "train")
    _write_blender(data, views.subset([0, 3]), "val")
    sj.save_ply(random_scene(0, 24, spread=0.5), tmp_path / "model.ply")
    out = tmp_path / "prof.json"
    rc = load_script("profile_stages").main(["--data", str(data), "--model", str(tmp_path / "model.ply"),
                                             "--image-size", "24", "--batch", "2", "--steps", "3", "--repeats", "1",
                                             "--sweep-batches", "1", "2", "--sweep-sizes", "12",
                                             "--sweep-gaussians", "10", "40", "--fit-resolution", "24",
                                             "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["fine_pose"] and len(res["fine_pose_sweep"]) == 3
    assert [(r["batch"], r["image"]) for r in res["fine_pose_sweep"]] == [(1, 24), (2, 24), (2, 12)]
    assert all(r["ms_per_step"] > 0 and r["steps"] == 3 for r in res["fine_pose_sweep"])
    assert [r["gaussians"] for r in res["fit_sweep"]] == [10, 40]
    assert all(r["ms_per_step"] > 0 and r["image"] == 24 for r in res["fit_sweep"])
