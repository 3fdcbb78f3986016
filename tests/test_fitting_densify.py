"""Adaptive density control on the static buffer: clone / split / prune, the slot demand
that drives buffer growth, moments moving with their rows, opacity reset, statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scenes import look_at_c2w

import splatjax as sj
from splatjax.fitting.densify import (
    INACTIVE_LOGIT,
    DensifyRule,
    DensityStats,
    densify_and_prune,
    densify_demand,
    move_rows,
    pad_gaussians,
    reset_opacity,
    resize_gaussians,
    screen_radii,
    update_stats,
)


def _six_gaussians():
    """Six active Gaussians in a buffer of 10 (extent 1: clone if max scale <= 0.01)."""
    scales = np.array([0.005, 0.05, 0.05, 0.05, 0.2, 0.05])
    opac = np.array([0.5, 0.5, 0.001, 0.5, 0.5, 0.5])
    g = sj.Gaussians(
        means=jnp.asarray(np.arange(18, dtype=np.float32).reshape(6, 3) * 0.1),
        log_scales=jnp.asarray(np.log(np.repeat(scales[:, None], 3, 1)), jnp.float32),
        quats=jnp.asarray(np.tile([1.0, 0, 0, 0], (6, 1)), jnp.float32),
        opacity_logits=jnp.asarray(np.log(opac / (1 - opac)), jnp.float32),
        sh0=jnp.asarray(np.arange(18, dtype=np.float32).reshape(6, 3)),
    )
    params, active = pad_gaussians(g, 10)
    grads = np.zeros(10, np.float32)
    grads[:2] = 1e-3  # 0: small -> clone; 1: large -> split
    radii = np.zeros(10, np.float32)
    radii[5] = 30.0  # 5: big on screen
    stats = DensityStats(grad_accum=jnp.asarray(grads * 2), denom=jnp.full((10,), 2.0), max_radii=jnp.asarray(radii))
    return params, active, stats


RULE = DensifyRule()  # the 3DGS thresholds


def _densify(params, active, stats, *, size_prune):
    return densify_and_prune(params, active, stats, RULE, key=jax.random.PRNGKey(3), extent=1.0,
                             size_prune=size_prune)


def test_densify_clone_split_prune_counts():
    params, active, stats = _six_gaussians()
    new, act, moves, counts = _densify(params, active, stats, size_prune=True)
    assert int(densify_demand(params, active, stats, RULE, extent=1.0, size_prune=True)) == 5
    # kept old: 0, 3 (2 low opacity, 4 world-big, 5 screen-big pruned; 1 replaced by its split)
    assert (int(counts.cloned), int(counts.split), int(counts.pruned), int(counts.dropped)) == (1, 1, 3, 0)
    assert int(counts.active) == 5 and np.asarray(act).tolist() == [True] * 5 + [False] * 5
    m = np.asarray(new.means)
    np.testing.assert_array_equal(m[0], np.asarray(params.means[0]))  # kept, compacted in order
    np.testing.assert_array_equal(m[1], np.asarray(params.means[3]))
    np.testing.assert_array_equal(m[2], np.asarray(params.means[0]))  # the clone
    np.testing.assert_allclose(np.exp(np.asarray(new.log_scales[3:5])), 0.05 / 1.6, rtol=1e-5)  # split children
    assert np.all(np.abs(m[3:5] - np.asarray(params.means[1])) < 0.05 * 6)  # sampled around the parent
    assert not np.allclose(m[3], m[4])
    np.testing.assert_array_equal(np.asarray(new.sh0[3]), np.asarray(params.sh0[1]))
    # free slots are inactive (invisible); moments follow their Gaussian, new ones start at zero
    assert np.all(np.asarray(new.opacity_logits[5:]) == INACTIVE_LOGIT)
    m = move_rows(jnp.arange(10, dtype=jnp.float32) + 1.0, moves)
    np.testing.assert_array_equal(np.asarray(m), [1, 4, 0, 0, 0, 0, 0, 0, 0, 0])


def test_densify_without_size_pruning_keeps_large():
    params, active, stats = _six_gaussians()
    *_, counts = _densify(params, active, stats, size_prune=False)
    assert (int(counts.cloned), int(counts.split), int(counts.pruned)) == (1, 1, 1)
    assert int(counts.active) == 7  # 6 - 1 pruned - 1 split parent + 1 clone + 2 children


def test_densify_capacity_priority():
    params, active, stats = _six_gaussians()
    # Fill the buffer: 10 active, candidates 0 (clone, grad 1e-3) and 6 (clone, grad 5e-3).
    params = jax.tree_util.tree_map(lambda x: x.at[6:].set(x[0]), params)
    active = jnp.ones(10, bool)
    grads = np.zeros(10, np.float32)
    grads[0], grads[6] = 1e-3, 5e-3
    stats = DensityStats(grad_accum=jnp.asarray(grads), denom=jnp.ones(10), max_radii=jnp.zeros(10))
    # Without size pruning only Gaussian 2 (low opacity) goes: one free slot for two clones.
    assert int(densify_demand(params, active, stats, RULE, extent=1.0, size_prune=False)) == 11
    new, act, _, counts = _densify(params, active, stats, size_prune=False)
    assert (int(counts.cloned), int(counts.dropped), int(counts.candidates), int(counts.active)) == (1, 1, 2, 10)
    np.testing.assert_array_equal(np.asarray(new.sh0[9]), np.asarray(params.sh0[6]))  # larger gradient won


def test_reset_opacity_and_visibility_of_inactive():
    params, active, stats = _six_gaussians()
    new = reset_opacity(params, active, value=0.01)
    op = np.asarray(jax.nn.sigmoid(new.opacity_logits))
    np.testing.assert_allclose(op[:6], np.minimum(np.asarray(params.opacities[:6]), 0.01), rtol=1e-5)
    assert np.all(np.asarray(new.opacity_logits[6:]) == INACTIVE_LOGIT)
    # inactive slots are invisible: never counted, and they leave the image unchanged
    cam = sj.camera_from_blender(look_at_c2w([0.0, -3.0, 0.5]), 0.8, 16, 16)
    radii, visible = screen_radii(params, cam, active)
    assert not np.any(np.asarray(visible[6:])) and np.all(np.asarray(radii[6:]) == 0)
    full, _ = sj.render(params, cam, backend="reference")
    only, _ = sj.render(params.take(jnp.arange(6)), cam, backend="reference")
    np.testing.assert_allclose(np.asarray(full), np.asarray(only), atol=1e-6)


def test_stats_use_ndc_gradient_units_and_visible_steps():
    stats = DensityStats.zeros(3)
    g2d = jnp.asarray([[2e-6, 0.0], [0.0, 1e-6], [5.0, 5.0]])
    radii = jnp.asarray([4.0, 9.0, 30.0])
    visible = jnp.asarray([True, True, False])
    for _ in range(2):
        stats = update_stats(stats, g2d, radii, visible, 200, 100)
    # pixel gradients times (W/2, H/2), as the INRIA rasterizer reports screen-space gradients
    np.testing.assert_allclose(np.asarray(stats.grad_accum), [4e-4, 1e-4, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(stats.denom), [2, 2, 0])
    np.testing.assert_array_equal(np.asarray(stats.max_radii), [4, 9, 0])


# ----------------------------------------------------------------------------- fitting


def test_resize_gaussians_pads_invisible_rows_and_cuts():
    params, active, _ = _six_gaussians()
    big = resize_gaussians(params, 16)
    assert big.num == 16 and np.all(np.asarray(big.opacity_logits[10:]) == INACTIVE_LOGIT)
    small = resize_gaussians(big, 6)
    np.testing.assert_array_equal(np.asarray(small.means), np.asarray(params.means[:6]))
