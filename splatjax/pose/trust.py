"""Whether a fine pose can be trusted: the silhouette of the render at the pose against the
query's, and the fine pose's final loss against the model's reference loss.

A refinement that converged in a wrong basin (a rolled or near-symmetric view matched
upside down) keeps a finite, non-growing loss, so :class:`~splatjax.pose.fine.Refinement`
does not flag it as diverged; its render then covers other pixels than the object in the
query. A defect changes few of the object's pixels (a stain none, a burr or a hole a few
per cent), a wrong pose many. Both images are reduced to the same mask, the pixels whose
colour differs from the background by more than ``tol`` in some channel (so a part in the
background's colour is missed alike in both), with their holes filled, and compared by
intersection over union. The filling matters on shiny parts: a specular highlight the model
does not reproduce (it is white on a white background) punches a hole into the query's mask
but not the render's; a missing-material defect inside the outline does the same. A wrong
basin moves the outer outline, which filling keeps.

A near-symmetric part matched in a flipped pose can keep its silhouette (a teapot turned
about its axis); its photometric loss stays several times that of a converged pose. The
reference is the median final loss of views held out of the fit, posed by the same pipeline
(measured in the model's calibration): a converged pose of a good part lands near it, a
defect raises it a little (a few per cent of the object's pixels), a wrong basin a lot.

A large or strongly coloured defect (a stain over a lit face, a hole) raises that residual
and the loss too, but leaves the outline where it was; a wrong basin moves the outline as
well. So the residual rule and the loss rule can each ask for both (:func:`outline_gated`):
the render's outline mismatch (1 - silhouette IoU) above a multiple of the held-out views'
median mismatch, besides the residual (or the loss) above a multiple of theirs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from jaxtyping import Bool, Float
from scipy import ndimage

__all__ = ["foreground", "silhouette", "mask_iou", "silhouette_iou", "silhouette_residual", "outline_gated",
           "PoseTrust", "trust_poses"]


def foreground(images: Float[np.ndarray, "*B H W 3"], background, tol: float = 0.03) -> Bool[np.ndarray, "*B H W"]:
    """Pixels whose colour differs from ``background`` (RGB in [0, 1]) by more than ``tol``
    in some channel."""
    return np.abs(np.asarray(images, np.float32) - np.asarray(background, np.float32)).max(-1) > tol


def silhouette(images: Float[np.ndarray, "*B H W 3"], background, tol: float = 0.03) -> Bool[np.ndarray, "*B H W"]:
    """The :func:`foreground` of each image with its holes filled (background pixels that
    no 4-connected path of background pixels joins to the image border become object)."""
    fg = foreground(images, background, tol)
    flat = fg.reshape((-1,) + fg.shape[-2:])
    return np.stack([ndimage.binary_fill_holes(m) for m in flat]).reshape(fg.shape) if flat.size else fg


def mask_iou(a: Bool[np.ndarray, "B H W"], b: Bool[np.ndarray, "B H W"]) -> Float[np.ndarray, " B"]:
    """Per pair of masks, intersection over union (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask_iou: masks {a.shape} and {b.shape} differ in shape")
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0).astype(np.float64)


def silhouette_iou(renders: Float[np.ndarray, "B H W 3"], queries: Float[np.ndarray, "B H W 3"], background,
                   tol: float = 0.03) -> Float[np.ndarray, " B"]:
    """Per pair, :func:`mask_iou` of the :func:`silhouette` masks (holes filled) of the
    render and the query (1.0 when both are empty)."""
    return mask_iou(silhouette(renders, background, tol), silhouette(queries, background, tol))


def silhouette_residual(renders: Float[np.ndarray, "B H W 3"], queries: Float[np.ndarray, "B H W 3"], background,
                        tol: float = 0.03) -> Float[np.ndarray, "B 2"]:
    """Per pair, the median and the 90th percentile of the per-pixel mean absolute RGB
    difference over the union of the two :func:`foreground` masks (0 when both are empty).
    A local defect (a few per cent of the object's pixels) barely moves them; a render in
    a wrong basin differs over much of the silhouette."""
    r, q = np.asarray(renders, np.float32), np.asarray(queries, np.float32)
    if r.shape != q.shape:
        raise ValueError(f"silhouette_residual: renders {r.shape} and queries {q.shape} differ in shape")
    diff = np.abs(r - q).mean(-1)
    union = foreground(r, background, tol) | foreground(q, background, tol)
    out = np.zeros((len(r), 2), np.float64)
    for i in range(len(r)):
        d = diff[i][union[i]]
        if d.size:
            out[i] = np.percentile(d, [50, 90])
    return out


def outline_gated(ratio: Float[np.ndarray, " Q"], outline_ratio: Float[np.ndarray, " Q"], max_ratio: float,
                  min_outline_ratio: float) -> Bool[np.ndarray, " Q"]:
    """A rule asking the outline too, per query, on its ratios to the held-out views' medians:
    True where ``ratio`` (the residual's or the loss's) > ``max_ratio`` and, when
    ``min_outline_ratio`` > 0, the outline too, ``outline_ratio`` > ``min_outline_ratio``. A
    NaN ratio (no reference) is never distrusted; an infinite one (no finite loss) always; a
    NaN outline ratio (no reference) leaves the ratio alone to decide."""
    ratio = np.asarray(ratio, np.float64)
    high = ratio > max_ratio
    if min_outline_ratio > 0:
        outline = np.asarray(outline_ratio, np.float64)
        high &= np.isnan(outline) | (outline > min_outline_ratio) | np.isinf(ratio)
    return high


