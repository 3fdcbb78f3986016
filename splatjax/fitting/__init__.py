"""3D Gaussian splatting fitting: the options (:mod:`.config`), the schedule (:mod:`.schedule`), density control (:mod:`.densify`), the compiled training steps (:mod:`.train`) and the fitting loop (:mod:`.fit_loop`, :func:`fit`)."""

from __future__ import annotations

from .config import FitConfig
from .densify import DensifyRule, DensifyStrategy
from .schedule import RECOVERY_FRACTION, FitSchedule, schedule
from .train import TrainState, make_optimizer, scene_extent
from .fit_loop import (
    MIN_CAPACITY,
    schedule_for,
    strategy_for,
    initial_capacity,
    resize_floor,
    train_view_indices,
    ChunkReport,
    FitResult,
    buffer_is_roomy,
    new_state,
    state_template,
    fit,
)

__all__ = [
    "FitConfig",
    "FitSchedule",
    "FitResult",
    "ChunkReport",
    "DensifyStrategy",
    "DensifyRule",
    "TrainState",
    "RECOVERY_FRACTION",
    "fit",
    "schedule",
    "schedule_for",
    "strategy_for",
    "initial_capacity",
    "resize_floor",
    "new_state",
    "state_template",
    "make_optimizer",
    "scene_extent",
    "train_view_indices",
    "buffer_is_roomy",
]
