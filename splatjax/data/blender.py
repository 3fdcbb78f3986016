"""Blender / NeRF-synthetic posed images (``transforms_<split>.json``).

Pose format: ``camera_angle_x`` (horizontal field of view, radians) and ``frames``, each
with ``file_path`` (relative to the JSON's folder, with or without extension, "./" allowed)
and ``transform_matrix``, a 4 x 4 camera-to-world matrix in the OpenGL convention (x right,
y up, camera looks down -z). Images are read read-only; RGBA is composited onto the
background; intrinsics follow from ``camera_angle_x`` and the *loaded* width, so resizing
needs no other bookkeeping.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np
from jaxtyping import Float

from ..errors import ConfigError, DatasetError, DatasetNotFoundError
from ..files import read_json, require_dir
from .images import IMAGE_SUFFIXES, _read_stack, choose_resolution, image_size
from .types import FitData, LoadOptions, PosedViews

__all__ = ["load_blender", "read_transforms", "parse_pose", "detect", "load_fit_data"]


def read_transforms(json_path: str | os.PathLike) -> tuple[float, list[dict[str, Any]]]:
    """``(camera_angle_x, frames)`` of a transforms JSON, checked for the required keys."""
    json_path = Path(json_path)
    meta = read_json(json_path, "pose file")
    if not isinstance(meta, dict):
        raise DatasetError(f"{str(json_path)!r}: expected a JSON object at the top level")
    if "camera_angle_x" not in meta:
        raise DatasetError(f"{str(json_path)!r}: missing key 'camera_angle_x'")
    try:
        fov = float(meta["camera_angle_x"])
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{str(json_path)!r}: 'camera_angle_x' is not a number") from e
    if not (np.isfinite(fov) and 0.0 < fov < np.pi):
        raise DatasetError(f"{str(json_path)!r}: camera_angle_x = {fov} is not in (0, pi) radians")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(f"{str(json_path)!r}: 'frames' must be a non-empty list")
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict) or "transform_matrix" not in fr:
            raise DatasetError(f"{str(json_path)!r}: frame {i} has no 'transform_matrix'")
        if "file_path" in fr and not isinstance(fr["file_path"], str):
            raise DatasetError(f"{str(json_path)!r}: frame {i} file_path {fr['file_path']!r} is not a string")
    return fov, frames


def pose_matrix(value: Any, where: str) -> Float[np.ndarray, "4 4"]:
    """``value`` as a float64 [4, 4] rigid camera-to-world matrix, else a
    :class:`DatasetError` starting with ``where``: it must be numeric, 4 x 4, finite, with
    last row (0, 0, 0, 1) and a rotation block (orthonormal within 1e-2, det > 0)."""
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where} is not a numeric 4x4 matrix") from e
    if m.shape != (4, 4):
        raise DatasetError(f"{where} has shape {m.shape}, expected (4, 4)")
    if not np.all(np.isfinite(m)):
        raise DatasetError(f"{where} has non-finite entries (NaN or infinity)")
    if np.abs(m[3] - [0.0, 0.0, 0.0, 1.0]).max() > 1e-6:
        raise DatasetError(f"{where} has last row {m[3].tolist()}, expected [0, 0, 0, 1]")
    R = m[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-2 or np.linalg.det(R) <= 0:
        raise DatasetError(f"{where} is not a rigid camera pose: its 3x3 block is not a rotation "
                           f"(det {np.linalg.det(R):.3g})")
    return m


def parse_pose(frame: dict[str, Any], index: int, json_path: Path) -> Float[np.ndarray, "4 4"]:
    """The frame's camera-to-world matrix as float64 [4, 4] (see :func:`pose_matrix`)."""
    return pose_matrix(frame["transform_matrix"],
                       f"{str(json_path)!r}: frame {index} transform_matrix")


def _clean_rel(file_path: str) -> PurePosixPath:
    p = PurePosixPath(str(file_path).replace("\\", "/"))
    parts = [q for q in p.parts if q not in (".", "")]
    return PurePosixPath(*parts) if parts else PurePosixPath()


def frame_image_path(root: Path, file_path: str, *, json_path: Path, index: int) -> Path:
    """Image file named by a frame's ``file_path`` under ``root``: used as given when it
    has an image extension, otherwise ".png" is appended (also tried when the given name
    does not exist). A missing image raises :class:`DatasetNotFoundError`."""
    rel = _clean_rel(file_path)
    if not rel.parts:
        raise DatasetError(f"{str(json_path)!r}: frame {index} has an empty file_path")
    candidates = []
    if rel.suffix.lower() in IMAGE_SUFFIXES:
        candidates.append(root / rel)
    candidates.append(root / (str(rel) + ".png"))
    for c in candidates:
        if c.is_file():
            return c
    raise DatasetNotFoundError(
        f"{str(json_path)!r}: frame {index} (file_path {file_path!r}) points to a missing image "
        f"{str(candidates[0])!r}"
    )


def _transforms_json(root: Path, split: str) -> Path:
    named = root / f"transforms_{split}.json"
    if named.is_file():
        return named
    single = root / "transforms.json"
    if single.is_file():
        return single
    raise DatasetNotFoundError(
        f"no pose file in {str(root)!r}: neither {named.name!r} nor 'transforms.json' exists"
    )


