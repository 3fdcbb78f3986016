"""Anomaly maps and image scores from a render and a query (SplatPose's anomaly map, after PAD).

With EfficientNet features (the reference): both images resized to S x S (S = 224), then

    map = sum_c (r_c - q_c)^2 / std_c^2                       (ImageNet-normalised RGB)
        + sum_l upsample_S( sum_k (F_l(r)_k - F_l(q)_k)^2 )    (taps l = blocks 1, 5, 9, 21)

smoothed with a Gaussian of sigma 4 px (scipy's kernel and "reflect" border); the image
score is the maximum of the map. With the weights-free extractor the map is the sum of
its upsampled levels (no RGB term, see :class:`splatjax.anomaly.features.WeightsFreeFeatures`),
smoothed and scored the same way: same output contract, different (documented) values.

Options beyond the paper (:class:`MapConfig`; their defaults give the formula above
exactly, by the same code): the image score may be a high percentile or a top-k mean
(:func:`image_scores`); each term j of the map (the RGB term, each level) may be
replaced by a weighted, misalignment-tolerant distance (:func:`term_maps`)

    D_j(x) = max( min_d sum_k w_jk (a_jk(x) - b_jk(x + d))^2,  min_d sum_k w_jk (b_jk(x) - a_jk(x + d))^2 )

over shifts |d|_inf <= ``shift_radius`` on the term's own grid (a, b: the render's and
the query's normalised colours or tap features), with weights w from the model's
residual scales (:func:`residual_scales`, ``normalise``) measured on defect-free
training views, so that terms and channels that differ anyway where the model cannot
render (shine, blurred detail) weigh less.

Stages: :class:`MapConfig` holds the options; :func:`compute_maps` (renders, queries,
config) -> :class:`Maps` (maps and image scores); :func:`calibrate` (maps of the
training views rendered at their own poses) -> :class:`MapCalibration`, the fixed colour
scale and threshold of one model, so that the same image always looks the same.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..context import QUIET, Context
from ..image import gaussian_filter, resize
from ..sharding import ParallelConfig, ceil_div, map_padded_chunks, query_mesh, shard_over_queries
from .calibration import ResidualScales
from .config import MapConfig
from .highlights import discount_highlights
from .features import (
    IMAGENET_STD,
    FeatureExtractor,
    WeightsFreeFeatures,
    make_feature_extractor,
    shift_min_sq,
)

__all__ = ["MAP_SIZE", "MAP_SIGMA", "rgb_term", "term_maps", "residual_scales", "anomaly_maps", "anomaly_map", "image_scores", "Maps", "compute_maps", "overlay_heatmap"]

MAP_SIZE = 224
MAP_SIGMA = 4.0


@jax.jit
def rgb_term(renders: Float[Array, "B S S 3"], queries: Float[Array, "B S S 3"]) -> Float[Array, "B S S"]:
    """Channel-summed squared difference of the ImageNet-normalised images (mean cancels)."""
    inv_var = 1.0 / jnp.asarray(IMAGENET_STD, jnp.float32) ** 2
    return jnp.sum((renders - queries) ** 2 * inv_var, axis=-1)


@jax.jit
def _combine(base: Array, levels: list[Array]) -> Array:
    b, s = base.shape[0], base.shape[1]
    total = base
    for lev in levels:
        total = total + jax.image.resize(lev, (b, s, s), "linear", antialias=False)
    return total


_Term = tuple  # (name, a [B, h, w, C], b [B, h, w, C] or None)


def _terms(r: Array, q: Array, extractor: FeatureExtractor) -> list[_Term]:
    """The map's terms for images at the map size, in order ("rgb" when the extractor has
    the RGB term, then "level0", ...): ``(name, a, b)`` with ``a``, ``b`` [B, h, w, C] the
    render's and the query's values whose squared channel differences are the term's
    summands (RGB: colours / ImageNet std; EfficientNet taps: features), or
    ``(name, d, None)`` with ``d`` [B, h, w, 1] a term that is one distance map already
    (weights-free levels, or any extractor's :meth:`levels`)."""
    out: list[_Term] = []
    if extractor.rgb_term:
        inv = 1.0 / jnp.asarray(IMAGENET_STD, jnp.float32)
        out.append(("rgb", r * inv, q * inv))
    return out + extractor.terms(r, q)


@functools.partial(jax.jit, static_argnames=("radius",))
def _pair_term(a: Array, b: Array, w: Array, radius: int) -> Array:
    sw = jnp.sqrt(w)
    a, b = a * sw, b * sw
    if radius == 0:
        return jnp.sum((a - b) ** 2, axis=-1)
    return jnp.maximum(shift_min_sq(a, b, radius), shift_min_sq(b, a, radius))


def term_maps(
    renders: Float[ArrayLike, "B S S 3"],
    queries: Float[ArrayLike, "B S S 3"],
    extractor: FeatureExtractor,
    weights: "list[ArrayLike] | None" = None,
    shift_radius: int = 0,
) -> list[Float[Array, "B h w"]]:
    """The map's terms (not upsampled) for images already at the map size, each

        D_j(x) = max(min_d sum_k w_jk (a_jk(x) - b_jk(x + d))^2, min_d sum_k w_jk (b_jk(x) - a_jk(x + d))^2)

    over integer shifts |d|_inf <= ``shift_radius`` in the term's own pixels (``b``
    edge-padded), ``a``/``b`` the render's/query's RGB colours over the ImageNet std or
    tap features (see ``_terms``); a term that is one distance map (weights-free level
    d) is ``w_j0 d`` whatever the radius. ``weights``: one [C_j] array per term (None:
    ones). With ones and radius 0 the terms are the paper's RGB term and levels."""
    terms = _terms(jnp.asarray(renders, jnp.float32), jnp.asarray(queries, jnp.float32), extractor)
    if weights is None:
        weights = [np.ones(t[1].shape[-1], np.float32) for t in terms]
    if len(weights) != len(terms) or any(np.shape(w) != (t[1].shape[-1],) for w, t in zip(weights, terms)):
        raise ValueError(f"term_maps: weights for {len(weights)} terms of sizes {[np.shape(w) for w in weights]} "
                         f"do not fit the {extractor.name} terms (channels {[t[1].shape[-1] for t in terms]})")
    out = []
    for (_, a, b), w in zip(terms, weights):
        w = jnp.asarray(w, jnp.float32)
        out.append(a[..., 0] * w[0] if b is None else _pair_term(a, b, w, int(shift_radius)))
    return out


def residual_scales(
    renders: Float[ArrayLike, "B H W 3"],
    queries: Float[ArrayLike, "B H W 3"],
    extractor: FeatureExtractor,
    *,
    size: int = MAP_SIZE,
    chunk: int = 16,
) -> ResidualScales:
    """The residual scales of defect-free pairs (renders at training poses vs the training
    images, [0, 1], resized to ``size``): for every map term and channel, the mean over
    all pairs and pixels of its summand (squared channel difference, or the distance of
    a one-map term), unshifted (see :class:`ResidualScales`)."""
    renders = jnp.asarray(renders, jnp.float32)
    queries = jnp.asarray(queries, jnp.float32)
    if renders.ndim != 4 or renders.shape[-1] != 3 or queries.shape != renders.shape or renders.shape[0] == 0:
        raise ValueError(f"residual_scales needs renders and queries of equal shape [B>0, H, W, 3]; "
                         f"got {renders.shape} and {queries.shape}")
    sums: list[np.ndarray] = []
    counts: list[int] = []
    names: list[str] = []
    for start in range(0, renders.shape[0], max(1, int(chunk))):
        r = resize(renders[start : start + chunk], size, size)
        q = resize(queries[start : start + chunk], size, size)
        for j, (name, a, b) in enumerate(_terms(r, q, extractor)):
            summand = a if b is None else (a - b) ** 2
            total = np.asarray(jnp.sum(summand, axis=(0, 1, 2)), np.float64)
            if j == len(sums):
                sums.append(np.zeros_like(total))
                counts.append(0)
                names.append(name)
            sums[j] += total
            counts[j] += int(np.prod(summand.shape[:3]))
    means = tuple(tuple(float(v) for v in s / c) for s, c in zip(sums, counts))
    return ResidualScales(features=extractor.name, terms=tuple(names), means=means, views=int(renders.shape[0]))


def anomaly_maps(
    renders: Float[ArrayLike, "B H W 3"],
    queries: Float[ArrayLike, "B H W 3"],
    extractor: FeatureExtractor,
    *,
    size: int = MAP_SIZE,
    sigma: float = MAP_SIGMA,
    chunk: int = 16,
    weights: "list[ArrayLike] | None" = None,
    shift_radius: int = 0,
) -> Float[Array, "B S S"]:
    """Anomaly maps [B, size, size] for render/query pairs (images in [0, 1], any H x W).

    ``size``: map resolution (224 as the paper); ``sigma``: Gaussian smoothing in map
    pixels (4 as the paper; 0 disables). Features are upsampled bilinearly (half-pixel
    centres, as ``F.interpolate(..., align_corners=False)``). ``weights`` (one [C_j]
    array per term) and ``shift_radius``: the terms of :func:`term_maps` instead of the
    paper's (None and 0: the paper's, computed as before). Pairs are processed
    ``chunk`` at a time (the last chunk padded to the same size, so one compiled shape
    serves any B and memory stays bounded).
    """
    renders = jnp.asarray(renders, jnp.float32)
    queries = jnp.asarray(queries, jnp.float32)
    if renders.ndim != 4 or renders.shape[-1] != 3 or queries.shape != renders.shape:
        raise ValueError(
            f"anomaly_maps needs renders and queries of equal shape [B, H, W, 3]; "
            f"got {renders.shape} and {queries.shape}"
        )
    b = renders.shape[0]
    run = functools.partial(_maps_chunk, extractor=extractor, size=size, sigma=sigma, weights=weights,
                            shift_radius=shift_radius)
    return map_padded_chunks(run, b, max(1, min(int(chunk), b)), (renders, queries))


def _maps_chunk(renders: Array, queries: Array, extractor: FeatureExtractor, size: int, sigma: float,
                weights=None, shift_radius: int = 0) -> Array:
    r = resize(renders, size, size)
    q = resize(queries, size, size)
    if weights is None and not shift_radius:  # the paper's map
        levels = list(extractor.levels(r, q))
        base = rgb_term(r, q) if extractor.rgb_term else jnp.zeros(r.shape[:3], jnp.float32)
    else:
        levels = term_maps(r, q, extractor, None if weights is None else [np.asarray(w) for w in weights],
                           shift_radius)
        base = jnp.zeros(r.shape[:3], jnp.float32)
    total = _combine(base, levels)
    return gaussian_filter(total, sigma) if sigma > 0 else total


def anomaly_map(
    render: Float[ArrayLike, "H W 3"], query: Float[ArrayLike, "H W 3"], extractor: FeatureExtractor, **options
) -> Float[Array, "S S"]:
    """Anomaly map [size, size] of one render/query pair; ``options`` (``size``,
    ``sigma``, ...) and their defaults are those of :func:`anomaly_maps`."""
    return anomaly_maps(jnp.asarray(render)[None], jnp.asarray(query)[None], extractor, **options)[0]


def image_scores(maps: Float[ArrayLike, "B S S"], score: str = "max", k: int = 100) -> Float[Array, " B"]:
    """Image anomaly score of each map: its maximum (``score="max"``, the paper), its
    99th percentile (``"p99"``, linear interpolation, less sensitive to a single hot
    pixel) or the mean of its ``k`` largest values (``"topk"``; k capped at the map's
    pixel count)."""
    maps = jnp.asarray(maps)
    flat = maps.reshape(maps.shape[0], -1)
    if score == "p99":
        return jnp.percentile(flat, 99.0, axis=1)
    if score == "topk":
        return jnp.mean(jax.lax.top_k(flat, max(1, min(int(k), flat.shape[1])))[0], axis=1)
    if score != "max":
        raise ValueError(f"image_scores: score must be max, p99 or topk (got {score!r})")
    return jnp.max(flat, axis=1)


@dataclasses.dataclass(frozen=True)
class Maps:
    """Anomaly maps of B render/query pairs: ``maps`` [B, S, S] float32 (host),
    ``scores`` [B] (:func:`image_scores` per ``MapConfig.score``), ``features`` (the
    extractor's name, e.g. "weights-free")."""

    maps: np.ndarray
    scores: np.ndarray
    features: str


def compute_maps(
    renders: Float[ArrayLike, "B H W 3"],
    queries: Float[ArrayLike, "B H W 3"],
    config: MapConfig = MapConfig(),
    *,
    extractor: FeatureExtractor | None = None,
    context: Context = QUIET,
    parallel: ParallelConfig | None = None,
    residual: ResidualScales | None = None,
    highlight_cap: float | None = None,
) -> Maps:
    """The map stage: anomaly maps and image scores of render/query pairs (images in
    [0, 1], any equal H x W) with the options of ``config``. ``extractor``: a built
    feature extractor (else made from ``config.features`` / ``config.efficientnet_weights``;
    the choice is said once through ``context``). ``parallel``: with the weights-free
    (pure JAX) features, shard the pairs over ``parallel.devices`` local devices,
    ``parallel.per_device_batch`` (default ``config.chunk``) pairs per device per launch;
    torch features (EfficientNet) and one device run unsharded. ``residual``: the
    model's residual scales (:func:`residual_scales`, kept in its calibration), required
    when ``config.normalise`` is not "none". ``highlight_cap``: with ``config.highlights``
    "calibrated", the model's cap (:func:`splatjax.anomaly.highlight_cap`, kept in its
    calibration as ``highlight_cap``): the queries' highlights are discounted up to it
    (:func:`splatjax.anomaly.discount_highlights`, clipped channels at
    ``config.highlight_saturation``, in ``config.highlight_space``); None (no calibration at hand) discounts
    nothing, the paper's maps."""
    if config.highlights == "calibrated" and highlight_cap is not None:
        queries = discount_highlights(renders, queries, highlight_cap, config.highlight_saturation,
                                      config.highlight_space)
    if extractor is None:
        extractor = make_feature_extractor(config.features, config.efficientnet_weights, context=context)
    weights = _normalise_weights(config, residual, extractor)
    mesh = None if parallel is None else query_mesh(parallel.devices)
    if mesh is None or mesh.size == 1 or not isinstance(extractor, WeightsFreeFeatures):
        maps = anomaly_maps(renders, queries, extractor, size=config.map_size, sigma=config.map_sigma,
                            chunk=config.chunk, weights=weights, shift_radius=config.shift_radius)
    else:
        per = config.chunk if parallel.per_device_batch is None else parallel.per_device_batch
        wt = None if weights is None else tuple(tuple(float(v) for v in w) for w in weights)
        maps = _sharded_maps(jnp.asarray(renders, jnp.float32), jnp.asarray(queries, jnp.float32), extractor,
                             config, mesh, per, wt)
    return Maps(maps=np.asarray(maps, np.float32),
                scores=np.asarray(image_scores(maps, config.score, config.score_k)), features=extractor.name)


def _normalise_weights(config: MapConfig, residual: ResidualScales | None,
                       extractor: FeatureExtractor) -> list[np.ndarray] | None:
    """The term weights of ``config.normalise`` from ``residual`` (None for "none")."""
    if config.normalise == "none":
        return None
    if residual is None:
        raise ValueError(f"normalise={config.normalise!r} needs the model's residual scales (measured with its "
                         "heatmap calibration, splatjax.app.calibration.model_calibration); none were given")
    if residual.features != extractor.name:
        raise ValueError(f"residual scales were measured with {residual.features!r} features, the maps use "
                         f"{extractor.name!r}")
    return residual.weights(config.normalise)


@functools.lru_cache(maxsize=16)
def _maps_fn(scales: tuple, radius: int, ssim_weight: float, size: int, sigma: float,
             weights: tuple | None = None) -> Callable:
    """``(renders, queries) -> maps`` with the weights-free features of these settings, one
    function object per setting (not per extractor object, which every evaluation makes
    anew), so that its sharded program is compiled once. ``weights``: per-level weights
    (tuples of one float) of the normalised map, or None."""
    extractor = WeightsFreeFeatures(scales=scales, radius=radius, ssim_weight=ssim_weight)
    return functools.partial(_maps_chunk, extractor=extractor, size=size, sigma=sigma, weights=weights)


def _sharded_maps(renders: Array, queries: Array, extractor: WeightsFreeFeatures, config: MapConfig, mesh,
                  per: int, weights: tuple | None = None) -> Array:
    """Maps of B pairs in launches of ``per`` pairs per device over ``mesh`` (the last
    launch padded with copies of the last pair, so one compilation serves all)."""
    if renders.ndim != 4 or renders.shape[-1] != 3 or queries.shape != renders.shape:
        raise ValueError(f"compute_maps needs renders and queries of equal shape [B, H, W, 3]; "
                         f"got {renders.shape} and {queries.shape}")
    b = renders.shape[0]
    fn = _maps_fn(extractor.scales, extractor.radius, extractor.ssim_weight, int(config.map_size),
                  float(config.map_sigma), weights)
    one_launch = ParallelConfig(devices=mesh.size)

    def launch(r, q):
        return shard_over_queries(fn, r, q, in_axes=(0, 0), mesh=mesh, config=one_launch)

    return map_padded_chunks(launch, b, min(int(per), ceil_div(b, mesh.size)) * mesh.size, (renders, queries))


def overlay_heatmap(
    image: Float[ArrayLike, "H W 3"],
    amap: Float[ArrayLike, "h w"],
    mask: ArrayLike | None = None,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    mask_color: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """uint8 RGB [H, W, 3] picture: ``image`` blended with the colour-mapped ``amap``.

    The map is resized (bilinear) to the image size and scaled to [vmin, vmax] (default:
    its own min and max; pass the same values for all images of a report to compare
    them). ``mask`` (bool, any size, True = defective) is drawn as a one-pixel outline in
    ``mask_color``.
    """
    import matplotlib
    import scipy.ndimage
    from PIL import Image

    img = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"overlay_heatmap: image must be [H, W, 3], got {img.shape}")
    h, w = img.shape[:2]
    m = np.asarray(amap, np.float32)
    if m.ndim != 2:
        raise ValueError(f"overlay_heatmap: map must be [h, w], got {m.shape}")
    if m.shape != (h, w):
        m = np.asarray(Image.fromarray(m).resize((w, h), Image.BILINEAR))
    lo = float(np.min(m)) if vmin is None else float(vmin)
    hi = float(np.max(m)) if vmax is None else float(vmax)
    norm = np.clip((m - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    heat = matplotlib.colormaps[cmap](norm)[..., :3].astype(np.float32)
    out = (1.0 - alpha) * img + alpha * heat
    out = (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if mask is not None:
        mk = np.asarray(mask).astype(bool)
        if mk.shape != (h, w):
            mk = np.asarray(Image.fromarray(mk.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 0
        edge = mk & ~scipy.ndimage.binary_erosion(mk, structure=np.ones((3, 3), bool), border_value=0)
        out[edge] = np.asarray(mask_color, np.uint8)
    return out
