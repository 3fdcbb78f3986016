"""Image and JSON file I/O for the dataset loaders, with errors that name the file.

Conventions: images are float32 ``[H, W, 3]`` in [0, 1] (sRGB values, no linearisation);
an alpha channel is composited onto a background colour with ``rgb * a + bg * (1 - a)``
*before* resizing (so resizing acts on premultiplied colour). Resizing uses Pillow on
float32 planes: ``BOX`` (exact area averaging, no ringing) when shrinking, ``BILINEAR``
when enlarging. Masks are resized with nearest neighbour.

Nothing here ever writes into a dataset folder; :func:`write_png` is for generated data.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from jaxtyping import Bool, Float
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "read_json",
    "read_rgb",
    "read_mask",
    "read_images",
    "resize_float",
    "target_size",
    "write_png",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


from ..errors import DatasetError, DatasetNotFoundError  # noqa: E402  (re-exported)
from ..files import read_json, require_dir, require_file  # noqa: E402  (re-exported)


def _open_array(path: Path) -> np.ndarray:
    """Decode an image file fully into a numpy array (uint8/uint16/float, as stored)."""
    require_file(path, "image")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA")
            elif im.mode.startswith("I;16"):
                return np.asarray(im).astype(np.uint16)
            elif im.mode not in ("1", "L", "LA", "RGB", "RGBA", "I", "F"):
                im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot read image {str(path)!r}: {e}") from e


def _to_unit_float(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16 or (a.dtype.kind in "iu" and a.max(initial=0) > 255):
        return np.clip(a.astype(np.float32) / 65535.0, 0.0, 1.0)
    if a.dtype == bool:
        return a.astype(np.float32)
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def target_size(width: int, height: int, resolution: int | None) -> tuple[int, int]:
    """(width, height) after resizing so the width is ``resolution`` (aspect kept);
    ``None`` keeps the native size."""
    if resolution is None:
        return width, height
    if int(resolution) < 1:
        raise ValueError(f"resolution must be a positive width in pixels, got {resolution}")
    return int(resolution), max(1, int(round(height * int(resolution) / width)))


def resize_float(a: Float[np.ndarray, "H W *C"], size: tuple[int, int]) -> np.ndarray:
    """Resize a float image (any channel count) to ``size = (width, height)``: area
    averaging (Pillow BOX) when shrinking, bilinear when enlarging; channels resized as
    independent float32 planes, so no 8-bit rounding."""
    h, w = a.shape[:2]
    if (w, h) == tuple(size):
        return a.astype(np.float32, copy=False)
    shrink = size[0] <= w and size[1] <= h
    method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    planes = a[..., None] if a.ndim == 2 else a
    out = np.stack(
        [np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c], np.float32))
                    .resize(size, method)) for c in range(planes.shape[-1])],
        axis=-1,
    )
    out = np.clip(out, 0.0, 1.0)
    return out[..., 0] if a.ndim == 2 else out


def read_rgb(
    path: str | os.PathLike,
    *,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    resolution: int | None = None,
) -> tuple[Float[np.ndarray, "H W 3"], tuple[int, int]]:
    """Read an image as float32 ``[H, W, 3]`` in [0, 1], alpha composited onto
    ``background`` then resized to width ``resolution`` (aspect kept; None = native).
    Returns the image and its native ``(width, height)``."""
    path = Path(path)
    a = _open_array(path)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
        raise DatasetError(f"image {str(path)!r} has unsupported shape {a.shape}")
    x = _to_unit_float(a)
    native = (x.shape[1], x.shape[0])
    if x.shape[-1] in (2, 4):  # grey+alpha or RGBA
        rgb, alpha = x[..., :-1], x[..., -1:]
        if rgb.shape[-1] == 1:
            rgb = np.repeat(rgb, 3, axis=-1)
        bg = np.asarray(background, np.float32).reshape(1, 1, 3)
        x = rgb * alpha + bg * (1.0 - alpha)
    elif x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    x = resize_float(x, target_size(*native, resolution))
    return np.ascontiguousarray(x, np.float32), native


def read_mask(
    path: str | os.PathLike, *, size: tuple[int, int] | None = None
) -> tuple[Bool[np.ndarray, "H W"], tuple[int, int]]:
    """Read a defect mask (any pixel value > 0 in a colour channel is defective; an alpha
    channel is ignored), resized nearest-neighbour to ``size = (width, height)``.
    Returns the mask and its native ``(width, height)``."""
    path = Path(path)
    a = _open_array(path)
    if a.ndim == 3:
        a = a[..., :3] if a.shape[-1] == 4 else a[..., :1] if a.shape[-1] == 2 else a
        a = a.max(axis=-1)
    native = (a.shape[1], a.shape[0])
    m = a > 0
    if size is not None and tuple(size) != native:
        m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255)
                       .resize(tuple(size), Image.Resampling.NEAREST)) > 0
    return m, native


def read_images(
    paths: Sequence[Path],
    *,
    background: Sequence[float],
    resolution: int | None,
    workers: int | None = None,
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Read many images with a thread pool. Returns ``[N, H, W, 3]`` float32 and the native sizes. All images
    must share one native size, otherwise :class:`DatasetError` names the odd one.
    (Pillow decodes and resizes in C and releases the GIL for much of it, so a few threads
    help on a multi-core machine.)"""
    if not paths:
        raise DatasetError("no images to read")
    workers = workers or min(8, (os.cpu_count() or 1))

    def one(p):
        return read_rgb(p, background=background, resolution=resolution)

    if workers > 1 and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, paths))
    else:
        results = [one(p) for p in paths]
    first = results[0][1]
    for p, (_, native) in zip(paths, results):
        if native != first:
            raise DatasetError(
                f"image {str(p)!r} is {native[0]}x{native[1]} but {str(paths[0])!r} is "
                f"{first[0]}x{first[1]}; all images of a split must share one size"
            )
    out = np.stack([r[0] for r in results])
    return out, [r[1] for r in results]


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a float [0, 1] image ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]`` (or bool mask)
    as an 8-bit PNG (for generated data only)."""
    a = np.asarray(image)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ValueError(f"cannot write an image of shape {a.shape} as PNG")
    Image.fromarray(np.ascontiguousarray(a)).save(path, format="PNG")
