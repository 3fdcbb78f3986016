"""Files are written with the user's umask (0o666 & ~umask, as ``open`` would), also by the
atomic writes: colleagues can read shared results when the umask lets them. (A whole
``detect`` run under a umask: tests/test_app_relocate.py.)"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import jax
import numpy as np
import pytest

import splatjax as sj
from splatjax.anomaly import MapCalibration
from splatjax.files import atomic_write, write_json


@contextlib.contextmanager
def umask(mask: int):
    """The process umask set to ``mask`` for the block."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _modes(folder: Path) -> dict[str, int]:
    """Permission bits of every file and folder under ``folder`` (relative names; folders end in /)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder)) + ("/" if p.is_dir() else "")] = stat.S_IMODE(p.stat().st_mode)
    return out


def _expected(modes: dict[str, int], mask: int) -> dict[str, int]:
    return {k: (0o777 if k.endswith("/") else 0o666) & ~mask for k in modes}


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_every_writer_honours_the_umask(tmp_path, mask):
    from splatjax.app.checkpoint import RunCheckpointer, append_metrics
    from splatjax.app.report import write_heatmaps, write_per_image_csv
    from splatjax.data.images import write_png

    cal = MapCalibration(threshold=1.0, vmin=0.0, vmax=2.0, features="weights-free", map_size=8, map_sigma=4.0,
                         score="max", views=1, train_score_max=1.0, train_score_median=1.0)
    with umask(mask):
        atomic_write(tmp_path / "a" / "bytes.bin", b"x")
        atomic_write(tmp_path / "a" / "text.txt", "x")
        atomic_write(tmp_path / "a" / "maps.npy", lambda f: np.save(f, np.zeros(3, np.float32)))
        write_json(tmp_path / "a" / "x.json", {"k": 1})
        write_json(tmp_path / "a" / "x.json", {"k": 2})  # replacing a file: the new one has the umask mode too
        sj.save_ply(sj.init_random_gaussians(10, key=jax.random.key(0)), tmp_path / "a" / "model.ply")
        write_png(tmp_path / "a" / "image.png", np.zeros((4, 4, 3), np.float32))
        write_per_image_csv(tmp_path / "a" / "per_image.csv", {"score": [1.0]})
        write_heatmaps(tmp_path / "a" / "heatmaps", ["q"], np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)),
                       np.zeros((1, 8, 8)), np.ones(1), cal)
        append_metrics(tmp_path / "a" / "metrics.jsonl", {"step": 1})
        with RunCheckpointer(tmp_path / "a" / "checkpoints") as ckpt:  # orbax's own files
            ckpt.save(1, {"x": np.ones(3, np.float32)}, {"note": 1})
    modes = _modes(tmp_path / "a")
    assert {k for k in modes if not k.endswith("/")} >= {"bytes.bin", "text.txt", "maps.npy", "x.json", "model.ply",
                                                         "image.png", "per_image.csv", "heatmaps/q.png",
                                                         "metrics.jsonl"}
    assert any(k.startswith("checkpoints/1/") and not k.endswith("/") for k in modes)
    assert modes == _expected(modes, mask)
    assert [p.name for p in (tmp_path / "a").iterdir() if p.name.endswith(".tmp")] == []
