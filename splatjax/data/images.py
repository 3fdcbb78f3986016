"""Image files for the dataset loaders: decoding by content, resizing, the resolution policy.

Conventions: images are float32 ``[H, W, 3]`` in [0, 1] (sRGB values, no linearisation);
an alpha channel is composited onto a background colour with ``rgb * a + bg * (1 - a)``
*before* resizing (so resizing acts on premultiplied colour). Resizing uses Pillow on
float32 planes: ``BOX`` (exact area averaging, no ringing) when shrinking, ``BILINEAR``
when enlarging. Masks are resized with nearest neighbour.

Files are decoded by their content, never by their suffix (a JPEG named ``.png`` decodes as
JPEG). Handled: greyscale (``1``, ``L``, 16-bit ``I;16``/``I``, float ``F``), grey + alpha,
RGB, RGBA, palette images with or without transparency (``tRNS``), CMYK, YCbCr, LAB.
Refused with a :class:`DatasetError` naming the file: empty files, files that are not
images, truncated or corrupt images, images too large to decode safely.

Nothing here ever writes into a dataset folder; :func:`write_png` is for generated data.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from jaxtyping import Bool, Float
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, DatasetError
from ..files import atomic_write, require_file

__all__ = [
    "choose_resolution",
    "image_size",
    "read_rgb",
    "read_mask",
    "read_images",
    "read_query_images",
    "has_transparency",
    "resize_float",
    "write_png",
]

PAPER_WIDTH = 400  # the paper resizes MAD-Sim (800 px) to 400 x 400

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Formats Pillow may try (by content). Others (EPS, PDF, ...) would call external programs.
_WANTED_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF", "WEBP", "GIF", "PPM", "TGA")


def _formats() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)
_CONVERT_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV")
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"),
               (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
_SUFFIXES_OF = {"PNG": (".png",), "JPEG": (".jpg", ".jpeg"), "MPO": (".jpg", ".jpeg")}


# ----------------------------------------------------------------------------- policy


def choose_resolution(
    native_width: int,
    requested: int | None = None,
    *,
    cap: int = PAPER_WIDTH,
    upsample: bool = False,
    what: str = "images",
) -> int:
    """The image width (pixels) to load data of ``native_width`` at.

    ``requested=None``: the data's own width, capped at ``cap`` (the paper's 400), so
    800 px MAD-Sim loads at 400 and 128 px data at 128. An explicit width is used as
    given; one larger than ``native_width`` would upsample and raises
    :class:`ConfigError` (option ``resolution``) unless ``upsample=True``.
    """
    native_width = int(native_width)
    if requested is None:
        return min(native_width, int(cap))
    if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)) or requested < 1:
        raise ConfigError("resolution", f"must be a positive image width in pixels (got {requested!r})")
    if requested > native_width and not upsample:
        raise ConfigError(
            "resolution",
            f"{int(requested)} would upsample {native_width} px wide {what} to {int(requested)} px; "
            f"use a width <= {native_width}, leave it unset for the data's own width, "
            "or pass upsample=True (--upsample) to allow it",
        )
    return int(requested)


def target_size(width: int, height: int, resolution: int | None) -> tuple[int, int]:
    """(width, height) after resizing so the width is ``resolution`` (aspect kept);
    ``None`` keeps the native size. No resolution policy here (see
    :func:`choose_resolution`)."""
    if resolution is None:
        return width, height
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ConfigError("resolution", f"must be a positive image width in pixels (got {resolution!r})")
    return int(resolution), max(1, int(round(height * int(resolution) / width)))


# ----------------------------------------------------------------------------- decoding


def _to_array(im: Image.Image, path: Path) -> np.ndarray:
    """Pixels of a loaded Pillow image as float32 ``[H, W, C]`` (C = 1 grey, 2 grey+alpha,
    3 RGB, 4 RGBA) in [0, 1]."""
    mode = im.mode
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    elif mode in ("L", "RGB") and "transparency" in im.info:  # tRNS colour key
        im = im.convert("LA" if mode == "L" else "RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("RGBa", "La"):
        im = im.convert(mode[:-1] + "A")
    elif mode in _CONVERT_TO_RGB:
        im = im.convert("RGB")
    if im.mode in ("L", "LA", "RGB", "RGBA"):
        a = np.asarray(im).astype(np.float32) / np.float32(255.0)
    elif im.mode.startswith("I;16") or im.mode == "I":
        raw = np.asarray(im).astype(np.float64)
        if raw.size and (raw.min() < 0 or raw.max() > 65535):
            raise DatasetError(f"image {str(path)!r} has integer values outside 0..65535 "
                               f"(mode {im.mode}); only 8- and 16-bit images are supported")
        a = (raw / 65535.0).astype(np.float32)
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        if not np.all(np.isfinite(a)):
            raise DatasetError(f"image {str(path)!r} (float, mode F) has NaN or infinite pixels")
        a = np.clip(a, 0.0, 1.0)
    else:
        raise DatasetError(f"image {str(path)!r} has unsupported pixel mode {im.mode!r}")
    return a[..., None] if a.ndim == 2 else a


def _decode(path: Path) -> tuple[np.ndarray, str]:
    """``(pixels [H, W, C] float32 in [0, 1], format)`` of an image file, by content."""
    require_file(path, "image")
    try:
        if path.stat().st_size == 0:
            raise DatasetError(f"image {str(path)!r} is an empty file (0 bytes)")
        with open(path, "rb") as f:
            head = f.read(16)
        with Image.open(path, formats=_formats()) as im:
            fmt = im.format or "?"
            if im.width < 1 or im.height < 1:
                raise DatasetError(f"image {str(path)!r} has zero size ({im.width}x{im.height})")
            im.load()
            return _to_array(im, path), fmt
    except UnidentifiedImageError as e:
        known = next((name for sig, name in _SIGNATURES if head.startswith(sig)), None)
        if known:
            raise DatasetError(f"cannot read image {str(path)!r}: corrupt or truncated {known} file "
                               "(its header cannot be parsed)") from e
        raise DatasetError(f"{str(path)!r} is not an image file (unknown format; it starts with "
                           f"{head[:8]!r}); expected PNG or JPEG data") from e
    except PermissionError as e:
        raise DatasetError(f"image {str(path)!r} cannot be read: permission denied") from e
    except Image.DecompressionBombError as e:
        raise DatasetError(f"image {str(path)!r} is too large to decode safely: {e}") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"cannot read image {str(path)!r}: corrupt or truncated ({e})") from e


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header (nothing decoded)."""
    path = require_file(Path(path), "image")
    try:
        with Image.open(path, formats=_formats()) as im:
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        _decode(path)  # raises the precise DatasetError
        raise


