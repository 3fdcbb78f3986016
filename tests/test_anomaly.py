"""Anomaly maps: the reference map formula, localisation by
both extractors, weights-free quality on synthetic defects, overlays."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from sklearn.metrics import roc_auc_score

from splatjax.anomaly import (
    anomaly_map,
    anomaly_maps,
    compute_maps,
    image_scores,
    overlay_heatmap,
    residual_scales,
    rgb_term,
    term_maps,
)
from splatjax.image import resize
from splatjax.anomaly.features import (
    IMAGENET_STD,
    FeatureExtractor,
    TorchTapFeatures,
    WeightsFreeFeatures,
    shift_min_sq,
    tolerant_difference,
)


class RGBOnly(FeatureExtractor):
    """The reference map without feature levels (the RGB term alone)."""

    name = "rgb-only"
    rgb_term = True

    def levels(self, renders, queries):
        return []


# --------------------------------------------------------------------------- synthetic scenes


def _ellipse(yy, xx, cy, cx, ry, rx, ang):
    c, s = np.cos(ang), np.sin(ang)
    u = c * (xx - cx) + s * (yy - cy)
    v = -s * (xx - cx) + c * (yy - cy)
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def _scene(seed: int, size: int, shift=(0.0, 0.0), defect: str | None = None):
    """A flat-shaded object of coloured ellipses on white (2 x 2 supersampled), optionally
    with a defect: "stain" (colour patch on the object), "missing" (a bite out of the
    object's rim), "burr" (a lump stuck on the rim). Returns (image [S,S,3], mask [S,S])."""
    rng = np.random.default_rng(seed)
    ss = 2
    n = size * ss
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) / ss
    yy, xx = yy - shift[0], xx - shift[1]
    img = np.ones((n, n, 3))
    obj = np.zeros((n, n), bool)
    for _ in range(int(rng.integers(3, 6))):
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        ry, rx = rng.uniform(0.08, 0.2, 2) * size
        col = rng.uniform(0.05, 0.95, 3)
        m = _ellipse(yy, xx, cy, cx, ry, rx, rng.uniform(0, np.pi))
        img[m] = col * (0.85 + 0.15 * (yy[m, None] - cy) / size)
        obj |= m
    clean = img.copy()
    if defect is not None:
        d = rng.uniform(0.04, 0.06) * size
        rim = obj & ~scipy.ndimage.binary_erosion(obj, iterations=2)
        ys, xs = np.argwhere(rim if defect != "stain" else obj).T / ss
        j = int(rng.integers(ys.size))
        oy, ox = ys[j], xs[j]
        if defect == "stain":
            m = _ellipse(yy, xx, oy, ox, d, 1.3 * d, rng.uniform(0, np.pi)) & obj
            img[m] = 0.3 * img[m] + 0.7 * rng.uniform(0, 1, 3)
        elif defect == "missing":
            img[_ellipse(yy, xx, oy, ox, d, d, 0.0) & obj] = 1.0
        else:
            colour = img[int(oy * ss), int(ox * ss)] * 0.8
            img[_ellipse(yy, xx, oy, ox, 0.6 * d, 1.2 * d, rng.uniform(0, np.pi))] = colour
    def down(a):
        return a.reshape(size, ss, size, ss, *a.shape[2:]).mean(axis=(1, 3))
    mask = down((np.abs(img - clean).max(-1) > 0.05).astype(np.float64)) > 0.25
    return down(img).astype(np.float32), mask


def _pair(seed: int, defect: str | None, size: int = 224):
    """(render, query, mask): the render is blurred (as splat renders are) and the query
    is shifted by about a pixel (residual pose error) and noisy."""
    render, _ = _scene(seed, size)
    render = scipy.ndimage.gaussian_filter(render, (0.7, 0.7, 0))
    query, mask = _scene(seed, size, shift=(0.8, -0.6), defect=defect)
    noise = np.random.default_rng(seed + 1000).normal(0.0, 0.01, query.shape)
    return render.astype(np.float32), np.clip(query + noise, 0, 1).astype(np.float32), mask


