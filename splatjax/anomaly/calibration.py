"""A model's fixed heatmap scale and decision threshold.

The maps of the training views, rendered at their own (known) poses and compared with the
training images, show what a defect-free view costs for this model: render blur,
fitting residue and the comparison's own noise. From their image scores:

    threshold = threshold_factor x max(training-view scores)
    colour scale = [0, 2 x threshold]  (the threshold sits in the middle of the colour bar)

Every heatmap of the model is drawn on this one scale, so the same image looks the same
whether it is shown alone or next to others, and a score above the threshold reads as
anomalous. The scale belongs to one (model, features, map size, sigma, score and the
options below) and is stored in the model's run folder by the application.

With ``MapConfig.normalise`` the calibration also holds the model's residual scales
(:class:`ResidualScales`): the mean of every summand of every map term over the same
training-view pairs, measured before their maps (which use them), so that ``evaluate``
and ``detect`` normalise test maps with the statistics stored next to the threshold.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import ArrayLike, Float

from .config import MapConfig

__all__ = ["MapCalibration", "ResidualScales", "calibrate", "calibration_key", "heldout_threshold", "heldout_log_sd",
           "heldout_rule", "with_heldout"]


@dataclasses.dataclass(frozen=True)
class ResidualScales:
    """What a defect-free view costs per map term and channel, for one model and extractor.

    ``terms``: the map's term names in order ("rgb" when the extractor has the RGB term,
    then "level0", "level1", ...); ``means[j][k]``: the mean over all pixels of all
    calibration pairs (render at a training pose vs the training image) of summand k of
    term j: the squared difference of channel k (RGB: ImageNet-normalised colour; taps:
    feature channel k) or, for a term that is one distance map (weights-free levels),
    its value. ``features``: the extractor's name; ``views``: the pairs measured.
    """

    features: str
    terms: tuple[str, ...]
    means: tuple[tuple[float, ...], ...]
    views: int

    def to_dict(self) -> dict:
        """JSON-ready dict (see :meth:`from_dict`)."""
        return {"features": self.features, "terms": list(self.terms), "means": [list(m) for m in self.means],
                "views": self.views}

    @classmethod
    def from_dict(cls, data: dict) -> "ResidualScales":
        """Inverse of :meth:`to_dict` (KeyError / TypeError / ValueError on bad input)."""
        means = tuple(tuple(float(v) for v in m) for m in data["means"])
        terms = tuple(str(t) for t in data["terms"])
        if len(terms) != len(means) or not all(means) or not all(np.isfinite(m).all() for m in means):
            raise ValueError("residual scales: one non-empty list of finite means per term needed")
        return cls(features=str(data["features"]), terms=terms, means=means, views=int(data["views"]))

    def weights(self, mode: str) -> list[np.ndarray]:
        """Per-term channel weights [C_j] of ``MapConfig.normalise`` = ``mode``:

        - "level": ``w_jk = 1 / sum_k m_jk`` (term j divided by its calibration mean,
          so every term has mean 1 on the calibration views);
        - "channel": ``w_jk = 1 / (C_j max(m_jk, 1e-3 mean_k m_jk))``, a diagonal
          Mahalanobis distance per term averaged over its C_j channels (mean 1 as well);
          the floor keeps near-silent channels from amplifying noise;
        - "none": ones.

        Means of zero (a term that never differed) give weight 1 / 1e-12-floored means.
        """
        out = []
        for m in self.means:
            m = np.asarray(m, np.float64)
            if mode == "none":
                w = np.ones_like(m)
            elif mode == "level":
                w = np.full_like(m, 1.0 / max(m.sum(), 1e-12))
            elif mode == "channel":
                w = 1.0 / (m.size * np.maximum(m, max(1e-3 * m.mean(), 1e-12)))
            else:
                raise ValueError(f"residual weights: mode must be none, level or channel (got {mode!r})")
            out.append(w.astype(np.float32))
        return out


@dataclasses.dataclass(frozen=True)
class MapCalibration:
    """Fixed scale of a model's heatmaps: ``threshold`` (image scores above it are
    anomalous), colour range ``[vmin, vmax]``, and what it was measured with."""

    threshold: float
    vmin: float
    vmax: float
    features: str
    map_size: int
    map_sigma: float
    score: str
    views: int
    train_score_max: float
    train_score_median: float
    score_k: int = 100
    normalise: str = "none"
    shift_radius: int = 0
    rule: str = "train-max"
    false_positive_rate: float = 0.0  # the rate the held-out threshold targets (0: rule train-max)
    heldout_queries: int = 0
    heldout_score_median: float = 0.0
    heldout_score_max: float = 0.0
    heldout_pose_loss: float = 0.0  # median final fine-pose loss of the held-out queries (0: not measured)
    heldout_pose_residual: float = 0.0  # median silhouette residual of the held-out queries (0: not measured)
    heldout_pose_mismatch: float = 0.0  # median outline mismatch 1 - IoU of the held-out queries (0: not measured)
    heldout_log_sd: float = 0.0  # the deviation of log scores the held-out threshold used (0: not measured)
    residual: ResidualScales | None = None
    highlights: str = "keep"  # MapConfig.highlights it was measured with
    highlight_percentile: float = 99.9
    highlight_cap: float = 0.0  # the highlight discount's cap (splatjax.anomaly.highlight_cap; 0: none)
    highlight_saturation: float = 0.0  # MapConfig.highlight_saturation it was measured with (0: off)
    highlight_space: str = "srgb"  # MapConfig.highlight_space it was measured with

    def describe(self) -> str:
        """How the threshold was set, for a verdict line: "5 % FPR" or "1.5 x training max"."""
        if self.rule == "held-out":
            return f"{100 * self.false_positive_rate:g} % FPR"
        return f"{self.threshold / self.train_score_max:g} x training max" if self.train_score_max > 0 else "training"

    def key(self) -> str:
        """What the scale depends on: features, map size, sigma, score and its options."""
        return calibration_key(self.features, self.map_size, self.map_sigma, self.score, score_k=self.score_k,
                               normalise=self.normalise, shift_radius=self.shift_radius, highlights=self.highlights,
                               highlight_percentile=self.highlight_percentile,
                               highlight_saturation=self.highlight_saturation, highlight_space=self.highlight_space)

    def to_dict(self) -> dict:
        """JSON-ready dict (see :meth:`from_dict`)."""
        out = dataclasses.asdict(self)
        out["residual"] = None if self.residual is None else self.residual.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "MapCalibration":
        """Inverse of :meth:`to_dict` (KeyError / TypeError / ValueError on bad input)."""
        kinds = {"float": float, "int": int, "str": str}
        values = {}
        for f in dataclasses.fields(cls):
            if f.type in kinds and (f.name in data or f.default is dataclasses.MISSING):
                values[f.name] = kinds[f.type](data[f.name])  # fields added later keep their defaults
        residual = data.get("residual")
        return cls(**values, residual=None if residual is None else ResidualScales.from_dict(residual))


def calibration_key(features: str, map_size: int, map_sigma: float, score: str, *, score_k: int = 100,
                    normalise: str = "none", shift_radius: int = 0, highlights: str = "keep",
                    highlight_percentile: float = 99.9, highlight_saturation: float = 0.0,
                    highlight_space: str = "srgb") -> str:
    """The string that names one calibration setting: features/size/sigma/score, then
    only the options that differ from the paper (``/k100`` for a top-k score,
    ``/norm-channel``, ``/shift1``, ``/highlights-p99.9``, ``/sat0.998``, ``/linear``), so the paper's keys
    stay as they were."""
    key = f"{features}/size{int(map_size)}/sigma{float(map_sigma):g}/{score}"
    if score == "topk":
        key += f"/k{int(score_k)}"
    if normalise != "none":
        key += f"/norm-{normalise}"
    if shift_radius:
        key += f"/shift{int(shift_radius)}"
    if highlights != "keep":
        key += f"/highlights-p{float(highlight_percentile):g}"
        if highlight_saturation:
            key += f"/sat{float(highlight_saturation):g}"
        if highlight_space != "srgb":
            key += f"/{highlight_space}"
    return key


def heldout_threshold(scores: Float[ArrayLike, " M"], false_positive_rate: float, *, views: int | None = None,
                      prior_log_sd: float = 0.0, prior_views: float = 0.0) -> float:
    """The score above which a share ``false_positive_rate`` of defect-free queries falls,
    from M >= 2 of their scores: the quantile of a log-normal fitted to them (mean and
    sample standard deviation of log scores). A parametric fit, not the empirical quantile,
    because M is a few dozen: the 95th percentile of 32 scores is their second largest.

    With ``prior_views`` > 0 the deviation is shrunk toward ``prior_log_sd`` (the deviation
    of log scores expected of any model): the variance is
    ``((n - 1) s^2 + prior_views * prior_log_sd^2) / (n - 1 + prior_views)``, the posterior
    estimate under a scaled-inverse-chi-square prior worth ``prior_views`` degrees of
    freedom, where ``n`` = ``views`` independent samples (the held-out views: a view's rolled
    copies score alike; default M). A handful of views can come out alike by chance and
    give a deviation a third of the usual; the prior keeps such a threshold from sitting
    inside the spread the model's good queries will show."""
    from scipy.stats import norm

    s = np.asarray(scores, np.float64).ravel()
    if s.size < 2 or not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"heldout_threshold: need at least two finite positive scores, got {s[:5]}")
    return float(np.exp(np.log(s).mean() + norm.ppf(1.0 - false_positive_rate) *
                        heldout_log_sd(s, views=views, prior_log_sd=prior_log_sd, prior_views=prior_views)))


