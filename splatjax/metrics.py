"""Evaluation metrics: image / pixel AUROC, the MVTec AD AUPRO, and camera pose errors.

Everything here runs on the host in NumPy (float64 where it matters); JAX or NumPy arrays
are accepted as inputs. AUROC comes from scikit-learn. AUPRO is hand-written because no
kept library implements the MVTec AD reference definition (8-connected ground-truth
regions, every distinct score a threshold, area up to an FPR limit); it is tested against
a brute-force evaluation of that definition. Pose errors use
``scipy.spatial.transform.Rotation`` in float64 (near identity, float32 ``arccos`` would
floor rotation errors at ~3e-4 rad, above the errors the paper reports).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import scipy.ndimage
from jaxtyping import ArrayLike, Bool, Float, Shaped
from scipy.spatial.transform import Rotation
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = [
    "DetectionMetrics",
    "evaluate_detection",
    "resize_masks",
    "auroc",
    "pixel_auroc",
    "roc_curve_points",
    "pro_curve",
    "aupro",
    "pose_errors",
    "summarize_pose_errors",
]


# --------------------------------------------------------------------------- AUROC


def _binary_labels(labels: ArrayLike, n: int, where: str) -> np.ndarray:
    """Labels as a 1-D bool array (True = anomalous); accepts bool or values in {0, 1}."""
    lab = np.asarray(labels).ravel()
    if lab.shape[0] != n:
        raise ValueError(f"{where}: {lab.shape[0]} labels for {n} scores")
    if lab.dtype != np.bool_:
        if not np.isin(lab, (0, 1)).all():
            raise ValueError(
                f"{where}: labels must be bool or 0/1 (1 = anomalous); got values "
                f"{np.unique(lab)[:5]} (threshold them first, e.g. `mask > 0`)"
            )
        lab = lab.astype(bool)
    return lab


def _check_two_classes(lab: np.ndarray, where: str) -> None:
    n_pos = int(np.count_nonzero(lab))
    if n_pos == 0 or n_pos == lab.size:
        only = "anomalous (True)" if n_pos else "normal (False)"
        raise ValueError(
            f"{where}: AUROC is undefined with only one class present: all {lab.size} "
            f"labels are {only}; the evaluation set needs normal and anomalous samples"
        )


def _finite_scores(scores: ArrayLike, where: str, dtype=np.float64) -> np.ndarray:
    s = np.asarray(scores, dtype=dtype).ravel()
    if not np.isfinite(s).all():
        raise ValueError(f"{where}: {np.count_nonzero(~np.isfinite(s))} scores are NaN or inf")
    return s


def auroc(scores: Float[ArrayLike, " N"], labels: Shaped[ArrayLike, " N"]) -> float:
    """Area under the ROC curve (scikit-learn ``roc_auc_score``), ties counted half.

    ``scores``: higher = more anomalous. ``labels``: True / 1 = anomalous ("not good").
    Raises ``ValueError`` if only one class is present.
    """
    s = _finite_scores(scores, "auroc")
    lab = _binary_labels(labels, s.size, "auroc")
    _check_two_classes(lab, "auroc")
    return float(roc_auc_score(lab, s))


def pixel_auroc(anomaly_maps: Float[ArrayLike, "N H W"], masks: Bool[ArrayLike, "N H W"]) -> float:
    """AUROC over all pixels of all images pooled (maps as float32, flattened once)."""
    maps = np.asarray(anomaly_maps, dtype=np.float32)
    m = np.asarray(masks)
    if maps.shape != m.shape:
        raise ValueError(f"pixel_auroc: anomaly_maps shape {maps.shape} != masks shape {m.shape}")
    s = _finite_scores(maps, "pixel_auroc", dtype=np.float32)
    lab = _binary_labels(m, s.size, "pixel_auroc")
    _check_two_classes(lab, "pixel_auroc")
    return float(roc_auc_score(lab, s))


def roc_curve_points(
    scores: Float[ArrayLike, " N"], labels: Shaped[ArrayLike, " N"]
) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) of the ROC curve, for plotting."""
    s = _finite_scores(scores, "roc_curve_points")
    lab = _binary_labels(labels, s.size, "roc_curve_points")
    _check_two_classes(lab, "roc_curve_points")
    fpr, tpr, _ = roc_curve(lab, s, drop_intermediate=False)
    return fpr, tpr


