"""splatjax.app.distributed: shares, resume, and two local processes joined with
jax.distributed on 127.0.0.1 (CPU, gloo collectives; two forced devices each, the
queries sharded over them) whose gathered report equals a single-process run."""

import json
import socket
import subprocess
import sys
import zlib

import jax
import numpy as np
import pytest

from scenes import random_scene
from splatjax import camera_from_blender, look_at_c2w, render, stack_cameras
from splatjax.errors import ConfigError
from splatjax.app.distributed import gather_reports, initialize_distributed, parallel_info, process_share, run_classes
from splatjax.files import read_json, write_json
from splatjax.sharding import ParallelConfig, shard_over_queries
from test_sharding import ROOT, subprocess_env

CLASSES = ["01Brick", "02Tower"]

_render_stack = jax.vmap(lambda g, c: render(g, c)[0], in_axes=(None, 0))


def toy_class_report(name: str) -> dict:
    """A stand-in for evaluating one class: render a seeded scene from 4 cameras (sharded
    over the local devices) and score each image."""
    g = random_scene(zlib.crc32(name.encode()) % 1000, n=60)
    angles = np.linspace(0.0, 2 * np.pi, 5)[:4]
    cams = stack_cameras([camera_from_blender(look_at_c2w([3 * np.cos(a), 3 * np.sin(a), 1.0]), 0.7, 24, 24)
                          for a in angles])
    rgb = np.asarray(shard_over_queries(_render_stack, g, cams, in_axes=(None, 0)))
    scores = (1.0 - rgb).mean(axis=(1, 2, 3))
    return {"class": name, "image_scores": [float(s) for s in scores], "score": float(scores.max())}


@pytest.mark.parametrize("n, count", [(0, 3), (1, 2), (2, 2), (5, 2), (7, 3), (20, 6), (3, 5)])
def test_process_share_is_balanced_and_complete(n, count):
    items = [f"c{i}" for i in range(n)]
    shares = [process_share(items, i, count) for i in range(count)]
    assert sum(shares, []) == items  # each item once, in order
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert shares == [process_share(items, i, count) for i in range(count)]  # deterministic
    with pytest.raises(ValueError):
        process_share(items, count, count)


def test_single_process_is_a_no_op():
    assert initialize_distributed(ParallelConfig()) == (0, 1)
    assert initialize_distributed(ParallelConfig(coordinator_address="127.0.0.1:1", num_processes=1,
                                                 process_id=0)) == (0, 1)
    assert gather_reports({"a": {"x": 1}}) == {"a": {"x": 1}}


def test_run_classes_writes_each_class_and_resumes(tmp_path):
    calls = []

    def evaluate(name):
        calls.append(name)
        return {"class": name, "score": len(name)}

    write_json(tmp_path / "b" / "report.json", {"class": "b", "score": -1})  # done before an interruption
    seen = []
    out = run_classes(["a", "b", "c"], evaluate, tmp_path, on_class=lambda n, s: seen.append((n, s)))
    assert calls == ["a", "c"] and seen == [("a", "done"), ("b", "resumed"), ("c", "done")]
    assert list(out) == ["a", "b", "c"] and out["b"]["score"] == -1
    assert read_json(tmp_path / "c" / "report.json") == {"class": "c", "score": 1}
    again = run_classes(["a", "b", "c"], evaluate, tmp_path)  # nothing left to do
    assert again == out and calls == ["a", "c"]
    # a share without jax.distributed (e.g. a job array): process 1 of 2 evaluates and returns "c" alone
    assert list(run_classes(["a", "b", "c"], evaluate, tmp_path / "p1", process_index=1, process_count=2)) == ["c"]
    assert calls == ["a", "c", "c"]


def test_parallel_info_fields():
    info = parallel_info(2, 10, 4.0)
    assert info["devices"] == 2 and info["processes"] == 1 and info["queries_per_s"] == 2.5
    assert info["queries_per_s_per_device"] == 1.25 and isinstance(info["device_kind"], str)


WORKER = r"""
import json, sys
import jax
from splatjax.app.distributed import initialize_distributed, run_classes
from splatjax.files import write_json
from splatjax.sharding import ParallelConfig

port, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
config = ParallelConfig(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                        initialization_timeout=90)
index, count = initialize_distributed(config)
from test_app_distributed import CLASSES, toy_class_report
seen = []
reports = run_classes(CLASSES, toy_class_report, out, on_class=lambda n, s: seen.append([n, s]))
if index == 0:
    write_json(f"{out}/gathered.json", reports)
print("RESULT " + json.dumps({"index": index, "count": count, "seen": seen, "reports": reports}), flush=True)
jax.distributed.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(worker: str, args_of, env: dict, count: int = 2) -> list:
    """Start ``count`` Python processes running ``worker`` with ``args_of(i)`` (after the
    coordinator port) and return the JSON each printed on its ``RESULT `` line."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", worker, str(port), *map(str, args_of(i))], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(count)]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=240)
            assert p.returncode == 0, stderr[-3000:]
            outs.append(json.loads(next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))[7:]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs


def test_two_processes_gather_the_single_process_report(tmp_path):
    outs = run_workers(WORKER, lambda i: (i, tmp_path / "multi"), subprocess_env(2))
    single = run_classes(CLASSES, toy_class_report, tmp_path / "single")
    assert [(o["index"], o["count"]) for o in outs] == [(0, 2), (1, 2)]
    assert [o["seen"] for o in outs] == [[[CLASSES[0], "done"]], [[CLASSES[1], "done"]]]  # one class each
    for o in outs:  # every process holds the gathered report, equal to one process's
        assert o["reports"] == single
    assert read_json(tmp_path / "multi" / "gathered.json") == single
    # the per-class reports on disk let a rerun (any process count) resume without evaluating
    resumed = run_classes(CLASSES, lambda name: pytest.fail(f"{name} evaluated again"), tmp_path / "multi")
    assert resumed == single


def test_failed_join_is_a_config_error(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "PMI_RANK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError) as e:  # no cluster to detect here (or JAX already running)
        initialize_distributed(ParallelConfig(distributed=True))
    assert e.value.option == "distributed"


def test_unreachable_coordinator_is_a_config_error():
    config = ParallelConfig(coordinator_address=f"127.0.0.1:{_free_port()}", num_processes=2, process_id=1,
                            initialization_timeout=1)
    with pytest.raises(ConfigError, match="nothing answers") as e:
        initialize_distributed(config)
    assert e.value.option == "coordinator_address"