# --------------------------------------------------------------------------- smoothing


def test_tolerant_difference_ignores_small_shifts_but_not_new_colour():
    img = np.ones((20, 20, 3), np.float32)
    img[5:15, 5:15] = (0.2, 0.4, 0.8)
    moved = np.roll(img, 1, axis=1)
    d = np.asarray(tolerant_difference(jnp.asarray(img), jnp.asarray(moved), radius=1))
    assert d.max() < 1e-3
    stained = img.copy()
    stained[8:11, 8:11] = (0.9, 0.1, 0.1)
    d = np.asarray(tolerant_difference(jnp.asarray(img), jnp.asarray(stained), radius=1))
    assert d[9, 9] > 0.5 and d[0, 0] < 1e-3


# --------------------------------------------------------------------------- reference map


def test_rgb_term_is_the_reference_formula_and_scores_are_maxima():
    rng = np.random.default_rng(2)
    r = rng.random((2, 224, 224, 3)).astype(np.float32)
    q = rng.random((2, 224, 224, 3)).astype(np.float32)
    maps = np.asarray(anomaly_maps(r, q, RGBOnly(), sigma=0))
    mean = np.array([0.485, 0.456, 0.406])
    std = np.asarray(IMAGENET_STD)
    ref = (((r - mean) / std - (q - mean) / std) ** 2).sum(-1)
    np.testing.assert_allclose(maps, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(rgb_term(r, q)), ref, rtol=1e-5, atol=1e-5)
    smoothed = np.asarray(anomaly_maps(r, q, RGBOnly()))
    np.testing.assert_allclose(smoothed, scipy.ndimage.gaussian_filter(ref, 4.0, axes=(1, 2)), atol=1e-4)
    np.testing.assert_allclose(np.asarray(image_scores(smoothed)), smoothed.reshape(2, -1).max(1))


class _FakeLevels(FeatureExtractor):
    """Fixed levels, to check the upsample-and-sum of the map."""

    rgb_term = False

    def __init__(self, levels):
        self._levels = levels

    def levels(self, renders, queries):
        return self._levels


def test_levels_are_bilinearly_upsampled_and_summed():
    rng = np.random.default_rng(3)
    lv = [jnp.asarray(rng.random((1, 14, 14)), jnp.float32), jnp.asarray(rng.random((1, 56, 56)), jnp.float32)]
    img = jnp.zeros((1, 224, 224, 3))
    m = np.asarray(anomaly_maps(img, img, _FakeLevels(lv), sigma=0))
    torch = pytest.importorskip("torch")
    ref = sum(
        torch.nn.functional.interpolate(torch.from_numpy(np.array(x))[None], size=(224, 224), mode="bilinear",
                                        align_corners=False)[0].numpy()
        for x in lv
    )
    np.testing.assert_allclose(m, ref, atol=1e-5)


def test_map_size_option_and_shape_errors():
    r = jnp.zeros((3, 100, 80, 3))
    assert anomaly_maps(r, r, RGBOnly(), size=112).shape == (3, 112, 112)
    assert anomaly_map(r[0], r[0], RGBOnly()).shape == (224, 224)
    with pytest.raises(ValueError, match=r"equal shape \[B, H, W, 3\]"):
        anomaly_maps(r, r[:2], RGBOnly())
    with pytest.raises(ValueError, match=r"equal shape"):
        anomaly_maps(r[..., 0], r[..., 0], RGBOnly())


# --------------------------------------------------------------------------- localisation


@pytest.fixture(scope="module")
def effnet_features():
    torch = pytest.importorskip("torch")
    pytest.importorskip("efficientnet_pytorch")
    from efficientnet_pytorch import EfficientNet

    from splatjax.anomaly.features import EfficientNetFeatures

    torch.manual_seed(0)
    return EfficientNetFeatures.from_model(EfficientNet.from_name("efficientnet-b4"), "cpu")


