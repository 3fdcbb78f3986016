"""Reports: pictures (matplotlib, Agg backend) and tables.

- :func:`heatmap_panel`: query | render at the estimated pose | anomaly map on the
  model's fixed colour scale, with a colour bar marking the threshold and the image score,
  threshold and verdict in the title. The picture depends only on that image's arrays
  and the model's calibration, so an image looks the same alone and among others.
- :func:`plot_roc_curves`, :func:`plot_pose_convergence`: the evaluation figures.
- :func:`write_per_image_csv`, :func:`format_table`: the evaluation tables.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jaxtyping import Float

from ..anomaly import MapCalibration
from ..context import QUIET, Context
from ..files import atomic_write
from ..metrics import resize_masks

__all__ = ["heatmap_panel", "write_heatmaps", "verdict", "plot_roc_curves", "plot_pose_convergence",
           "write_per_image_csv", "format_table"]


def _save_figure(fig, path: str | os.PathLike, title: str | None = None) -> None:
    """Title (optional), tight layout, write the PNG at 100 dpi, and free the figure."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    atomic_write(path, buf.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_roc_curves(
    path: str | os.PathLike,
    image_scores: Float[np.ndarray, " N"],
    labels: np.ndarray,
    maps: Float[np.ndarray, "N S S"] | None = None,
    masks: np.ndarray | None = None,
    *,
    title: str = "",
) -> None:
    """Image-level and (when maps and masks are given) pixel-level ROC curves in one PNG.
    A curve that is undefined (one class only) is drawn as a note instead."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    panels = [("image", np.asarray(image_scores, np.float64).ravel(), np.asarray(labels).ravel().astype(bool))]
    if maps is not None and masks is not None:
        panels.append(("pixel", np.asarray(maps, np.float32).ravel(), np.asarray(masks).ravel().astype(bool)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (name, s, y) in zip(axes[0], panels):
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
        if 0 < y.sum() < y.size:
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, lw=2, label=f"AUROC {roc_auc_score(y, s):.3f}")
            ax.legend(loc="lower right")
        else:
            ax.text(0.5, 0.5, "undefined: one class only", ha="center", va="center")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{name} ROC",
               xlim=(0, 1), ylim=(0, 1.01))
    _save_figure(fig, path, title)


def plot_pose_convergence(
    path: str | os.PathLike,
    loss_traces: Float[np.ndarray, "Q k"],
    *,
    coarse_errors: dict | None = None,
    fine_errors: dict | None = None,
    diverged: np.ndarray | None = None,
    title: str = "",
) -> None:
    """Fine-pose loss per step (every query, plus the median of the finite losses; queries
    flagged in ``diverged`` [Q] in red) and, when errors against known poses are given,
    coarse vs fine rotation and translation errors per query."""
    plt = _pyplot()
    traces = np.asarray(loss_traces, np.float64)
    with_err = coarse_errors is not None and fine_errors is not None
    fig, axes = plt.subplots(1, 3 if with_err else 1, figsize=(13 if with_err else 5, 4), squeeze=False)
    ax = axes[0, 0]
    steps = np.arange(1, traces.shape[1] + 1)
    bad = np.zeros(len(traces), bool) if diverged is None else np.asarray(diverged, bool)
    for tr, b in zip(traces, bad):
        ax.plot(steps, tr, c="tab:red" if b else "tab:blue", alpha=0.8 if b else 0.25, lw=0.8)
    finite = np.where(np.isfinite(traces), traces, np.nan)
    with warnings.catch_warnings():  # a step where no loss is finite has no median (NaN, not a warning)
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(finite, axis=0)
    ax.plot(steps, median, c="k", lw=2, label="median" + (f" ({int(bad.sum())} diverged, red)" if bad.any() else ""))
    ax.set(xlabel="step", ylabel="0.8 L1 + 0.2 (1 - SSIM)", title="fine pose loss", yscale="log")
    ax.legend()
    if with_err:
        for ax, key, unit in ((axes[0, 1], "rotation_rad", "rad"), (axes[0, 2], "translation", "scene units")):
            c = np.asarray(coarse_errors[key], np.float64)
            f = np.asarray(fine_errors[key], np.float64)
            lo = max(min(c.min(), f.min()), 1e-6)
            hi = max(c.max(), f.max(), lo * 10)
            ax.loglog([lo, hi], [lo, hi], ls=":", c="grey", lw=1)
            ax.scatter(np.maximum(c, lo), np.maximum(f, lo), s=14)
            better = float(np.mean(f < c))
            ax.set(xlabel=f"coarse {key} ({unit})", ylabel=f"fine {key} ({unit})",
                   title=f"{key}: fine < coarse for {100 * better:.0f}%")
    _save_figure(fig, path, title)


POSE_NOT_FOUND = "pose not found"


def verdict(score: float, calibration: MapCalibration, trusted: bool = True) -> str:
    """"ANOMALOUS" when ``score`` exceeds the calibrated threshold, else "normal"; "pose not
    found" when the pose is not ``trusted`` (:mod:`splatjax.pose.trust`): a map built on the
    wrong view says nothing about the part."""
    if not trusted:
        return POSE_NOT_FOUND
    return "ANOMALOUS" if float(score) > calibration.threshold else "normal"


def heatmap_panel(
    query: Float[np.ndarray, "H W 3"],
    render: Float[np.ndarray, "H W 3"],
    amap: Float[np.ndarray, "S S"],
    score: float,
    calibration: MapCalibration,
    *,
    name: str = "",
    mask: np.ndarray | None = None,
    trusted: bool = True,
) -> bytes:
    """PNG bytes of one image's panel: query | render | anomaly map (jet, on the fixed
    scale ``[calibration.vmin, calibration.vmax]``, ground-truth ``mask`` outlined in
    white) and a colour bar with the threshold marked; the title gives ``name``, the
    score, the threshold and the verdict. Panels are at least 256 px high."""
    plt = _pyplot()
    h, w = np.asarray(query).shape[:2]
    side = max(h, 256) / 100.0  # inches at 100 dpi
    aspect = w / h
    fig = plt.figure(figsize=(3 * side * aspect + 1.4, side + 0.9), dpi=100)
    fw, fh = fig.get_size_inches()
    axes = [fig.add_axes(((0.1 + i * (side * aspect + 0.1)) / fw, 0.1 / fh, side * aspect / fw, side / fh))
            for i in range(3)]
    for ax, img, label in ((axes[0], query, "query"), (axes[1], render, "render at the estimated pose")):
        ax.imshow(np.clip(np.asarray(img, np.float32), 0.0, 1.0), interpolation="bilinear")
        ax.set_title(label, fontsize=9)
    m = np.asarray(amap, np.float32)
    im = axes[2].imshow(m, cmap="jet", vmin=calibration.vmin, vmax=calibration.vmax, interpolation="bilinear")
    if mask is not None and np.asarray(mask).any():
        axes[2].contour(resize_masks(np.asarray(mask)[None], m.shape[0])[0].astype(np.float32), levels=[0.5],
                        colors="white", linewidths=1.0)
    axes[2].set_title("anomaly map", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    cax = fig.add_axes(((0.2 + 3 * (side * aspect + 0.1)) / fw, 0.1 / fh, 0.15 / fw, side / fh))
    bar = fig.colorbar(im, cax=cax)
    bar.ax.axhline(calibration.threshold, color="white", lw=2)
    bar.ax.axhline(calibration.threshold, color="black", lw=1, ls="--")
    bar.ax.tick_params(labelsize=8)
    fig.suptitle(f"{name}  score {score:.4g}, threshold {calibration.threshold:.4g} -> "
                 f"{verdict(score, calibration, trusted)}", fontsize=10, y=1.0 - 0.15 / fh, va="top")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_heatmaps(
    folder: str | os.PathLike,
    names: Sequence[str],
    queries: np.ndarray,
    renders: np.ndarray,
    maps: np.ndarray,
    scores: np.ndarray,
    calibration: MapCalibration,
    *,
    masks: np.ndarray | None = None,
    trusted: np.ndarray | None = None,
    context: Context = QUIET,
) -> list[Path]:
    """Write ``folder/<name>.png`` (:func:`heatmap_panel`) for every image (``trusted``: per
    image, whether its pose is; None: all); returns the paths."""
    folder = Path(folder)
    paths = []
    for i, name in enumerate(names):
        png = heatmap_panel(queries[i], renders[i], maps[i], float(scores[i]), calibration, name=name,
                            mask=None if masks is None else masks[i],
                            trusted=True if trusted is None else bool(trusted[i]))
        paths.append(atomic_write(folder / f"{name}.png", png))
        context.tick("heatmaps", i + 1, len(names))
    return paths


def write_per_image_csv(path: str | os.PathLike, columns: dict[str, Sequence]) -> Path:
    """A CSV with one column per entry of ``columns`` (equal lengths); floats as %.6g."""
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    for i in range(n):
        w.writerow([f"{v:.6g}" if isinstance(v, (float, np.floating)) else v
                    for v in (columns[c][i] for c in names)])
    return atomic_write(path, buf.getvalue())


def _fmt(x, digits=3, scale=1.0):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{scale * x:.{digits}f}"


def format_table(reports: Sequence[dict]) -> str:
    """Markdown table like the paper's Table 1: per class image AUROC, pixel AUROC, AUPRO
    (percent) and pose errors (translation / rotation rad, fine), plus the mean row."""
    rows = ["| class | image AUROC | pixel AUROC | AUPRO | fine translation | fine rotation (rad) | s / query |",
            "|---|---|---|---|---|---|---|"]

    def pe(r, key):
        p = r.get("pose")
        return None if p is None else p["fine"][key]["median"]

    cols = []
    for r in reports:
        vals = [r.get("image_auroc"), r.get("pixel_auroc"), r.get("aupro"), pe(r, "translation"),
                pe(r, "rotation_rad"), r.get("seconds_per_query_without_coarse")]
        cols.append(vals)
        rows.append(f"| {r['class']} | {_fmt(vals[0], 1, 100)} | {_fmt(vals[1], 1, 100)} | {_fmt(vals[2], 1, 100)} | "
                    f"{_fmt(vals[3], 4)} | {_fmt(vals[4], 4)} | {_fmt(vals[5], 2)} |")

    def mean(j):
        v = [c[j] for c in cols if c[j] is not None]
        return float(np.mean(v)) if v else None

    rows.append(f"| **mean** | {_fmt(mean(0), 1, 100)} | {_fmt(mean(1), 1, 100)} | {_fmt(mean(2), 1, 100)} | "
                f"{_fmt(mean(3), 4)} | {_fmt(mean(4), 4)} | {_fmt(mean(5), 2)} |")
    return "\n".join(rows) + "\n"
