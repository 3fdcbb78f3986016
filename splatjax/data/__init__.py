"""Dataset loaders (Blender/NeRF, MAD-Sim) and the built-in toy dataset generator.

All loaders are read-only and return the containers of :mod:`splatjax.data.types`;
bad input raises :class:`DatasetError` (a ``ValueError``; the "not found" variant is also a
``FileNotFoundError``) whose message names the offending file or folder.
"""

from .blender import load_blender
from .images import DatasetError, DatasetNotFoundError
from .mad import MAD_CLASSES, load_mad_class, load_mad_test, load_mad_train
from .toy import (
    TOY_DEFECT_TYPES,
    ToyScene,
    make_toy_dataset,
    make_toy_scene,
    render_toy,
    write_toy_preview,
)
from .types import MADClass, PosedViews, TestSet

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "MADClass",
    "MAD_CLASSES",
    "PosedViews",
    "TOY_DEFECT_TYPES",
    "TestSet",
    "ToyScene",
    "load_blender",
    "load_mad_class",
    "load_mad_test",
    "load_mad_train",
    "make_toy_dataset",
    "make_toy_scene",
    "render_toy",
    "write_toy_preview",
]
