"""MAD-Sim class folders (PAD benchmark layout), read strictly read-only.

Layout of one class ``<class>/``::

    transforms.json               camera_angle_x + frames; frames[i] <-> train/good/<i>.png
    train/good/<i>.png            defect-free posed views (RGBA)
    test/<type>/<n>.png           query images, types good, Burrs, Missing, Stains, ...
    ground_truth/<type>/<n>_mask.png   mask > 0 is defective (none for good)
    test_poses.json               optional: {"camera_angle_x": a, "poses": {"test/<type>/<n>.png": c2w}}

Frame-to-image rule: when a frame's ``file_path`` points into ``train/good`` (with or
without extension, "./" allowed) that image is used; otherwise frame i is
``train/good/<i>.png``. The number of frames must equal the number of images in
``train/good``. Files are ordered numerically by name (``2.png`` before ``10.png``).

Everything must match up one to one, else a :class:`DatasetError` names the files: frames
and training images; test images and masks (no defective image without a mask, no mask
without an image, equal sizes, no defective pixels in a mask of a "good" image); test
images and test poses (one pose per image, no pose for an image that is not there); test
and training images (one native size, one ``camera_angle_x``).

The reference code renames files in place to zero-pad them; we never rename or write.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np
from jaxtyping import Float

from ..errors import DatasetError, DatasetNotFoundError
from ..files import read_json, require_dir, require_file
from .blender import (
    _clean_rel,
    check_background,
    check_unique,
    frame_image_path,
    parse_pose,
    pose_matrix,
    posed_views,
    read_transforms,
)
from .images import IMAGE_SUFFIXES, _read_stack, choose_resolution, image_size, read_mask
from .types import FitData, LoadOptions, MADClass, PosedViews, TestSet

__all__ = ["load_mad_class", "load_mad_train", "load_mad_test", "load_test_poses", "class_folders", "detect",
           "load_fit_data"]

MAD_CLASSES = (
    "01Gorilla", "02Unicorn", "03Mallard", "04Turtle", "05Whale", "06Bird", "07Owl",
    "08Sabertooth", "09Swan", "10Sheep", "11Pig", "12Zalika", "13Pheonix", "14Elephant",
    "15Parrot", "16Cat", "17Scorpion", "18Obesobeso", "19Bear", "20Puppy",
)


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs numerically ("2.png" < "10.png")."""
    return tuple((0, int(s), s) if s.isdigit() else (1, 0, s.lower())
                 for s in re.split(r"(\d+)", name) if s)


def _entries(folder: Path) -> list[Path]:
    """Non-hidden entries of ``folder``; an unreadable folder is a :class:`DatasetError`."""
    try:
        return [p for p in folder.iterdir() if not p.name.startswith(".")]
    except PermissionError as e:
        raise DatasetError(f"folder {str(folder)!r} cannot be listed: permission denied") from e


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in _entries(folder) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def _subfolders(folder: Path) -> list[Path]:
    return sorted((d for d in _entries(folder) if d.is_dir()),
                  key=lambda d: (d.name != "good", natural_key(d.name)))


# ----------------------------------------------------------------------------- train


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
        rel = _clean_rel(fr.get("file_path", ""))
        if rel.parts[:-1][-2:] == ("train", "good"):
            paths.append(frame_image_path(root, str(rel), json_path=json_path, index=i))
        else:
            p = good / f"{i}.png"
            if not p.is_file():
                raise DatasetNotFoundError(
                    f"{str(json_path)!r}: frame {i} has no file_path into train/good and its "
                    f"image {str(p)!r} does not exist"
                )
            paths.append(p)
    check_unique(paths, json_path)
    return paths


def _load_train(root: Path, resolution, background, upsample, workers) -> tuple[PosedViews, bool]:
    json_path = require_file(root / "transforms.json", "pose file")
    fov, frames = read_transforms(json_path)
    c2w = np.stack([parse_pose(fr, i, json_path) for i, fr in enumerate(frames)])
    paths = _train_image_paths(root, frames, json_path)
    return posed_views(paths, c2w, fov, background=background, resolution=resolution,
                       upsample=upsample, workers=workers)


