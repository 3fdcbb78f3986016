"""LoFTR match counting for coarse pose retrieval (SplatPose's coarse pose).

The reference matches a query against every training image with kornia's LoFTR
("indoor_new" weights, coarse threshold 0.2), both 400 x 400 grayscale in [0, 1], and
keeps the training pose with the most matches. Load the model with
:func:`splatjax.nets.weights.load_loftr`; grey images come from :func:`splatjax.image.grey`.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import ArrayLike, Float

__all__ = ["loftr_match_counts"]


def _as_tensor(x, device):
    import jax
    import torch

    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, jax.Array):
        from ..nets.interop import jax_to_torch

        t = jax_to_torch(x)
    else:
        t = torch.as_tensor(np.asarray(x))
    return t.to(device=device, dtype=torch.float32)


def loftr_match_counts(
    loftr,
    query_gray: Float[ArrayLike, "H W"],
    candidates_gray: Float[ArrayLike, "K H2 W2"],
    batch: int = 8,
    *,
    threshold: float | None = None,
) -> np.ndarray:
    """Number of LoFTR matches between one query and each of K candidates: int64 [K].

    Images are grayscale in [0, 1] (numpy, JAX or torch). A match counts when its coarse
    confidence exceeds ``threshold``; None keeps every match LoFTR returns (those above
    its configured ``match_coarse.thr``, 0.2 for "indoor_new"). The query's backbone
    features are computed once and reused for every batch of ``batch`` candidates when
    the installed kornia supports it. Runs on the device of the model's parameters.
    """
    import torch

    device = next(loftr.parameters()).device
    q = _as_tensor(query_gray, device)
    c = _as_tensor(candidates_gray, device)
    if q.ndim != 2 or c.ndim != 3:
        raise ValueError(
            f"loftr_match_counts: query must be [H, W] and candidates [K, H, W]; got "
            f"{tuple(q.shape)} and {tuple(c.shape)}"
        )
    k = c.shape[0]
    counts = np.zeros(k, np.int64)
    q = q[None, None]
    with torch.no_grad():
        q_features = loftr.extract_features(q) if hasattr(loftr, "extract_features") else None
        for start in range(0, k, batch):
            cand = c[start : start + batch, None]
            n = cand.shape[0]
            if q_features is not None:
                data = {"features0": {key: v.expand(n, *v.shape[1:]) for key, v in q_features.items()}}
            else:
                data = {"image0": q.expand(n, -1, -1, -1)}
            data["image1"] = cand
            out = loftr(data)
            ids = out["batch_indexes"]
            if threshold is not None:
                ids = ids[out["confidence"] > threshold]
            counts[start : start + n] = torch.bincount(ids.long(), minlength=n).cpu().numpy()[:n]
    return counts
