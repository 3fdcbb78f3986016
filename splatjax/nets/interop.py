"""JAX <-> torch tensors through dlpack (the pretrained networks run in torch)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

__all__ = ["jax_to_torch", "torch_to_jax"]


def jax_to_torch(x: Array, device=None):
    """A JAX array as a torch tensor through dlpack (no copy when the device is shared).

    The tensor aliases JAX's immutable buffer: do not write into it. ``device`` moves it
    afterwards when given (a copy only if the devices differ).
    """
    import torch

    x = jnp.asarray(x)
    try:
        t = torch.from_dlpack(x)
    except Exception:  # a device this torch build cannot address (e.g. CPU-only torch)
        t = torch.from_numpy(np.array(x))
    return t if device is None else t.to(device)


def torch_to_jax(t) -> Array:
    """A torch tensor as a JAX array through dlpack; through the host only when JAX cannot
    address the tensor's device (e.g. a CUDA tensor with CPU-only JAX)."""
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    try:
        return jnp.from_dlpack(t)
    except Exception:  # device not visible to JAX
        return jnp.asarray(t.cpu().numpy())
