"""splatjax.app.evaluate past one device and one process (issue 11): ``splatjax evaluate``
on the tiny toy with 4 forced CPU devices gives the poses, renders, maps and metrics of
one device; two processes joined with jax.distributed on 127.0.0.1 evaluate one class each
and gather the report of a single-process run."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from app_toy import toy_dataset
from test_app_distributed import run_workers
from test_app_evaluate import _fixed_model
from test_sharding import ROOT, subprocess_env

from splatjax import available_backends
from splatjax.context import QUIET

pytestmark = pytest.mark.skipif("cpu" not in available_backends(), reason="the CPU rasterizer kernel is not built")

# the small settings of the app tests (FAST_POSE, FAST_MAP) as command-line flags, 64 x 64 maps
FLAGS = ["--steps", "3", "--screen-steps", "3", "--batch-size", "4", "--coarse", "render", "--coarse-resolution", "16",
         "--features", "weights-free", "--map-size", "64", "--calibration-views", "6", "--seed", "3",
         "--no-heatmaps", "--quiet"]

# In a child with 4 forced CPU devices: the real command line, once per device setting, with
# a spy on run_stages that keeps the poses, renders and maps it produced (per batch).
SHARDED_SCRIPT = r"""
import json, sys
import jax, numpy as np
import splatjax.app.evaluate as ev
from splatjax.app.cli import main

assert jax.local_device_count() == 4, jax.devices()
toy, model, out, flags = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
real, seen = ev.run_stages, []
ev.run_stages = lambda *a, **k: seen.append(real(*a, **k)) or seen[-1]
CASES = {"d1": ["--devices", "1"], "d4": ["--devices", "4"], "d3": ["--devices", "3", "--per-device-batch", "2"]}
for name in json.loads(sys.argv[5]):
    extra = CASES[name]
    start = len(seen)
    assert main(["evaluate", toy, "--model", model, "--out", f"{out}/{name}", *flags, *extra]) == 0
    dets = seen[start:]  # evaluate runs the stages once per batch of queries
    cat = lambda f: np.concatenate([np.asarray(f(d)) for d in dets])
    np.savez(f"{out}/{name}.npz", R=cat(lambda d: d.poses.cameras.R), t=cat(lambda d: d.poses.cameras.t),
             traces=cat(lambda d: d.poses.loss_traces), renders=cat(lambda d: d.renders),
             maps=cat(lambda d: d.maps.maps), scores=cat(lambda d: d.maps.scores))
print("DONE")
"""

METRICS = ("image_auroc", "pixel_auroc", "aupro", "threshold", "num_test_images", "num_defective")


def _scores(csv_path):
    with open(csv_path) as f:
        return [float(row["score"]) for row in csv.DictReader(f)]


@pytest.mark.parametrize("name,devices", [("d4", 4), pytest.param("d3", 3, marks=pytest.mark.slow)])
def test_evaluate_on_four_forced_devices_equals_one_device(tmp_path, name, devices):
    # d4: 8 queries, 2 per device; d3 (slow): 3 x 2 per launch, padded
    model = _fixed_model(tmp_path / "run")
    proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, str(toy_dataset()), str(model), str(tmp_path),
                           json.dumps(FLAGS), json.dumps(["d1", name])], cwd=ROOT, env=subprocess_env(4),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stderr[-3000:]
    one = np.load(tmp_path / "d1.npz")
    base = json.loads((tmp_path / "d1" / "report.json").read_text())
    assert base["parallel"]["devices"] == 1 and base["parallel"]["processes"] == 1
    got = np.load(tmp_path / f"{name}.npz")
    assert got["R"].shape == (8, 3, 3)
    np.testing.assert_allclose(got["R"], one["R"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["t"], one["t"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["traces"], one["traces"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got["renders"], one["renders"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["maps"], one["maps"], atol=1e-4, rtol=1e-4)
    report = json.loads((tmp_path / name / "report.json").read_text())
    assert report["parallel"]["devices"] == devices
    assert report["parallel"]["queries"] == 8 and report["parallel"]["queries_per_s_per_device"] > 0
    for k in METRICS:
        assert report[k] == pytest.approx(base[k], rel=1e-5, abs=1e-6), k
    np.testing.assert_allclose(_scores(tmp_path / name / "per_image.csv"),
                               _scores(tmp_path / "d1" / "per_image.csv"), rtol=1e-5)
    poses = json.loads((tmp_path / name / "poses.json").read_text())["fine"]
    base_poses = json.loads((tmp_path / "d1" / "poses.json").read_text())["fine"]
    for path, c2w in poses.items():
        np.testing.assert_allclose(c2w, base_poses[path], atol=1e-5)


# A process of a two-process job on 127.0.0.1: the real `evaluate` over both toy classes
# (one each), then it writes what it returned.
WORKER = r"""
import json, sys
from splatjax.app.evaluate import evaluate
from splatjax.context import QUIET
from splatjax.sharding import ParallelConfig
from app_toy import FAST_MAP, FAST_POSE
from dataclasses import replace

