"""The fitting schedule: when densification, opacity resets and size pruning happen.

The 30k schedule is exactly the INRIA 3DGS one (``train.py``, steps counted from 1, an
event "at step s" happens after optimisation step s):

- densify after steps s with ``densify_from < s < densify_until`` and
  ``s % densify_every == 0`` (600, 700, ..., 14,900);
- reset opacities after steps s < ``densify_until`` with ``s % opacity_reset_every == 0``,
  and after step ``densify_from`` with a white background (500, 3000, 6000, 9000, 12,000);
- prune by size (screen radius, world size) in densifications after step
  ``opacity_reset_every`` (from 3100 on);
- decay the position learning rate over all ``iterations`` steps;
- raise the active spherical-harmonics degree by one every ``sh_degree_every`` steps (1000:
  from step 1000 on the render uses degree 1, from 2000 degree 2, ...; capped at the
  stored degree).

For ``iterations = N`` the event steps scale with ``f = N / 30000``; ``sh_degree_every =
max(1, round(1000 f))``; the others are rounded to multiples of ``densify_every`` (at least
one interval): ``densify_from = 500 f``, ``densify_until =
15000 f = N / 2``, ``opacity_reset_every = max(3000 f, 5 densify_every)`` (each reset is
followed by at least five densifications, so the Gaussians it silenced can recover or be
pruned before the next one). Explicit values replace the scaled ones.

Whatever the settings, the last :data:`RECOVERY_FRACTION` of the steps are left alone: no
densification and no opacity reset happens after step ``(1 - RECOVERY_FRACTION) N``, so a
fit never ends on a freshly reset (nearly transparent) or freshly split model.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["FitSchedule", "schedule", "RECOVERY_FRACTION"]

REFERENCE_ITERATIONS = 30_000
RECOVERY_FRACTION = 0.3  # final share of the steps without densification or resets
_REF_FROM, _REF_UNTIL, _REF_RESET = 500, 15_000, 3000
_REF_SH_EVERY = 1000
_MIN_RESET_INTERVALS = 5


@dataclasses.dataclass(frozen=True)
class FitSchedule:
    """Event steps of one fit (hashable: usable as a static jit argument)."""

    iterations: int
    densify_from: int
    densify_until: int
    densify_every: int
    opacity_reset_every: int
    size_prune_after: int  # size pruning in densifications after this step
    last_event: int  # no densification or reset after this step
    reset_at_densify_from: bool  # the white-background reset at densify_from
    sh_degree_every: int = _REF_SH_EVERY  # the active SH degree rises by one every this many steps

    def sh_degree_at(self, step: int, max_degree: int) -> int:
        """Active SH degree of optimisation step ``step`` (counted from 1)."""
        return min(max_degree, step // self.sh_degree_every)

    def densify_at(self, step: int) -> bool:
        """Whether densification happens after ``step``."""
        return (self.densify_from < step < self.densify_until and step % self.densify_every == 0
                and step <= self.last_event)

    def reset_at(self, step: int) -> bool:
        """Whether opacities are reset after ``step``."""
        if step > self.last_event or step >= self.densify_until or step <= 0:
            return False
        return step % self.opacity_reset_every == 0 or (self.reset_at_densify_from and step == self.densify_from)

    def size_prune_at(self, step: int) -> bool:
        return step > self.size_prune_after

    @property
    def densify_steps(self) -> tuple[int, ...]:
        return tuple(s for s in range(self.densify_every, self.iterations + 1, self.densify_every)
                     if self.densify_at(s))

    @property
    def reset_steps(self) -> tuple[int, ...]:
        cands = set(range(self.opacity_reset_every, self.iterations + 1, self.opacity_reset_every))
        cands.add(self.densify_from)
        return tuple(sorted(s for s in cands if self.reset_at(s)))


def _scaled(reference: int, f: float, unit: int) -> int:
    """``reference x f`` rounded half up to a multiple of ``unit`` (at least ``unit``)."""
    return max(unit, int(math.floor(reference * f / unit + 0.5)) * unit)


def schedule(
    iterations: int,
    *,
    densify_every: int = 100,
    densify_from: int | None = None,
    densify_until: int | None = None,
    opacity_reset_every: int | None = None,
    white_background: bool = True,
) -> FitSchedule:
    """The schedule of an ``iterations``-step fit (see the module docstring); ``None``
    values are scaled from the 30k reference schedule, given ones are used as they are
    (still subject to the final :data:`RECOVERY_FRACTION` without events)."""
    f = iterations / REFERENCE_ITERATIONS
    unit = densify_every
    start = _scaled(_REF_FROM, f, unit) if densify_from is None else densify_from
    until = _scaled(_REF_UNTIL, f, unit) if densify_until is None else densify_until
    if opacity_reset_every is None:
        opacity_reset_every = max(_scaled(_REF_RESET, f, unit), _MIN_RESET_INTERVALS * unit)
    last = int(math.floor((1.0 - RECOVERY_FRACTION) * iterations))
    return FitSchedule(
        iterations=iterations, densify_from=start, densify_until=until, densify_every=densify_every,
        opacity_reset_every=opacity_reset_every, size_prune_after=opacity_reset_every, last_event=last,
        reset_at_densify_from=white_background,
        sh_degree_every=max(1, int(math.floor(_REF_SH_EVERY * f + 0.5))),
    )
