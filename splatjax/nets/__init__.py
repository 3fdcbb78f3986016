"""The pretrained networks' plumbing shared by the pose and anomaly stages: finding and
loading weights (:mod:`.weights`: EfficientNet-b4, EfficientNet-Lite0, LoFTR) and passing
arrays between JAX and torch (:mod:`.interop`)."""

from __future__ import annotations

from . import weights
from .interop import jax_to_torch, torch_to_jax

__all__ = ["weights", "jax_to_torch", "torch_to_jax"]