class PoseTrust(NamedTuple):
    """Per query: ``iou`` [Q] (:func:`silhouette_iou`), ``loss_ratio`` [Q] (final loss over
    the reference loss; NaN without a reference), ``trusted`` [Q] and ``reasons`` (why a pose
    is not trusted, "" when it is); ``rule``: the rule applied, in words; ``residual`` [Q, 2]:
    :func:`silhouette_residual`; ``residual_ratio`` [Q]: its median over the reference
    residual (NaN without a reference); ``outline_ratio`` [Q]: the outline mismatch
    1 - ``iou`` over the reference mismatch (NaN without a reference)."""

    iou: np.ndarray
    loss_ratio: np.ndarray
    trusted: np.ndarray
    reasons: list[str]
    rule: str
    residual: np.ndarray
    residual_ratio: np.ndarray
    outline_ratio: np.ndarray


def trust_poses(renders: Float[np.ndarray, "Q H W 3"], queries: Float[np.ndarray, "Q H W 3"],
                losses: Float[np.ndarray, " Q"] | None, background, *, min_iou: float, max_loss_ratio: float = 0.0,
                reference_loss: float = 0.0, max_residual_ratio: float = 0.0,
                reference_residual: float = 0.0, residual_outline_ratio: float = 0.0,
                reference_mismatch: float = 0.0) -> PoseTrust:
    """A pose is trusted when its render's silhouette overlaps the query's with IoU at least
    ``min_iou``; when ``max_residual_ratio`` > 0 and ``reference_residual`` > 0, unless the
    median of its :func:`silhouette_residual` is above ``max_residual_ratio`` x
    ``reference_residual`` and (when ``residual_outline_ratio`` > 0 and
    ``reference_mismatch`` > 0) its outline mismatch 1 - IoU is above
    ``residual_outline_ratio`` x ``reference_mismatch`` as well; and when ``max_loss_ratio``
    > 0 and ``reference_loss`` > 0 (and ``losses`` are given), unless its final loss is above
    ``max_loss_ratio`` x ``reference_loss`` with the same outline condition (no finite loss:
    never trusted). The references are the medians of views held out of the fit, posed by the
    same pipeline (the model's calibration)."""
    iou = silhouette_iou(renders, queries, background)
    residual = silhouette_residual(renders, queries, background)
    n = len(iou)
    use_loss = losses is not None and max_loss_ratio > 0 and reference_loss > 0
    use_res = max_residual_ratio > 0 and reference_residual > 0
    use_outline = (use_res or use_loss) and residual_outline_ratio > 0 and reference_mismatch > 0
    ratio = np.asarray(losses, np.float64) / reference_loss if use_loss else np.full(n, np.nan)
    res_ratio = residual[:, 0] / reference_residual if use_res else np.full(n, np.nan)
    outline = (1.0 - iou) / reference_mismatch if reference_mismatch > 0 else np.full(n, np.nan)
    silhouette_ok = iou >= min_iou
    gate = residual_outline_ratio if use_outline else 0.0
    loss_ok = ~outline_gated(ratio, outline, max_loss_ratio, gate)  # NaN (no reference) passes; inf fails
    res_ok = ~outline_gated(res_ratio, outline, max_residual_ratio, gate)
    outline_rule = (f" with an outline mismatch (1 - IoU) > {residual_outline_ratio:g} x theirs "
                    f"{reference_mismatch:.4g}" if use_outline else "")
    rule = f"silhouette IoU < {min_iou:g}"
    if use_res:
        rule += (f", or median render-vs-query difference over the silhouettes > {max_residual_ratio:g} x the "
                 f"held-out views' median {reference_residual:.4g}" + outline_rule)
    if use_loss:
        rule += f", or final loss > {max_loss_ratio:g} x the held-out views' median {reference_loss:.4g}" + outline_rule
    reasons = []
    for i in range(n):
        outline_why = (f" and its outline {outline[i]:.1f} x as much (> {residual_outline_ratio:g})" if use_outline
                       else "")
        why = []
        if not silhouette_ok[i]:
            why.append(f"the render covers the object's silhouette with IoU {iou[i]:.2f} < {min_iou:g}")
        if not res_ok[i]:
            why.append(f"the render differs from the query over the object {res_ratio[i]:.1f} x as much as views "
                       f"held out of the fit (> {max_residual_ratio:g})" + outline_why)
        if not loss_ok[i]:
            why.append(f"the pose's loss is {ratio[i]:.1f} x that of views held out of the fit (> {max_loss_ratio:g})"
                       + (outline_why if np.isfinite(ratio[i]) else ""))
        reasons.append("; ".join(why))
    return PoseTrust(iou=iou, loss_ratio=ratio, trusted=silhouette_ok & res_ok & loss_ok, reasons=reasons, rule=rule,
                     residual=residual, residual_ratio=res_ratio, outline_ratio=outline)
