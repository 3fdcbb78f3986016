"""MAD-Sim class folders (PAD benchmark layout), read strictly read-only.

Layout of one class ``<class>/``::

    transforms.json               camera_angle_x + frames; frames[i] <-> train/good/<i>.png
    train/good/<i>.png            defect-free posed views (RGBA)
    test/<type>/<n>.png           query images, types good, Burrs, Missing, Stains, ...
    ground_truth/<type>/<n>_mask.png   mask > 0 is defective (none for good)

Frame-to-image rule: when a frame's ``file_path`` points into ``train/good`` (with or
without extension, "./" allowed) that image is used; otherwise frame i is
``train/good/<i>.png``. The number of frames must equal the number of images in
``train/good``. Files are ordered numerically by name (``2.png`` before ``10.png``).
The reference code renames files in place to zero-pad them; we never rename or write.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from .blender import _clean_rel, frame_image_path, parse_pose, posed_views, read_transforms
from .images import (
    IMAGE_SUFFIXES,
    DatasetError,
    DatasetNotFoundError,
    read_images,
    read_mask,
    require_dir,
    require_file,
)
from .types import MADClass, TestSet

__all__ = ["load_mad_class", "load_mad_train", "load_mad_test", "natural_key", "MAD_CLASSES"]

MAD_CLASSES = (
    "01Gorilla", "02Unicorn", "03Mallard", "04Turtle", "05Whale", "06Bird", "07Owl",
    "08Sabertooth", "09Swan", "10Sheep", "11Pig", "12Zalika", "13Pheonix", "14Elephant",
    "15Parrot", "16Cat", "17Scorpion", "18Obesobeso", "19Bear", "20Puppy",
)


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs numerically ("2.png" < "10.png")."""
    return tuple((0, int(s), s) if s.isdigit() else (1, 0, s.lower())
                 for s in re.split(r"(\d+)", name) if s)


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def _train_image_paths(root: Path, frames: list[dict], json_path: Path) -> list[Path]:
    good = require_dir(root / "train" / "good", "training image folder")
    on_disk = _image_files(good)
    if len(on_disk) != len(frames):
        raise DatasetError(
            f"{str(json_path)!r} has {len(frames)} frames but {str(good)!r} holds "
            f"{len(on_disk)} images; they must correspond one to one"
        )
    paths: list[Path] = []
    for i, fr in enumerate(frames):
        rel = _clean_rel(fr.get("file_path", "")) if isinstance(fr.get("file_path", ""), str) else None
        if rel is not None and rel.parts[:-1][-2:] == ("train", "good"):
            paths.append(frame_image_path(root, str(rel), json_path=json_path, index=i))
        else:
            p = good / f"{i}.png"
            if not p.is_file():
                raise DatasetNotFoundError(
                    f"{str(json_path)!r}: frame {i} has no file_path into train/good and its "
                    f"image {str(p)!r} does not exist"
                )
            paths.append(p)
    seen: dict[Path, int] = {}
    for i, p in enumerate(paths):
        if p in seen:
            raise DatasetError(f"{str(json_path)!r}: frames {seen[p]} and {i} both use image {str(p)!r}")
        seen[p] = i
    return paths


def load_mad_train(
    path: str | os.PathLike,
    resolution: int | None = 400,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    workers: int | None = None,
):
    """The defect-free posed training views of a MAD-Sim class as :class:`PosedViews`."""
    root = require_dir(Path(path), "MAD class folder")
    json_path = require_file(root / "transforms.json", "pose file")
    fov, frames = read_transforms(json_path)
    c2w = np.stack([parse_pose(fr, i, json_path) for i, fr in enumerate(frames)])
    paths = _train_image_paths(root, frames, json_path)
    return posed_views(paths, c2w, fov, background=background, resolution=resolution, workers=workers)


def load_mad_test(
    path: str | os.PathLike,
    resolution: int | None = 400,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    workers: int | None = None,
) -> TestSet:
    """The labelled test set of a MAD-Sim class: every ``test/<type>/<n>.png`` (types
    sorted with "good" first, files in numeric order), label 0 for "good" and 1 otherwise,
    masks from ``ground_truth/<type>/<n>_mask.png`` (all False for "good"), resized
    nearest-neighbour to the image resolution. A defective image without a mask, or a mask
    whose size differs from its image, raises :class:`DatasetError`."""
    root = require_dir(Path(path), "MAD class folder")
    test_dir = require_dir(root / "test", "test folder")
    types = sorted((d.name for d in test_dir.iterdir() if d.is_dir() and not d.name.startswith(".")),
                   key=lambda n: (n != "good", natural_key(n)))
    files: list[Path] = []
    kinds: list[str] = []
    for t in types:
        for f in _image_files(test_dir / t):
            files.append(f)
            kinds.append(t)
    if not files:
        raise DatasetNotFoundError(f"no test images found under {str(test_dir)!r}")
    images, natives = read_images(files, background=background, resolution=resolution,
                                  workers=workers)
    h, w = images.shape[1:3]
    masks = np.zeros((len(files), h, w), dtype=bool)
    for k, (f, t, native) in enumerate(zip(files, kinds, natives)):
        if t == "good":
            continue
        mpath = root / "ground_truth" / t / f"{f.stem}_mask.png"
        if not mpath.is_file():
            raise DatasetNotFoundError(
                f"defective test image {str(f)!r} has no mask: {str(mpath)!r} does not exist"
            )
        m, mnative = read_mask(mpath, size=(w, h))
        if mnative != native:
            raise DatasetError(
                f"mask {str(mpath)!r} is {mnative[0]}x{mnative[1]} but its image {str(f)!r} is "
                f"{native[0]}x{native[1]}"
            )
        masks[k] = m
    labels = np.array([0 if t == "good" else 1 for t in kinds], dtype=np.int32)
    rel = tuple(PurePosixPath(*f.relative_to(root).parts).as_posix() for f in files)
    for a in (images, masks, labels):
        a.flags.writeable = False
    return TestSet(images=images, masks=masks, labels=labels, defect_types=tuple(kinds), paths=rel)


def load_mad_class(
    path: str | os.PathLike,
    resolution: int | None = 400,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    workers: int | None = None,
) -> MADClass:
    """Load one MAD-Sim class folder (training views + labelled test set); see the module
    docstring for the layout. Nothing in the folder is renamed or written."""
    root = require_dir(Path(path), "MAD class folder")
    train = load_mad_train(root, resolution, background, workers=workers)
    test = load_mad_test(root, resolution, background, workers=workers)
    return MADClass(name=root.name, root=str(root), train=train, test=test)