@pytest.mark.parametrize("kind", ["weights-free", "efficientnet", "rgb"])
def test_identical_images_give_zero_map_and_perturbation_peaks_there(kind, request):
    ext = {"weights-free": WeightsFreeFeatures, "rgb": RGBOnly}.get(kind)
    ext = request.getfixturevalue("effnet_features") if ext is None else ext()
    img, _ = _scene(5, 160)
    zero = np.asarray(anomaly_map(img, img, ext))
    assert zero.shape == (224, 224)
    assert np.abs(zero).max() < 1e-3
    q = img.copy()
    q[100:116, 40:56] = (0.1, 0.9, 0.2)  # a 16 px patch (22 px at 224) at rows 100-116, cols 40-56
    m = np.asarray(anomaly_map(img, q, ext))
    row, col = np.unravel_index(np.argmax(m), m.shape)
    scale = 224 / 160
    assert 100 * scale - 4 <= row <= 116 * scale + 4 and 40 * scale - 4 <= col <= 56 * scale + 4
    assert float(image_scores(m[None])[0]) > 100 * max(float(np.abs(zero).max()), 1e-6)


def test_weights_free_localises_synthetic_defects():
    cases = [(11, "stain"), (12, "missing"), (13, "burr"), (14, "stain"), (15, "burr"), (16, "missing")]
    pairs = [_pair(s, d) for s, d in cases] + [_pair(s, None) for s in (21, 22, 23, 24)]
    renders = np.stack([p[0] for p in pairs])
    queries = np.stack([p[1] for p in pairs])
    masks = np.stack([p[2] for p in pairs])
    maps = np.asarray(anomaly_maps(renders, queries, WeightsFreeFeatures()))
    assert maps.shape == (10, 224, 224)
    for i, (seed, defect) in enumerate(cases):
        assert masks[i].sum() > 50
        assert roc_auc_score(masks[i].ravel(), maps[i].ravel()) > 0.95, (seed, defect)
    assert roc_auc_score(masks.ravel(), maps.ravel()) > 0.97
    scores = np.asarray(image_scores(maps))
    assert scores[: len(cases)].min() > scores[len(cases):].max()  # image level separates too


# --------------------------------------------------------------------------- overlays


def test_overlay_heatmap():
    img = np.full((60, 80, 3), 0.5, np.float32)
    amap = np.zeros((224, 224), np.float32)
    amap[100:124, 100:124] = 1.0
    mask = np.zeros((60, 80), bool)
    mask[10:30, 10:30] = True
    out = overlay_heatmap(img, amap, mask)
    assert out.dtype == np.uint8 and out.shape == (60, 80, 3)
    assert (out[10, 10:30] == 255).all()  # outline on the mask border
    assert not (out[20, 20] == 255).all()  # not inside
    hot, cold = out[30, 40].astype(int), out[5, 70].astype(int)
    assert hot[0] > hot[2] and cold[2] > cold[0]  # jet: red where high, blue where low
    same = overlay_heatmap(img, amap, vmin=0.0, vmax=2.0)
    assert same[30, 40, 0] < hot[0]  # a wider range makes the same value cooler
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        overlay_heatmap(img[..., 0], amap)


