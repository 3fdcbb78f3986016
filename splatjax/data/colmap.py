"""COLMAP sparse models: posed images and the initial point cloud of a fit.

Layout of a COLMAP folder ``DIR``::

    DIR/images/<name>              the images named in images.txt / images.bin
    DIR/sparse/0/  or  DIR/sparse/ cameras, images, points3D as .bin (preferred when
                                   cameras.bin is there) or .txt; points3D is optional

Poses: COLMAP stores world-to-camera rotation as a unit quaternion (qw, qx, qy, qz) and
translation t in the OpenCV convention (x right, y down, looking down +z), as
:class:`~splatjax.camera.Camera` does; the loader converts them to the Blender/OpenGL
camera-to-world of :class:`~splatjax.data.types.PosedViews` (``camera(i)`` gives back the
same R and t). Pixel centres sit at (j + 0.5, i + 0.5) in both, so the principal point is
used as stored; intrinsics are scaled with the image when it is resized.

Cameras: SIMPLE_PINHOLE, PINHOLE and, with zero distortion, SIMPLE_RADIAL, RADIAL and
OPENCV load directly. A camera with lens distortion is refused (undistort first:
``colmap image_undistorter`` writes a PINHOLE model and undistorted images in this layout);
other models (fisheye, ...) are refused too. Views are ordered by image name.

Binary record layout (little endian; COLMAP's ``src/colmap/scene/reconstruction_io.cc``):

- cameras.bin: uint64 count; per camera int32 camera_id, int32 model_id, uint64 width,
  uint64 height, float64 params[n(model)].
- images.bin: uint64 count; per image int32 image_id, float64 qvec[4] (w, x, y, z),
  float64 tvec[3], int32 camera_id, name (bytes up to a NUL), uint64 num_points2D, then
  num_points2D x (float64 x, float64 y, int64 point3D_id).
- points3D.bin: uint64 count; per point uint64 point3D_id, float64 xyz[3], uint8 rgb[3],
  float64 error, uint64 track_length, then track_length x (int32 image_id, int32
  point2D_idx).

Anything malformed (truncated or garbled files, unknown camera ids or models, missing
images) raises a one-line :class:`~splatjax.errors.DatasetError` naming the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

from ..camera import OPENGL_TO_OPENCV
from ..errors import DatasetError, DatasetNotFoundError
from ..files import require_dir
from .blender import check_unique, posed_views
from .images import image_size
from .types import FitData, LoadOptions

__all__ = ["CAMERA_MODELS", "ColmapCamera", "ColmapImage", "ColmapModel", "detect", "find_sparse",
           "read_model", "load_colmap", "load_fit_data", "qvec_to_rotation"]

#: COLMAP model id -> (name, number of parameters).
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5), 4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5), 8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12), 11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
_PARAMS_OF = {name: n for name, n in CAMERA_MODELS.values()}
# model -> (index of fx, fy, cx, cy in params, indices of the distortion parameters)
_PINHOLE_LIKE = {
    "SIMPLE_PINHOLE": ((0, 0, 1, 2), ()), "PINHOLE": ((0, 1, 2, 3), ()),
    "SIMPLE_RADIAL": ((0, 0, 1, 2), (3,)), "RADIAL": ((0, 0, 1, 2), (3, 4)),
    "OPENCV": ((0, 1, 2, 3), (4, 5, 6, 7)),
}


@dataclasses.dataclass(frozen=True)
class ColmapCamera:
    id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class ColmapImage:
    id: int
    qvec: tuple[float, float, float, float]  # world-to-camera rotation (w, x, y, z)
    tvec: tuple[float, float, float]  # world-to-camera translation
    camera_id: int
    name: str


@dataclasses.dataclass(frozen=True)
class ColmapModel:
    """A sparse model; ``points`` [M, 6] float32 (xyz, rgb in [0, 1]), M = 0 without
    points3D; ``files``: the cameras, images and points3D files read (None: absent)."""

    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: np.ndarray
    files: tuple[Path, Path, Path | None]


def find_sparse(root: str | os.PathLike) -> Path | None:
    """The model folder of ``root``: ``sparse/0`` or ``sparse`` holding cameras.bin or
    cameras.txt, else None."""
    root = Path(root)
    for d in (root / "sparse" / "0", root / "sparse"):
        if (d / "cameras.bin").is_file() or (d / "cameras.txt").is_file():
            return d
    return None


def detect(path: Path) -> bool:
    """A COLMAP folder: a sparse model (see :func:`find_sparse`) is there."""
    return find_sparse(path) is not None


# ----------------------------------------------------------------------------- text
def _text_records(path: Path):
    """(line number, fields) of each non-empty, non-comment line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{str(path)!r} is not a COLMAP text file (not UTF-8 text: {e.reason})") from e
    except OSError as e:
        raise DatasetError(f"cannot read {str(path)!r}: {e.strerror or e}") from e
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), 1)]


