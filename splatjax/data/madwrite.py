"""Writing a MAD-Sim class folder (the layout :func:`splatjax.data.load_mad_class` reads),
shared by the generators (:mod:`.toy`, :mod:`.synth`).

:class:`MadWriter` writes ``train/good/<i>.png``, ``test/<type>/<n>.png`` and
``ground_truth/<type>/<n>_mask.png`` as they come and ``transforms.json`` +
``test_poses.json`` (Blender/OpenGL camera-to-world poses) at :meth:`MadWriter.finish`.
:func:`write_staged` builds a folder in a hidden temporary sibling and renames it into
place at the end, so an interrupted run never leaves a complete-looking folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..files import write_json
from .images import write_png

__all__ = ["MadWriter", "write_staged"]


class MadWriter:
    """Writes one MAD-Sim class folder under ``root`` for cameras of ``camera_angle_x``."""

    def __init__(self, root: str | os.PathLike, camera_angle_x: float):
        self.root = Path(root)
        self.camera_angle_x = float(camera_angle_x)
        self.frames: list[dict] = []
        self.test_poses: dict[str, list] = {}

    def train(self, image: np.ndarray, c2w: np.ndarray) -> str:
        """Write the next training view ``train/good/<i>.png``; returns its relative path."""
        rel = f"train/good/{len(self.frames)}.png"
        write_png(self.root / rel, image)
        self.frames.append({"file_path": rel, "transform_matrix": np.asarray(c2w, float).tolist()})
        return rel

    def test(self, kind: str, n: int, image: np.ndarray, c2w: np.ndarray, mask: np.ndarray | None = None) -> str:
        """Write test image ``test/<kind>/<n>.png`` (and its mask unless ``kind`` is good);
        returns its relative path."""
        rel = f"test/{kind}/{n}.png"
        write_png(self.root / rel, image)
        if mask is not None:
            write_png(self.root / "ground_truth" / kind / f"{n}_mask.png", np.asarray(mask, bool))
        self.test_poses[rel] = np.asarray(c2w, float).tolist()
        return rel

    def finish(self) -> None:
        """Write ``transforms.json`` and ``test_poses.json``."""
        fov = self.camera_angle_x
        write_json(self.root / "transforms.json", {"camera_angle_x": fov, "frames": self.frames}, indent=1)
        write_json(self.root / "test_poses.json", {"camera_angle_x": fov, "poses": self.test_poses}, indent=1)


def write_staged(out: str | os.PathLike, generate: Callable[[Path], object], *, replace: bool = False) -> Path:
    """Run ``generate(tmp)`` in a new hidden sibling ``.<name>.tmp-*`` of ``out`` and rename
    it to ``out`` when it returns (an existing empty ``out`` is replaced; a non-empty one
    only with ``replace``). On any exception, Ctrl-C included, the sibling is removed and
    ``out`` is left as it was. Returns ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        generate(tmp)
        if replace and out.exists() and any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "d")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if out.exists():
                out.rmdir()
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