def test_chunking_gives_the_same_maps():
    rng = np.random.default_rng(4)
    r = rng.random((5, 64, 64, 3)).astype(np.float32)
    q = rng.random((5, 64, 64, 3)).astype(np.float32)
    ext = WeightsFreeFeatures()
    whole = np.asarray(anomaly_maps(r, q, ext, size=64))
    parts = np.asarray(anomaly_maps(r, q, ext, size=64, chunk=2))
    assert parts.shape == (5, 64, 64)
    # XLA compiles the batch of 5 and the chunks of 2 apart and may sum their convolutions in
    # another order: equal to float32 rounding (1.3e-5 relative seen at fd4c0af and after on a fresh
    # environment of 2026-12-07, where 1e-5 had held before)
    np.testing.assert_allclose(parts, whole, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- stage, config, calibration


def test_compute_maps_is_the_map_stage():
    from splatjax.anomaly import MapConfig, compute_maps

    rng = np.random.default_rng(6)
    r = rng.random((3, 48, 48, 3)).astype(np.float32)
    q = r.copy()
    q[1, 10:20, 10:20] = (0.1, 0.9, 0.1)
    config = MapConfig(features="weights-free", map_size=64, map_sigma=2.0)
    out = compute_maps(r, q, config)
    ref = np.asarray(anomaly_maps(r, q, WeightsFreeFeatures(), size=64, sigma=2.0))
    np.testing.assert_allclose(out.maps, ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out.scores, ref.reshape(3, -1).max(1), rtol=1e-6)
    assert out.features == "weights-free" and int(np.argmax(out.scores)) == 1
    p99 = compute_maps(r, q, MapConfig(features="weights-free", map_size=64, map_sigma=2.0, score="p99"))
    np.testing.assert_allclose(p99.scores, np.percentile(ref.reshape(3, -1), 99, axis=1), rtol=1e-5)


def test_map_config_validates_and_names_the_field():
    from splatjax.anomaly import MapConfig
    from splatjax.errors import ConfigError

    with pytest.raises(ConfigError, match=r"MapConfig.map_size: must be an integer >= 1 \(got 0\)"):
        MapConfig(map_size=0)
    for bad in (dict(features="vgg"), dict(score="mean"), dict(map_sigma=-1.0), dict(threshold_factor=0.0),
                dict(calibration_views=0)):
        with pytest.raises(ConfigError):
            MapConfig(**bad)
    hash(MapConfig())


def test_calibrate_puts_the_threshold_mid_scale():
    from splatjax.anomaly import MapConfig, calibrate

    cal = calibrate([0.2, 0.5, 0.3], MapConfig(threshold_factor=1.5), "weights-free")
    assert cal.threshold == pytest.approx(0.75) and (cal.vmin, cal.vmax) == (0.0, pytest.approx(1.5))
    assert cal.views == 3 and cal.train_score_median == pytest.approx(0.3)
    with pytest.raises(ValueError):
        calibrate([], MapConfig(), "weights-free")


# --------------------------------------------------------------------------- score variants


class _FakeTaps(TorchTapFeatures):
    """A stand-in for an EfficientNet: two "taps" computed in JAX (the images' colours
    scaled per channel at full resolution, and a 2 x 2 average pool of 5 mixed channels)."""

    name = "fake-taps"
    rgb_term = True

    def __init__(self):
        self.mix = np.random.default_rng(3).normal(size=(3, 5)).astype(np.float32)

    def features(self, images, *, size=None):
        x = jnp.asarray(images, jnp.float32)
        b, h, w, _ = x.shape
        pooled = (x @ self.mix).reshape(b, h // 2, 2, w // 2, 2, 5).mean(axis=(2, 4))
        return [x * jnp.asarray([1.0, 2.0, 3.0]), pooled]

    def levels(self, renders, queries):
        return [jnp.sum((a - b) ** 2, -1) for a, b in zip(self.features(renders), self.features(queries))]


def _np_features(ext, x):
    b, h, w, _ = x.shape
    pooled = (x @ ext.mix).reshape(b, h // 2, 2, w // 2, 2, 5).mean(axis=(2, 4))
    rgb = x / np.asarray(IMAGENET_STD)
    return [rgb, x * np.asarray([1.0, 2.0, 3.0]), pooled]


def _np_tolerant_sq(a, b, w, radius):
    """Slow twin of one term: loops over pixels, shifts and channels, both directions."""
    n, h, wd, c = a.shape
    out = np.zeros((n, h, wd))
    for i in range(n):
        for y in range(h):
            for x in range(wd):
                best = []
                for u, v in ((a, b), (b, a)):
                    m = np.inf
                    for dy in range(-radius, radius + 1):
                        for dx in range(-radius, radius + 1):
                            yy, xx = min(max(y + dy, 0), h - 1), min(max(x + dx, 0), wd - 1)
                            m = min(m, sum(w[k] * (u[i, y, x, k] - v[i, yy, xx, k]) ** 2 for k in range(c)))
                    best.append(m)
                out[i, y, x] = max(best)
    return out


def test_shift_min_sq_matches_a_loop():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 1, 7, 6, 4)).astype(np.float32)
    for radius in (0, 1, 2):
        got = np.asarray(shift_min_sq(jnp.asarray(a), jnp.asarray(b), radius))
        want = np.full(got.shape, np.inf)
        for y in range(7):
            for x in range(6):
                for dy in range(-radius, radius + 1):
                    for dx in range(-radius, radius + 1):
                        yy, xx = min(max(y + dy, 0), 6), min(max(x + dx, 0), 5)
                        want[0, y, x] = min(want[0, y, x], ((a[0, y, x] - b[0, yy, xx]) ** 2).sum())
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_term_maps_weighted_and_shift_tolerant_match_a_loop():
    ext = _FakeTaps()
    rng = np.random.default_rng(1)
    r, q = rng.random((2, 2, 8, 8, 3)).astype(np.float32)
    weights = [rng.uniform(0.5, 2.0, c).astype(np.float32) for c in (3, 3, 5)]
    fr, fq = _np_features(ext, r), _np_features(ext, q)
    for radius in (0, 1):
        got = term_maps(r, q, ext, weights, radius)
        assert [t.shape for t in got] == [(2, 8, 8), (2, 8, 8), (2, 4, 4)]
        for g, a, b, w in zip(got, fr, fq, weights):
            np.testing.assert_allclose(np.asarray(g), _np_tolerant_sq(a, b, w, radius), rtol=1e-4, atol=1e-5)
    # ones and radius 0: the paper's RGB term
    np.testing.assert_allclose(np.asarray(term_maps(r, q, ext)[0]), np.asarray(rgb_term(r, q)), rtol=1e-5)


def test_residual_scales_are_per_channel_means_and_normalise_to_mean_one():
    ext = _FakeTaps()
    rng = np.random.default_rng(2)
    r, q = rng.random((2, 5, 8, 8, 3)).astype(np.float32)
    res = residual_scales(r, q, ext, size=8, chunk=2)  # three chunks (2, 2, 1)
    assert res.terms == ("rgb", "level0", "level1") and res.views == 5 and res.features == "fake-taps"
    for m, a, b in zip(res.means, _np_features(ext, r), _np_features(ext, q)):
        want = [float(np.mean((a[..., k] - b[..., k]) ** 2)) for k in range(a.shape[-1])]
        np.testing.assert_allclose(m, want, rtol=1e-5)
    for mode in ("level", "channel"):
        terms = term_maps(r, q, ext, res.weights(mode))
        np.testing.assert_allclose([float(np.mean(t)) for t in terms], 1.0, rtol=1e-4)
    m = np.asarray(res.means[2])
    np.testing.assert_allclose(res.weights("channel")[2], 1.0 / (5 * m), rtol=1e-5)
    np.testing.assert_allclose(res.weights("level")[2], 1.0 / m.sum(), rtol=1e-5)
    # weights-free: one channel per level, the level's mean
    wf = residual_scales(r, q, WeightsFreeFeatures(), size=16)
    levels = WeightsFreeFeatures().levels(resize(jnp.asarray(r), 16, 16), resize(jnp.asarray(q), 16, 16))
    np.testing.assert_allclose([m[0] for m in wf.means], [float(np.mean(lv)) for lv in levels], rtol=1e-4)


def test_image_score_variants_match_numpy():
    rng = np.random.default_rng(4)
    maps = rng.random((3, 20, 20)).astype(np.float32)
    flat = maps.reshape(3, -1)
    np.testing.assert_allclose(np.asarray(image_scores(maps, "topk", 7)), np.sort(flat, 1)[:, -7:].mean(1),
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(image_scores(maps, "topk", 1)), flat.max(1))
    np.testing.assert_allclose(np.asarray(image_scores(maps, "topk", 10**6)), flat.mean(1), rtol=1e-6)
    with pytest.raises(ValueError, match="score"):
        image_scores(maps, "mean")


def test_defaults_are_the_paper_and_normalised_maps_need_scales():
    from splatjax.anomaly import MapConfig

    c = MapConfig()
    assert (c.score, c.normalise, c.shift_radius, c.map_size, c.map_sigma) == ("max", "none", 0, 224, 4.0)
    r, q, _ = _pair(5, "stain", size=64)
    r, q = r[None], q[None]
    ext = _FakeTaps()
    paper = compute_maps(r, q, MapConfig(map_size=64), extractor=ext)
    ref = anomaly_maps(r, q, ext, size=64)  # the paper's code path: RGB term + levels
    np.testing.assert_array_equal(paper.maps, np.asarray(ref))
    np.testing.assert_array_equal(paper.scores, np.asarray(ref).reshape(1, -1).max(1))
    # the general path with ones and no shift gives the same map (to rounding)
    ones = anomaly_maps(r, q, ext, size=64, weights=[np.ones(c, np.float32) for c in (3, 3, 5)])
    np.testing.assert_allclose(np.asarray(ones), paper.maps, rtol=1e-5, atol=1e-5)
    res = residual_scales(r, q, ext, size=64)
    for bad in (None, dataclasses.replace(res, features="other")):
        with pytest.raises(ValueError, match="residual scales"):
            compute_maps(r, q, MapConfig(map_size=64, normalise="level"), extractor=ext, residual=bad)
    norm = compute_maps(r, q, MapConfig(map_size=64, normalise="level", map_sigma=0.0), extractor=ext, residual=res)
    terms = term_maps(jnp.asarray(r), jnp.asarray(q), ext, res.weights("level"))
    want = np.asarray(terms[0] + terms[1] + jax.image.resize(terms[2], (1, 64, 64), "linear", antialias=False))
    np.testing.assert_allclose(norm.maps, want, rtol=1e-5, atol=1e-6)


def test_calibration_round_trip_keeps_residual_scales_and_old_keys():
    from splatjax.anomaly import MapCalibration, MapConfig, ResidualScales, calibrate
    from splatjax.anomaly.calibration import calibration_key

    res = ResidualScales(features="fake", terms=("rgb", "level0"), means=((1.0, 2.0, 3.0), (0.5,)), views=4)
    cal = calibrate([1.0, 2.0], MapConfig(normalise="channel", score="topk", score_k=50), "fake", residual=res)
    back = MapCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal and back.residual == res
    assert cal.key() == "fake/size224/sigma4/topk/k50/norm-channel/highlights-p99.9/sat0.998/linear"
    assert calibration_key("fake", 224, 4.0, "max") == "fake/size224/sigma4/max"  # the paper's keys as before
    keep = calibrate([1.0], MapConfig(highlights="keep"), "fake")
    assert keep.key() == "fake/size224/sigma4/max" and keep.highlight_cap == 0.0
    capped = calibrate([1.0], MapConfig(highlight_percentile=99.0), "fake", highlight_cap=0.25)
    assert capped.key() == "fake/size224/sigma4/max/highlights-p99/sat0.998/linear"
    unclipped = calibrate([1.0], MapConfig(highlight_saturation=0.0, highlight_space="srgb"), "fake",
                          highlight_cap=0.25)
    assert unclipped.key() == "fake/size224/sigma4/max/highlights-p99.9"  # the keys stored before saturation
    assert MapCalibration.from_dict(json.loads(json.dumps(capped.to_dict()))).highlight_cap == 0.25
    old = {k: v for k, v in calibrate([1.0], MapConfig(), "fake").to_dict().items()
           if k not in ("score_k", "normalise", "shift_radius", "residual", "highlights", "highlight_percentile",
                        "highlight_cap", "highlight_saturation", "highlight_space")}
    assert MapCalibration.from_dict(old).residual is None  # an entry stored before these options
    assert MapCalibration.from_dict(old).highlights == "keep"  # ... was measured without a discount
    assert MapCalibration.from_dict(old).highlight_saturation == 0.0
    assert MapCalibration.from_dict(old).highlight_space == "srgb"
    assert MapCalibration.from_dict(json.loads(json.dumps(capped.to_dict()))).highlight_space == "linear"
    for bad in (dict(normalise="level"), dict()):
        with pytest.raises(ValueError, match="residual"):
            calibrate([1.0], MapConfig(**bad), "fake", residual=None if bad else res)
    from splatjax.errors import ConfigError
    for bad in (dict(normalise="pca"), dict(shift_radius=-1), dict(score_k=0), dict(score="top"),
                dict(highlights="remove"), dict(highlight_percentile=0), dict(highlight_percentile=101),
                dict(highlight_saturation=-0.1), dict(highlight_saturation=1.5), dict(highlight_space="log")):
        with pytest.raises(ConfigError):
            MapConfig(**bad)


def test_heldout_threshold_is_the_log_normal_quantile_and_matches_the_empirical_one_on_many_scores():
    from splatjax.anomaly import MapCalibration, MapConfig, calibrate, heldout_threshold, with_heldout

    rng = np.random.default_rng(0)
    scores = np.exp(rng.normal(1.0, 0.4, 200_000))
    t = heldout_threshold(scores, 0.05)
    assert t == pytest.approx(np.quantile(scores, 0.95), rel=0.01)  # the slow, obvious twin
    assert t == pytest.approx(np.exp(1.0 + 1.6448536 * 0.4), rel=0.01)
    few = scores[:24]
    logs = np.log(few)
    assert heldout_threshold(few, 0.1) == pytest.approx(np.exp(logs.mean() + 1.2815516 * logs.std(ddof=1)))
    with pytest.raises(ValueError):
        heldout_threshold([2.0], 0.05)
    plain = MapConfig(false_positive_rate=0.1, heldout_prior_views=0)
    cal = with_heldout(calibrate([1.0, 2.0], MapConfig(), "weights-free"), few, plain)
    assert cal.rule == "held-out" and cal.heldout_queries == 24 and cal.vmax == pytest.approx(2 * cal.threshold)
    assert cal.threshold == pytest.approx(heldout_threshold(few, 0.1))
    assert cal.heldout_log_sd == pytest.approx(logs.std(ddof=1))
    assert MapCalibration.from_dict(cal.to_dict()) == cal and cal.describe() == "10 % FPR"


def test_heldout_threshold_shrinks_a_few_views_deviation_toward_the_prior():
    from splatjax.anomaly import MapConfig, calibrate, heldout_log_sd, heldout_threshold, with_heldout

    rng = np.random.default_rng(4)
    alike = np.exp(8.5 + rng.normal(0, 0.08, 32))  # 8 views whose scores came out alike by chance
    logs = np.log(alike)
    sd = logs.std(ddof=1)
    # the posterior deviation, written out: 7 degrees of freedom of the views, 7 of the prior
    want = np.sqrt((7 * sd ** 2 + 7 * 0.33 ** 2) / 14)
    assert heldout_log_sd(alike, views=8, prior_log_sd=0.33, prior_views=7) == pytest.approx(want)
    assert heldout_threshold(alike, 0.05, views=8, prior_log_sd=0.33, prior_views=7) == pytest.approx(
        np.exp(logs.mean() + 1.6448536 * want))
    assert heldout_log_sd(alike, views=8, prior_log_sd=0.33, prior_views=0) == pytest.approx(sd)  # no prior
    # the more views, the less the prior counts
    many = np.exp(8.5 + rng.normal(0, 0.08, 4000))
    assert heldout_log_sd(many, views=1000, prior_log_sd=0.33, prior_views=7) == pytest.approx(0.08, abs=0.01)
    # a prior equal to the sample's deviation changes nothing
    assert heldout_log_sd(alike, views=8, prior_log_sd=sd, prior_views=7) == pytest.approx(sd)
    # with_heldout: views = queries / (rolls + 1), the prior from the config
    config = MapConfig(heldout_prior_log_sd=0.33, heldout_prior_views=7, calibration_rolls=3)
    cal = with_heldout(calibrate([1.0], config, "weights-free"), alike, config)
    assert cal.heldout_log_sd == pytest.approx(want) and cal.threshold == pytest.approx(
        heldout_threshold(alike, 0.05, views=8, prior_log_sd=0.33, prior_views=7))
    assert cal.threshold > heldout_threshold(alike, 0.05)