# --------------------------------------------------------------------------- AUPRO


def _maps_and_masks(anomaly_maps, masks, where: str) -> tuple[np.ndarray, np.ndarray]:
    maps = np.asarray(anomaly_maps)
    if not np.issubdtype(maps.dtype, np.floating) or maps.dtype.itemsize < 4:
        maps = maps.astype(np.float64)
    m = np.asarray(masks)
    if maps.ndim == 2:
        maps = maps[None]
    if m.ndim == 2:
        m = m[None]
    if maps.ndim != 3:
        raise ValueError(f"{where}: anomaly_maps must be [N, H, W] (or [H, W]); got shape {maps.shape}")
    if maps.shape != m.shape:
        raise ValueError(f"{where}: anomaly_maps shape {maps.shape} != masks shape {m.shape}")
    if not np.isfinite(maps).all():
        raise ValueError(f"{where}: {np.count_nonzero(~np.isfinite(maps))} anomaly-map values are NaN or inf")
    m = _binary_labels(m, m.size, where).reshape(maps.shape)
    return maps, m


def _regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """(region id per pixel [N, H, W] int32: 0 normal, 1.. the 8-connected components of
    every image's mask numbered across images; the number of regions)."""
    structure = np.ones((3, 3), dtype=bool)
    region = np.zeros(masks.shape, dtype=np.int32)
    n_regions = 0
    for i in range(masks.shape[0]):
        n = scipy.ndimage.label(masks[i], structure=structure, output=region[i])
        region[i][region[i] > 0] += n_regions
        n_regions += n
    return region, n_regions


