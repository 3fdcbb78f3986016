"""The pose trust rule (splatjax.pose.trust): silhouette IoU of render and query, and the
final loss against the held-out reference."""

from __future__ import annotations

import numpy as np
import pytest

from splatjax.pose import PoseConfig, foreground, mask_iou, silhouette, silhouette_iou, trust_poses

WHITE = (1.0, 1.0, 1.0)


def _square(top: int, left: int, size: int = 10, n: int = 32, colour=(0.2, 0.4, 0.6)) -> np.ndarray:
    img = np.ones((n, n, 3), np.float32)
    img[top:top + size, left:left + size] = colour
    return img


def test_silhouette_iou_counts_overlap_of_the_non_background_pixels():
    a, b = _square(5, 5), _square(5, 10)  # 10 x 10 squares, shifted by 5: 50 shared of 150
    iou = silhouette_iou(np.stack([a, a, b, _square(20, 20)]), np.stack([a, b, a, _square(0, 0)]), WHITE)
    np.testing.assert_allclose(iou, [1.0, 1 / 3, 1 / 3, 0.0])
    blank = np.ones((1, 8, 8, 3), np.float32)
    assert silhouette_iou(blank, blank, WHITE)[0] == 1.0  # nothing in either: nothing contradicts the pose


def _filled_by_flood(mask: np.ndarray) -> np.ndarray:
    """Slow twin of the hole filling: every pixel not reached by a 4-connected flood of
    background pixels from the border is object."""
    h, w = mask.shape
    outside = np.zeros_like(mask)
    stack = [(i, j) for i in range(h) for j in (0, w - 1)] + [(i, j) for i in (0, h - 1) for j in range(w)]
    while stack:
        i, j = stack.pop()
        if 0 <= i < h and 0 <= j < w and not mask[i, j] and not outside[i, j]:
            outside[i, j] = True
            stack += [(i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)]
    return ~outside


def test_silhouette_fills_holes_like_a_flood_from_the_border():
    rng = np.random.default_rng(0)
    images = np.where(rng.random((6, 17, 23, 1)) < 0.45, np.float32(0.3), np.float32(1.0)).repeat(3, -1)
    got = silhouette(images, WHITE)
    assert got.shape == (6, 17, 23)
    for img, mask in zip(images, got):
        np.testing.assert_array_equal(mask, _filled_by_flood(foreground(img, WHITE)))
        assert (mask >= foreground(img, WHITE)).all()
    assert silhouette(images[:0], WHITE).shape == (0, 17, 23)


def test_a_highlight_inside_the_object_does_not_lower_the_iou_but_a_notch_does():
    render = _square(4, 4, size=20)
    highlight = render.copy()
    highlight[10:18, 10:18] = 1.0  # a white highlight (or a hole) inside the outline: 64 of 400 pixels
    notch = render.copy()
    notch[4:12, 4:12] = 1.0  # the same pixels at a corner: the outline itself changes
    iou = silhouette_iou(np.stack([render, render]), np.stack([highlight, notch]), WHITE)
    np.testing.assert_allclose(iou, [1.0, 336 / 400])
    unfilled = mask_iou(foreground(np.stack([render, render]), WHITE), foreground(np.stack([highlight, notch]), WHITE))
    np.testing.assert_allclose(unfilled, [336 / 400, 336 / 400])  # without the filling the highlight counts too
    t = trust_poses(np.stack([render, render]), np.stack([highlight, notch]), None, WHITE, min_iou=0.85)
    assert t.trusted.tolist() == [True, False]


def test_foreground_uses_the_background_and_tolerance():
    img = np.full((2, 2, 3), 0.98, np.float32)
    img[0, 0] = (0.0, 0.0, 0.0)
    assert foreground(img, WHITE).tolist() == [[True, False], [False, False]]  # 0.02 off white: background
    assert foreground(img, WHITE, tol=0.01).all()
    assert not foreground(np.zeros((2, 2, 3)), (0.0, 0.0, 0.0)).any()  # black background


def test_shapes_must_match_and_the_rule_is_validated():
    with pytest.raises(ValueError, match="differ in shape"):
        silhouette_iou(np.ones((1, 4, 4, 3)), np.ones((1, 4, 5, 3)), WHITE)
    with pytest.raises(Exception, match="min_silhouette_iou"):
        PoseConfig(min_silhouette_iou=1.5)


