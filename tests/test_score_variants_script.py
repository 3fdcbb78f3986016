"""scripts/score_variants.py stage 2 on a hand-made cache: one row per highlight setting, the
calibrated cap measured on the calibration pairs, and highlights on good queries no longer
outscoring a real defect once discounted."""

from __future__ import annotations

import numpy as np
from script_modules import load_script

from splatjax.anomaly import WeightsFreeFeatures, highlight_cap


def _cache(size=32):
    rng = np.random.default_rng(0)
    base = np.ones((size, size, 3), np.float32)
    base[8:24, 8:24] = [0.2, 0.3, 0.7]
    renders = np.stack([base] * 6)
    queries = renders.copy()
    masks = np.zeros((6, size, size), bool)
    for i in range(3):  # good queries with a white highlight of growing strength
        queries[i, 10 + i:13 + i, 10:13] += 0.3 + 0.1 * i
    for i in range(3, 6):  # defective: a red stain
        queries[i, 14:18, 14:18] = [0.8, 0.2, 0.2]
        masks[i, 14:18, 14:18] = True
    cal_images = np.stack([base] * 4)
    cal_images[:, 12:14, 12:14] += 0.6  # the model leaves highlights unexplained on its own views too
    return {"renders": renders, "queries": np.clip(queries + rng.normal(0, 0.003, queries.shape), 0, 1).astype(np.float32),
            "masks": masks, "labels": np.array([0, 0, 0, 1, 1, 1]),
            "defect_types": np.array(["good"] * 3 + ["Stains"] * 3), "cal_renders": np.stack([base] * 4),
            "cal_images": cal_images.clip(0, 1)}


def test_highlight_rows():
    sv = load_script("score_variants")
    c, ext = _cache(), WeightsFreeFeatures()
    rows = {h: sv.variant_row(c, ext, "weights-free", "none", 0, None, h) for h in sv.HIGHLIGHTS}
    assert rows["keep"]["highlight_cap"] is None and rows["uncapped"]["highlight_cap"] == 1.0
    want = highlight_cap(c["cal_renders"], c["cal_images"], (1.0, 1.0, 1.0), 99.9, 0.998, "linear")
    assert rows["calibrated"]["highlight_cap"] == want > 0.3
    assert rows["calibrated-unclipped"]["highlight_cap"] == highlight_cap(c["cal_renders"], c["cal_images"],
                                                                          (1.0, 1.0, 1.0), 99.9)
    assert rows["keep"]["image_auroc"]["max"] < 1.0  # the brightest highlight outscores a stain
    assert rows["calibrated"]["image_auroc"]["max"] == rows["uncapped"]["image_auroc"]["max"] == 1.0
    assert "calibrated (" in sv.table(list(rows.values()))