def load_mad_train(
    path: str | os.PathLike,
    resolution: int | None = None,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    upsample: bool = False,
    workers: int | None = None,
) -> PosedViews:
    """The defect-free posed training views of a MAD-Sim class as :class:`PosedViews`
    (``resolution``/``upsample`` as :func:`splatjax.data.load_blender`)."""
    root = require_dir(Path(path), "MAD class folder")
    return _load_train(root, resolution, background, upsample, workers)[0]


def detect(path: Path) -> bool:
    """A MAD-Sim class folder: ``transforms.json`` and ``train/good/`` are there."""
    path = Path(path)
    return (path / "transforms.json").is_file() and (path / "train" / "good").is_dir()


def load_fit_data(path: str | os.PathLike, options: LoadOptions = LoadOptions()) -> FitData:
    """The defect-free training views of a class (no validation views, no initial
    points; ``options.val_split`` is ignored)."""
    return FitData(train=load_mad_train(path, options.resolution, options.background, upsample=options.upsample))


# ----------------------------------------------------------------------------- test


@dataclasses.dataclass(frozen=True)
class _TestFiles:
    files: list[Path]
    kinds: list[str]
    masks: list[Path | None]   # the mask file of each image (None: good without a mask)


def _mask_of(gt: Path, kind: str, image: Path) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        m = gt / kind / f"{image.stem}_mask{suffix}"
        if m.is_file():
            return m
    return None


def _check_orphan_masks(root: Path, stems: dict[str, set[str]]) -> None:
    """Every file in ``ground_truth/<type>/`` must be ``<n>_mask.<ext>`` of an existing
    ``test/<type>/<n>.<ext>``."""
    gt = root / "ground_truth"
    if not gt.is_dir():
        return
    for d in _subfolders(gt):
        for m in _image_files(d):
            if not m.stem.endswith("_mask"):
                raise DatasetError(f"mask {str(m)!r} is not named <n>_mask{m.suffix} after a test image "
                                   f"test/{d.name}/<n>.png")
            if m.stem[:-5] not in stems.get(d.name, set()):
                raise DatasetError(
                    f"mask {str(m)!r} has no test image: "
                    f"{str(root / 'test' / d.name / (m.stem[:-5] + '.png'))!r} does not exist (deleted or renamed?)")


def _test_files(root: Path) -> _TestFiles:
    """The test images, their types and mask files, checked to match up one to one."""
    test_dir = require_dir(root / "test", "test folder")
    gt = root / "ground_truth"
    files, kinds, masks = [], [], []
    stems: dict[str, set[str]] = {}
    for d in _subfolders(test_dir):
        seen: dict[str, Path] = {}
        for f in _image_files(d):
            if f.stem in seen:
                raise DatasetError(f"test images {str(seen[f.stem])!r} and {str(f)!r} share the "
                                   f"name {f.stem!r} (and so one mask and pose name)")
            seen[f.stem] = f
            m = _mask_of(gt, d.name, f)
            if m is None and d.name != "good":
                raise DatasetNotFoundError(
                    f"defective test image {str(f)!r} has no mask: "
                    f"{str(gt / d.name / (f.stem + '_mask.png'))!r} does not exist")
            files.append(f)
            kinds.append(d.name)
            masks.append(m)
        stems[d.name] = set(seen)
    if not files:
        raise DatasetNotFoundError(f"no test images found under {str(test_dir)!r}")
    _check_orphan_masks(root, stems)
    return _TestFiles(files, kinds, masks)