@dataclasses.dataclass(frozen=True)
class _Loaded:
    """One decoded, composited and resized image plus what the split checks need."""

    rgb: np.ndarray                  # [h, w, 3] float32
    native: tuple[int, int]          # (width, height) in the file
    transparent: bool                # has an alpha channel with some pixel < 1
    border_match: float              # share of border pixels within 0.1 of the background
    border_mean: tuple[float, ...]   # mean colour of the border
    format: str


def _border(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]], axis=0)


def _load(path: Path, background: Sequence[float], resolution: int | None,
          size: tuple[int, int] | None = None) -> _Loaded:
    """Decode, composite onto ``background`` and resize to width ``resolution`` (aspect
    kept) or, when given, to exactly ``size = (width, height)``."""
    x, fmt = _decode(path)
    native = (x.shape[1], x.shape[0])
    bg = np.asarray(background, np.float32).reshape(1, 1, 3)
    transparent = x.shape[-1] in (2, 4) and bool(np.any(x[..., -1] < 1.0))
    if x.shape[-1] in (2, 4):  # grey+alpha or RGBA
        rgb, alpha = x[..., :-1], x[..., -1:]
        x = np.broadcast_to(rgb, rgb.shape[:2] + (3,)) * alpha + bg * (1.0 - alpha)
    elif x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    ring = _border(x)
    match = float(np.mean(np.abs(ring - bg[0]).max(-1) <= 0.1))
    x = resize_float(x, tuple(size) if size is not None else target_size(*native, resolution))
    return _Loaded(np.ascontiguousarray(x, np.float32), native, transparent, match,
                   tuple(float(v) for v in ring.mean(0)), fmt)


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
    r = _load(Path(path), background, resolution)
    return r.rgb, r.native


def read_mask(
    path: str | os.PathLike, *, size: tuple[int, int] | None = None
) -> tuple[Bool[np.ndarray, "H W"], tuple[int, int]]:
    """Read a defect mask (any pixel value > 0 in a colour channel is defective; an alpha
    channel is ignored), resized nearest-neighbour to ``size = (width, height)``.
    Returns the mask and its native ``(width, height)``."""
    path = Path(path)
    a, _ = _decode(path)
    if a.shape[-1] in (2, 4):
        a = a[..., :-1]
    m = a.max(axis=-1) > 0
    native = (m.shape[1], m.shape[0])
    if size is not None and tuple(size) != native:
        m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255)
                       .resize(tuple(size), Image.Resampling.NEAREST)) > 0
    return m, native


def _check_backgrounds(paths: Sequence[Path], loaded: Sequence[_Loaded], background,
                       transparent_peers: bool | str) -> None:
    """Refuse an opaque image among transparent ones whose border is not the background
    (e.g. an RGBA render flattened onto black when saved as JPEG). ``transparent_peers``:
    other images (not in ``paths``) are transparent; a string says which."""
    if not (transparent_peers or any(r.transparent for r in loaded)):
        return
    for p, r in zip(paths, loaded):
        if not r.transparent and r.border_match < 0.5:
            kind = r.format if p.suffix.lower() in _SUFFIXES_OF.get(r.format, ()) else \
                f"{r.format} data in a {p.suffix or 'suffix-less'} file"
            mean = "(" + ", ".join(f"{v:.2f}" for v in r.border_mean) + ")"
            raise DatasetError(
                f"image {str(p)!r} ({kind}) has no transparency and its border is {mean}, not the "
                f"background {tuple(float(b) for b in background)}, while "
                f"{transparent_peers if isinstance(transparent_peers, str) else 'the other images'} are "
                "transparent and get that background; it was probably flattened onto another colour "
                "(e.g. RGBA saved as JPEG); re-export it with its alpha channel or on the background colour"
            )


