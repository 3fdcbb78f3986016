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

from .images import (
    IMAGE_SUFFIXES,
    DatasetError,
    DatasetNotFoundError,
    read_images,
    read_json,
    require_dir,
)
from .types import PosedViews

__all__ = ["load_blender", "read_transforms", "frame_image_path", "parse_pose"]


def read_transforms(json_path: str | os.PathLike) -> tuple[float, list[dict[str, Any]]]:
    """``(camera_angle_x, frames)`` of a transforms JSON, checked for the required keys."""
    json_path = Path(json_path)
    meta = read_json(json_path)
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
    return fov, frames


def parse_pose(frame: dict[str, Any], index: int, json_path: Path) -> np.ndarray:
    """The frame's camera-to-world matrix as float64 [4, 4]; must be 4 x 4 and finite."""
    try:
        m = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DatasetError(
            f"{str(json_path)!r}: frame {index} transform_matrix is not a numeric 4x4 matrix"
        ) from e
    if m.shape != (4, 4):
        raise DatasetError(
            f"{str(json_path)!r}: frame {index} transform_matrix has shape {m.shape}, expected (4, 4)"
        )
    if not np.all(np.isfinite(m)):
        raise DatasetError(f"{str(json_path)!r}: frame {index} transform_matrix has non-finite entries")
    return m


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
    resolution: int | None = 400,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    workers: int | None = None,
) -> PosedViews:
    """Load one split of a Blender/NeRF-style dataset as :class:`PosedViews`.

    Reads ``<path>/transforms_<split>.json`` or, when absent, ``<path>/transforms.json``
    (MAD-Sim). Images: float32 [N, H, W, 3] in [0, 1], alpha composited on ``background``,
    resized to width ``resolution`` with the aspect ratio kept (area averaging when
    shrinking; ``None`` keeps the native size). ``c2w`` is float64 exactly as stored.
    Images are decoded by a thread pool of ``workers`` threads (default: CPU count, max 8).
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
    return posed_views(paths, c2w, fov, background=background, resolution=resolution, workers=workers)


def posed_views(
    paths: Sequence[Path],
    c2w: np.ndarray,
    camera_angle_x: float,
    *,
    background: Sequence[float],
    resolution: int | None,
    workers: int | None = None,
) -> PosedViews:
    """Read ``paths`` and wrap them with their poses (arrays made read-only)."""
    images, _ = read_images(list(paths), background=background, resolution=resolution,
                            workers=workers)
    c2w = np.array(c2w, dtype=np.float64)
    images.flags.writeable = False
    c2w.flags.writeable = False
    return PosedViews(
        images=images, c2w=c2w, camera_angle_x=float(camera_angle_x),
        paths=tuple(str(p) for p in paths),
        background=tuple(float(b) for b in background),
    )
