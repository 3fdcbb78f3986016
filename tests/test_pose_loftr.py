"""splatjax.pose.loftr: LoFTR match counts against per-pair forwards (random weights)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
kornia = pytest.importorskip("kornia")

from kornia.feature import LoFTR  # noqa: E402

from splatjax.nets.weights import loftr_indoor_new_config  # noqa: E402
from splatjax.pose.loftr import loftr_match_counts  # noqa: E402


def test_loftr_match_counts_equal_per_pair_forward():
    torch.manual_seed(2)
    cfg = loftr_indoor_new_config()
    cfg["match_coarse"]["thr"] = 0.0  # random weights: keep every mutual-nearest match
    net = LoFTR(pretrained=None, config=cfg).eval()
    rng = np.random.default_rng(0)
    q = rng.random((48, 48)).astype(np.float32)
    cands = rng.random((5, 48, 48)).astype(np.float32)
    cands[2] = q
    counts = loftr_match_counts(net, jnp.asarray(q), jnp.asarray(cands), batch=2)
    assert counts.shape == (5,) and counts.dtype == np.int64
    ref, confs = [], []
    with torch.no_grad():
        for c in cands:
            out = net({"image0": torch.from_numpy(q)[None, None], "image1": torch.from_numpy(c)[None, None]})
            ref.append(len(out["confidence"]))
            confs.append(out["confidence"].numpy())
    np.testing.assert_array_equal(counts, ref)
    assert counts.sum() > 0
    # a threshold in the widest gap of the middle half of the confidences (batched and
    # one-by-one forwards differ by float rounding, so not at a confidence value)
    v = np.unique(np.concatenate(confs))
    lo, hi = len(v) // 4, max(3 * len(v) // 4, len(v) // 4 + 2)
    i = lo + int(np.argmax(np.diff(v[lo:hi])))
    thr = float(0.5 * (v[i] + v[i + 1]))
    counts_thr = loftr_match_counts(net, q, cands, batch=3, threshold=thr)
    np.testing.assert_array_equal(counts_thr, [int((c > thr).sum()) for c in confs])
    with pytest.raises(ValueError, match="query must be"):
        loftr_match_counts(net, cands, cands)
