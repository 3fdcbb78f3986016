"""The dataset formats a fit can read, in one table, and the format of a folder.

Each format is a module of :mod:`splatjax.data` with ``detect(path) -> bool`` (does this
folder look like one of mine? cheap: file names only) and ``load_fit_data(path,
options: LoadOptions) ->`` :class:`~splatjax.data.types.FitData` (training views, optional validation views and
initial points, with the resolution policy of :func:`~splatjax.data.choose_resolution`).
Adding a format takes its module and one :class:`DatasetFormat` entry in ``_BUILT_IN``
(or, from outside the package, :func:`register_format`); ``splatjax fit`` asks
:func:`detect_format` and needs nothing else.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import DatasetError, DatasetNotFoundError
from . import blender, colmap, mad
from .types import FitData

__all__ = ["DatasetFormat", "FORMATS", "detect_format", "register_format"]


@dataclasses.dataclass(frozen=True)
class DatasetFormat:
    """One dataset format: ``name`` (as in config and logs), ``description`` (what the
    folder holds, for messages), ``detect`` and ``load_fit_data`` (see the module
    docstring)."""

    name: str
    description: str
    detect: Callable[[Path], bool]
    load_fit_data: Callable[..., FitData]


_BUILT_IN = (
    DatasetFormat("blender", "a Blender/NeRF folder (transforms_train.json)", blender.detect, blender.load_fit_data),
    DatasetFormat("mad", "a MAD-Sim class folder (transforms.json + train/good/)", mad.detect, mad.load_fit_data),
    DatasetFormat("colmap", "a COLMAP folder (sparse/0/ or sparse/ with cameras, images, points3D .txt or .bin, "
                  "and images/)", colmap.detect, colmap.load_fit_data),
)

#: name -> format, in detection order.
FORMATS: dict[str, DatasetFormat] = {f.name: f for f in _BUILT_IN}


def register_format(fmt: DatasetFormat, *, replace: bool = False) -> None:
    """Add ``fmt`` to :data:`FORMATS` (``replace``: allow replacing one of that name)."""
    if fmt.name in FORMATS and not replace:
        raise ValueError(f"a dataset format named {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt


def detect_format(path: str | os.PathLike) -> DatasetFormat:
    """The one format whose ``detect`` accepts the folder ``path``; none, or several,
    is a :class:`DatasetError` naming the folder and the formats tried."""
    path = Path(path)
    found = [f for f in FORMATS.values() if f.detect(path)]
    if len(found) == 1:
        return found[0]
    if not found:
        tried = [f.description for f in FORMATS.values()]
        raise DatasetNotFoundError(f"{str(path)!r} is neither " + " nor ".join(tried))
    raise DatasetError(f"{str(path)!r} matches several dataset formats ({', '.join(f.name for f in found)}): "
                       + "; ".join(f.description for f in found) + "; keep only one layout in the folder")
