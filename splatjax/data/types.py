"""Containers returned by the data loaders (plain numpy on the host; read-only views)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..camera import Camera, camera_from_blender, stack_cameras

__all__ = ["PosedViews", "FitData", "TestSet", "MADClass"]


@dataclasses.dataclass(frozen=True)
class PosedViews:
    """Posed images of one object.

    images: [N, H, W, 3] float32 in [0, 1], RGBA already composited on ``background``.
    c2w: [N, 4, 4] float64 camera-to-world in Blender/OpenGL axes (exactly as in the file
    for Blender/MAD-Sim; converted from COLMAP's world-to-camera).
    camera_angle_x: horizontal field of view in radians (of the first view when
    ``intrinsics`` is given).
    paths: the image file of each view.
    intrinsics: None (square pixels, principal point at the centre, focal length from
    ``camera_angle_x``) or [N, 4] float64 (fx, fy, cx, cy) in pixels of the loaded images.
    """

    images: np.ndarray
    c2w: np.ndarray
    camera_angle_x: float
    paths: tuple[str, ...]
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    intrinsics: np.ndarray | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def camera(self, i: int) -> Camera:
        """OpenCV camera of view i, intrinsics for the loaded resolution."""
        cam = camera_from_blender(self.c2w[i], self.camera_angle_x, self.width, self.height)
        if self.intrinsics is None:
            return cam
        fx, fy, cx, cy = (jnp.asarray(v, cam.fx.dtype) for v in self.intrinsics[i])
        return Camera(R=cam.R, t=cam.t, fx=fx, fy=fy, cx=cx, cy=cy, width=cam.width, height=cam.height)

    @property
    def cameras(self) -> Camera:
        """All N cameras stacked (leading axis N on each array leaf)."""
        return stack_cameras([self.camera(i) for i in range(len(self))])

    def subset(self, index) -> "PosedViews":
        index = np.asarray(index)
        return dataclasses.replace(
            self, images=self.images[index], c2w=self.c2w[index],
            paths=tuple(np.asarray(self.paths, dtype=object)[index].tolist()),
            intrinsics=None if self.intrinsics is None else self.intrinsics[index],
        )

    def images_jax(self) -> jnp.ndarray:
        return jnp.asarray(self.images)


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """How a format's ``load_fit_data`` reads a folder: the width to load at (None: the
    data's own, capped at 400 px; see :func:`splatjax.data.choose_resolution`), the
    background RGB in [0, 1] transparent images are composited on, whether a width above
    the data's is allowed, and the validation split (Blender folders)."""

    resolution: int | None = None
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    upsample: bool = False
    val_split: str | None = "val"


@dataclasses.dataclass(frozen=True)
class FitData:
    """What a dataset format gives a fit: the training views, optional validation views
    and an optional initial point cloud ``points`` [M, 6] float32 (xyz, rgb in [0, 1])."""

    train: PosedViews
    val: PosedViews | None = None
    points: np.ndarray | None = None

    def holding_out(self, k: int) -> "FitData":
        """Without a validation split, ``min(k, N // 8)`` of the N training views moved to
        ``val``, evenly spread (indices ``round(linspace(0, N - 1, k + 2))[1:-1]``,
        deterministic): at most an eighth, so a small set keeps its views for the fit.
        Unchanged when ``val`` exists or no view is to be held out."""
        n = len(self.train)
        k = min(int(k), n // 8)
        if self.val is not None or k <= 0:
            return self
        held = np.unique(np.round(np.linspace(0, n - 1, k + 2)[1:-1]).astype(np.int64))
        rest = np.setdiff1d(np.arange(n), held)
        return dataclasses.replace(self, train=self.train.subset(rest), val=self.train.subset(held))


@dataclasses.dataclass(frozen=True)
class TestSet:
    """Query images with labels and ground-truth masks (poses unknown).

    images: [M, H, W, 3] float32 in [0, 1]; masks: [M, H, W] bool (True = defective);
    labels: [M] int (0 = good, 1 = defective); defect_types: e.g. "good", "Burrs";
    paths: relative paths such as "test/Burrs/3.png" (the keys of a test-pose file);
    c2w: [M, 4, 4] float64 true camera-to-world poses (Blender/OpenGL) when a test-pose
    file was given, else None.
    """

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    defect_types: tuple[str, ...]
    paths: tuple[str, ...]
    c2w: np.ndarray | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclasses.dataclass(frozen=True)
class MADClass:
    """One MAD-Sim class folder: defect-free posed training views and the labelled test set."""

    name: str
    root: str
    train: PosedViews
    test: TestSet
