"""The run context (splatjax.context): one value for log and progress, through the stages."""

from __future__ import annotations

import jax
import numpy as np

import splatjax as sj
from splatjax.context import QUIET, Context
from splatjax.pose import fine


def test_quiet_says_nothing_and_a_context_reports_to_its_callbacks():
    QUIET.say("dropped")
    QUIET.tick("stage", 1, 2)
    said, ticks = [], []
    ctx = Context(log=said.append, progress=lambda *a: ticks.append(a))
    ctx.say("hello")
    ctx.tick("stage", 1, 2)
    assert said == ["hello"] and ticks == [("stage", 1, 2)]


def test_the_pose_stage_reports_progress_through_its_context_and_results_do_not_depend_on_it():
    from test_pose import FOV, tiny_scene

    g = tiny_scene(seed=1, n=60)
    cams, _ = sj.pose.sphere_cameras(3, 4.0, FOV, 16, 16)
    targets = jax.vmap(lambda c: sj.render(g, c, backend="reference")[0])(cams)
    config = sj.PoseConfig(steps=3, batch_size=2, backend="reference")
    ticks = []
    loud = sj.refine_poses(g, cams, targets, config, key=jax.random.key(0),
                           context=Context(progress=lambda *a: ticks.append(a)))
    quiet = sj.refine_poses(g, cams, targets, config, key=jax.random.key(0))
    assert ticks == [("fine pose", 1, 2), ("fine pose", 2, 2)]
    np.testing.assert_array_equal(np.asarray(loud[1]), np.asarray(quiet[1]))


def test_configs_differing_outside_the_compiled_fields_share_one_compiled_config():
    a = sj.PoseConfig(batch_size=4, coarse="render", keypoint=sj.pose.KeypointConfig(width=64), hypotheses=2)
    b = sj.PoseConfig(objective="charbonnier", sphere_views=10)
    assert fine.compiled_config(a) == fine.compiled_config(b) == fine.compiled_config(sj.PoseConfig())
    assert fine.compiled_config(sj.PoseConfig(steps=9)) != fine.compiled_config(sj.PoseConfig())
    assert fine.compiled_config(sj.PoseConfig(background=(0, 0, 0))).background == (0.0, 0.0, 0.0)
