"""Whether a fine pose can be trusted: the silhouette of the render at the pose against the
query's.

A refinement that converged in a wrong basin (a rolled or near-symmetric view matched
upside down) keeps a finite, non-growing loss, so :class:`~splatjax.pose.fine.Refinement`
does not flag it as diverged; its render then covers other pixels than the object in the
query. A defect changes few of the object's pixels (a stain none, a burr or a hole a few
per cent), a wrong pose many. Both images are reduced to the same mask, the pixels whose
colour differs from the background by more than ``tol`` in some channel (so a part in the
background's colour is missed alike in both), and compared by intersection over union.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool, Float

__all__ = ["foreground", "silhouette_iou"]


def foreground(images: Float[np.ndarray, "*B H W 3"], background, tol: float = 0.03) -> Bool[np.ndarray, "*B H W"]:
    """Pixels whose colour differs from ``background`` (RGB in [0, 1]) by more than ``tol``
    in some channel."""
    return np.abs(np.asarray(images, np.float32) - np.asarray(background, np.float32)).max(-1) > tol


def silhouette_iou(renders: Float[np.ndarray, "B H W 3"], queries: Float[np.ndarray, "B H W 3"], background,
                   tol: float = 0.03) -> Float[np.ndarray, " B"]:
    """Per pair, the intersection over union of the :func:`foreground` masks of the render
    and the query (1.0 when both are empty)."""
    a, b = foreground(renders, background, tol), foreground(queries, background, tol)
    if a.shape != b.shape:
        raise ValueError(f"silhouette_iou: renders {a.shape} and queries {b.shape} differ in shape")
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0).astype(np.float64)