def heldout_log_sd(scores: Float[ArrayLike, " M"], *, views: int | None = None, prior_log_sd: float = 0.0,
                   prior_views: float = 0.0) -> float:
    """The deviation of log scores :func:`heldout_threshold` uses (its docstring)."""
    logs = np.log(np.asarray(scores, np.float64).ravel())
    sd = float(logs.std(ddof=1))
    if prior_views <= 0:
        return sd
    dof = max((logs.size if views is None else int(views)) - 1, 1)
    return float(np.sqrt((dof * sd ** 2 + prior_views * prior_log_sd ** 2) / (dof + prior_views)))


def heldout_rule(scores: Float[ArrayLike, " M"], config: MapConfig) -> tuple[float, float]:
    """(threshold, deviation of log scores) of the held-out rule for the scores of M held-out
    queries: :func:`heldout_threshold` at ``config.false_positive_rate``, about
    M / (``calibration_rolls`` + 1) views, the deviation shrunk as ``config.heldout_prior_*`` say."""
    prior = dict(views=-(-np.size(scores) // (config.calibration_rolls + 1)), prior_log_sd=config.heldout_prior_log_sd,
                 prior_views=config.heldout_prior_views)
    return heldout_threshold(scores, config.false_positive_rate, **prior), heldout_log_sd(scores, **prior)


def _median_or_zero(values) -> float:
    m = 0.0 if values is None else float(np.median(np.asarray(values, np.float64)))
    return m if np.isfinite(m) else 0.0


def with_heldout(cal: MapCalibration, scores: Float[ArrayLike, " M"], config: MapConfig,
                 pose_losses: Float[ArrayLike, " M"] | None = None,
                 pose_residuals: Float[ArrayLike, " M"] | None = None,
                 pose_mismatches: Float[ArrayLike, " M"] | None = None) -> MapCalibration:
    """``cal`` with the held-out rule's threshold (:func:`heldout_rule` of the scores of M
    held-out queries) and colour range 0 .. 2 x it;
    ``pose_losses`` / ``pose_residuals`` / ``pose_mismatches``: those queries' final fine-pose
    losses, median silhouette residuals and outline mismatches 1 - IoU (their medians are kept
    as the references of the pose trust rules, :func:`splatjax.pose.trust_poses`)."""
    s = np.asarray(scores, np.float64).ravel()
    t, log_sd = heldout_rule(s, config)
    return dataclasses.replace(cal, threshold=t, vmax=2.0 * t, rule="held-out", heldout_log_sd=log_sd,
                               false_positive_rate=float(config.false_positive_rate), heldout_queries=int(s.size),
                               heldout_score_median=float(np.median(s)), heldout_score_max=float(s.max()),
                               heldout_pose_loss=_median_or_zero(pose_losses),
                               heldout_pose_residual=_median_or_zero(pose_residuals),
                               heldout_pose_mismatch=_median_or_zero(pose_mismatches))


def calibrate(train_scores: Float[ArrayLike, " N"], config: MapConfig, features: str,
              residual: ResidualScales | None = None, highlight_cap: float | None = None) -> MapCalibration:
    """The calibration from the image scores of N training views at their own poses,
    computed with ``config`` and the extractor named ``features`` (and, with
    ``config.normalise``, the ``residual`` scales those maps were normalised with; with
    ``config.highlights`` "calibrated", the ``highlight_cap`` they were discounted with,
    None: nothing discounted, stored as 0)."""
    if (config.normalise != "none") != (residual is not None):
        raise ValueError(f"calibrate: normalise={config.normalise!r} needs residual scales exactly when it is "
                         f"not 'none' (got {'some' if residual is not None else 'none'})")
    s = np.asarray(train_scores, np.float64).ravel()
    if s.size == 0 or not np.isfinite(s).all():
        raise ValueError(f"calibrate: need finite scores of at least one training view, got {s[:5]}")
    threshold = float(config.threshold_factor * s.max())
    return MapCalibration(threshold=threshold, vmin=0.0, vmax=2.0 * threshold, features=features,
                          map_size=config.map_size, map_sigma=float(config.map_sigma), score=config.score,
                          views=int(s.size), train_score_max=float(s.max()), train_score_median=float(np.median(s)),
                          score_k=int(config.score_k), normalise=config.normalise,
                          shift_radius=int(config.shift_radius), residual=residual, highlights=config.highlights,
                          highlight_percentile=float(config.highlight_percentile),
                          highlight_cap=0.0 if highlight_cap is None else float(highlight_cap),
                          highlight_saturation=float(config.highlight_saturation),
                          highlight_space=config.highlight_space)