def _read_masks(tf: _TestFiles, natives, size: tuple[int, int]) -> np.ndarray:
    out = np.zeros((len(tf.files), size[1], size[0]), dtype=bool)
    for k, (f, kind, mpath, native) in enumerate(zip(tf.files, tf.kinds, tf.masks, natives)):
        if mpath is None:
            continue
        m, mnative = read_mask(mpath, size=size)
        if mnative != native:
            raise DatasetError(
                f"mask {str(mpath)!r} is {mnative[0]}x{mnative[1]} but its image {str(f)!r} is "
                f"{native[0]}x{native[1]}"
            )
        if kind == "good":
            if m.any():
                raise DatasetError(f"mask {str(mpath)!r} marks defective pixels but its image "
                                   f"{str(f)!r} is in test/good (defect-free)")
            continue
        out[k] = m
    return out


def _load_test(root: Path, resolution, background, upsample, workers, *, transparent_peers=False,
               test_poses=None, camera_angle_x=None) -> tuple[TestSet, bool]:
    tf = _test_files(root)
    native_w, _ = image_size(tf.files[0])
    width = choose_resolution(native_w, resolution, upsample=upsample,
                              what=f"test images of {str(root)!r}")
    images, natives, transparent = _read_stack(
        tf.files, background=check_background(background), resolution=width, workers=workers,
        transparent_peers=transparent_peers)
    h, w = images.shape[1:3]
    masks = _read_masks(tf, natives, (w, h))
    labels = np.array([0 if t == "good" else 1 for t in tf.kinds], dtype=np.int32)
    rel = tuple(PurePosixPath(*f.relative_to(root).parts).as_posix() for f in tf.files)
    for a in (images, masks, labels):
        a.flags.writeable = False
    test = TestSet(images=images, masks=masks, labels=labels, defect_types=tuple(tf.kinds), paths=rel)
    if test_poses is not None:
        c2w = load_test_poses(test_poses, test, camera_angle_x=camera_angle_x)
        test = dataclasses.replace(test, c2w=c2w)
    return test, transparent


def load_mad_test(
    path: str | os.PathLike,
    resolution: int | None = None,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    upsample: bool = False,
    test_poses: str | os.PathLike | None = None,
    workers: int | None = None,
) -> TestSet:
    """The labelled test set of a MAD-Sim class: every ``test/<type>/<n>.png`` (types
    sorted with "good" first, files in numeric order), label 0 for "good" and 1 otherwise,
    masks from ``ground_truth/<type>/<n>_mask.png`` (all False for "good"), resized
    nearest-neighbour to the image resolution (``resolution``/``upsample`` as
    :func:`splatjax.data.load_blender`). With ``test_poses`` (a test-pose file) the
    set's ``c2w`` holds the true pose of every image (:func:`load_test_poses`).

    Images and masks must match up, else :class:`DatasetError` names the files: a defective
    image without its mask, a mask without its image, a mask of another size than its
    image, a mask marking pixels of a "good" image, two images with one name."""
    root = require_dir(Path(path), "MAD class folder")
    return _load_test(root, resolution, background, upsample, workers, test_poses=test_poses)[0]


def load_test_poses(
    path: str | os.PathLike, test_set: TestSet, *, camera_angle_x: float | None = None
) -> Float[np.ndarray, "M 4 4"]:
    """True camera-to-world poses (Blender/OpenGL, float64 ``[M, 4, 4]``, in the order of
    ``test_set.paths``) from a test-pose file ``{"camera_angle_x": a, "poses":
    {"test/<type>/<n>.png": 4x4}}``. Every test image needs exactly one pose and every pose
    must name a test image; each must be a rigid 4 x 4 matrix; the file's
    ``camera_angle_x`` (when present) must equal ``camera_angle_x`` (when given)."""
    path = Path(path)
    data = read_json(path, "test-pose file")
    if not isinstance(data, dict) or not isinstance(data.get("poses"), dict):
        raise DatasetError(f"{str(path)!r} is not a test-pose file: expected "
                           '{"camera_angle_x": a, "poses": {"test/<type>/<n>.png": 4x4 camera-to-world}}')
    _check_pose_fov(path, data, camera_angle_x)
    poses: dict[str, np.ndarray] = {}
    for key, value in data["poses"].items():
        rel = _clean_rel(key).as_posix()
        if rel in poses:
            raise DatasetError(f"{str(path)!r}: two poses for {rel!r}")
        poses[rel] = pose_matrix(value, f"{str(path)!r}: pose of {key!r}")
    extra = sorted(set(poses) - set(test_set.paths), key=natural_key)
    if extra:
        raise DatasetError(f"{str(path)!r} has poses for {len(extra)} images that are not in the "
                           f"test set (deleted or renamed?): {extra[:5]}")
    missing = [p for p in test_set.paths if p not in poses]
    if missing:
        raise DatasetError(f"{str(path)!r} has no pose for {len(missing)} test images: {missing[:5]}")
    c2w = np.stack([poses[p] for p in test_set.paths])
    c2w.flags.writeable = False
    return c2w


