"""The fitting schedule (densification window, opacity resets, size pruning) and the
validation of FitConfig."""

from __future__ import annotations

import numpy as np
import pytest

from splatjax.errors import ConfigError
from splatjax.fitting import RECOVERY_FRACTION, FitConfig, schedule, schedule_for


def inria_events(iterations=30_000, white=True):
    """The INRIA 3DGS train.py loop, enumerated: (densify steps, reset steps, size-prune steps)."""
    densify_from, densify_until, interval, reset_interval = 500, 15_000, 100, 3000
    densify, reset, size = [], [], []
    for it in range(1, iterations + 1):
        if it < densify_until:
            if it > densify_from and it % interval == 0:
                densify.append(it)
                if it > reset_interval:
                    size.append(it)
            if it % reset_interval == 0 or (white and it == densify_from):
                reset.append(it)
    return densify, reset, size


@pytest.mark.parametrize("white", [True, False])
def test_30k_schedule_equals_the_reference(white):
    s = schedule(30_000, white_background=white)
    densify, reset, size = inria_events(white=white)
    assert list(s.densify_steps) == densify and densify[0] == 600 and densify[-1] == 14_900
    assert list(s.reset_steps) == reset == ([500] if white else []) + [3000, 6000, 9000, 12_000]
    assert [t for t in s.densify_steps if s.size_prune_at(t)] == size and size[0] == 3100
    assert schedule_for(FitConfig()) == schedule(30_000)
    assert schedule_for(FitConfig(background=(0.0, 0.0, 0.0))) == schedule(30_000, white_background=False)


def test_scaled_schedules():
    s = schedule(3000)
    assert (s.densify_from, s.densify_until, s.opacity_reset_every) == (100, 1500, 500)
    assert s.reset_steps == (100, 500, 1000) and s.densify_steps == tuple(range(200, 1500, 100))
    s = schedule(6000)
    assert (s.densify_from, s.densify_until, s.opacity_reset_every) == (100, 3000, 600)
    assert s.reset_steps == (100, 600, 1200, 1800, 2400)
    s = schedule(60_000)
    assert (s.densify_from, s.densify_until, s.opacity_reset_every) == (1000, 30_000, 6000)


@pytest.mark.parametrize("n", [1, 99, 100, 250, 500, 700, 1000, 1234, 2000, 3000, 4500, 6000, 9000, 10_000,
                               15_000, 20_000, 30_000, 45_000, 100_000])
def test_no_reset_or_densification_in_the_final_stretch(n):
    s = schedule(n)
    quiet_from = (1 - RECOVERY_FRACTION) * n
    assert all(t <= quiet_from for t in s.reset_steps + s.densify_steps)
    # the default schedule ends densification at N/2 (rounded): about half the run recovers
    assert all(t <= n / 2 + 50 for t in s.densify_steps)
    if s.reset_steps:  # every reset is followed by at least two densifications to prune what it silenced
        assert sum(t > s.reset_steps[-1] for t in s.densify_steps) >= 2 or n < 2000


def test_explicit_settings_cannot_put_events_in_the_final_stretch():
    """The issue's case: 3000 steps with the 30k values (reset every 3000 below 15k) used
    to reset opacities after the very last step."""
    rng = np.random.default_rng(0)
    s = schedule(3000, densify_until=15_000, opacity_reset_every=3000)
    assert not s.reset_at(3000) and s.reset_steps == (100,)
    assert max(s.densify_steps) <= 2100
    for _ in range(200):
        n = int(rng.integers(100, 20_000))
        s = schedule(n, densify_from=int(rng.integers(0, n)), densify_until=int(rng.integers(0, 2 * n)),
                     opacity_reset_every=int(rng.integers(1, 40)) * 100)
        assert all(t <= (1 - RECOVERY_FRACTION) * n for t in s.reset_steps + s.densify_steps)


def test_config_errors_name_the_field():
    cases = {"iterations": dict(iterations=0), "train_fraction": dict(train_fraction=0.0),
             "densify_from": dict(densify_from=150), "backend": dict(backend="gpu"),
             "background": dict(background=(1.0, 1.0)), "capacity": dict(capacity=0),
             "lr_means": dict(lr_means=-1.0)}
    for field, kwargs in cases.items():
        with pytest.raises(ConfigError) as err:
            FitConfig(**kwargs)
        assert err.value.option == field and f"FitConfig.{field}" in str(err.value)
    with pytest.raises(ConfigError, match="multiple of chunk_steps"):
        FitConfig(chunk_steps=300)
    assert FitConfig(background=[0, 0, 0]).background == (0.0, 0.0, 0.0)


def test_defaults_match_reference():
    c = FitConfig()
    assert c.iterations == 30_000 and c.background == (1.0, 1.0, 1.0)
    assert (c.lr_means, c.lr_means_final, c.lr_colors, c.lr_opacity, c.lr_scales, c.lr_quats) == (
        1.6e-4, 1.6e-6, 2.5e-3, 5e-2, 5e-3, 1e-3)
    assert c.adam_eps == 1e-15 and c.ssim_weight == 0.2 and c.densify_every == 100
    assert (c.densify_grad_threshold, c.percent_dense, c.prune_opacity) == (2e-4, 0.01, 0.005)
    assert (c.prune_screen_size, c.prune_world_size) == (20.0, 0.1)
    assert (c.init_points, c.init_extent, c.init_opacity) == (100_000, 1.3, 0.1)
    assert c.resolution is None and not c.upsample and c.capacity is None


def test_sh_degree_schedule_and_options():
    """The active SH degree rises by one every 1000 steps at 30k (INRIA), scaled; sh_degree
    is validated; degrees 1-3 learn at lr_colors / 20."""
    from splatjax.fitting import schedule

    s30 = schedule(30_000)
    assert s30.sh_degree_every == 1000
    assert [s30.sh_degree_at(s, 3) for s in (1, 999, 1000, 2000, 2999, 3000, 29_000)] == [0, 0, 1, 2, 2, 3, 3]
    s6 = schedule(6000)
    assert s6.sh_degree_every == 200 and [s6.sh_degree_at(s, 3) for s in (100, 200, 400, 600)] == [0, 1, 2, 3]
    assert schedule(6000).sh_degree_at(5000, 1) == 1 and schedule(10).sh_degree_every == 1
    assert FitConfig().sh_degree == 0 and FitConfig().lr_sh_rest_factor == pytest.approx(1 / 20)
    for bad in (4, -1, 1.5, True):
        with pytest.raises(ConfigError) as err:
            FitConfig(sh_degree=bad)
        assert err.value.option == "sh_degree"
