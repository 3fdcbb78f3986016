"""Dataset loaders (Blender/NeRF, MAD-Sim, COLMAP), the format registry
(:mod:`.formats`: which loader reads a folder), the built-in toy dataset generator and the
mesh benchmark generator (:mod:`.synth`, needs Mitsuba 3 only when it renders).

All loaders are read-only and return the containers of :mod:`splatjax.data.types`;
bad input raises :class:`~splatjax.errors.DatasetError` (a ``ValueError``; the "not
found" variant is also a ``FileNotFoundError``) whose message names the offending file or
folder. Resolution policy (:func:`choose_resolution`): by default images load at their own
width capped at the paper's 400 px, and never upsampled unless ``upsample=True``.
"""

from ..errors import DatasetError, DatasetNotFoundError
from .blender import load_blender
from .colmap import load_colmap
from .formats import FORMATS, DatasetFormat, detect_format, register_format
from .images import choose_resolution, read_mask, read_rgb
from .mad import class_folders, load_mad_class, load_mad_test, load_mad_train, load_test_poses
from .roll import roll_view
from .synth import SYNTH_DEFECT_TYPES, SynthConfig, make_synth_dataset
from .toy import (
    TOY_DEFECT_TYPES,
    ToyScene,
    make_toy_dataset,
    make_toy_scene,
    render_toy,
    write_toy_preview,
)
from .types import FitData, LoadOptions, MADClass, PosedViews, TestSet

__all__ = [
    "DatasetError",
    "DatasetFormat",
    "DatasetNotFoundError",
    "FORMATS",
    "FitData",
    "LoadOptions",
    "MADClass",
    "PosedViews",
    "SYNTH_DEFECT_TYPES",
    "SynthConfig",
    "TOY_DEFECT_TYPES",
    "TestSet",
    "ToyScene",
    "choose_resolution",
    "class_folders",
    "detect_format",
    "load_blender",
    "load_colmap",
    "load_mad_class",
    "load_mad_test",
    "load_mad_train",
    "load_test_poses",
    "make_synth_dataset",
    "make_toy_dataset",
    "make_toy_scene",
    "read_mask",
    "read_rgb",
    "register_format",
    "render_toy",
    "roll_view",
    "write_toy_preview",
]