port, pid, classes, model, out = sys.argv[1], int(sys.argv[2]), sys.argv[3:5], sys.argv[5], sys.argv[6]
parallel = ParallelConfig(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                          initialization_timeout=90)
reports = evaluate(classes, out, model=model, pose_config=replace(FAST_POSE, steps=3),
                   map_config=replace(FAST_MAP, map_size=64), seed=3, heatmaps=False, context=QUIET,
                   parallel=parallel)
import jax
print("RESULT " + json.dumps({"index": jax.process_index(), "reports": reports}), flush=True)
jax.distributed.shutdown()
"""

# what differs between runs of equal results: timings, where, and on how many processes
VOLATILE = ("seconds", "queries_per_second", "seconds_per_query_without_coarse", "parallel")


def _comparable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in VOLATILE}


@pytest.mark.slow  # about 1 min on 2 cores; test_app_distributed covers the gather in the default run
def test_two_processes_evaluate_a_class_each_and_gather_the_single_process_report(tmp_path):
    from dataclasses import replace

    from app_toy import FAST_MAP, FAST_POSE

    from splatjax.app.evaluate import evaluate

    classes, models = [], tmp_path / "models"
    for name in ("01Toy", "02Toy"):
        shutil.copytree(toy_dataset(), tmp_path / "data" / name)
        classes.append(str(tmp_path / "data" / name))
        _fixed_model(models / name)
    outs = run_workers(WORKER, lambda i: (i, *classes, models, tmp_path / "multi"), subprocess_env())
    single = evaluate(classes, tmp_path / "single", model=models, pose_config=replace(FAST_POSE, steps=3),
                      map_config=replace(FAST_MAP, map_size=64), seed=3, heatmaps=False, context=QUIET)
    assert [o["index"] for o in outs] == [0, 1]
    for o in outs:  # every process returns both classes' reports, equal to one process's
        assert [r["class"] for r in o["reports"]] == ["01Toy", "02Toy"]
        assert [_comparable(r) for r in o["reports"]] == [_comparable(r) for r in single]
    # each process evaluated its own class (its rank in the report), and process 0 wrote the summary
    assert [r["parallel"]["process_index"] for r in outs[0]["reports"]] == [0, 1]
    assert all(r["parallel"]["processes"] == 2 for r in outs[0]["reports"])
    multi_summary = json.loads((tmp_path / "multi" / "report.json").read_text())
    single_summary = json.loads((tmp_path / "single" / "report.json").read_text())
    assert multi_summary["classes"] == single_summary["classes"] == ["01Toy", "02Toy"]
    assert multi_summary["mean"]["image_auroc"] == single_summary["mean"]["image_auroc"]
    assert multi_summary["mean"]["aupro"] == single_summary["mean"]["aupro"]
    assert (tmp_path / "multi" / "table.md").is_file()
    for name in ("01Toy", "02Toy"):
        assert _scores(tmp_path / "multi" / name / "per_image.csv") == _scores(tmp_path / "single" / name /
                                                                               "per_image.csv")


def test_more_devices_than_there_are_is_a_one_line_error(tmp_path, capsys):
    from splatjax.app.cli import main

    n = __import__("jax").local_device_count()
    assert main(["evaluate", str(toy_dataset()), "--model", str(tmp_path), "--out", str(tmp_path / "out"),
                 "--devices", str(n + 1), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--devices" in err and "device" in err
    assert not (tmp_path / "out").exists()