def _finite(values) -> bool:
    """All finite, also as float32 (what the cameras and the fit use)."""
    with np.errstate(over="ignore"):
        return bool(np.all(np.isfinite(np.asarray(values, np.float64).astype(np.float32))))


def _bad_line(path: Path, n: int, what: str) -> DatasetError:
    return DatasetError(f"{str(path)!r} line {n}: {what}")


def _camera(path: Path, where: str, cam_id: int, model: str, width: int, height: int, params) -> ColmapCamera:
    if model not in _PARAMS_OF:
        raise DatasetError(f"{str(path)!r}{where}: camera {cam_id} has unknown model {model!r}")
    if len(params) != _PARAMS_OF[model]:
        raise DatasetError(f"{str(path)!r}{where}: camera {cam_id} ({model}) has {len(params)} parameters, "
                           f"expected {_PARAMS_OF[model]}")
    if not (0 < width < 1 << 20 and 0 < height < 1 << 20):
        raise DatasetError(f"{str(path)!r}{where}: camera {cam_id} has image size {width}x{height}")
    if not _finite(params):
        raise DatasetError(f"{str(path)!r}{where}: camera {cam_id} has non-finite parameters")
    return ColmapCamera(cam_id, model, int(width), int(height), tuple(float(p) for p in params))


def _read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    cams = {}
    for n, f in _text_records(path):
        if not f or f[0].startswith("#"):
            continue
        try:
            cam_id, model, width, height = int(f[0]), f[1], int(f[2]), int(f[3])
            params = [float(v) for v in f[4:]]
        except (IndexError, ValueError):
            raise _bad_line(path, n, "expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS...") from None
        cams[cam_id] = _camera(path, f" line {n}", cam_id, model, width, height, params)
    return cams


def _image(path: Path, where: str, img_id: int, q, t, cam_id: int, name: str) -> ColmapImage:
    q, t = tuple(float(v) for v in q), tuple(float(v) for v in t)
    if not _finite(q + t) or math.hypot(*q) < 1e-8:
        raise DatasetError(f"{str(path)!r}{where}: image {img_id} has an invalid pose (quaternion {q}, "
                           f"translation {t})")
    if not name:
        raise DatasetError(f"{str(path)!r}{where}: image {img_id} has an empty name")
    return ColmapImage(img_id, q, t, cam_id, name)


def _read_images_text(path: Path) -> dict[int, ColmapImage]:
    images = {}
    records = iter(_text_records(path))
    for n, f in records:
        if not f or f[0].startswith("#"):
            continue
        try:
            img_id, q, t, cam_id, name = int(f[0]), f[1:5], f[5:8], int(f[8]), " ".join(f[9:])
            q, t = [float(v) for v in q], [float(v) for v in t]
        except (IndexError, ValueError):
            raise _bad_line(path, n, "expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME") from None
        images[img_id] = _image(path, f" line {n}", img_id, q, t, cam_id, name)
        points2d = next(records, None)  # the image's POINTS2D line (may be empty)
        if points2d is not None and len(points2d[1]) % 3:
            raise _bad_line(path, points2d[0], f"the points of image {img_id} are not (X, Y, POINT3D_ID) triples")
    return images


def _read_points_text(path: Path) -> np.ndarray:
    rows = []
    for n, f in _text_records(path):
        if not f or f[0].startswith("#"):
            continue
        try:
            xyz, rgb = [float(v) for v in f[1:4]], [int(v) for v in f[4:7]]
            if len(xyz) != 3 or len(rgb) != 3 or len(f) < 8:
                raise ValueError
        except ValueError:
            raise _bad_line(path, n, "expected POINT3D_ID X Y Z R G B ERROR TRACK...") from None
        rows.append(xyz + rgb)
    return _points(path, np.asarray(rows, np.float64).reshape(-1, 6))