def _read_stack(paths: Sequence[Path], *, background: Sequence[float], resolution: int | None,
                workers: int | None = None, transparent_peers: bool | str = False
                ) -> tuple[np.ndarray, list[tuple[int, int]], bool]:
    """:func:`read_images` plus whether any image is transparent."""
    if not paths:
        raise DatasetError("no images to read")
    paths = [Path(p) for p in paths]
    workers = workers or min(8, (os.cpu_count() or 1))

    def one(p):
        return _load(p, background, resolution)

    if workers > 1 and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            loaded = list(pool.map(one, paths))
    else:
        loaded = [one(p) for p in paths]
    first = loaded[0].native
    for p, r in zip(paths, loaded):
        if r.native != first:
            raise DatasetError(
                f"image {str(p)!r} is {r.native[0]}x{r.native[1]} but {str(paths[0])!r} is "
                f"{first[0]}x{first[1]}; all images of a split must share one size"
            )
    _check_backgrounds(paths, loaded, background, transparent_peers)
    return (np.stack([r.rgb for r in loaded]), [r.native for r in loaded],
            any(r.transparent for r in loaded))


def read_images(
    paths: Sequence[Path],
    *,
    background: Sequence[float],
    resolution: int | None,
    workers: int | None = None,
) -> tuple[Float[np.ndarray, "N H W 3"], list[tuple[int, int]]]:
    """Read many images with a thread pool. Returns ``[N, H, W, 3]`` float32 and the
    native sizes. All images must share one native size, and an opaque image among
    transparent ones must have the background colour on its border; otherwise
    :class:`DatasetError` names the odd one."""
    images, natives, _ = _read_stack(paths, background=background, resolution=resolution,
                                     workers=workers)
    return images, natives


ASPECT_TOLERANCE = 0.01  # relative difference of width/height ratios still taken as one aspect


def read_query_images(
    paths: Sequence[str | os.PathLike],
    *,
    background: Sequence[float],
    resolution: int | None,
    expected_size: tuple[int, int] | None = None,
    transparent_peers: bool = True,
) -> Float[np.ndarray, "N H W 3"]:
    """Query images for a fitted model as ``[N, H, W, 3]`` float32, each read at width
    ``resolution`` (None: the first image's width) with the model's aspect ratio.

    ``expected_size = (width, height)``: the model's training views; every query must have
    their aspect ratio (within 1 %), and is resized to exactly that shape at width
    ``resolution``. Without it the first query sets the aspect ratio. A query of another
    aspect ratio cannot be matched by resizing (the pose and map would be wrong): it is a
    :class:`DatasetError` naming the file, its size and the expected aspect. An opaque query
    whose border is not ``background`` is refused as :func:`read_images` refuses it among
    transparent images (``transparent_peers``: the training views were transparent, or
    unknown), since the model is rendered onto ``background``."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise DatasetError("no query images given")
    natives = [image_size(p) for p in paths]  # headers only: refuse before decoding anything
    ref_path, ref = (None, tuple(expected_size)) if expected_size is not None else (paths[0], natives[0])
    width = int(resolution) if resolution is not None else (ref[0] if expected_size is not None else natives[0][0])
    size = (width, max(1, int(round(ref[1] * width / ref[0]))))
    for p, (w, h) in zip(paths, natives):
        if abs((w / h) / (ref[0] / ref[1]) - 1.0) > ASPECT_TOLERANCE:
            source = (f"the model's training views ({ref[0]}x{ref[1]}) have" if ref_path is None
                      else f"{str(ref_path)!r} ({ref[0]}x{ref[1]}) has")
            raise DatasetError(
                f"query image {str(p)!r} is {w}x{h} (aspect {w / h:.3g}) but {source} aspect "
                f"{ref[0] / ref[1]:.3g}; resizing cannot match them: crop or pad it to a {ref[0]}:{ref[1]} shape")
    loaded = [_load(p, background, None, size) for p in paths]
    _check_backgrounds(paths, loaded, background, transparent_peers)
    return np.stack([r.rgb for r in loaded])


def has_transparency(path: str | os.PathLike) -> bool:
    """Whether an image file has an alpha channel with some pixel below 1."""
    x, _ = _decode(Path(path))
    return x.shape[-1] in (2, 4) and bool(np.any(x[..., -1] < 1.0))


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a float [0, 1] image ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]`` (or bool mask)
    as an 8-bit PNG, atomically (for generated data and figures only)."""
    a = np.asarray(image)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ValueError(f"cannot write an image of shape {a.shape} as PNG")
    im = Image.fromarray(np.ascontiguousarray(a))
    return atomic_write(path, lambda f: im.save(f, format="PNG"))
