"""A model's fixed heatmap scale and decision threshold.

The maps of the training views, rendered at their own (known) poses and compared with the
training images, show what a defect-free view costs for this model: render blur,
fitting residue and the comparison's own noise. From their image scores:

    threshold = threshold_factor x max(training-view scores)
    colour scale = [0, 2 x threshold]  (the threshold sits in the middle of the colour bar)

Every heatmap of the model is drawn on this one scale, so the same image looks the same
whether it is shown alone or next to others, and a score above the threshold reads as
anomalous. The scale belongs to one (model, features, map size, sigma, score) and is
stored in the model's run folder by the application.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import ArrayLike, Float

from .config import MapConfig

__all__ = ["MapCalibration", "calibrate"]


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

    def key(self) -> str:
        """What the scale depends on: features, map size, sigma and score."""
        return calibration_key(self.features, self.map_size, self.map_sigma, self.score)

    def to_dict(self) -> dict:
        """JSON-ready dict (see :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MapCalibration":
        """Inverse of :meth:`to_dict` (KeyError / TypeError / ValueError on bad input)."""
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        kinds = {"float": float, "int": int, "str": str}
        return cls(**{name: kinds[kind](data[name]) for name, kind in fields.items()})


def calibration_key(features: str, map_size: int, map_sigma: float, score: str) -> str:
    """The string that names one calibration setting (features/size/sigma/score)."""
    return f"{features}/size{int(map_size)}/sigma{float(map_sigma):g}/{score}"


def calibrate(train_scores: Float[ArrayLike, " N"], config: MapConfig, features: str) -> MapCalibration:
    """The calibration from the image scores of N training views at their own poses,
    computed with ``config`` and the extractor named ``features``."""
    s = np.asarray(train_scores, np.float64).ravel()
    if s.size == 0 or not np.isfinite(s).all():
        raise ValueError(f"calibrate: need finite scores of at least one training view, got {s[:5]}")
    threshold = float(config.threshold_factor * s.max())
    return MapCalibration(threshold=threshold, vmin=0.0, vmax=2.0 * threshold, features=features,
                          map_size=config.map_size, map_sigma=float(config.map_sigma), score=config.score,
                          views=int(s.size), train_score_max=float(s.max()), train_score_median=float(np.median(s)))