def test_trust_combines_silhouette_and_loss_and_says_why():
    a, b = _square(5, 5), _square(5, 10)
    renders, queries = np.stack([a, a, b, a]), np.stack([a, a, a, a])
    losses = np.array([0.010, 0.030, 0.010, np.inf])
    t = trust_poses(renders, queries, losses, WHITE, min_iou=0.85, max_loss_ratio=2.5, reference_loss=0.01)
    np.testing.assert_allclose(t.loss_ratio, [1.0, 3.0, 1.0, np.inf])
    assert t.trusted.tolist() == [True, False, False, False]
    assert t.reasons[0] == "" and "3.0 x" in t.reasons[1] and "IoU 0.33 < 0.85" in t.reasons[2]
    assert "loss" in t.reasons[3]  # no finite loss: not trusted
    assert t.rule == "silhouette IoU < 0.85, or final loss > 2.5 x the held-out views' median 0.01"
    # without a reference (or with the rule off) only the silhouette counts; the ratio is NaN
    for kw in (dict(reference_loss=0.0), dict(max_loss_ratio=0.0, reference_loss=0.01)):
        t = trust_poses(renders, queries, losses, WHITE, min_iou=0.85, **{"max_loss_ratio": 2.5, **kw})
        assert t.trusted.tolist() == [True, True, False, True] and np.isnan(t.loss_ratio).all()
        assert t.rule == "silhouette IoU < 0.85"
    with pytest.raises(Exception, match="max_loss_ratio"):
        PoseConfig(max_loss_ratio=-1.0)


def test_silhouette_residual_ignores_a_local_defect_but_not_a_shifted_render():
    from splatjax.pose import silhouette_residual

    bg = (1.0, 1.0, 1.0)
    query = np.ones((1, 40, 40, 3), np.float32)
    query[0, 10:30, 10:30] = (0.2, 0.4, 0.6)  # a 20 x 20 object
    render = query.copy()
    render[0, 12:14, 12:14] = (0.9, 0.1, 0.1)  # a defect of 1 % of the object
    shifted = np.roll(query, 8, axis=2)  # the same object 8 px to the side
    res = silhouette_residual(np.concatenate([query, render, shifted]), np.repeat(query, 3, 0), bg)
    assert res.shape == (3, 2)
    np.testing.assert_array_equal(res[0], [0.0, 0.0])
    assert res[1, 0] == 0.0 and res[1, 1] == 0.0  # 1 % of the union: below the median and the p90
    assert res[2, 0] > 0.3  # most of the union differs
    np.testing.assert_array_equal(silhouette_residual(np.ones((1, 4, 4, 3)), np.ones((1, 4, 4, 3)), bg), [[0, 0]])


def test_residual_rule_flags_a_flipped_render_but_not_a_local_defect():
    query = np.ones((1, 40, 40, 3), np.float32)
    ramp = np.linspace(0.1, 0.8, 20, dtype=np.float32)
    query[0, 10:30, 10:30] = np.stack([ramp, 0.5 * ramp, 0.9 - ramp], -1)[None]  # colour changes across the object
    near = query.copy()
    near[0, 12:18, 12:18] = (0.9, 0.1, 0.1)  # a defect of 9 % of the object
    flipped = query[:, :, ::-1].copy()  # a wrong pose with the same silhouette (IoU 1), turned about its axis
    renders = np.concatenate([near, flipped])
    queries = np.repeat(query, 2, 0)
    t = trust_poses(renders, queries, None, WHITE, min_iou=0.85, max_residual_ratio=3.0, reference_residual=0.05)
    assert t.iou[1] == 1.0 and list(t.trusted) == [True, False]
    assert "held out of the fit (> 3)" in t.reasons[1] and t.residual_ratio[1] > 3.0 and t.residual_ratio[0] == 0.0
    assert "median render-vs-query difference" in t.rule
    off = trust_poses(renders, queries, None, WHITE, min_iou=0.85, max_residual_ratio=3.0, reference_residual=0.0)
    assert list(off.trusted) == [True, True] and np.isnan(off.residual_ratio).all()  # no reference: silhouette only


