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


def _open_white(white):
    """Pixels of the 2-D mask ``white`` reached from the image border through white pixels
    (8 neighbours): a flood fill, the slow twin of ``enclosed_white``."""
    h, w = white.shape
    seen = np.zeros_like(white)
    todo = [(y, x) for y in range(h) for x in range(w) if (y in (0, h - 1) or x in (0, w - 1)) and white[y, x]]
    while todo:
        y, x = todo.pop()
        if seen[y, x]:
            continue
        seen[y, x] = True
        todo += [(y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                 if 0 <= y + dy < h and 0 <= x + dx < w and white[y + dy, x + dx] and not seen[y + dy, x + dx]]
    return seen


def _plain_discount(r, q, cap, saturation=None):
    """Per pixel: the brightening s on the channels below ``saturation`` (on all three when
    none is; where every one is, the largest difference inside the object, the smallest in
    white connected to the border), capped; a clipped channel keeps r + max(q - r - s, 0)."""
    out = q.astype(np.float64).copy()
    white = np.all(q >= saturation, axis=-1) if saturation else np.zeros(q.shape[:-1], bool)
    open_white = np.stack([_open_white(m) for m in white.reshape(-1, *white.shape[-2:])]).reshape(white.shape)
    for idx in np.ndindex(q.shape[:-1]):
        clipped = [bool(saturation) and q[idx][c] >= saturation for c in range(3)]
        counted = [c for c in range(3) if not clipped[c]] or [0, 1, 2]
        diffs = [q[idx][c] - r[idx][c] for c in counted]
        s = min(max(max(diffs) if white[idx] and not open_white[idx] else min(diffs), 0.0), cap)
        for c in range(3):
            out[idx][c] = r[idx][c] + max(q[idx][c] - r[idx][c] - s, 0.0) if clipped[c] else q[idx][c] - s
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


def test_saturation_measures_a_clipped_highlight_on_the_channels_that_did_not_clip():
    r, q = _scene()
    magenta = np.array([0.75, 0.40, 0.73], np.float32)
    r[:, 6:18, 6:18] = magenta
    q[:, 6:18, 6:18] = magenta
    q[0, 8:10, 8:10] = np.minimum(magenta + 0.35, 1.0)  # (1, 0.75, 1): red and blue clip
    q[0, 12:14, 12:14] = [1.0, 1.0, 1.0]  # every channel clipped, inside the object: a blown-out highlight
    q[0, 6:9, 14:16] = [1.0, 1.0, 1.0]  # every channel clipped, open to the background: a bite out of the outline
    q[1, 8:10, 8:10] = [1.0, 0.40, 0.73]  # red alone brighter: a hue change, not a highlight
    q[1, 12:14, 12:14] = np.minimum(magenta + 0.5, 1.0)  # a highlight above the cap
    q += np.random.default_rng(1).uniform(-0.004, 0.0, q.shape).astype(np.float32) * (q < 1.0)
    got = np.asarray(discount_highlights(r, q, 0.4, 0.998))
    np.testing.assert_allclose(got, _plain_discount(r, q, 0.4, 0.998), atol=1e-6)
    np.testing.assert_allclose(got[0, 8:10, 8:10], r[0, 8:10, 8:10], atol=0.01)  # the whole highlight explained
    old = np.asarray(discount_highlights(r, q, 0.4))
    assert np.all(old[0, 8:10, 8:10, 1] - r[0, 8:10, 8:10, 1] > 0.08)  # as read: a false green excess of ~0.1
    # every channel clipped inside the object: the least highlight that clips all three (0.6), under the cap 0.7
    got7 = np.asarray(discount_highlights(r, q, 0.7, 0.998))
    np.testing.assert_allclose(got7, _plain_discount(r, q, 0.7, 0.998), atol=1e-6)
    np.testing.assert_allclose(got7[0, 12:14, 12:14], r[0, 12:14, 12:14], atol=1e-6)
    assert np.all(got[0, 12:14, 12:14, 1] - r[0, 12:14, 12:14, 1] > 0.15)  # over the cap 0.4: the rest stays
    # ... open to the background: the common part only, the same as without saturation
    np.testing.assert_allclose(got7[0, 6:9, 14:16], np.asarray(discount_highlights(r, q, 0.7))[0, 6:9, 14:16],
                               atol=1e-6)
    assert np.all(got7[0, 6:9, 14:16, 1] - r[0, 6:9, 14:16, 1] > 0.3)
    np.testing.assert_allclose(got[1, 8:10, 8:10], q[1, 8:10, 8:10], atol=0.01)  # the hue change is kept
    assert np.all(got[1, 12:14, 12:14, 1] - r[1, 12:14, 12:14, 1] > 0.05)  # only up to the cap
    np.testing.assert_allclose(np.asarray(common_brightening(r, q, 0.998))[0, 8:10, 8:10], 0.35, atol=0.01)
    # without clipped channels, saturation changes nothing
    r2, q2 = _scene()
    q2[0, 8:10, 8:10] += 0.25
    np.testing.assert_array_equal(np.asarray(discount_highlights(r2, q2, 0.3, 0.998)),
                                  np.asarray(discount_highlights(r2, q2, 0.3)))


def test_linear_discount_takes_out_a_highlight_added_in_linear_light():
    from splatjax.image import linear_to_srgb, srgb_to_linear

    r, q = _scene()
    magenta = np.array([0.75, 0.40, 0.73], np.float32)
    r[:, 6:18, 6:18] = magenta
    face = srgb_to_linear(magenta.astype(np.float64))
    q[:, 6:18, 6:18] = magenta
    q[0, 8:10, 8:10] = linear_to_srgb(face + 0.42)  # ~(0.97, 0.78, 0.96): no channel clipped
    q[0, 12:14, 12:14] = linear_to_srgb(face + 0.60)  # red and blue clip in linear light
    q[1, 8:10, 8:10] = [0.75, 0.55, 0.73]  # green alone: a hue change
    got = np.asarray(discount_highlights(r, q, 0.7, 0.998, "linear"))
    # the slow twin: decode, the clipped-channel formula, encode
    want = linear_to_srgb(_plain_discount(srgb_to_linear(r.astype(np.float64)), srgb_to_linear(q.astype(np.float64)),
                                          0.7, float(srgb_to_linear(np.float64(0.998)))))
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(got[0, 8:10, 8:10], r[0, 8:10, 8:10], atol=0.002)  # both highlights gone
    np.testing.assert_allclose(got[0, 12:14, 12:14], r[0, 12:14, 12:14], atol=0.002)
    np.testing.assert_allclose(got[1, 8:10, 8:10], q[1, 8:10, 8:10], atol=0.002)  # the hue change kept
    in_srgb = np.asarray(discount_highlights(r, q, 0.7, 0.998))
    assert np.all(np.abs(in_srgb[0, 8:10, 8:10] - r[0, 8:10, 8:10]).max(axis=-1) > 0.1)  # sRGB values do not add
    np.testing.assert_allclose(np.asarray(common_brightening(srgb_to_linear(r), srgb_to_linear(q)))[0, 8:10, 8:10],
                               0.42, atol=1e-4)
    # the cap in linear units: the same percentile of the linear brightening
    assert highlight_cap(r, q, (1.0, 1.0, 1.0), 100.0, 0.998, "linear") == pytest.approx(0.60, abs=2e-3)


def test_cap_is_a_percentile_over_object_pixels_only():
    r, q = _scene(n=1)
    q[0, 6:18, 6:18] += np.linspace(0.0, 0.2, 144, dtype=np.float32).reshape(12, 12)[..., None]
    obj = np.asarray(common_brightening(r, q))[0, 6:18, 6:18].ravel()
    for p in (50.0, 99.9):
        # the 432 background pixels (brightening 0) are not counted
        assert highlight_cap(r, q, (1.0, 1.0, 1.0), p) == pytest.approx(float(np.percentile(obj, p)), abs=1e-6)
    assert highlight_cap(np.ones_like(r), np.ones_like(q), (1.0, 1.0, 1.0)) == 0.0  # no object at all


def test_compute_maps_discounts_only_when_calibrated_with_a_cap():
    from splatjax.image import linear_to_srgb, srgb_to_linear

    r, q = _scene()
    q[:, 9:12, 9:12] = linear_to_srgb(srgb_to_linear(q[:, 9:12, 9:12]) + 0.3)  # a highlight: light adds
    plain = compute_maps(r, q, MapConfig(features="weights-free", highlights="keep", map_size=32))
    none = compute_maps(r, q, MapConfig(features="weights-free", map_size=32), highlight_cap=None)
    kept = compute_maps(r, q, MapConfig(features="weights-free", highlights="keep", map_size=32), highlight_cap=0.5)
    capped = compute_maps(r, q, MapConfig(features="weights-free", map_size=32), highlight_cap=0.5)
    twin = compute_maps(r, np.asarray(discount_highlights(r, q, 0.5, MapConfig().highlight_saturation, "linear")),
                        MapConfig(features="weights-free", highlights="keep", map_size=32))
    np.testing.assert_array_equal(none.maps, plain.maps)
    np.testing.assert_array_equal(kept.maps, plain.maps)
    np.testing.assert_allclose(capped.maps, twin.maps, rtol=1e-6, atol=1e-7)
    assert np.all(capped.scores < 0.05 * plain.scores)  # the highlight was the whole difference


def test_enclosed_white_is_the_white_a_border_flood_fill_does_not_reach():
    from splatjax.anomaly import enclosed_white

    rng = np.random.default_rng(7)
    masks = rng.random((3, 2, 17, 13)) < 0.45
    got = enclosed_white(masks)
    for idx in np.ndindex(masks.shape[:2]):
        np.testing.assert_array_equal(got[idx], masks[idx] & ~_open_white(masks[idx]))
    assert got.any() and (masks & ~got).any()  # both kinds present


def test_an_unknown_space_is_refused():
    r, q = _scene()
    with pytest.raises(ValueError, match="'srgb' or 'linear'"):
        discount_highlights(r, q, 0.3, 0.998, "log")