def pro_curve(
    anomaly_maps: Float[ArrayLike, "N H W"], masks: Bool[ArrayLike, "N H W"]
) -> tuple[np.ndarray, np.ndarray]:
    """The per-region-overlap curve of the MVTec AD evaluation: (fprs, pros), float64.

    Ground-truth regions are the 8-connected components of each image's mask
    (``scipy.ndimage.label`` with a 3 x 3 structure). Every distinct score t is a
    threshold, a pixel is positive when its score >= t. For decreasing t:
    FPR(t) = share of all normal pixels of all images that are positive, and
    PRO(t) = mean over all regions of all images of the share of the region's pixels that
    are positive. Like the reference, the curve is returned in increasing-FPR order with
    (0, 0) prepended and (1, 1) appended; FPR may repeat (vertical steps).

    Cost: sorts of the scores (all, normal, defect pixels) and binary searches,
    O(P log P) for P pixels, not O(thresholds x pixels).
    """
    maps, m = _maps_and_masks(anomaly_maps, masks, "pro_curve")
    region, n_regions = _regions(m)
    del m
    scores, region = maps.ravel(), region.ravel()
    sizes = np.bincount(region, minlength=n_regions + 1)
    n_ok = int(sizes[0])
    if n_regions == 0:
        raise ValueError("pro_curve: the masks contain no anomalous pixel, so PRO is undefined")
    if n_ok == 0:
        raise ValueError("pro_curve: the masks contain no normal pixel, so the FPR is undefined")

    # Thresholds: the distinct scores, descending; a pixel is positive when score >= t,
    # so all pixels tied at one score switch together.
    thresholds = np.unique(scores)[::-1]
    fprs = np.empty(thresholds.size + 2)
    pros = np.empty(thresholds.size + 2)
    fprs[0] = pros[0] = 0.0
    fprs[-1] = pros[-1] = 1.0

    # FPR(t): normal pixels with score >= t, by binary search in their sorted scores.
    ok = region == 0
    ok_scores = scores[ok]
    ok_scores.sort()
    fprs[1:-1] = n_ok - np.searchsorted(ok_scores, thresholds, side="left")
    fprs[1:-1] /= n_ok
    del ok_scores

    # PRO(t): sum over defect pixels with score >= t of 1 / (size of their region), over
    # the number of regions; suffix sums of the weights in score order.
    defect_scores = scores[~ok]
    order = np.argsort(defect_scores)
    defect_scores = defect_scores[order]
    weights = (1.0 / sizes)[region[~ok][order]]
    suffix = np.zeros(weights.size + 1)
    suffix[:-1] = np.cumsum(weights[::-1])[::-1]
    pros[1:-1] = suffix[np.searchsorted(defect_scores, thresholds, side="left")]
    pros[1:-1] /= n_regions

    # cumulative sums may overshoot 1 by rounding
    np.clip(fprs, 0.0, 1.0, out=fprs)
    np.clip(pros, 0.0, 1.0, out=pros)
    return fprs, pros


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid-rule area under (x, y) (x non-decreasing, x[0] <= x_max <= x[-1]) from
    x[0] to x_max; y at x_max linearly interpolated between its neighbours when x_max is
    not a sample (as the MVTec ``trapezoid``)."""
    k = int(np.searchsorted(x, x_max, side="right"))  # points with x <= x_max
    xs, ys = x[:k], y[:k]
    if xs[-1] < x_max:
        x0, x1, y0, y1 = x[k - 1], x[k], y[k - 1], y[k]
        y_lim = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        xs, ys = np.append(xs, x_max), np.append(ys, y_lim)
    return float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))


def aupro(
    anomaly_maps: Float[ArrayLike, "N H W"],
    masks: Bool[ArrayLike, "N H W"],
    fpr_limit: float = 0.3,
) -> float:
    """Normalised area under the PRO curve up to FPR = ``fpr_limit`` (MVTec AD AUPRO).

    The curve is :func:`pro_curve`; the area from FPR 0 to ``fpr_limit`` uses the
    trapezoid rule with PRO linearly interpolated at ``fpr_limit`` and is divided by
    ``fpr_limit``, so a perfect map scores 1. ``masks``: True / 1 = defect pixel; at least
    one defect and one normal pixel over all images are required.

    Computed in float64 (the reference rounds FPRs to float32; results agree to ~1e-6).
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"aupro: fpr_limit must be in (0, 1]; got {fpr_limit}")
    fprs, pros = pro_curve(anomaly_maps, masks)
    return _area_up_to(fprs, pros, float(fpr_limit)) / float(fpr_limit)


# --------------------------------------------------------------------------- pose errors