def _check_pose_fov(path: Path, data: dict, camera_angle_x: float | None) -> None:
    if "camera_angle_x" not in data:
        return
    a = data["camera_angle_x"]
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not (0.0 < a < np.pi):
        raise DatasetError(f"{str(path)!r}: camera_angle_x = {a!r} is not a number in (0, pi) radians")
    if camera_angle_x is not None and abs(a - camera_angle_x) > 1e-6 * max(1.0, abs(camera_angle_x)):
        raise DatasetError(f"{str(path)!r}: camera_angle_x = {a} differs from the training views' "
                           f"{camera_angle_x}; test and training images must share one camera")


# ----------------------------------------------------------------------------- class


def load_mad_class(
    path: str | os.PathLike,
    resolution: int | None = None,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    upsample: bool = False,
    test_poses: str | os.PathLike | None = None,
    workers: int | None = None,
) -> MADClass:
    """Load one MAD-Sim class folder (training views + labelled test set, both at the width
    chosen for the training views); see the module docstring for the layout and
    :func:`load_mad_test` for the checks. Test and training images must share one native
    size. Nothing in the folder is renamed or written."""
    root = require_dir(Path(path), "MAD class folder")
    train, transparent = _load_train(root, resolution, background, upsample, workers)
    tf = _test_files(root)
    test_native, train_native = image_size(tf.files[0]), image_size(train.paths[0])
    if test_native != train_native:
        raise DatasetError(
            f"test image {str(tf.files[0])!r} is {test_native[0]}x{test_native[1]} but the training "
            f"view {train.paths[0]!r} is {train_native[0]}x{train_native[1]}; they must share one size")
    test, _ = _load_test(root, train.width, background, upsample, workers, transparent_peers=transparent,
                         test_poses=test_poses, camera_angle_x=train.camera_angle_x)
    return MADClass(name=root.resolve().name, root=str(root), train=train, test=test)


def class_folders(paths: Sequence[str | os.PathLike]) -> list[tuple[str, Path]]:
    """``[(class name, folder)]`` for the given class folders, in order. A folder without
    ``transforms.json`` that holds class folders (a MAD-Sim root) stands for all of them.
    Two folders with one class name (compared case-insensitively, as output folders are
    named after it) raise :class:`DatasetError` naming both."""
    out: list[tuple[str, Path]] = []
    seen: dict[str, Path] = {}
    for given in paths:
        folder = require_dir(Path(given), "class folder")
        if (folder / "transforms.json").is_file():
            found = [folder]
        else:
            found = [d for d in _subfolders(folder) if (d / "transforms.json").is_file()]
            if not found:
                raise DatasetNotFoundError(f"{str(folder)!r} is not a MAD class folder (no transforms.json) "
                                           "and holds no class folders")
        for d in found:
            name = d.resolve().name
            if name.casefold() in seen:
                raise DatasetError(f"class folders {str(seen[name.casefold()])!r} and {str(d)!r} have the "
                                   f"same class name {name!r}; results are stored per class name")
            seen[name.casefold()] = d
            out.append((name, d))
    if not out:
        raise DatasetNotFoundError("no class folder given")
    return out