def load_blender(
    path: str | os.PathLike,
    split: str = "train",
    resolution: int | None = None,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    upsample: bool = False,
    workers: int | None = None,
) -> PosedViews:
    """Load one split of a Blender/NeRF-style dataset as :class:`PosedViews`.

    Reads ``<path>/transforms_<split>.json`` or, when absent, ``<path>/transforms.json``
    (MAD-Sim). Images: float32 [N, H, W, 3] in [0, 1], alpha composited on ``background``,
    resized to width ``resolution`` with the aspect ratio kept (area averaging). ``None``
    is the data's own width capped at 400 (the paper's); a width above the native one
    raises :class:`ConfigError` unless ``upsample=True`` (see :func:`choose_resolution`).
    ``c2w`` is float64 exactly as stored. Images are decoded by a thread pool of
    ``workers`` threads (default: CPU count, max 8).
    """
    root = require_dir(Path(path), "dataset folder")
    json_path = _transforms_json(root, split)
    fov, frames = read_transforms(json_path)
    c2w = np.stack([parse_pose(fr, i, json_path) for i, fr in enumerate(frames)])
    paths = []
    for i, fr in enumerate(frames):
        if "file_path" not in fr:
            raise DatasetError(f"{str(json_path)!r}: frame {i} has no 'file_path'")
        paths.append(frame_image_path(root, fr["file_path"], json_path=json_path, index=i))
    check_unique(paths, json_path)
    return posed_views(paths, c2w, fov, background=background, resolution=resolution,
                       upsample=upsample, workers=workers,
                       transparent_peers=_transparent_splits(root, json_path))[0]


def detect(path: Path) -> bool:
    """A Blender/NeRF folder: ``transforms_train.json`` is there."""
    return (Path(path) / "transforms_train.json").is_file()


def load_fit_data(path: str | os.PathLike, options: LoadOptions = LoadOptions()) -> FitData:
    """The ``train`` split, and ``transforms_<val_split>.json`` at the same width as the
    validation views when present (no initial points)."""
    o = options
    train = load_blender(path, "train", o.resolution, o.background, upsample=o.upsample)
    val = None
    if o.val_split and (Path(path) / f"transforms_{o.val_split}.json").is_file():
        val = load_blender(path, o.val_split, train.width, o.background, upsample=o.upsample)
    return FitData(train=train, val=val)


def _transparent_splits(root: Path, json_path: Path) -> str | bool:
    """Which other splits of the folder (``transforms_*.json``) are transparent, judged by
    their first image, as the ``transparent_peers`` of the split being loaded: one whose
    images are flattened onto another colour than the background is then refused, as
    within one split. Another split that cannot be read is that split's error, not ours."""
    from .images import has_transparency

    found = []
    for other in sorted(root.glob("transforms_*.json")):
        if other.name == json_path.name or not other.is_file():
            continue
        try:
            _, frames = read_transforms(other)
            first = frame_image_path(root, frames[0].get("file_path", ""), json_path=other, index=0)
            if has_transparency(first):
                found.append(other.name)
        except (DatasetError, OSError):
            continue
    return f"the images of {', '.join(found)}" if found else False


def check_unique(paths: Sequence[Path], json_path: Path) -> None:
    """Refuse two frames that use one image file."""
    seen: dict[Path, int] = {}
    for i, p in enumerate(paths):
        key = Path(os.path.normcase(os.path.abspath(p)))
        if key in seen:
            raise DatasetError(f"{str(json_path)!r}: frames {seen[key]} and {i} both use image {str(p)!r}")
        seen[key] = i


def check_background(background: Sequence[float]) -> tuple[float, float, float]:
    """``background`` as three floats in [0, 1], else :class:`ConfigError`."""
    try:
        bg = tuple(float(b) for b in background)
    except (TypeError, ValueError):
        bg = ()
    if len(bg) != 3 or not all(0.0 <= b <= 1.0 for b in bg):
        raise ConfigError("background", f"must be three numbers in [0, 1] (got {background!r})")
    return bg  # type: ignore[return-value]


def posed_views(
    paths: Sequence[Path],
    c2w: np.ndarray,
    camera_angle_x: float,
    *,
    background: Sequence[float],
    resolution: int | None,
    upsample: bool = False,
    workers: int | None = None,
    transparent_peers: bool | str = False,
) -> tuple[PosedViews, bool]:
    """Read ``paths`` at the width :func:`choose_resolution` picks and wrap them with their
    poses (arrays made read-only). Also returns whether any image is transparent.
    ``transparent_peers``: other images of the dataset are transparent (see
    :func:`splatjax.data.images.read_images`)."""
    background = check_background(background)
    native_w, _ = image_size(paths[0])
    width = choose_resolution(native_w, resolution, upsample=upsample,
                              what=f"images of {str(Path(paths[0]).parent)!r}")
    images, _, transparent = _read_stack(list(paths), background=background, resolution=width,
                                         workers=workers, transparent_peers=transparent_peers)
    c2w = np.array(c2w, dtype=np.float64)
    images.flags.writeable = False
    c2w.flags.writeable = False
    views = PosedViews(
        images=images, c2w=c2w, camera_angle_x=float(camera_angle_x),
        paths=tuple(str(p) for p in paths), background=background,
    )
    return views, transparent
