"""splatjax.sharding: ParallelConfig, the query mesh, and shard_over_queries, in process
(one CPU device) and in a subprocess with four forced CPU devices (the FFI rasterizer
inside shard_map, sharded results equal to one device)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from splatjax import available_backends
from splatjax.errors import ConfigError
from splatjax.sharding import ParallelConfig, padded_batch, query_mesh, shard_over_queries

ROOT = Path(__file__).resolve().parents[1]


def subprocess_env(devices: int | None = None) -> dict:
    """Environment for a child Python that imports this checkout's splatjax and tests/."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


@pytest.mark.parametrize("kwargs, option", [
    (dict(devices=0), "devices"),
    (dict(per_device_batch=-3), "per_device_batch"),
    (dict(devices=1.5), "devices"),
    (dict(coordinator_address="localhost"), "coordinator_address"),
    (dict(coordinator_address="10.0.0.1:1234", num_processes=2), "process_id"),
    (dict(num_processes=2, process_id=0), "coordinator_address"),
    (dict(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=2), "process_id"),
    (dict(initialization_timeout=0), "initialization_timeout"),
])
def test_config_rejects_bad_values(kwargs, option):
    with pytest.raises(ConfigError) as e:
        ParallelConfig(**kwargs)
    assert e.value.option == option and e.value.owner == "ParallelConfig"


def test_config_multi_process():
    assert not ParallelConfig().multi_process
    assert ParallelConfig(distributed=True).multi_process
    assert not ParallelConfig(coordinator_address="h:1", num_processes=1, process_id=0).multi_process
    assert ParallelConfig(coordinator_address="[::1]:8476", num_processes=4, process_id=3).multi_process


def test_query_mesh_counts_local_devices():
    n = jax.local_device_count()
    assert query_mesh().size == n and query_mesh(1).axis_names == ("queries",)
    with pytest.raises(ConfigError, match="xla_force_host_platform_device_count"):
        query_mesh(n + 1)


@pytest.mark.parametrize("b, d, per, expected", [
    (6, 4, None, (2, 1)), (8, 4, None, (2, 1)), (1, 4, None, (1, 1)), (9, 2, 2, (2, 3)), (3, 2, 8, (2, 1)),
])
def test_padded_batch(b, d, per, expected):
    assert padded_batch(b, d, per) == expected


def _affine(scale, x, y):  # replicated scale, batched x [B, 3] and pytree y
    return {"x": x * scale + y["z"][:, None], "n": jnp.sum(x, axis=1)}


def test_shard_over_queries_one_device_pads_and_chunks():
    x = jnp.arange(21.0).reshape(7, 3)
    y = {"z": jnp.arange(7.0)}
    want = _affine(2.0, x, y)
    for per in (None, 2, 3):
        got = shard_over_queries(_affine, 2.0, x, y, in_axes=(None, 0, 0), config=ParallelConfig(per_device_batch=per))
        assert got["x"].shape == (7, 3)
        np.testing.assert_array_equal(got["x"], want["x"])
        np.testing.assert_array_equal(got["n"], want["n"])
    with pytest.raises(ValueError, match="disagree"):
        shard_over_queries(_affine, 2.0, x, {"z": jnp.arange(6.0)}, in_axes=(None, 0, 0))
    with pytest.raises(ValueError, match="in_axes"):
        shard_over_queries(_affine, 2.0, x, y, in_axes=(None, 1, 0))


# Run in a child with 4 forced CPU devices: render and refine 6 queries (not a multiple of
# 4: padded) on meshes of 2 and 4 devices (per-device chunks: tested in process above),
# against the unsharded refine_poses and vmapped render on one device.
FORCED_DEVICES_SCRIPT = r"""
import json, sys
import jax, numpy as np
import splatjax as sj
from splatjax import pose
from splatjax.sharding import ParallelConfig, query_mesh, shard_over_queries
from test_pose import tiny_scene, perturbation

assert jax.local_device_count() == 4, jax.devices()
g = tiny_scene()
cams, _ = pose.sphere_cameras(6, 4.0, 0.69, 32, 32)
render_all = jax.vmap(lambda g, c: sj.render(g, c, backend="cpu")[0], in_axes=(None, 0))
queries = render_all(g, cams)
starts = sj.stack_cameras([pose.moved_camera(pose.index_cameras(cams, i), perturbation(10 + i, 0.03, 0.05))
                           for i in range(6)])
keys = jax.random.split(jax.random.key(7), 6)

cfg12 = pose.PoseConfig(steps=12, backend="cpu")

def refine(g, c, q, k):
    one = lambda c, q, k: pose.refine_pose(g, c, q, cfg12, key=k)
    return jax.vmap(one)(c, q, k)

base_cams, base_traces = pose.refine_poses(g, starts, queries, cfg12, key=jax.random.key(7))
hlo = jax.jit(lambda *a: shard_over_queries(refine, *a, in_axes=(None, 0, 0, 0), mesh=query_mesh(4))).lower(
    g, starts, queries, keys).as_text()
out = {"ffi_in_hlo": "splatjax_render_fwd_cpu" in hlo and "splatjax_render_bwd_cpu" in hlo, "runs": []}
for devices, per in ((2, None), (4, None)):
    cfg = ParallelConfig(devices=devices, per_device_batch=per)
    rgb = shard_over_queries(render_all, g, cams, in_axes=(None, 0), config=cfg)
    got_cams, traces = shard_over_queries(refine, g, starts, queries, keys, in_axes=(None, 0, 0, 0), config=cfg)
    out["runs"].append(dict(
        devices=devices, per=per, shards=len(got_cams.R.sharding.device_set) if per is None else None,
        render_diff=float(np.abs(np.asarray(rgb) - np.asarray(queries)).max()),
        R_diff=float(np.abs(np.asarray(got_cams.R) - np.asarray(base_cams.R)).max()),
        t_diff=float(np.abs(np.asarray(got_cams.t) - np.asarray(base_cams.t)).max()),
        trace_diff=float(np.abs(np.asarray(traces) - np.asarray(base_traces)).max()),
        shape=list(got_cams.R.shape)))
print("RESULT " + json.dumps(out))
"""