def _points(path: Path, a: np.ndarray) -> np.ndarray:
    if not _finite(a[:, :3]):
        raise DatasetError(f"{str(path)!r}: some points have non-finite coordinates")
    if a.size and (a[:, 3:].min() < 0 or a[:, 3:].max() > 255):
        raise DatasetError(f"{str(path)!r}: point colours must be integers in 0..255")
    out = np.concatenate([a[:, :3], a[:, 3:] / 255.0], 1).astype(np.float32)
    out.flags.writeable = False
    return out


# ----------------------------------------------------------------------------- binary
class _Binary:
    """Sequential little-endian reads of a whole file; running out is a DatasetError."""

    def __init__(self, path: Path):
        self.path, self.pos = path, 0
        try:
            self.data = path.read_bytes()
        except OSError as e:
            raise DatasetError(f"cannot read {str(path)!r}: {e.strerror or e}") from e

    def read(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        self.need(size, what)
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def need(self, size: int, what: str) -> None:
        if size < 0 or self.pos + size > len(self.data):
            raise DatasetError(f"{str(self.path)!r} is truncated or garbled: {what} would take {size} bytes from "
                               f"byte {self.pos} but the file has {len(self.data)}")

    def skip(self, size: int, what: str) -> None:
        self.need(size, what)
        self.pos += size

    def name(self, what: str) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise DatasetError(f"{str(self.path)!r} is truncated or garbled: {what} has no terminating NUL byte")
        raw, self.pos = self.data[self.pos:end], end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetError(f"{str(self.path)!r} is garbled: {what} is not UTF-8 ({raw[:40]!r})") from None

    def count(self) -> int:
        return self.read("Q", "the record count")[0]

    def done(self, n: int) -> None:
        if self.pos != len(self.data):
            raise DatasetError(f"{str(self.path)!r} is garbled: {len(self.data) - self.pos} bytes follow the last of "
                               f"its {n} records")


def _read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    b, cams = _Binary(path), {}
    n = b.count()
    for k in range(n):
        cam_id, model_id, width, height = b.read("iiQQ", f"camera record {k}")
        if model_id not in CAMERA_MODELS:
            raise DatasetError(f"{str(path)!r} is garbled: camera {cam_id} (record {k}) has unknown model id {model_id}")
        model, nparams = CAMERA_MODELS[model_id]
        params = b.read(f"{nparams}d", f"the parameters of camera {cam_id}")
        cams[cam_id] = _camera(path, "", cam_id, model, width, height, params)
    b.done(n)
    return cams


def _read_images_binary(path: Path) -> dict[int, ColmapImage]:
    b, images = _Binary(path), {}
    n = b.count()
    for k in range(n):
        img_id, *qt, cam_id = b.read("i7di", f"image record {k}")
        name = b.name(f"the name of image {img_id}")
        num2d = b.read("Q", f"the point count of image {img_id}")[0]
        b.skip(24 * num2d, f"the {num2d} points of image {img_id}")
        images[img_id] = _image(path, "", img_id, qt[:4], qt[4:], cam_id, name)
    b.done(n)
    return images


def _read_points_binary(path: Path) -> np.ndarray:
    b = _Binary(path)
    n = b.count()
    b.need(min(n, len(b.data)) * 51, f"{n} point records")  # 51 bytes before each track
    rows = np.empty((n, 6), np.float64)
    for k in range(n):
        _, x, y, z, r, g, bl, _, track = b.read("Q3d3BdQ", f"point record {k}")
        b.skip(8 * track, f"the track of point record {k}")
        rows[k] = (x, y, z, r, g, bl)
    b.done(n)
    return _points(path, rows)


# ----------------------------------------------------------------------------- model
def read_model(sparse: str | os.PathLike) -> ColmapModel:
    """The COLMAP model in folder ``sparse``: the binary files when cameras.bin is there,
    else the text ones; points3D may be missing (no points)."""
    sparse = Path(sparse)
    ext = ".bin" if (sparse / "cameras.bin").is_file() else ".txt"
    binary = ext == ".bin"
    files = [sparse / f"{stem}{ext}" for stem in ("cameras", "images", "points3D")]
    for f in files[:2]:
        if not f.is_file():
            raise DatasetNotFoundError(f"COLMAP model {str(sparse)!r} has no {f.name!r} (next to its cameras{ext})")
    cameras = (_read_cameras_binary if binary else _read_cameras_text)(files[0])
    images = (_read_images_binary if binary else _read_images_text)(files[1])
    if not images:
        raise DatasetError(f"{str(files[1])!r} lists no images")
    points_file = files[2] if files[2].is_file() else None
    if points_file is None:
        points = np.zeros((0, 6), np.float32)
    else:
        points = (_read_points_binary if binary else _read_points_text)(points_file)
    return ColmapModel(cameras, images, points, (files[0], files[1], points_file))


def qvec_to_rotation(q: Sequence[float]) -> np.ndarray:
    """3 x 3 rotation of the quaternion (w, x, y, z) (normalised first)."""
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _pinhole(cam: ColmapCamera, cameras_file: Path) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of a camera without lens distortion, else a DatasetError."""
    if cam.model not in _PINHOLE_LIKE:
        raise DatasetError(f"{str(cameras_file)!r}: camera {cam.id} has model {cam.model}, which is not supported "
                           "(use SIMPLE_PINHOLE or PINHOLE: undistort the images first, e.g. colmap image_undistorter)")
    idx, dist = _PINHOLE_LIKE[cam.model]
    k = [cam.params[i] for i in dist]
    if any(v != 0.0 for v in k):
        raise DatasetError(f"{str(cameras_file)!r}: camera {cam.id} ({cam.model}) has lens distortion {k}; undistort "
                           "the images first (colmap image_undistorter) and fit its output folder")
    fx, fy, cx, cy = (cam.params[i] for i in idx)
    if not (fx > 0 and fy > 0):
        raise DatasetError(f"{str(cameras_file)!r}: camera {cam.id} has focal length {fx}, {fy} (must be > 0)")
    return fx, fy, cx, cy


def load_colmap(
    path: str | os.PathLike,
    resolution: int | None = None,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    upsample: bool = False,
    workers: int | None = None,
) -> FitData:
    """A COLMAP folder (see the module docstring) as :class:`FitData`: all registered
    images as the training views (ordered by name; ``resolution``, ``background`` and
    ``upsample`` as :func:`splatjax.data.load_blender`, intrinsics scaled to the loaded
    size) and the points3D as the initial points (None when there are none)."""
    root = require_dir(Path(path), "dataset folder")
    sparse = find_sparse(root)
    if sparse is None:
        raise DatasetNotFoundError(f"{str(root)!r} has no COLMAP model (sparse/0/ or sparse/ with cameras.bin or "
                                   "cameras.txt)")
    model = read_model(sparse)
    cams_file, imgs_file, _ = model.files
    image_dir = require_dir(root / "images", "COLMAP image folder")
    images = sorted(model.images.values(), key=lambda im: im.name)
    paths, c2w, intr = [], [], []
    for im in images:
        cam = model.cameras.get(im.camera_id)
        if cam is None:
            raise DatasetError(f"{str(imgs_file)!r}: image {im.id} ({im.name}) uses camera {im.camera_id}, which "
                               f"{cams_file.name} does not define")
        intr.append(_pinhole(cam, cams_file))
        p = image_dir / im.name
        if not p.is_file():
            raise DatasetNotFoundError(f"{str(imgs_file)!r}: image {im.id} is {im.name!r}, but {str(p)!r} does not "
                                       "exist")
        paths.append(p)
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = qvec_to_rotation(im.qvec), im.tvec
        c2w.append(np.linalg.inv(w2c) @ OPENGL_TO_OPENCV)
    check_unique(paths, imgs_file)
    native = image_size(paths[0])
    for im in images:
        cam = model.cameras[im.camera_id]
        if (cam.width, cam.height) != native:
            raise DatasetError(f"{str(cams_file)!r}: camera {cam.id} is {cam.width}x{cam.height} but image "
                               f"{str(paths[0])!r} is {native[0]}x{native[1]}")
    fov = 2.0 * math.atan(0.5 * native[0] / intr[0][0])
    views, _ = posed_views(paths, np.stack(c2w), fov, background=background, resolution=resolution,
                           upsample=upsample, workers=workers)
    sx, sy = views.width / native[0], views.height / native[1]
    k = np.asarray(intr, np.float64) * [sx, sy, sx, sy]
    k.flags.writeable = False
    views = dataclasses.replace(views, intrinsics=k)
    return FitData(train=views, points=model.points if len(model.points) else None)


def load_fit_data(path: str | os.PathLike, options: LoadOptions = LoadOptions()) -> FitData:
    """:func:`load_colmap` for a fit (no validation views: ``options.val_split`` is ignored)."""
    return load_colmap(path, options.resolution, options.background, upsample=options.upsample)
