"""splatjax.anomaly.highlights: the highlight discount against its plain per-pixel formula, the
cap measured on object pixels only, and compute_maps with and without it."""

from __future__ import annotations

import numpy as np
import pytest

from splatjax.anomaly import MapConfig, common_brightening, compute_maps, discount_highlights, highlight_cap

BLUE = np.array([0.2, 0.3, 0.7], np.float32)


def _scene(n=2, size=24):
    """Renders: a blue square on white; queries: the same."""
    r = np.ones((n, size, size, 3), np.float32)
    r[:, 6:18, 6:18] = BLUE
    return r, r.copy()


def _plain_discount(r, q, cap):
    out = q.astype(np.float64).copy()
    for idx in np.ndindex(q.shape[:-1]):
        s = min(max(min(q[idx][c] - r[idx][c] for c in range(3)), 0.0), cap)
        out[idx] -= s
    return out


def test_discount_matches_the_plain_formula_and_spares_hue_changes_and_darkening():
    r, q = _scene()
    rng = np.random.default_rng(0)
    q[0, 8:10, 8:10] += 0.25  # a white highlight: the same amount on R, G and B
    q[0, 12:14, 12:14] = [0.7, 0.3, 0.2]  # a stain of another hue
    q[1, 8:12, 8:12] *= 0.4  # a darker, shadowed inside
    q[1, 14:16, 14:16] += 0.6  # a brighter highlight than the cap
    q += rng.uniform(-0.01, 0.01, q.shape).astype(np.float32)
    got = np.asarray(discount_highlights(r, q, 0.3))
    np.testing.assert_allclose(got, _plain_discount(r, q, 0.3), atol=1e-6)
    np.testing.assert_allclose(got[0, 8:10, 8:10], r[0, 8:10, 8:10], atol=0.03)  # highlight gone
    np.testing.assert_allclose(got[0, 12:14, 12:14], q[0, 12:14, 12:14], atol=0.03)  # hue change kept
    np.testing.assert_allclose(got[1, 8:12, 8:12], q[1, 8:12, 8:12], atol=1e-6)  # darkening never discounted
    assert np.all(got[1, 14:16, 14:16] - r[1, 14:16, 14:16] > 0.25)  # only up to the cap
    np.testing.assert_allclose(np.asarray(common_brightening(r, q))[0, 8:10, 8:10], 0.25, atol=0.02)
    np.testing.assert_array_equal(np.asarray(discount_highlights(r, q, 0.0)), q)


def test_cap_is_a_percentile_over_object_pixels_only():
    r, q = _scene(n=1)
    q[0, 6:18, 6:18] += np.linspace(0.0, 0.2, 144, dtype=np.float32).reshape(12, 12)[..., None]
    obj = np.asarray(common_brightening(r, q))[0, 6:18, 6:18].ravel()
    for p in (50.0, 99.9):
        # the 432 background pixels (brightening 0) are not counted
        assert highlight_cap(r, q, (1.0, 1.0, 1.0), p) == pytest.approx(float(np.percentile(obj, p)), abs=1e-6)
    assert highlight_cap(np.ones_like(r), np.ones_like(q), (1.0, 1.0, 1.0)) == 0.0  # no object at all


def test_compute_maps_discounts_only_when_calibrated_with_a_cap():
    r, q = _scene()
    q[:, 9:12, 9:12] = np.minimum(q[:, 9:12, 9:12] + 0.3, 1.0)
    plain = compute_maps(r, q, MapConfig(features="weights-free", highlights="keep", map_size=32))
    none = compute_maps(r, q, MapConfig(features="weights-free", map_size=32), highlight_cap=None)
    kept = compute_maps(r, q, MapConfig(features="weights-free", highlights="keep", map_size=32), highlight_cap=0.5)
    capped = compute_maps(r, q, MapConfig(features="weights-free", map_size=32), highlight_cap=0.5)
    twin = compute_maps(r, np.asarray(discount_highlights(r, q, 0.5)),
                        MapConfig(features="weights-free", highlights="keep", map_size=32))
    np.testing.assert_array_equal(none.maps, plain.maps)
    np.testing.assert_array_equal(kept.maps, plain.maps)
    np.testing.assert_allclose(capped.maps, twin.maps, rtol=1e-6, atol=1e-7)
    assert np.all(capped.scores < 0.05 * plain.scores)  # the highlight was the whole difference