def test_ffi_rasterizer_sharded_over_forced_devices_equals_one_device():
    if "cpu" not in available_backends():
        pytest.skip("the CPU rasterizer kernel is not built")
    proc = subprocess.run([sys.executable, "-c", FORCED_DEVICES_SCRIPT], cwd=ROOT, env=subprocess_env(4),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["ffi_in_hlo"]  # our custom calls run inside the shard_map body
    for run in result["runs"]:
        assert run["shape"] == [6, 3, 3]
        if run["shards"] is not None:
            assert run["shards"] == run["devices"]
        assert run["render_diff"] <= 1e-6, run  # jit vs eager activations: float32 rounding
        assert run["R_diff"] <= 1e-5 and run["t_diff"] <= 1e-5, run
        assert run["trace_diff"] <= 1e-5, run


def test_config_flags_parse():
    import argparse

    from splatjax.app.flags import add_config_flags, config_from_flags

    parser = argparse.ArgumentParser()
    add_config_flags(parser, ParallelConfig)
    args = parser.parse_args(["--devices", "2", "--coordinator-address", "10.1.2.3:8476", "--num-processes", "2",
                              "--process-id", "1", "--per-device-batch", "none"])
    cfg = config_from_flags(ParallelConfig, args)
    assert cfg == ParallelConfig(devices=2, coordinator_address="10.1.2.3:8476", num_processes=2, process_id=1)
    assert config_from_flags(ParallelConfig, parser.parse_args(["--distributed"])).distributed
    assert config_from_flags(ParallelConfig, parser.parse_args([])) == ParallelConfig()


def test_stages_on_one_device_are_the_unsharded_stages():
    # parallel=ParallelConfig(devices=1) runs the plain jitted vmaps: bitwise today's numbers;
    # asking for more devices than the process has is a ConfigError before any work
    if "cpu" not in available_backends():
        pytest.skip("the CPU rasterizer kernel is not built")
    from test_pose import perturbation, tiny_scene

    from splatjax import pose, stack_cameras
    from splatjax.anomaly import MapConfig, compute_maps

    g = tiny_scene()
    cams, _ = pose.sphere_cameras(3, 4.0, 0.69, 32, 32)
    one = ParallelConfig(devices=1, per_device_batch=2)
    queries = pose.render_views(g, cams, batch_size=2, backend="cpu")
    np.testing.assert_array_equal(pose.render_views(g, cams, backend="cpu", parallel=one), queries)
    starts = stack_cameras([pose.moved_camera(pose.index_cameras(cams, i), perturbation(20 + i, 0.03, 0.05))
                            for i in range(3)])
    config = pose.PoseConfig(steps=2, batch_size=2, backend="cpu")
    want = pose.refine_poses(g, starts, queries, config, key=jax.random.key(1))
    got = pose.refine_poses(g, starts, queries, config, key=jax.random.key(1), parallel=one)
    for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
        np.testing.assert_array_equal(a, b)
    map_config = MapConfig(features="weights-free", map_size=32, chunk=2)
    maps = compute_maps(queries[::-1], queries, map_config)
    np.testing.assert_array_equal(compute_maps(queries[::-1], queries, map_config, parallel=one).maps, maps.maps)
    too_many = ParallelConfig(devices=jax.local_device_count() + 1)
    for call in (lambda: pose.refine_poses(g, starts, queries, config, key=jax.random.key(1), parallel=too_many),
                 lambda: pose.render_views(g, cams, parallel=too_many),
                 lambda: compute_maps(queries, queries, map_config, parallel=too_many)):
        with pytest.raises(ConfigError, match="xla_force_host_platform_device_count") as e:
            call()
        assert e.value.option == "devices"
