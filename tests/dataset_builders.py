"""Tiny dataset folders written from scratch for the loader tests (import as
`from dataset_builders import ...`), and a snapshot of a folder's bytes and times."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def find_lego() -> Path | None:
    """The shared NeRF lego folder (``shared/data/nerf_synthetic_lego_400`` in a folder
    above the repository), or None."""
    for parent in Path(__file__).resolve().parents:
        p = parent / "shared" / "data" / "nerf_synthetic_lego_400"
        if (p / "transforms_train.json").is_file():
            return p
    return None


def rgba(value: int, size=(8, 8), alpha=255) -> Image.Image:
    """An RGBA image: red ``value``, green ``255 - value``, blue 7, constant alpha."""
    a = np.zeros((size[1], size[0], 4), np.uint8)
    a[..., 0] = value
    a[..., 1] = 255 - value
    a[..., 2] = 7
    a[..., 3] = alpha
    return Image.fromarray(a)


def object_rgba(size=(16, 16), color=(200, 30, 30)) -> Image.Image:
    """An opaque square object on a transparent background (transparent pixels black)."""
    a = np.zeros((size[1], size[0], 4), np.uint8)
    h, w = size[1], size[0]
    a[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = [*color, 255]
    return Image.fromarray(a)


def pose(i: int) -> list:
    m = np.eye(4)
    m[:3, 3] = [0.0, 0.0, 3.0 + 0.01 * i]
    return m.tolist()


def make_mad(root: Path, *, n_train=4, n_test=None, size=(8, 8), file_paths=None,
             test_poses=False) -> Path:
    """A tiny MAD-Sim class; train image i has red channel 10 * i so frames can be matched,
    test image k has red channel k. ``test_poses`` also writes ``test_poses.json``."""
    n_test = n_test or {"good": 3, "Burrs": 2, "Missing": 1, "Stains": 12}
    (root / "train" / "good").mkdir(parents=True)
    for i in range(n_train):
        rgba(10 * i, size).save(root / "train" / "good" / f"{i}.png")
    fps = file_paths or [f"train/good/{i}.png" for i in range(n_train)]
    frames = [{"file_path": fp, "transform_matrix": pose(i)} for i, fp in enumerate(fps)]
    (root / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))
    poses = {}
    for t, n in n_test.items():
        (root / "test" / t).mkdir(parents=True)
        if t != "good":
            (root / "ground_truth" / t).mkdir(parents=True)
        for k in range(1, n + 1):
            rgba(k, size).save(root / "test" / t / f"{k}.png")
            poses[f"test/{t}/{k}.png"] = pose(100 + k)
            if t != "good":
                m = np.zeros((size[1], size[0]), np.uint8)
                m[:2, : min(k, size[0])] = 255
                Image.fromarray(m).save(root / "ground_truth" / t / f"{k}_mask.png")
    if test_poses:
        (root / "test_poses.json").write_text(json.dumps({"camera_angle_x": 0.7, "poses": poses}))
    return root


def make_blender(root: Path, *, split="train", n=3, size=(8, 8), file_paths=None,
                 json_name=None) -> Path:
    """A tiny Blender/NeRF folder: ``<split>/r_<i>.png`` and ``transforms_<split>.json``."""
    (root / split).mkdir(parents=True)
    fps = file_paths or [f"./{split}/r_{i}" for i in range(n)]
    for i, fp in enumerate(fps):
        name = Path(fp).name if Path(fp).suffix else Path(fp).name + ".png"
        rgba(10 * i, size).save(root / split / name)
    frames = [{"file_path": fp, "transform_matrix": pose(i)} for i, fp in enumerate(fps)]
    name = json_name or f"transforms_{split}.json"
    (root / name).write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))
    return root


# COLMAP model ids and parameter counts (COLMAP's src/colmap/sensor/models.h)
COLMAP_MODELS = {"SIMPLE_PINHOLE": (0, 3), "PINHOLE": (1, 4), "SIMPLE_RADIAL": (2, 4), "RADIAL": (3, 5),
                 "OPENCV": (4, 8), "OPENCV_FISHEYE": (5, 8)}


def colmap_pose(c2w_blender) -> tuple[list, list]:
    """COLMAP (qvec w x y z, tvec) world-to-camera of a Blender/OpenGL camera-to-world
    (scipy's quaternion, an implementation independent of the loader's)."""
    from scipy.spatial.transform import Rotation

    w2c = np.linalg.inv(np.asarray(c2w_blender, np.float64) @ np.diag([1.0, -1.0, -1.0, 1.0]))
    x, y, z, w = Rotation.from_matrix(w2c[:3, :3]).as_quat()
    return [w, x, y, z], w2c[:3, 3].tolist()


def write_colmap(sparse: Path, cameras, images, points=None, colors=None, *, binary: bool) -> Path:
    """Write a COLMAP sparse model into ``sparse``: ``cameras`` = [(id, model, width,
    height, params)], ``images`` = [(id, qvec, tvec, camera_id, name)], ``points`` [M, 3]
    with ``colors`` [M, 3] uint8 (None: no points3D file). Each image gets two 2D points
    and each point a track of two observations, as in real models (the loader skips them)."""
    import struct

    sparse.mkdir(parents=True, exist_ok=True)
    pts = [] if points is None else list(zip(np.asarray(points, float), np.asarray(colors, int)))
    n2d = 2
    if binary:
        with open(sparse / "cameras.bin", "wb") as f:
            f.write(struct.pack("<Q", len(cameras)))
            for cid, model, w, h, params in cameras:
                f.write(struct.pack("<iiQQ", cid, COLMAP_MODELS[model][0], w, h))
                f.write(struct.pack(f"<{len(params)}d", *params))
        with open(sparse / "images.bin", "wb") as f:
            f.write(struct.pack("<Q", len(images)))
            for iid, q, t, cid, name in images:
                f.write(struct.pack("<i4d3di", iid, *q, *t, cid) + name.encode() + b"\0")
                f.write(struct.pack("<Q", n2d))
                for k in range(n2d):
                    f.write(struct.pack("<ddq", 1.5 * k, 2.5, k if k < len(pts) else -1))
        if points is not None:
            with open(sparse / "points3D.bin", "wb") as f:
                f.write(struct.pack("<Q", len(pts)))
                for k, (xyz, rgb) in enumerate(pts):
                    f.write(struct.pack("<Q3d3BdQ", k + 1, *xyz, *rgb, 0.5, 2))
                    f.write(struct.pack("<iiii", images[0][0], 0, images[-1][0], 1))
        return sparse
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    lines += [" ".join([str(cid), model, str(w), str(h)] + [repr(float(p)) for p in params])
              for cid, model, w, h, params in cameras]
    (sparse / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:", "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for iid, q, t, cid, name in images:
        lines.append(" ".join([str(iid)] + [repr(float(v)) for v in (*q, *t)] + [str(cid), name]))
        lines.append(" ".join(f"{1.5 * k} 2.5 {k if k < len(pts) else -1}" for k in range(n2d)))
    (sparse / "images.txt").write_text("\n".join(lines) + "\n")
    if points is not None:
        lines = ["# 3D point list with one line of data per point:",
                 "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
        lines += [" ".join([str(k + 1)] + [repr(float(v)) for v in xyz] + [str(int(c)) for c in rgb]
                           + ["0.5", str(images[0][0]), "0", str(images[-1][0]), "1"])
                  for k, (xyz, rgb) in enumerate(pts)]
        (sparse / "points3D.txt").write_text("\n".join(lines) + "\n")
    return sparse


def make_colmap(root: Path, *, binary: bool, sparse="sparse/0", cameras=None, n_points=40) -> dict:
    """A tiny COLMAP folder: three 16x12 RGBA images (half transparent), two cameras,
    random rotations, ``n_points`` coloured points in [-1, 1]^3, the model in ``sparse``.
    Image ids are not in name order. Returns what was written."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(7)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = ["c.png", "a.png", "b.png"]
    for k, name in enumerate(names):
        a = rng.integers(0, 256, (12, 16, 4)).astype(np.uint8)
        a[:, :8, 3] = 0 if k else 128
        a[:, 8:, 3] = 255
        Image.fromarray(a, "RGBA").save(root / "images" / name)
    cameras = cameras or [(3, "PINHOLE", 16, 12, [20.0, 22.0, 7.5, 6.25]),
                          (5, "SIMPLE_PINHOLE", 16, 12, [18.0, 8.0, 6.0])]
    rots = Rotation.random(3, random_state=3)
    images = []
    for k, name in enumerate(names):
        x, y, z, w = rots[k].as_quat()
        images.append((k + 1, [w, x, y, z], [0.1 * k, -0.2, 3.0 + k], cameras[k % len(cameras)][0], name))
    pts = rng.uniform(-1, 1, (n_points, 3))
    cols = rng.integers(0, 256, (n_points, 3))
    write_colmap(root / sparse, cameras, images, pts, cols, binary=binary)
    return {"images": images, "cameras": {c[0]: c for c in cameras}, "points": pts, "colors": cols,
            "rots": rots}


def tree_state(root: Path) -> dict:
    """Every path under ``root`` with (is folder, mtime ns, size, bytes of files)."""
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_mtime_ns, p.stat().st_size,
                                       None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


def raises(exc, fn, *names) -> str:
    """Call ``fn``, expect ``exc``; every one of ``names`` must appear in the message."""
    import pytest

    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for n in names:
        assert str(n) in msg, msg
    return msg
