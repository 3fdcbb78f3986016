"""Anomaly maps and image scores (SplatPose's anomaly stage): options in :mod:`.config`, the maps and scores in :mod:`.maps`, calibration in :mod:`.calibration`, the feature extractors in :mod:`.features`, network weights in :mod:`.weights`."""

from __future__ import annotations

from .calibration import (MapCalibration, ResidualScales, calibrate, heldout_log_sd, heldout_rule,
                          heldout_threshold, with_heldout)
from .config import MapConfig
from .highlights import common_brightening, discount_highlights, enclosed_white, highlight_cap
from .extractors import FeatureSpec, feature_names, get_feature_spec, register_feature_extractor
from .features import (
    IMAGENET_STD,
    FeatureExtractor,
    TorchTapFeatures,
    WeightsFreeFeatures,
    make_feature_extractor,
    shift_min_sq,
)
from .maps import (
    MAP_SIZE,
    MAP_SIGMA,
    rgb_term,
    term_maps,
    residual_scales,
    anomaly_maps,
    anomaly_map,
    image_scores,
    Maps,
    compute_maps,
    overlay_heatmap,
)

__all__ = [
    "MapConfig",
    "FeatureSpec",
    "feature_names",
    "get_feature_spec",
    "register_feature_extractor",
    "Maps",
    "MapCalibration",
    "ResidualScales",
    "heldout_threshold",
    "heldout_log_sd",
    "heldout_rule",
    "with_heldout",
    "compute_maps",
    "common_brightening",
    "highlight_cap",
    "discount_highlights",
    "enclosed_white",
    "residual_scales",
    "term_maps",
    "calibrate",
    "anomaly_map",
    "anomaly_maps",
    "image_scores",
    "rgb_term",
    "overlay_heatmap",
]
