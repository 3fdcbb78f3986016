"""render(..., supersample=k): k x k samples per pixel, box-filtered, against a plain twin."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import splatjax as sj
from splatjax.image import box_downsample
from splatjax.render import available_backends

from scenes import look_at_c2w, random_scene

W, H = 24, 18


def _camera(w=W, h=H):
    return sj.camera_from_blender(look_at_c2w((0.3, -2.8, 0.6)), 0.8, w, h)


def _blocks_mean(img: np.ndarray, k: int) -> np.ndarray:
    """The plain twin of box_downsample: a loop over output pixels."""
    h, w = img.shape[0] // k, img.shape[1] // k
    out = np.zeros((h, w) + img.shape[2:])
    for i in range(h):
        for j in range(w):
            out[i, j] = img[i * k:(i + 1) * k, j * k:(j + 1) * k].mean(axis=(0, 1))
    return out


def test_box_downsample_is_the_mean_of_each_block():
    x = np.random.default_rng(0).uniform(size=(2, 6, 9, 3)).astype(np.float32)
    got = np.asarray(box_downsample(jnp.asarray(x), 3))
    assert got.shape == (2, 2, 3, 3)
    for b in range(2):
        np.testing.assert_allclose(got[b], _blocks_mean(x[b], 3), rtol=1e-6, atol=1e-7)
    assert box_downsample(x, 1) is x
    with pytest.raises(ValueError, match="not divisible by 4"):
        box_downsample(jnp.asarray(x), 4)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_supersampled_render_is_the_block_mean_of_a_render_k_times_the_size(backend):
    if backend not in available_backends():
        pytest.skip(f"the {backend} rasterizer is not built")
    g, cam = random_scene(1, 30), _camera()
    one = sj.render(g, cam, backend=backend)
    np.testing.assert_array_equal(np.asarray(sj.render(g, cam, backend=backend, supersample=1)[0]),
                                  np.asarray(one[0]))
    rgb, alpha = sj.render(g, cam, backend=backend, supersample=2)
    assert rgb.shape == (H, W, 3) and alpha.shape == (H, W)
    # the twin: the dense reference renderer at twice the size (intrinsics doubled), averaged by a loop
    big_rgb, big_alpha = sj.render(g, cam.scaled(2 * W, 2 * H), backend="reference")
    np.testing.assert_allclose(np.asarray(rgb), _blocks_mean(np.asarray(big_rgb), 2), atol=2e-5)
    np.testing.assert_allclose(np.asarray(alpha), _blocks_mean(np.asarray(big_alpha), 2), atol=2e-5)
    assert float(np.abs(np.asarray(rgb) - np.asarray(one[0])).max()) > 1e-3  # not the one-sample render


def test_supersampled_offset_is_in_output_pixels_and_gradients_flow():
    g, cam = random_scene(2, 25), _camera()
    d = 0.37
    shifted = sj.Camera(R=cam.R, t=cam.t, fx=cam.fx, fy=cam.fy, cx=cam.cx + d, cy=cam.cy + d, width=W, height=H)
    offset = jnp.full((g.means.shape[0], 2), d, jnp.float32)
    a = sj.render(g, cam, backend="reference", supersample=3, means2d_offset=offset)[0]
    b = sj.render(g, shifted, backend="reference", supersample=3)[0]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)

    def moved(t, w=W, h=H):
        return sj.Camera(R=cam.R, t=t, fx=cam.fx * w / W, fy=cam.fy * h / H, cx=cam.cx * w / W, cy=cam.cy * h / H,
                         width=w, height=h)

    target = jnp.asarray(np.random.default_rng(3).uniform(size=(H, W, 3)), jnp.float32)

    def loss(t):  # a pose objective through the supersampled render
        return jnp.mean(jnp.abs(sj.render(g, moved(t), backend="reference", supersample=2)[0] - target))

    def twin(t):  # the same through a render at twice the size and a reshape-free block mean
        big = sj.render(g, moved(t, 2 * W, 2 * H), backend="reference")[0]
        small = (big[0::2, 0::2] + big[1::2, 0::2] + big[0::2, 1::2] + big[1::2, 1::2]) / 4
        return jnp.mean(jnp.abs(small - target))

    grad, expected = jax.grad(loss)(cam.t), jax.grad(twin)(cam.t)
    assert float(jnp.abs(grad).max()) > 1e-3
    np.testing.assert_allclose(np.asarray(grad), np.asarray(expected), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("k", [0, 5, 1.5, True])
def test_supersample_must_be_a_small_positive_int(k):
    with pytest.raises(ValueError, match="supersample must be an int in 1..4"):
        sj.render(random_scene(0, 4), _camera(), backend="reference", supersample=k)
