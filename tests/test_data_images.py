"""splatjax.data.images: decoding by content (every pixel mode, JPEG under a .png name),
clear refusals of what cannot be decoded, the opaque-among-transparent background check,
the resolution policy and resizing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dataset_builders import object_rgba, raises
from splatjax.data.images import (
    choose_resolution,
    image_size,
    read_images,
    read_mask,
    read_rgb,
    resize_float,
    write_png,
)
from splatjax.errors import ConfigError, DatasetError, DatasetNotFoundError

WHITE = (1.0, 1.0, 1.0)


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


# ----------------------------------------------------------------------------- modes


def test_rgb_rgba_grey_and_grey_alpha(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_allclose(read_rgb(tmp_path / "rgb.png")[0], rgb / 255.0, atol=1e-6)

    a = np.dstack([rgb, np.full((6, 10), 51, np.uint8)])         # alpha 0.2
    Image.fromarray(a).save(tmp_path / "rgba.png")
    img, native = read_rgb(tmp_path / "rgba.png", background=(0.0, 0.5, 1.0))
    np.testing.assert_allclose(img, rgb / 255.0 * 0.2 + np.array([0.0, 0.5, 1.0]) * 0.8, atol=1e-6)
    assert native == (10, 6)

    grey = np.arange(60, dtype=np.uint8).reshape(6, 10) * 4
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    out = read_rgb(tmp_path / "l.png")[0]
    assert out.shape == (6, 10, 3)
    np.testing.assert_allclose(out, np.repeat(grey[..., None] / 255.0, 3, -1), atol=1e-6)

    la = np.dstack([grey, np.where(grey > 100, 255, 0).astype(np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert Image.open(tmp_path / "la.png").mode == "LA"
    out = read_rgb(tmp_path / "la.png", background=(0.0, 0.0, 1.0))[0]
    opaque = grey > 100
    np.testing.assert_allclose(out[opaque], np.repeat(grey[opaque][:, None] / 255.0, 3, -1), atol=1e-6)
    np.testing.assert_allclose(out[~opaque], [[0.0, 0.0, 1.0]] * int((~opaque).sum()), atol=1e-6)


def test_sixteen_bit_bilevel_and_float(tmp_path):
    v = (np.linspace(0, 1, 24).reshape(4, 6) * 65535).round().astype(np.uint16)
    Image.fromarray(v).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    np.testing.assert_allclose(read_rgb(tmp_path / "g16.png")[0][..., 1], v / 65535.0, atol=1e-6)
    bits = np.zeros((4, 6), bool)
    bits[1:3, 2:5] = True
    Image.fromarray(bits).save(tmp_path / "one.png")
    assert Image.open(tmp_path / "one.png").mode == "1"
    np.testing.assert_array_equal(read_rgb(tmp_path / "one.png")[0][..., 0], bits.astype(np.float32))
    m, native = read_mask(tmp_path / "one.png")
    np.testing.assert_array_equal(m, bits)
    assert native == (6, 4)


def test_palette_with_and_without_transparency(tmp_path):
    idx = np.zeros((4, 6), np.uint8)
    idx[:, 3:] = 1
    im = Image.fromarray(idx, "P")
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.save(tmp_path / "p.png")
    np.testing.assert_allclose(read_rgb(tmp_path / "p.png")[0][0, [0, 5]], [[1, 0, 0], [0, 0, 1]])
    im.save(tmp_path / "pt.png", transparency=1)          # index 1 fully transparent
    out = read_rgb(tmp_path / "pt.png", background=(0.0, 1.0, 0.0))[0]
    np.testing.assert_allclose(out[0, 0], [1, 0, 0])
    np.testing.assert_allclose(out[0, 5], [0, 1, 0])       # background, not blue


def test_cmyk_jpeg(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = [200, 40, 40]
    rgb[:, 8:] = [30, 90, 220]
    (tmp_path / "c.jpg").write_bytes(_jpeg_bytes(Image.fromarray(rgb).convert("CMYK")))
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    out = read_rgb(tmp_path / "c.jpg")[0]
    assert np.abs(out[4:12, 2:6] - rgb[0, 0] / 255.0).max() < 0.06
    assert np.abs(out[4:12, 10:14] - rgb[0, 15] / 255.0).max() < 0.06


def test_jpeg_named_png_decodes_by_content(tmp_path):
    src = object_rgba()
    src.save(tmp_path / "ref.png")
    flat = np.asarray(read_rgb(tmp_path / "ref.png")[0] * 255).round().astype(np.uint8)   # on white
    data = _jpeg_bytes(Image.fromarray(flat))
    (tmp_path / "fake.png").write_bytes(data)
    (tmp_path / "real.jpg").write_bytes(data)
    fake, native = read_rgb(tmp_path / "fake.png")
    np.testing.assert_array_equal(fake, read_rgb(tmp_path / "real.jpg")[0])   # same decoder
    assert native == (16, 16)
    assert np.abs(fake - read_rgb(tmp_path / "ref.png")[0]).mean() < 0.02    # white background kept
    # the same JPEG among transparent PNGs of one split is accepted (its border is white)
    images, _ = read_images([tmp_path / "ref.png", tmp_path / "fake.png"], background=WHITE,
                            resolution=None, workers=1)
    assert images.shape == (2, 16, 16, 3)


def test_rgba_flattened_onto_black_is_refused_among_transparent_images(tmp_path):
    # The case: an RGBA render converted to RGB (alpha dropped: black where it was
    # transparent) and saved as JPEG under a .png name.
    src = object_rgba()
    src.save(tmp_path / "0.png")
    (tmp_path / "1.png").write_bytes(_jpeg_bytes(src.convert("RGB")))
    # alone it is just a JPEG with a black background, decoded as stored
    assert read_rgb(tmp_path / "1.png")[0][0, 0].max() < 0.05
    msg = raises(DatasetError, lambda: read_images([tmp_path / "0.png", tmp_path / "1.png"],
                                                   background=WHITE, resolution=None, workers=1),
                 tmp_path / "1.png", "JPEG data in a .png file", "no transparency", "(1.0, 1.0, 1.0)")
    assert "(0.00, 0.00, 0.00)" in msg or "(0.01" in msg


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("kind, expected", [
    ("empty", "empty file (0 bytes)"),
    ("text", "is not an image file"),
    ("truncated_png", "corrupt or truncated"),
    ("truncated_jpeg", "corrupt or truncated"),
    ("folder", "is not a file"),
    ("missing", "does not exist"),
])
def test_undecodable_files_are_refused(tmp_path, kind, expected):
    p = tmp_path / "x.png"
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(good, "PNG")
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("just some notes, not an image\n")
    elif kind == "truncated_png":
        p.write_bytes(good.getvalue()[:200])
    elif kind == "truncated_jpeg":
        jpg = _jpeg_bytes(Image.fromarray(np.full((64, 64, 3), 90, np.uint8)))
        p.write_bytes(jpg[: len(jpg) // 2])
    elif kind == "folder":
        p.mkdir()
    exc = DatasetNotFoundError if kind in ("folder", "missing") else DatasetError
    for fn in (lambda: read_rgb(p), lambda: read_mask(p)):
        raises(exc, fn, p, expected)
    if not kind.startswith("truncated"):   # image_size reads the header only
        raises(exc, lambda: image_size(p), p, expected)


# ----------------------------------------------------------------------------- policy


def test_choose_resolution_policy():
    assert choose_resolution(800) == 400            # MAD-Sim: the paper's 400
    assert choose_resolution(400) == 400
    assert choose_resolution(128) == 128            # small data keeps its own width
    assert choose_resolution(800, 200) == 200       # explicit widths <= native as given
    assert choose_resolution(128, 128) == 128
    assert choose_resolution(800, 800) == 800
    assert choose_resolution(128, 400, upsample=True) == 400
    assert choose_resolution(1000, cap=512) == 512
    with pytest.raises(ConfigError) as info:
        choose_resolution(128, 400)
    assert info.value.option == "resolution" and info.value.flag == "--resolution"
    assert "would upsample 128 px wide images to 400 px" in str(info.value)
    assert "upsample=True" in str(info.value)
    for bad in (0, -3, 2.5, "400", True):
        with pytest.raises(ConfigError, match="positive image width"):
            choose_resolution(800, bad)


def test_resize_area_average_and_mask_nearest(tmp_path):
    x = np.random.default_rng(2).random((8, 12, 3)).astype(np.float32)
    half = resize_float(x, (6, 4))
    np.testing.assert_allclose(half, x.reshape(4, 2, 6, 2, 3).mean((1, 3)), atol=1e-6)
    m = np.zeros((8, 12), bool)
    m[:2, :4] = True
    write_png(tmp_path / "m.png", m)
    small, native = read_mask(tmp_path / "m.png", size=(6, 4))
    assert native == (12, 8) and small.shape == (4, 6) and small.sum() == 2


def test_write_png_is_atomic_and_round_trips(tmp_path):
    x = np.random.default_rng(3).random((5, 7, 4))
    p = write_png(tmp_path / "sub" / "a.png", x)
    assert p == tmp_path / "sub" / "a.png"
    assert sorted(q.name for q in (tmp_path / "sub").iterdir()) == ["a.png"]
    back = np.asarray(Image.open(p))
    np.testing.assert_array_equal(back, np.round(x * 255).astype(np.uint8))
    with pytest.raises(ValueError):
        write_png(tmp_path / "b.png", np.zeros((2, 2, 2)))