def _poses(c2w, name: str, atol: float) -> np.ndarray:
    p = np.asarray(c2w, dtype=np.float64)
    if p.ndim < 2 or p.shape[-2:] not in ((4, 4), (3, 4)):
        raise ValueError(f"pose_errors: {name} must be [N, 4, 4] or [4, 4] camera-to-world; got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError(f"pose_errors: {name} contains NaN or inf")
    R = p[..., :3, :3]
    dev = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max(axis=(-2, -1))
    bad = (dev > atol) | (np.linalg.det(R) <= 0)
    if bad.any():
        idx = np.argwhere(np.atleast_1d(bad))[0].tolist()
        raise ValueError(
            f"pose_errors: the 3 x 3 block of {name} is not a rotation at index {idx} "
            f"(max |R^T R - I| = {np.atleast_1d(dev)[tuple(idx)]:.3g}, tolerance {atol}, det must be > 0)"
        )
    return p


def pose_errors(
    c2w_est: Float[ArrayLike, "*N 4 4"],
    c2w_true: Float[ArrayLike, "*N 4 4"],
    *,
    orthonormal_atol: float = 1e-2,
) -> dict[str, np.ndarray]:
    """Per-pose errors between estimated and true camera-to-world poses (float64).

    Both inputs in one convention (OpenCV or Blender/OpenGL: the errors do not depend on
    which). Returns float64 arrays of the batch shape (shape ``()`` for a single [4, 4]):

    - ``"translation"``: Euclidean distance between camera centres (scene units).
    - ``"rotation_rad"``: rotation angle of R_est^T R_true in [0, pi] radians, i.e.
      2 arccos |q_est . q_true| (evaluated stably as 2 atan2(|v|, |w|) of the relative
      quaternion).
    - ``"rotation_half_rad"``: arccos |q_est . q_true| = rotation_rad / 2, the quantity
      the SplatPose reference code stores in its pose-error table.

    Rotation blocks must be rotations within ``orthonormal_atol`` (max |R^T R - I|);
    slightly non-orthonormal ones are replaced by the nearest rotation.
    """
    est = _poses(c2w_est, "c2w_est", orthonormal_atol)
    true = _poses(c2w_true, "c2w_true", orthonormal_atol)
    if est.shape != true.shape:
        raise ValueError(f"pose_errors: c2w_est shape {est.shape} != c2w_true shape {true.shape}")
    batch = est.shape[:-2]
    R_est = Rotation.from_matrix(est[..., :3, :3].reshape(-1, 3, 3))
    R_true = Rotation.from_matrix(true[..., :3, :3].reshape(-1, 3, 3))
    angle = (R_est.inv() * R_true).magnitude().reshape(batch)
    translation = np.linalg.norm(est[..., :3, 3] - true[..., :3, 3], axis=-1)
    return {
        "translation": np.asarray(translation, dtype=np.float64),
        "rotation_rad": np.asarray(angle, dtype=np.float64),
        "rotation_half_rad": np.asarray(0.5 * angle, dtype=np.float64),
    }


def summarize_pose_errors(errors: Mapping[str, ArrayLike]) -> dict[str, dict[str, float]]:
    """``{key: {"median": float, "mean": float}}`` for each per-pose error array."""
    out = {}
    for key, value in errors.items():
        v = np.asarray(value, dtype=np.float64).ravel()
        if v.size == 0:
            raise ValueError(f"summarize_pose_errors: {key!r} holds no poses")
        out[key] = {"median": float(np.median(v)), "mean": float(np.mean(v))}
    return out


# --------------------------------------------------------------------------- the metrics stage


@dataclasses.dataclass(frozen=True)
class DetectionMetrics:
    """Image AUROC, pixel AUROC and AUPRO of one test set; None where a metric is
    undefined (e.g. only normal or only defective images)."""

    image_auroc: float | None
    pixel_auroc: float | None
    aupro: float | None


def resize_masks(masks: Shaped[ArrayLike, "N H W"], size: int) -> Bool[np.ndarray, "N size size"]:
    """Masks resized to ``size x size`` by nearest neighbour (Pillow NEAREST), as bool."""
    from PIL import Image

    m = np.asarray(masks).astype(bool)
    if m.shape[1:] == (size, size):
        return m
    return np.stack([np.asarray(Image.fromarray(x.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 0
                     for x in m])


def _undefined_is_none(fn, *args) -> float | None:
    try:
        return float(fn(*args))
    except ValueError:
        return None


def evaluate_detection(
    scores: Float[ArrayLike, " N"],
    maps: Float[ArrayLike, "N S S"],
    labels: Shaped[ArrayLike, " N"],
    masks: Shaped[ArrayLike, "N H W"],
) -> DetectionMetrics:
    """The metrics stage: image AUROC of ``scores`` against ``labels`` (1 = defective),
    pixel AUROC and AUPRO of the square ``maps`` against ``masks`` resized (nearest) to
    the map size. Undefined metrics are None."""
    maps = np.asarray(maps)
    masks = resize_masks(masks, maps.shape[-1])
    return DetectionMetrics(image_auroc=_undefined_is_none(auroc, scores, labels),
                            pixel_auroc=_undefined_is_none(pixel_auroc, maps, masks),
                            aupro=_undefined_is_none(aupro, maps, masks))
