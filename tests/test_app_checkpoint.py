"""Run-folder I/O: orbax checkpoints, the metrics log and the INRIA PLY format (resuming
a fit: tests/test_app_fit_run.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scenes import random_scene

import splatjax as sj
from splatjax.app.checkpoint import RunCheckpointer, append_metrics, read_metrics, truncate_metrics

INRIA_PROPERTIES = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def test_ply_round_trip_is_exact_and_inria_layout(tmp_path):
    g = random_scene(5, 37)
    path = tmp_path / "model.ply"
    sj.save_ply(g, path)
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header\n") + len(b"end_header\n")].decode("ascii").splitlines()
    assert header[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 37"]
    props = [line.split() for line in header if line.startswith("property")]
    assert [p[2] for p in props] == INRIA_PROPERTIES and all(p[1] == "float" for p in props)
    assert len(raw) - len("\n".join(header)) - 1 == 37 * 17 * 4  # packed float32 records
    back = sj.load_ply(path)
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh0"):
        np.testing.assert_array_equal(np.asarray(getattr(back, name)), np.asarray(getattr(g, name)))
    record = np.frombuffer(raw[-17 * 4:], "<f4")  # the last vertex, in file order
    expect = np.concatenate([g.means[-1], np.zeros(3), g.sh0[-1], g.opacity_logits[-1:], g.log_scales[-1],
                             g.quats[-1]])
    np.testing.assert_array_equal(record, np.asarray(expect, np.float32))


def test_load_ply_names_bad_files(tmp_path):
    bad = tmp_path / "points.ply"
    from plyfile import PlyData, PlyElement

    v = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(v, "vertex")]).write(str(bad))
    with pytest.raises(ValueError, match="points.ply.*missing"):
        sj.load_ply(bad)


def test_checkpointer_round_trip_and_mismatch(tmp_path):
    tree = {"a": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "b": (jnp.asarray(3, jnp.int32), jnp.ones(4, bool)),
            "key": jax.random.PRNGKey(7)}
    with RunCheckpointer(tmp_path / "ck", max_to_keep=2) as ck:
        assert ck.latest_step() is None
        for step in (10, 20, 30):
            ck.save(step, jax.tree_util.tree_map(lambda x: x + 0 if x.dtype != bool else x, tree), {"n": step})
        ck.wait()
        assert ck.all_steps() == [20, 30]
        out, meta, step = ck.restore(tree)
        assert step == 30 and meta == {"n": 30}
        for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(tree)):
            np.testing.assert_array_equal(a, np.asarray(b))
        assert ck.metadata() == {"n": 30} and ck.metadata(20) == {"n": 20}
        with pytest.raises(ValueError, match="structure differs"):
            ck.restore({"a": tree["a"]})
        with pytest.raises(ValueError, match="shape"):
            ck.restore({**tree, "a": jnp.zeros((3, 2))})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        RunCheckpointer(tmp_path / "empty").restore(tree)


def test_metrics_log_truncation(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for s in (10, 20, 30):
        append_metrics(path, {"step": s, "loss": 1.0 / s})
    with open(path, "a") as f:
        f.write('{"step": 40, "lo')  # torn line from an interrupted write
    assert [r["step"] for r in read_metrics(path)] == [10, 20, 30]
    assert [r["step"] for r in truncate_metrics(path, 20)] == [10, 20]
    assert [r["step"] for r in read_metrics(path)] == [10, 20]
