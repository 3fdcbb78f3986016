"""Tests for splatjax.metrics: AUROC, the MVTec AUPRO against a brute-force oracle, pose
errors."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from splatjax import metrics

# --------------------------------------------------------------------------- oracle


def _components_8(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """8-connected components of a 2-D bool mask by breadth-first flood fill."""
    H, W = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    regions = []
    for i in range(H):
        for j in range(W):
            if not mask[i, j] or seen[i, j]:
                continue
            seen[i, j] = True
            queue, region = deque([(i, j)]), []
            while queue:
                a, b = queue.popleft()
                region.append((a, b))
                for da in (-1, 0, 1):
                    for db in (-1, 0, 1):
                        u, v = a + da, b + db
                        if 0 <= u < H and 0 <= v < W and mask[u, v] and not seen[u, v]:
                            seen[u, v] = True
                            queue.append((u, v))
            regions.append(region)
    return regions


def _brute_curve(maps, masks):
    """The PRO curve straight from its definition: one pass over all pixels per threshold."""
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    normal_scores = maps[~masks]
    region_scores = [
        np.array([maps[n, a, b] for a, b in region])
        for n in range(maps.shape[0])
        for region in _components_8(masks[n])
    ]
    xs, ys = [0.0], [0.0]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        xs.append(float(np.mean(normal_scores >= t)))
        ys.append(float(np.mean([np.mean(r >= t) for r in region_scores])))
    xs.append(1.0)
    ys.append(1.0)
    return np.array(xs), np.array(ys)


def _brute_aupro(maps, masks, limit):
    xs, ys = _brute_curve(maps, masks)
    area = 0.0
    for k in range(len(xs) - 1):
        x0, x1, y0, y1 = xs[k], xs[k + 1], ys[k], ys[k + 1]
        if x1 <= limit:
            area += 0.5 * (y0 + y1) * (x1 - x0)
        elif x0 < limit:  # the segment crosses the limit: interpolate y there
            y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += 0.5 * (y0 + y_lim) * (limit - x0)
            break
        else:
            break
    return area / limit


def _random_case(rng: np.random.Generator, case: int):
    n = int(rng.integers(1, 4))
    H, W = int(rng.integers(4, 13)), int(rng.integers(4, 13))
    masks = rng.random((n, H, W)) < rng.uniform(0.05, 0.25)  # many 1-3 px blobs
    if case % 4 == 0:  # diagonal-only neighbours: a checkerboard-like sparse pattern
        ii, jj = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
        masks = masks | (((ii + jj) % 2 == 0) & (ii % 3 == 0) & (rng.random((n, H, W)) < 0.5))
    if n > 1 and case % 3 == 0:
        masks[0] = False  # a defect-free image contributes only normal pixels
    masks.reshape(-1)[rng.integers(masks.size)] = True  # at least one region
    masks.reshape(-1)[rng.integers(masks.size)] = False  # at least one normal pixel
    if case % 5 == 4:  # continuous scores, no ties
        maps = rng.random((n, H, W)) + 0.5 * masks
    elif case % 5 == 3:  # rounded scores: many ties across classes
        maps = np.round(rng.random((n, H, W)) + 0.6 * masks, 1)
    else:  # integer scores 0..7, a few levels only
        hi = int(rng.integers(2, 8))
        maps = rng.integers(0, hi + 1, (n, H, W)) + masks * rng.integers(0, 3, (n, H, W))
        maps = maps.astype(np.float32)
    return maps, masks


# --------------------------------------------------------------------------- AUPRO


@pytest.mark.parametrize("case", range(24))
def test_aupro_matches_brute_force(case):
    rng = np.random.default_rng(1000 + case)
    maps, masks = _random_case(rng, case)
    fprs, pros = metrics.pro_curve(maps, masks)
    bx, by = _brute_curve(maps, masks)
    np.testing.assert_allclose(fprs, bx, atol=1e-12)
    np.testing.assert_allclose(pros, by, atol=1e-12)
    for limit in (0.3, 0.05, 0.5, 1.0):
        assert metrics.aupro(maps, masks, fpr_limit=limit) == pytest.approx(
            _brute_aupro(maps, masks, limit), abs=1e-6
        )


def test_aupro_limit_on_a_curve_point():
    # 10 normal pixels: FPR takes the value 3/10 == 0.3 exactly at threshold 7.
    maps = np.array([[[9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 8, 1]]], dtype=np.float64)
    masks = np.zeros_like(maps, dtype=bool)
    masks[0, 0, 10:] = True  # one region of 2 pixels (scores 8 and 1)
    fprs, _ = metrics.pro_curve(maps, masks)
    assert 0.3 in fprs
    assert metrics.aupro(maps, masks) == pytest.approx(_brute_aupro(maps, masks, 0.3), abs=1e-12)
    # by hand: (0,0) (0.1,0) (0.2,0.5) (0.3,0.5) -> area 0.025 + 0.05 = 0.075
    assert metrics.aupro(maps, masks) == pytest.approx(0.075 / 0.3, abs=1e-12)


def test_aupro_perfect_map_is_one():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 16, 16)) < 0.1
    maps = masks.astype(np.float32) + 0.01 * rng.random(masks.shape, dtype=np.float32)
    maps[masks] += 1.0
    assert metrics.aupro(maps, masks) == pytest.approx(1.0, abs=1e-12)
    assert metrics.aupro(masks.astype(np.float32), masks) == pytest.approx(1.0, abs=1e-12)


def test_aupro_hand_computed():
    # One region of 2 px (scores 3, 1), three normal px (2, 0, 0).
    # Curve: (0,0) (0,.5) (1/3,.5) (1/3,1) (1,1) (1,1).
    maps = np.array([[[3, 1, 2, 0, 0]]], dtype=np.float32)
    masks = np.array([[[1, 1, 0, 0, 0]]], dtype=bool)
    fprs, pros = metrics.pro_curve(maps, masks)
    np.testing.assert_allclose(fprs, [0, 0, 1 / 3, 1 / 3, 1, 1], atol=1e-15)
    np.testing.assert_allclose(pros, [0, 0.5, 0.5, 1, 1, 1], atol=1e-15)
    assert metrics.aupro(maps, masks) == pytest.approx(0.5, abs=1e-12)
    assert metrics.aupro(maps, masks, fpr_limit=1.0) == pytest.approx(5 / 6, abs=1e-12)

    # Top score shared by the defect and one normal px: the (0,0) start gives a slope.
    # Curve (0,0) (.25,1) (1,1) (1,1): area to .3 = .125 + .05.
    maps = np.array([[[1, 1, 0, 0, 0]]], dtype=np.float64)
    masks = np.array([[[1, 0, 0, 0, 0]]], dtype=bool)
    assert metrics.aupro(maps, masks) == pytest.approx(0.175 / 0.3, abs=1e-12)

    # Interpolation on a sloped segment: region (2, 0), normals (1, 0, 0, 0).
    # Curve (0,0) (0,.5) (.25,.5) (1,1); y(.3) = .5 + .5 * .05 / .75.
    maps = np.array([[[2, 0, 1, 0, 0, 0]]], dtype=np.float64)
    masks = np.array([[[1, 1, 0, 0, 0, 0]]], dtype=bool)
    y_lim = 0.5 + 0.5 * 0.05 / 0.75
    expected = (0.125 + 0.5 * (0.5 + y_lim) * 0.05) / 0.3
    assert metrics.aupro(maps, masks) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(181 / 360, abs=1e-12)


def test_aupro_uses_8_connectivity_and_pools_images():
    # Diagonal pair (0,0)-(1,1) is ONE region (8-connected); (3,3) is another.
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 3, 3] = True
    maps = np.zeros((1, 4, 4))
    maps[0, 3, 3] = 2.0
    # Curve (0,0) (0,.5) (1,1) (1,1): y(.3) = .65 -> area .1725. (4-connectivity: 3
    # regions, PRO 1/3 at the top, would give 0.4333.)
    assert metrics.aupro(maps, masks) == pytest.approx(0.1725 / 0.3, abs=1e-12)
    # Same data split over two images with a defect-free third: regions are pooled over
    # images, FPR over all normal pixels.
    maps2 = np.zeros((3, 4, 4))
    masks2 = np.zeros((3, 4, 4), dtype=bool)
    masks2[0, 0, 0] = masks2[0, 1, 1] = masks2[1, 3, 3] = True
    maps2[1, 3, 3] = 2.0
    assert metrics.aupro(maps2, masks2) == pytest.approx(0.1725 / 0.3, abs=1e-12)


def test_aupro_accepts_2d_and_jax_and_int_masks():
    jnp = pytest.importorskip("jax.numpy")
    rng = np.random.default_rng(3)
    maps, masks = _random_case(rng, 1)
    ref = metrics.aupro(maps, masks)
    assert metrics.aupro(jnp.asarray(maps), jnp.asarray(masks)) == pytest.approx(ref, abs=1e-12)
    assert metrics.aupro(maps, masks.astype(np.uint8)) == pytest.approx(ref, abs=1e-12)
    assert metrics.aupro(maps[0], masks[0]) == pytest.approx(metrics.aupro(maps[:1], masks[:1]), abs=1e-12)


def test_aupro_errors():
    maps = np.zeros((2, 4, 4))
    with pytest.raises(ValueError, match="no anomalous pixel"):
        metrics.aupro(maps, np.zeros((2, 4, 4), bool))
    with pytest.raises(ValueError, match="no normal pixel"):
        metrics.aupro(maps, np.ones((2, 4, 4), bool))
    with pytest.raises(ValueError, match="shape"):
        metrics.aupro(maps, np.ones((2, 4, 5), bool))
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 0, 0] = True
    with pytest.raises(ValueError, match="fpr_limit"):
        metrics.aupro(maps, masks, fpr_limit=0.0)
    bad = maps.copy()
    bad[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.aupro(bad, masks)
    with pytest.raises(ValueError, match="0/1"):
        metrics.aupro(maps, masks * 255)


# --------------------------------------------------------------------------- AUROC


def test_auroc_hand_computed():
    assert metrics.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: (0.5 + 1) / 2
    assert metrics.auroc([1.0, 1.0, 0.0], [True, False, False]) == pytest.approx(0.75)
    assert metrics.auroc([0.0, 1.0], [0, 1]) == 1.0


def test_auroc_single_class_error():
    with pytest.raises(ValueError, match="only one class"):
        metrics.auroc([0.1, 0.2, 0.3], [0, 0, 0])
    with pytest.raises(ValueError, match="only one class"):
        metrics.pixel_auroc(np.zeros((2, 3, 3)), np.ones((2, 3, 3), bool))
    with pytest.raises(ValueError, match="labels for"):
        metrics.auroc([0.1, 0.2, 0.3], [0, 1])


def test_pixel_auroc_pools_all_pixels():
    rng = np.random.default_rng(7)
    masks = rng.random((3, 8, 9)) < 0.2
    maps = rng.random((3, 8, 9)) + 0.3 * masks
    assert metrics.pixel_auroc(maps, masks) == pytest.approx(
        metrics.auroc(maps.astype(np.float32).ravel(), masks.ravel()), abs=1e-12
    )
    # hand case: 1 anomalous px above 2 of 3 normals, tied with the third
    maps = np.array([[[0.2, 0.5], [0.5, 0.1]]])
    masks = np.array([[[0, 1], [0, 0]]], bool)
    assert metrics.pixel_auroc(maps, masks) == pytest.approx((1 + 1 + 0.5) / 3)


def test_roc_curve_points_area():
    rng = np.random.default_rng(11)
    labels = rng.random(50) < 0.4
    scores = rng.random(50) + labels
    fpr, tpr = metrics.roc_curve_points(scores, labels)
    assert fpr[0] == 0 and tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.auroc(scores, labels), abs=1e-12)


# --------------------------------------------------------------------------- poses


def _c2w(rotvec, centre):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = centre
    return T


def test_pose_errors_known_rotation_and_translation():
    base = _c2w([0.2, -0.4, 0.1], [1.0, 2.0, 3.0])
    moved = base.copy()
    moved[:3, :3] = base[:3, :3] @ Rotation.from_euler("z", 30, degrees=True).as_matrix()
    moved[:3, 3] = [1.0, 2.0, 7.0]
    err = metrics.pose_errors(moved, base)
    assert err["rotation_rad"].shape == ()
    assert err["rotation_rad"] == pytest.approx(np.pi / 6, abs=1e-12)
    assert err["rotation_half_rad"] == pytest.approx(np.pi / 12, abs=1e-12)
    assert err["translation"] == pytest.approx(4.0, abs=1e-12)


def test_pose_errors_identity_is_zero():
    T = _c2w([0.3, 0.2, -1.0], [0.5, -0.5, 4.0])
    err = metrics.pose_errors(T, T)
    assert err["translation"] == 0.0
    assert err["rotation_rad"] == pytest.approx(0.0, abs=1e-12)
    # tiny angles are resolved in float64, not floored by arccos rounding
    T2 = T.copy()
    T2[:3, :3] = T[:3, :3] @ Rotation.from_rotvec([1e-7, 0, 0]).as_matrix()
    assert metrics.pose_errors(T2, T)["rotation_rad"] == pytest.approx(1e-7, rel=1e-6)


def test_pose_errors_near_pi_and_batch():
    rng = np.random.default_rng(5)
    n = 6
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.array([np.pi, np.pi - 1e-6, 2.5, 1.0, 1e-3, 0.0])
    true = np.stack([_c2w(rng.normal(size=3), rng.normal(size=3)) for _ in range(n)])
    est = true.copy()
    offsets = rng.normal(size=(n, 3))
    for i in range(n):
        est[i, :3, :3] = true[i, :3, :3] @ Rotation.from_rotvec(angles[i] * axes[i]).as_matrix()
        est[i, :3, 3] += offsets[i]
    err = metrics.pose_errors(est, true)
    for key in ("translation", "rotation_rad", "rotation_half_rad"):
        assert err[key].shape == (n,) and err[key].dtype == np.float64
    np.testing.assert_allclose(err["rotation_rad"], angles, atol=1e-7)
    np.testing.assert_allclose(err["rotation_half_rad"], angles / 2, atol=1e-7)
    np.testing.assert_allclose(err["translation"], np.linalg.norm(offsets, axis=1), atol=1e-12)
    # the definition 2 arccos |q1 . q2| (quaternion sign ambiguity removed by |.|)
    q1 = Rotation.from_matrix(est[:, :3, :3]).as_quat()
    q2 = Rotation.from_matrix(true[:, :3, :3]).as_quat()
    by_dot = 2 * np.arccos(np.clip(np.abs(np.sum(q1 * q2, axis=1)), 0, 1))
    np.testing.assert_allclose(err["rotation_rad"][:4], by_dot[:4], atol=1e-6)
    # the errors do not depend on the camera-axis convention (OpenCV vs OpenGL)
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    err_gl = metrics.pose_errors(est @ flip, true @ flip)
    for key in err:
        np.testing.assert_allclose(err_gl[key], err[key], atol=1e-9)


def test_pose_errors_agree_with_se3():
    jnp = pytest.importorskip("jax.numpy")
    from splatjax import se3

    rng = np.random.default_rng(9)
    R1 = Rotation.random(8, random_state=rng).as_matrix()
    R2 = Rotation.random(8, random_state=rng).as_matrix()
    T1 = np.tile(np.eye(4), (8, 1, 1))
    T2 = T1.copy()
    T1[:, :3, :3], T2[:, :3, :3] = R1, R2
    err = metrics.pose_errors(T1, T2)
    ours = np.asarray(se3.rotation_angle(jnp.asarray(R1, jnp.float32), jnp.asarray(R2, jnp.float32)))
    np.testing.assert_allclose(err["rotation_rad"], ours, atol=2e-3)


def test_pose_errors_bad_input():
    T = np.eye(4)
    with pytest.raises(ValueError, match="shape"):
        metrics.pose_errors(np.eye(3), T)
    with pytest.raises(ValueError, match="shape"):
        metrics.pose_errors(np.stack([T, T]), T)
    bad = T.copy()
    bad[0, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        metrics.pose_errors(bad, T)
    with pytest.raises(ValueError, match="not a rotation"):
        metrics.pose_errors(np.diag([1.0, 1.0, -1.0, 1.0]), T)
    with pytest.raises(ValueError, match="not a rotation"):
        metrics.pose_errors(np.diag([2.0, 2.0, 2.0, 1.0]), T)


def test_summarize_pose_errors():
    s = metrics.summarize_pose_errors({"translation": np.array([1.0, 2.0, 6.0]), "rotation_rad": np.array(0.5)})
    assert s["translation"] == {"median": 2.0, "mean": 3.0}
    assert s["rotation_rad"] == {"median": 0.5, "mean": 0.5}
    with pytest.raises(ValueError, match="no poses"):
        metrics.summarize_pose_errors({"translation": np.array([])})


def test_evaluate_detection_resizes_masks_and_reports_undefined_as_none():
    from splatjax.metrics import evaluate_detection, resize_masks

    rng = np.random.default_rng(9)
    maps = rng.random((4, 16, 16)).astype(np.float32)
    masks = np.zeros((4, 8, 8), bool)
    masks[1, 2:4, 2:4] = True
    masks[3, 5:8, 0:2] = True
    maps[1, 4:8, 4:8] += 2.0  # the defect of image 1 (nearest-resized to 16 x 16: rows and cols 4-7)
    scores = maps.reshape(4, -1).max(1)
    labels = np.array([0, 1, 0, 1])
    m = evaluate_detection(scores, maps, labels, masks)
    big = resize_masks(masks, 16)
    assert big.shape == (4, 16, 16) and big[1, 4:8, 4:8].all() and big.sum() == 4 * masks.sum()
    assert m.image_auroc == pytest.approx(metrics.auroc(scores, labels))
    assert m.pixel_auroc == pytest.approx(metrics.pixel_auroc(maps, big))
    assert m.aupro == pytest.approx(metrics.aupro(maps, big))
    none = evaluate_detection(scores, maps, np.zeros(4), np.zeros((4, 8, 8), bool))
    assert (none.image_auroc, none.pixel_auroc, none.aupro) == (None, None, None)
