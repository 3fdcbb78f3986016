"""``FitConfig``: every fitting option in one frozen dataclass.

Fields with ``metadata["help"]`` become ``splatjax fit`` flags (name with ``_`` -> ``-``);
the others are library-only. Schedule fields left at ``None`` are derived from
``iterations`` by :func:`splatjax.fitting.schedule.schedule` (the 30k values are exactly
the INRIA 3DGS ones).
"""

from __future__ import annotations

import dataclasses

from ..validation import is_int, is_number, require, require_choice, require_color, require_ints, require_positive

__all__ = ["FitConfig"]

from ..render.backends import MAX_SUPERSAMPLE, valid_supersample
from ..render.backends import USER_BACKENDS as _BACKENDS
BUFFER_POLICIES = ("auto", "compact", "roomy")
_INIT_EXTENT = 1.3  # half-width of the random initialisation's cube


def _f(default, help: str, **extra):
    return dataclasses.field(default=default, metadata={"help": help, **extra})


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Fitting settings; defaults are the INRIA 3DGS / SplatPose ones (Kerbl et al. 2023, whose schedule SplatPose uses).

    The mean learning rate is multiplied by the scene extent (1.1 x the largest distance
    of a camera centre from their mean) and decays exponentially from ``lr_means`` to
    ``lr_means_final`` over ``iterations`` steps. Densification window, opacity-reset
    cadence and size-pruning start follow :func:`~splatjax.fitting.schedule.schedule`.
    The Gaussian buffer starts at ``capacity`` slots (None: the smallest power of two
    holding the initial points) and doubles whenever densification needs more.
    """

    iterations: int = _f(30_000, "optimisation steps; the densification and opacity-reset schedule and the "
                                 "position learning-rate decay scale with it (30000 = the paper's schedule)")
    resolution: int | None = _f(None, "image width in pixels (default: the data's own width, capped at 400)")
    upsample: bool = _f(False, "allow a --resolution above the data's own width (otherwise such a --resolution is "
                               "refused)")
    background: tuple[float, ...] = _f((1.0, 1.0, 1.0), "background colour R G B in [0, 1]")
    # initialisation
    init_points: int = _f(100_000, f"random initial points, uniform in the cube [-{_INIT_EXTENT}, {_INIT_EXTENT}]^3 "
                                   "(FitConfig.init_extent; not used with --init-ply)")
    init_extent: float = _INIT_EXTENT
    init_opacity: float = 0.1
    init_ply: str | None = _f(None, "start from this point cloud (x y z [red green blue]) or 3DGS PLY")
    # optimiser (Adam per parameter group)
    lr_means: float = 1.6e-4
    lr_means_final: float = 1.6e-6
    lr_colors: float = 2.5e-3
    lr_opacity: float = 5e-2
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    adam_eps: float = 1e-15
    ssim_weight: float = 0.2
    sh_degree: int = _f(0, "spherical-harmonics degree of the colour, 0-3 (0 = view-independent, the paper; 3 = "
                           "INRIA 3DGS); the active degree rises by one every 1000 steps at 30k, scaled")
    supersample: int = _f(1, "samples per pixel side: every rendered pixel is the mean of k x k samples on a "
                             "regular grid (a box filter, what a camera pixel or a path tracer's box filter "
                             "integrates; 1 = one sample at the centre, the paper); the pose and anomaly stages "
                             "render the model the same way")
    lr_sh_rest_factor: float = 1.0 / 20.0  # SH degrees 1-3 learn at lr_colors x this (INRIA feature_lr / 20)
    # adaptive density control (None: derived from iterations)
    densify_from: int | None = _f(None, "first densification after this step (default: 500 at 30k steps, scaled)")
    densify_until: int | None = _f(None, "no densification from this step on (default: iterations / 2)")
    densify_every: int = 100
    densify_grad_threshold: float = _f(2e-4, "mean screen-space gradient that triggers clone / split")
    percent_dense: float = 0.01
    prune_opacity: float = 0.005
    prune_screen_size: float = 20.0
    prune_world_size: float = 0.1
    opacity_reset_every: int | None = _f(None, "opacity reset cadence (default: 3000 at 30k steps, scaled)")
    opacity_reset_value: float = 0.01
    capacity: int | None = _f(None, "initial Gaussian buffer size (default: automatic; it grows as needed)")
    buffer: str = _f("auto", "buffer resizing: 'compact' (grow to the next power of two, shrink after heavy "
                     "pruning), 'roomy' (grow to twice that, never shrink: fewer recompilations), 'auto' (roomy "
                     "on a GPU, compact on the CPU)", choices=BUFFER_POLICIES)
    # execution
    chunk_steps: int = 100
    checkpoint_every: int = _f(5000, "checkpoint every this many steps (also on interrupts)")
    checkpoint_minutes: float = _f(10.0, "checkpoint at least this often (wall-clock minutes)")
    seed: int = _f(0, "random seed (initial points, view order, splits, train-fraction subset)")
    train_fraction: float = _f(1.0, "fit a seeded subset of this fraction of the training views")
    holdout_views: int = _f(8, "views held out of the fit and scored (val PSNR / SSIM) when the data has no "
                               "validation split (MAD-Sim, COLMAP), evenly spread, at most an eighth of the views; "
                               "0: none")
    backend: str = _f("auto", "render backend", choices=_BACKENDS)
    val_every: int = _f(5000, "score the validation views every this many steps (and at the end)")
    val_views: int | None = _f(None, "views scored by the intermediate validations (default: all)")
    log_every: int = _f(100, "append a metrics.jsonl record every this many steps")

    def __post_init__(self):
        require_ints(self, ("iterations", "init_points", "densify_every", "chunk_steps", "checkpoint_every",
                            "val_every", "log_every"), 1)
        require_ints(self, ("resolution", "capacity", "val_views", "opacity_reset_every"), 1, allow_none=True)
        require_ints(self, ("holdout_views",), 0)
        require_ints(self, ("densify_from", "densify_until"), 0, allow_none=True)
        require_positive(self, ("lr_means", "lr_means_final", "lr_colors", "lr_opacity", "lr_scales", "lr_quats",
                                "adam_eps", "init_extent", "checkpoint_minutes", "percent_dense", "lr_sh_rest_factor"))
        require(is_int(self.sh_degree) and 0 <= self.sh_degree <= 3, self, "sh_degree", "an integer in 0..3")
        require(valid_supersample(self.supersample), self, "supersample",
                f"an integer in 1..{MAX_SUPERSAMPLE}")
        require(is_number(self.train_fraction) and 0.0 < self.train_fraction <= 1.0, self, "train_fraction", "in (0, 1]")
        require(is_number(self.ssim_weight) and 0.0 <= self.ssim_weight <= 1.0, self, "ssim_weight", "in [0, 1]")
        require(is_number(self.init_opacity) and 0.0 < self.init_opacity < 1.0, self, "init_opacity", "in (0, 1)")
        require_choice(self, "backend", _BACKENDS)
        require_choice(self, "buffer", BUFFER_POLICIES)
        require_color(self, "background")
        self._check_chunks()

    def _check_chunks(self):
        c = self.chunk_steps
        for name in ("densify_every", "opacity_reset_every", "densify_from"):
            v = getattr(self, name)
            require(v is None or v % c == 0, self, name, f"a multiple of chunk_steps={c}, since densification "
                    "and opacity resets happen between compiled chunks")
