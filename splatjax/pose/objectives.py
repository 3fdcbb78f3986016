"""Fine-pose objectives as values: what the fine pose minimises, chosen per call.

An objective is a plain function ``objective(render, query) -> loss``:

- ``render``: a :class:`PoseRender`, the model rendered at the current pose: ``rgb``
  [H, W, 3] and ``alpha`` [H, W] (accumulated opacity, 0 = background only, 1 = opaque
  model), both float in [0, 1] with ``rgb`` composited over ``background`` [3]; and
  ``camera``, the moved :class:`splatjax.camera.Camera` (OpenCV world-to-camera, pixel
  intrinsics) that rendered them.
- ``query``: the query image [H, W, 3], float in [0, 1] (the same size as the render; at
  a reduced ``fine_levels`` level both are the resized images).
- returns a float scalar, lower is better. It is differentiated with respect to the pose
  (``jax.value_and_grad``), so it must be written in JAX and differentiable where it is
  finite; a NaN/inf loss or gradient skips that step and flags the query ``diverged``.

The fine pose calls the objective for one query; it is batched by ``jax.vmap`` and
compiled once per objective: the function object is a static argument of the jitted
refinement (hashed by identity), so pass the same function every time; a new ``lambda``
on each call compiles again. The loss trace, the best iterate and the divergence flags
of :func:`splatjax.pose.refine_poses_detailed` are in the objective's own units.

Built-ins (:data:`OBJECTIVES`): ``photometric`` (the default, SplatPose's 0.8 L1 + 0.2
(1 - SSIM) of :func:`splatjax.losses.photometric_loss`), ``masked_photometric``
(the same restricted to the model's rendered silhouette, blind to clutter around the
object) and ``charbonnier`` (a smooth robust L1). :func:`register_objective` adds a name
usable in :class:`splatjax.pose.PoseConfig` ``objective`` and on the command line
(``--pose-objective``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import dm_pix
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..camera import Camera
from ..errors import ConfigError
from ..image import SSIM_FILTER_SIGMA, SSIM_FILTER_SIZE, gaussian_blur
from ..losses import photometric_loss

__all__ = ["PoseRender", "Objective", "OBJECTIVES", "photometric", "masked_photometric", "charbonnier",
           "register_objective", "get_objective", "resolve_objective", "objective_names"]


class PoseRender(NamedTuple):
    """The model rendered at the current pose (a pytree): ``rgb`` [H, W, 3] over
    ``background`` [3], ``alpha`` [H, W] in [0, 1], and the moved ``camera``."""

    rgb: Float[Array, "H W 3"]
    alpha: Float[Array, "H W"]
    camera: Camera
    background: Float[Array, " 3"]


Objective = Callable[[PoseRender, Float[Array, "H W 3"]], Float[Array, ""]]


def photometric(render: PoseRender, query: Float[Array, "H W 3"]) -> Float[Array, ""]:
    """SplatPose's loss, 0.8 L1 + 0.2 (1 - SSIM) over the whole image (the default)."""
    return photometric_loss(render.rgb, query)


MASK_EPS = 1e-6  # keeps the weighted means finite when the model leaves the image


def _weighted_mean(x, w):
    """sum(w x) / sum(w) with ``w`` broadcast to ``x`` (a weight per pixel, every channel)."""
    w = jnp.broadcast_to(w, x.shape)
    return jnp.sum(x * w) / (jnp.sum(w) + MASK_EPS)


def masked_photometric(render: PoseRender, query: Float[Array, "H W 3"]) -> Float[Array, ""]:
    """0.8 L1 + 0.2 (1 - SSIM), each a mean weighted by the render's alpha (the model's
    silhouette at the current pose; SSIM's map is 'valid', so its weights are the alpha
    cropped by the 5 px window border). Query pixels outside the silhouette, background
    clutter included, do not count, nor does the share of the image the object covers;
    it needs a start already on the object (the coarse pose's job)."""
    w = render.alpha[..., None]
    l1 = _weighted_mean(jnp.abs(render.rgb - query), w)
    smap = dm_pix.ssim(render.rgb, query, max_val=1.0, filter_size=SSIM_FILTER_SIZE, filter_sigma=SSIM_FILTER_SIGMA,
                       filter_fn=gaussian_blur, return_map=True)
    b = SSIM_FILTER_SIZE // 2
    ws = w[b:w.shape[0] - b, b:w.shape[1] - b]
    return 0.8 * l1 + 0.2 * (1.0 - _weighted_mean(smap, ws))


CHARBONNIER_EPS = 1e-3


def charbonnier(render: PoseRender, query: Float[Array, "H W 3"]) -> Float[Array, ""]:
    """Mean sqrt((rgb - query)^2 + eps^2) - eps, eps = 1e-3: L1 for large errors
    (robust to outliers), quadratic and smooth near zero."""
    return jnp.mean(jnp.sqrt(jnp.square(render.rgb - query) + CHARBONNIER_EPS ** 2) - CHARBONNIER_EPS)


#: name -> (objective, one-line description); add entries with :func:`register_objective`.
OBJECTIVES: dict[str, tuple[Objective, str]] = {
    "photometric": (photometric, "0.8 L1 + 0.2 (1 - SSIM) over the whole image (SplatPose; default)"),
    "masked_photometric": (masked_photometric, "0.8 L1 + 0.2 (1 - SSIM) weighted by the render's alpha "
                                               "(ignores clutter around the object)"),
    "charbonnier": (charbonnier, "smooth robust L1, mean sqrt(d^2 + 1e-6) - 1e-3"),
}


def objective_names() -> tuple[str, ...]:
    """The registered objective names, in registration order."""
    return tuple(OBJECTIVES)


def register_objective(name: str, fn: Objective, description: str = "", *, replace: bool = False) -> Objective:
    """Register ``fn`` as ``name`` (usable as ``PoseConfig(objective=name)`` and
    ``--pose-objective name``); returns ``fn``. Registering a taken name raises
    ``ValueError`` unless ``replace``."""
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"register_objective: name must be letters, digits, '_' or '-' (got {name!r})")
    if not callable(fn):
        raise TypeError(f"register_objective: {name!r}: the objective must be callable (got {type(fn).__name__})")
    if name in OBJECTIVES and not replace and OBJECTIVES[name][0] is not fn:
        raise ValueError(f"register_objective: {name!r} is already registered (pass replace=True to replace it)")
    OBJECTIVES[name] = (fn, " ".join(str(description).split()))
    return fn


def get_objective(name: str) -> Objective:
    """The objective registered as ``name``; a one-line :class:`ConfigError` (option
    ``objective``) naming the known ones otherwise."""
    if not isinstance(name, str) or name not in OBJECTIVES:
        raise ConfigError("objective", f"unknown pose objective {name!r}; known: {', '.join(OBJECTIVES)}",
                          owner="PoseConfig", flag="--pose-objective")
    return OBJECTIVES[name][0]


def resolve_objective(objective: str | Objective | None, default: str = "photometric") -> Objective:
    """A callable for ``objective``: itself when callable, the registered one for a name,
    ``get_objective(default)`` for None."""
    if objective is None:
        return get_objective(default)
    if callable(objective):
        return objective
    return get_objective(objective)
