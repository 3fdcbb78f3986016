"""The feature-extractor table: a user's extractor registered in one place works through
MapConfig, compute_maps, make_feature_extractor (its description in the log) and the CLI."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from splatjax.anomaly import MapConfig, compute_maps, feature_names, register_feature_extractor
from splatjax.anomaly import extractors
from splatjax.anomaly.features import FeatureExtractor, make_feature_extractor
from splatjax.errors import ConfigError
from splatjax.context import Context


class AbsDiff(FeatureExtractor):
    """Mean absolute colour difference at full and half resolution (a few lines of JAX)."""

    name = "absdiff"
    rgb_term = False
    description = "mean absolute colour difference, 2 scales"

    def levels(self, renders, queries):
        d = jnp.mean(jnp.abs(renders - queries), axis=-1)
        b, h, w = d.shape
        return [d, d.reshape(b, h // 2, 2, w // 2, 2).mean(axis=(2, 4))]


@pytest.fixture
def table(monkeypatch):
    """The registry restored after the test."""
    monkeypatch.setattr(extractors, "_TABLE", dict(extractors._TABLE))


def _pair(seed=0, size=32):
    rng = np.random.default_rng(seed)
    render = rng.uniform(0.2, 0.8, (2, size, size, 3)).astype(np.float32)
    query = render.copy()
    query[1, 8:14, 20:26] = 1.0  # a bright patch in the second query only
    return render, query


def test_registered_extractor_works_everywhere(table):
    spec = register_feature_extractor("absdiff", lambda weights=None, device=None: AbsDiff(), AbsDiff.description)
    assert spec.name == "absdiff" and "absdiff" in feature_names()
    config = MapConfig(features="absdiff", map_size=32, map_sigma=1.0)
    log = []
    ext = make_feature_extractor("absdiff", context=Context(log=log.append))
    assert isinstance(ext, AbsDiff) and any(AbsDiff.description in line for line in log)
    render, query = _pair()
    maps = compute_maps(render, query, config)
    assert maps.features == "absdiff" and maps.maps.shape == (2, 32, 32)
    assert maps.scores[1] > 10 * max(maps.scores[0], 1e-6)  # the patch is found, the identical pair is ~0
    peak = np.unravel_index(np.argmax(maps.maps[1]), maps.maps[1].shape)
    assert 6 <= peak[0] <= 16 and 18 <= peak[1] <= 28


def test_cli_offers_registered_names(table):
    from splatjax.app.cli import build_parser

    register_feature_extractor("absdiff", lambda weights=None, device=None: AbsDiff(), "abs diff")
    args = build_parser().parse_args(["evaluate", "DATA", "--out", "OUT", "--features", "absdiff"])
    assert args.features == "absdiff"


def test_unknown_and_reserved_names_are_clear(table):
    with pytest.raises(ConfigError, match="weights-free"):
        MapConfig(features="resnet")
    with pytest.raises(ConfigError, match="unknown feature extractor 'resnet'"):
        make_feature_extractor("resnet")
    for name in ("auto", "lite0", ""):
        with pytest.raises(ConfigError):
            register_feature_extractor(name, lambda weights=None, device=None: AbsDiff(), "x")
    register_feature_extractor("absdiff", lambda weights=None, device=None: AbsDiff(), "x")
    with pytest.raises(ConfigError, match="registered already"):
        register_feature_extractor("absdiff", lambda weights=None, device=None: AbsDiff(), "x")
    register_feature_extractor("bad", lambda weights=None, device=None: object(), "not an extractor")
    with pytest.raises(ConfigError, match="not a FeatureExtractor"):
        make_feature_extractor("bad")