def test_residual_rule_asks_the_outline_too_when_it_has_a_reference():
    """A stain over most of the object raises the residual but leaves the outline: with the
    outline rule it stays trusted (its outline mismatch is the reference's), without it, it is
    not; a render shifted by 2 px moves both and is flagged either way, saying both ratios."""
    stripes = np.where(np.arange(32) % 2 == 0, 0.1, 0.6)[None, :, None] * np.ones((32, 32, 3), np.float32)
    query, shifted = np.ones((2, 32, 32, 3), np.float32)
    query[8:24, 8:24], shifted[8:24, 10:26] = stripes[8:24, 8:24], stripes[8:24, 9:25]  # textured; shifted by 2 px
    stained = query.copy()
    stained[10:22, 10:22] = (0.9, 0.1, 0.1)  # the render is the good part; the query carries the stain
    renders, queries = np.stack([query, shifted]), np.stack([stained, query])
    kw = dict(min_iou=0.5, max_residual_ratio=2.0, reference_residual=0.02)
    alone = trust_poses(renders, queries, None, WHITE, **kw)
    assert list(alone.trusted) == [False, False] and np.isnan(alone.outline_ratio).all()
    both = trust_poses(renders, queries, None, WHITE, residual_outline_ratio=3.0, reference_mismatch=0.02, **kw)
    assert both.residual_ratio[0] > 2.0 and both.outline_ratio[0] == 0.0  # same outline: a defect, not a pose
    assert list(both.trusted) == [True, False] and both.reasons[0] == ""
    np.testing.assert_allclose(both.outline_ratio[1], (1.0 - 14 / 18) / 0.02)
    assert "and its outline 11.1 x as much (> 3)" in both.reasons[1] and "outline mismatch (1 - IoU) > 3" in both.rule
    unmeasured = trust_poses(renders, queries, None, WHITE, residual_outline_ratio=3.0, reference_mismatch=0.0, **kw)
    assert list(unmeasured.trusted) == [False, False]  # no reference mismatch: the residual alone, as before
    with pytest.raises(ValueError, match="residual_outline_ratio"):
        PoseConfig(residual_outline_ratio=-1.0)


def test_outline_gated_asks_both_ratios_and_reads_nan_as_no_reference():
    from splatjax.pose import outline_gated

    rr = np.array([3.0, 3.0, 1.0, np.nan, 3.0, np.inf])
    outline = np.array([3.0, 1.0, 3.0, 3.0, np.nan, 1.0])
    assert outline_gated(rr, outline, 2.0, 2.0).tolist() == [True, False, False, False, True, True]  # inf: no loss
    assert outline_gated(rr, outline, 2.0, 0.0).tolist() == [True, True, False, False, True, True]  # ratio alone


def test_loss_rule_asks_the_outline_too():
    """A defect that raises the loss but keeps the outline stays trusted; a render shifted by
    2 px (its outline moved) with the same loss is not; no finite loss never is."""
    stripes = np.where(np.arange(32) % 2 == 0, 0.1, 0.6)[None, :, None] * np.ones((32, 32, 3), np.float32)
    query, shifted = np.ones((2, 32, 32, 3), np.float32)
    query[8:24, 8:24], shifted[8:24, 10:26] = stripes[8:24, 8:24], stripes[8:24, 9:25]
    renders, queries = np.stack([query, shifted, query]), np.stack([query, query, query])
    losses = np.array([0.05, 0.05, np.inf])
    kw = dict(min_iou=0.5, max_loss_ratio=3.5, reference_loss=0.01)
    t = trust_poses(renders, queries, losses, WHITE, residual_outline_ratio=3.0, reference_mismatch=0.02, **kw)
    assert t.loss_ratio[:2].tolist() == [5.0, 5.0] and t.outline_ratio[0] == 0.0
    assert t.trusted.tolist() == [True, False, False]
    assert "loss is 5.0 x" in t.reasons[1] and "and its outline 11.1 x as much (> 3)" in t.reasons[1]
    assert ("final loss > 3.5 x the held-out views' median 0.01 with an outline mismatch (1 - IoU) > 3 x theirs "
            "0.02") in t.rule
    alone = trust_poses(renders, queries, losses, WHITE, residual_outline_ratio=0.0, reference_mismatch=0.02, **kw)
    assert alone.trusted.tolist() == [False, False, False]  # the loss alone: the defect is distrusted too
