"""Pictures for evaluation reports (matplotlib, Agg backend): ROC curves, pose
convergence, and per-image panels (query | render | heatmap overlay)."""

from __future__ import annotations

import os

import numpy as np
from jaxtyping import Float

from ..data.images import write_png

__all__ = ["plot_roc_curves", "plot_pose_convergence", "heatmap_panel", "write_png"]



def _save_figure(fig, path: str | os.PathLike, title: str | None = None) -> None:
    """Title (optional), tight layout, write the PNG at 100 dpi, and free the figure."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    _pyplot().close(fig)


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
    title: str = "",
) -> None:
    """Fine-pose loss per step (every query, plus the median) and, when errors against
    known poses are given, coarse vs fine rotation and translation errors per query."""
    plt = _pyplot()
    traces = np.asarray(loss_traces, np.float64)
    with_err = coarse_errors is not None and fine_errors is not None
    fig, axes = plt.subplots(1, 3 if with_err else 1, figsize=(13 if with_err else 5, 4), squeeze=False)
    ax = axes[0, 0]
    steps = np.arange(1, traces.shape[1] + 1)
    for tr in traces:
        ax.plot(steps, tr, c="tab:blue", alpha=0.25, lw=0.8)
    ax.plot(steps, np.median(traces, axis=0), c="k", lw=2, label="median")
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


def heatmap_panel(
    query: Float[np.ndarray, "H W 3"],
    render: Float[np.ndarray, "H W 3"],
    overlay: np.ndarray,
) -> np.ndarray:
    """uint8 [H, 3W + 8, 3]: query | render | overlay, separated by white gaps."""
    h, w = query.shape[:2]

    def u8(x):
        x = np.asarray(x)
        if x.shape[:2] != (h, w):
            from PIL import Image

            x = np.asarray(Image.fromarray(x if x.dtype == np.uint8 else (np.clip(x, 0, 1) * 255).astype(np.uint8))
                           .resize((w, h), Image.BILINEAR))
        return x if x.dtype == np.uint8 else (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    gap = np.full((h, 4, 3), 255, np.uint8)
    return np.concatenate([u8(query), gap, u8(render), gap, u8(overlay)], axis=1)
