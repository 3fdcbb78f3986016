"""A tiny toy object, fitted and evaluated once per test process, shared by the app tests
(import as `from app_toy import ...`)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from splatjax.anomaly import MapConfig
from splatjax.fitting import FitConfig
from splatjax.pose import PoseConfig
from splatjax.context import QUIET

TINY_FIT = FitConfig(iterations=60, resolution=None, init_points=600, capacity=2048, chunk_steps=20,
                     densify_from=20, densify_every=20, densify_until=60, opacity_reset_every=3000,
                     checkpoint_every=10**6, val_every=10**6, log_every=20, seed=0)
FAST_POSE = PoseConfig(steps=4, batch_size=4, coarse="render", coarse_resolution=16, inplane_rotations=0,
                       keypoints=False, screen_steps=4)
FAST_MAP = MapConfig(features="weights-free", calibration_views=6)


def random_run(folder: Path, data: Path | None = None) -> Path:
    """A run folder without a fit (fast): 300 random Gaussians as ``model.ply``, the toy
    training views as ``cameras.json`` (paths as ``data``, default :func:`toy_dataset`,
    is given) and ``info.json`` naming the dataset, as ``evaluate`` leaves them."""
    import json

    import jax

    from splatjax import init_random_gaussians, save_ply
    from splatjax.app.runs import save_cameras
    from splatjax.data import load_mad_train

    data = toy_dataset() if data is None else data
    save_ply(init_random_gaussians(300, key=jax.random.key(0), extent=0.5), Path(folder) / "model.ply")
    save_cameras(folder, load_mad_train(data))
    (Path(folder) / "info.json").write_text(json.dumps({"data": str(Path(data).resolve())}))
    return Path(folder)


@functools.cache
def toy_dataset() -> Path:
    """The toy object at 32 x 32: 12 training views, 2 test images per type."""
    from splatjax.data import make_toy_dataset

    root = Path(tempfile.mkdtemp(prefix="splatjax_app_toy_"))
    return make_toy_dataset(root / "toy", seed=1, resolution=32, num_train=12, num_test_per_type=2)


@functools.cache
def evaluated_toy() -> tuple[Path, dict]:
    """(output folder, report) of ``evaluate`` on :func:`toy_dataset` with a tiny fit."""
    from splatjax.app.evaluate import evaluate

    out = Path(tempfile.mkdtemp(prefix="splatjax_app_eval_")) / "out"
    [report] = evaluate(toy_dataset(), out, fit_config=TINY_FIT, pose_config=FAST_POSE, map_config=FAST_MAP,
                        context=QUIET)
    return out, report


def verdict_line(item: dict, result: dict) -> str:
    """The line ``detect`` says for one item of its ``detections.json`` result."""
    head = (f"{item['path']}: score {item['score']:.4g}, threshold {result['threshold']:.4g} "
            f"({result['threshold_rule']}) -> ")
    if item["pose_trusted"]:
        return head + item["verdict"]
    return head + f"POSE NOT FOUND ({item['pose_untrusted_reason']})"
