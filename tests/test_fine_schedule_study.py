"""scripts/fine_schedule_study.py: its cache of pose starts (the stall rule's replay is tested in test_pose.py)."""

from __future__ import annotations

import types

import jax
import numpy as np
from script_modules import load_script


def test_cached_starts_are_reused_only_for_the_same_paths_and_keys(tmp_path, monkeypatch):
    study = load_script("fine_schedule_study")
    drawn = []

    def pose_starts(g, queries, candidates, config, key):  # stands in for the pose stage: one start per query
        drawn.append(np.asarray(jax.random.key_data(key)))
        return types.SimpleNamespace(fine_starts=np.full((len(queries), 4, 4), float(len(drawn))))

    monkeypatch.setattr(study, "pose_starts", pose_starts)
    monkeypatch.setattr(study, "candidate_cameras", lambda cameras, config: None)
    monkeypatch.setattr(study, "camera_to_c2w", lambda starts: starts)
    cls = types.SimpleNamespace(test=types.SimpleNamespace(paths=["a.png", "b.png"], images=np.zeros((2, 4, 4, 3))),
                                train=types.SimpleNamespace(cameras=None))
    cache = tmp_path / "starts.npz"
    seed0, seed1 = (jax.random.split(jax.random.key(s), 2) for s in (0, 1))
    first, _ = study._starts(cls, None, None, ["a.png", "b.png"], cache, seed0)
    again, _ = study._starts(cls, None, None, ["a.png", "b.png"], cache, seed0)
    assert len(drawn) == 1 and np.array_equal(first, again)  # read back
    other, _ = study._starts(cls, None, None, ["a.png", "b.png"], cache, seed1)
    assert len(drawn) == 2 and not np.array_equal(other, first)  # other keys (another --eval-seed): drawn again
    subset, _ = study._starts(cls, None, None, ["b.png"], cache, seed1[1:])
    assert len(drawn) == 3 and subset.shape == (1, 4, 4)  # other paths: drawn again
