"""Anomaly maps and image scores from a render and a query (REFERENCE.md "Anomaly map").

With EfficientNet features (the reference): both images resized to S x S (S = 224), then

    map = sum_c (r_c - q_c)^2 / std_c^2                       (ImageNet-normalised RGB)
        + sum_l upsample_S( sum_k (F_l(r)_k - F_l(q)_k)^2 )    (taps l = blocks 1, 5, 9, 21)

smoothed with a Gaussian of sigma 4 px (scipy's kernel and "reflect" border); the image
score is the maximum of the map. With the weights-free extractor the map is the sum of
its upsampled levels (no RGB term, see :class:`splatjax.features.WeightsFreeFeatures`),
smoothed and scored the same way: same output contract, different (documented) values.

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

from ..image import gaussian_filter, resize
from ..sharding import ParallelConfig, query_mesh, shard_over_queries
from .calibration import MapCalibration, calibrate
from .config import MapConfig
from .features import IMAGENET_STD, FeatureExtractor, WeightsFreeFeatures, make_feature_extractor

__all__ = [
    "MapConfig",
    "Maps",
    "MapCalibration",
    "compute_maps",
    "calibrate",
    "anomaly_map",
    "anomaly_maps",
    "image_scores",
    "rgb_term",
    "overlay_heatmap",
]

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


def anomaly_maps(
    renders: Float[ArrayLike, "B H W 3"],
    queries: Float[ArrayLike, "B H W 3"],
    extractor: FeatureExtractor,
    *,
    size: int = MAP_SIZE,
    sigma: float = MAP_SIGMA,
    chunk: int = 16,
) -> Float[Array, "B S S"]:
    """Anomaly maps [B, size, size] for render/query pairs (images in [0, 1], any H x W).

    ``size``: map resolution (224 as the paper); ``sigma``: Gaussian smoothing in map
    pixels (4 as the paper; 0 disables). Features are upsampled bilinearly (half-pixel
    centres, as ``F.interpolate(..., align_corners=False)``). Pairs are processed
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
    chunk = max(1, min(int(chunk), b))
    out = []
    for start in range(0, b, chunk):
        r = renders[start : start + chunk]
        q = queries[start : start + chunk]
        n = r.shape[0]
        if n < chunk:  # pad with copies of the last pair; dropped below
            r = jnp.concatenate([r, jnp.repeat(r[-1:], chunk - n, axis=0)])
            q = jnp.concatenate([q, jnp.repeat(q[-1:], chunk - n, axis=0)])
        out.append(_maps_chunk(r, q, extractor, size, sigma)[:n])
    return out[0] if len(out) == 1 else jnp.concatenate(out, axis=0)


def _maps_chunk(renders: Array, queries: Array, extractor: FeatureExtractor, size: int, sigma: float) -> Array:
    r = resize(renders, size, size)
    q = resize(queries, size, size)
    levels = list(extractor.levels(r, q))
    base = rgb_term(r, q) if extractor.rgb_term else jnp.zeros(r.shape[:3], jnp.float32)
    total = _combine(base, levels)
    return gaussian_filter(total, sigma) if sigma > 0 else total


def anomaly_map(
    render: Float[ArrayLike, "H W 3"],
    query: Float[ArrayLike, "H W 3"],
    extractor: FeatureExtractor,
    *,
    size: int = MAP_SIZE,
    sigma: float = MAP_SIGMA,
) -> Float[Array, "S S"]:
    """Anomaly map [size, size] of one render/query pair (see :func:`anomaly_maps`)."""
    return anomaly_maps(
        jnp.asarray(render)[None], jnp.asarray(query)[None], extractor, size=size, sigma=sigma
    )[0]


def image_scores(maps: Float[ArrayLike, "B S S"], score: str = "max") -> Float[Array, " B"]:
    """Image anomaly score of each map: its maximum (``score="max"``, the paper) or its
    99th percentile (``"p99"``, less sensitive to a single hot pixel)."""
    maps = jnp.asarray(maps)
    flat = maps.reshape(maps.shape[0], -1)
    if score == "p99":
        return jnp.percentile(flat, 99.0, axis=1)
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
    log: Callable[[str], object] | None = None,
    parallel: ParallelConfig | None = None,
) -> Maps:
    """The map stage: anomaly maps and image scores of render/query pairs (images in
    [0, 1], any equal H x W) with the options of ``config``. ``extractor``: a built
    feature extractor (else made from ``config.features`` / ``config.efficientnet_weights``;
    the choice is said once through ``log``). ``parallel``: with the weights-free
    (pure JAX) features, shard the pairs over ``parallel.devices`` local devices,
    ``parallel.per_device_batch`` (default ``config.chunk``) pairs per device per launch;
    torch features (EfficientNet) and one device run unsharded."""
    if extractor is None:
        extractor = make_feature_extractor(config.features, config.efficientnet_weights, log=log)
    mesh = None if parallel is None else query_mesh(parallel.devices)
    if mesh is None or mesh.size == 1 or not isinstance(extractor, WeightsFreeFeatures):
        maps = anomaly_maps(renders, queries, extractor, size=config.map_size, sigma=config.map_sigma,
                            chunk=config.chunk)
    else:
        per = config.chunk if parallel.per_device_batch is None else parallel.per_device_batch
        maps = _sharded_maps(jnp.asarray(renders, jnp.float32), jnp.asarray(queries, jnp.float32), extractor,
                             config, mesh, per)
    return Maps(maps=np.asarray(maps, np.float32), scores=np.asarray(image_scores(maps, config.score)),
                features=extractor.name)


@functools.lru_cache(maxsize=16)
def _maps_fn(scales: tuple, radius: int, ssim_weight: float, size: int, sigma: float) -> Callable:
    """``(renders, queries) -> maps`` with the weights-free features of these settings, one
    function object per setting (not per extractor object, which every evaluation makes
    anew), so that its sharded program is compiled once."""
    extractor = WeightsFreeFeatures(scales=scales, radius=radius, ssim_weight=ssim_weight)
    return functools.partial(_maps_chunk, extractor=extractor, size=size, sigma=sigma)


def _sharded_maps(renders: Array, queries: Array, extractor: WeightsFreeFeatures, config: MapConfig, mesh,
                  per: int) -> Array:
    """Maps of B pairs in launches of ``per`` pairs per device over ``mesh`` (the last
    launch padded with copies of the last pair, so one compilation serves all)."""
    if renders.ndim != 4 or renders.shape[-1] != 3 or queries.shape != renders.shape:
        raise ValueError(f"compute_maps needs renders and queries of equal shape [B, H, W, 3]; "
                         f"got {renders.shape} and {queries.shape}")
    b = renders.shape[0]
    fn = _maps_fn(extractor.scales, extractor.radius, extractor.ssim_weight, int(config.map_size),
                  float(config.map_sigma))
    size = min(int(per), -(-b // mesh.size)) * mesh.size
    one_launch = ParallelConfig(devices=mesh.size)
    out = []
    for start in range(0, b, size):
        idx = np.minimum(np.arange(start, start + size), b - 1)
        maps = shard_over_queries(fn, renders[idx], queries[idx], in_axes=(0, 0), mesh=mesh, config=one_launch)
        out.append(maps[: min(size, b - start)])
    return out[0] if len(out) == 1 else jnp.concatenate(out, axis=0)


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
