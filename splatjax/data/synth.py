"""Synthetic benchmark classes: a mesh rendered physically based (Mitsuba 3, ``scalar_rgb``)
into one MAD-Sim class folder, with 3D defects in the scene and masks exact by construction.

Object: an OBJ or PLY mesh (read by Mitsuba's own ``obj``/``ply`` plugins, never written),
turned so that ``up_axis`` is world z (Blender's frame), centred (bounding box) and scaled
to a unit bounding sphere, refined by conforming edge splits until no edge is longer than
``max_edge`` (so defects have round outlines), smooth-shaded with area-weighted vertex
normals. Material (seeded colour): ``plastic`` (two-sided rough plastic, alpha 0.25),
``two-tone`` (the same with a second colour on the faces beyond a random plane) or
``glossy`` (alpha 0.05). Lighting is fixed in the world: a constant white environment and
two directional lights. Background: alpha composited on white (like MAD-Sim's), written
as 8-bit sRGB PNGs.

Cameras (Blender/OpenGL camera-to-world, ``camera_angle_x`` as MAD-Sim's): ``train_views``
on a Fibonacci spiral over the sphere (``z / r`` in [-0.85, 0.95]), radius 3.0 to 3.3;
test views at random poses at least 3 degrees from every training direction, a third of
all test images rolled in-plane by a uniform angle in [-180, 180) degrees.

Defects (3D, in the scene), each at a visible surface point ``p`` (normal facing the
camera by at least :data:`MIN_FACING`) and of a target size ``f`` drawn uniformly from
``defect_fraction`` (a fraction of the object's pixels in that view; radius ``r`` from the
pixel footprint at ``p``):

* ``Missing``: the faces whose centroid lies within ``r`` of ``p`` removed (the material
  is two-sided, so the inside shows through the hole);
* ``Burrs``: a lumpy ellipsoid of the object's material (radius ``0.8 r``, height
  ``1.4 r`` along the normal) pushed out of the surface at ``p``;
* ``Stains``: the faces within ``r`` of ``p`` in another colour (dark brown on light
  objects, pale yellow on dark ones).

Mask: the defective view and the defect-free view are rendered with the same sampler
seed; the mask is every pixel whose 8-bit colours differ by more than ``mask_threshold``
(max over channels, in [0, 1]). A placement whose mask covers less than half or more than
three times ``f`` is redrawn at a new point (up to :data:`MAX_ATTEMPTS`, then the closest
is kept). The render noise (two seeds, one defect-free view) is measured and written with
every parameter, seed and placement into ``synth.json`` (written last).
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from ..context import QUIET, Context
from ..validation import require, require_choice, require_ints
from ..errors import DatasetError, DatasetNotFoundError, UserError
from ..files import file_sha256, write_json
from ..image import linear_to_srgb
from .madwrite import MadWriter, write_staged
from .roll import roll_pose
from .toy import _random_test_pose, training_poses

__all__ = [
    "SynthConfig",
    "SynthObject",
    "SYNTH_DEFECT_TYPES",
    "MATERIALS",
    "load_mesh",
    "refine_mesh",
    "make_object",
    "render_view",
    "defect_mask",
    "measure_noise",
    "make_synth_dataset",
]

SYNTH_DEFECT_TYPES = ("Burrs", "Missing", "Stains")
MATERIALS = ("plastic", "two-tone", "glossy")
MESH_SUFFIXES = (".obj", ".ply")
MIN_FACING = 0.35      # cosine between the surface normal and the direction to the camera
MAX_ATTEMPTS = 40      # placements tried per defective image
_RADIUS = (3.0, 3.3)   # camera distance (the object fits in the inscribed circle: rolls lose nothing)
_MAX_FACES = 400_000   # refinement stops before exceeding this
_FORMAT = 1
_ENV = 0.45
_LIGHTS = (((-0.35, -0.45, -0.82), 2.2), ((0.75, 0.45, -0.35), 0.7))   # (direction of travel, irradiance)
_ROUGHNESS = {"plastic": 0.25, "two-tone": 0.25, "glossy": 0.05}


def _field(default, help_, **meta):
    return dataclasses.field(default=default, metadata={"help": help_, **meta})


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """Settings of :func:`make_synth_dataset` (see the module docstring)."""

    train_views: int = _field(100, "training views (Fibonacci spiral around the object)")
    test_good: int = _field(12, "defect-free test images")
    test_per_type: int = _field(12, "test images per defect type (Burrs, Missing, Stains)")
    resolution: int = _field(200, "image width and height in pixels")
    spp: int = _field(256, "samples per pixel (render noise falls as 1/sqrt(spp); see synth.json)")
    seed: int = _field(0, "seed of colours, poses, defects and render samplers")
    material: str = _field("plastic", "object material", choices=MATERIALS)
    defect_fraction: tuple[float, float] = _field(
        (0.005, 0.03), "range of a defect's target size, as a fraction of the object's pixels in its view")
    mask_threshold: float = _field(0.1, "a pixel is defective when its 8-bit colour changes by more than this "
                                   "(max over channels, in [0, 1])")
    up_axis: str = _field("y", "the mesh axis that points up (turned to world z)", choices=("x", "y", "z"))
    max_edge: float = _field(0.02, "refine the mesh (unit bounding sphere) until no edge is longer than this")
    camera_angle_x: float = _field(0.6911112070083618, "horizontal field of view in radians")
    threads: int = _field(0, "render threads (0: all cores)")

    def __post_init__(self):
        for name, low in (("train_views", 1), ("test_good", 0), ("test_per_type", 0), ("resolution", 16),
                          ("spp", 1), ("threads", 0)):
            require_ints(self, (name,), low)
        require_choice(self, "material", MATERIALS)
        require_choice(self, "up_axis", ("x", "y", "z"))
        lo, hi = self.defect_fraction
        require(0.0 < lo <= hi < 0.5, self, "defect_fraction", "two fractions 0 < LO <= HI < 0.5")
        require(0.0 < self.mask_threshold < 1.0, self, "mask_threshold", "in (0, 1)")
        require(0.0 < self.max_edge <= 2.0, self, "max_edge", "in (0, 2]")
        require(0.0 < self.camera_angle_x < 2 * math.asin(1.0 / _RADIUS[0]) * 1.6, self, "camera_angle_x",
                "a positive angle in radians small enough to fill the view with the object")


# ----------------------------------------------------------------------------- Mitsuba


def _mitsuba(threads: int = 0):
    """Mitsuba 3 in its ``scalar_rgb`` variant (imported here only: ``import splatjax``
    works without it)."""
    try:
        import drjit as dr
        import mitsuba as mi
    except ImportError as e:
        raise UserError("rendering meshes needs Mitsuba 3, which is not installed: pip install 'splatjax[synth]'") from e
    mi.set_variant("scalar_rgb")
    dr.set_thread_count(int(threads) if threads else (os.cpu_count() or 1))
    return mi


def _mesh_object(mi, name: str, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, bsdf):
    """A Mitsuba mesh from arrays (only the vertices its faces use)."""
    used, inverse = np.unique(faces.ravel(), return_inverse=True)
    props = mi.Properties()
    props["bsdf"] = bsdf
    mesh = mi.Mesh(name, len(used), len(faces), props=props, has_vertex_normals=True)
    params = mi.traverse(mesh)
    import drjit as dr

    params["vertex_positions"] = dr.scalar.ArrayXf(vertices[used].astype(np.float32).ravel())
    params["vertex_normals"] = dr.scalar.ArrayXf(normals[used].astype(np.float32).ravel())
    params["faces"] = dr.scalar.ArrayXu(inverse.astype(np.uint32))
    params.update()
    return mesh


def _bsdf(mi, color, roughness: float):
    return mi.load_dict({"type": "twosided", "material": {
        "type": "roughplastic", "alpha": float(roughness),
        "diffuse_reflectance": {"type": "rgb", "value": [float(c) for c in color]}}})


# ----------------------------------------------------------------------------- mesh


_UP = {"x": np.array([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]]),    # rotations taking the up axis to z
       "y": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),
       "z": np.eye(3)}


def load_mesh(path: str | os.PathLike, up_axis: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """``(vertices [V, 3] float64, faces [F, 3] int64)`` of an OBJ or PLY mesh, read
    read-only with Mitsuba's own plugin, turned so ``up_axis`` is z, centred on its bounding
    box and scaled to a unit bounding sphere. A missing, unsupported or unreadable file is
    a :class:`DatasetError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"mesh {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise DatasetError(f"mesh {str(path)!r} is not an OBJ or PLY file (suffix {path.suffix!r})")
    mi = _mitsuba()
    try:
        shape = mi.load_dict({"type": suffix[1:], "filename": str(path.resolve()), "face_normals": True})
        params = mi.traverse(shape)
        v = np.array(params["vertex_positions"], np.float64).reshape(-1, 3)
        f = np.array(params["faces"], np.int64).reshape(-1, 3)
    except Exception as e:  # Mitsuba raises RuntimeError with its parser's message
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DatasetError(f"mesh {str(path)!r} cannot be read: {msg}") from e
    if len(f) == 0 or not np.isfinite(v).all():
        raise DatasetError(f"mesh {str(path)!r} has no faces or non-finite vertices")
    v = v @ _UP[up_axis].T
    v = v - 0.5 * (v.min(0) + v.max(0))
    scale = np.linalg.norm(v, axis=1).max()
    if not scale > 0:
        raise DatasetError(f"mesh {str(path)!r} is degenerate (all vertices at one point)")
    return v / scale, f


def refine_mesh(vertices: np.ndarray, faces: np.ndarray, max_edge: float, max_faces: int = _MAX_FACES,
                normals: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(vertices, faces, normals)``: every edge longer than ``max_edge`` split at its
    midpoint (each face by its pattern of split edges into 2, 3 or 4, so neighbours stay
    conforming: no T-junctions), repeated until none is longer or a further pass would
    exceed ``max_faces``. The shape is unchanged; vertex ``normals`` (when given) are
    interpolated to the new vertices, so smooth shading stays that of the input mesh."""
    v, f = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    n = None if normals is None else np.asarray(normals, np.float64)
    while True:
        e = np.stack([f, np.roll(f, -1, axis=1)], axis=-1)            # [F, 3, 2]: edge k = (v_k, v_k+1)
        length = np.linalg.norm(v[e[..., 0]] - v[e[..., 1]], axis=-1)
        split = length > max_edge
        if not split.any() or len(f) + int(split.sum()) > max_faces:
            return v, f, n
        key = np.sort(e[split], axis=-1)
        uniq, inv = np.unique(key, axis=0, return_inverse=True)
        mid = np.full(f.shape, -1, np.int64)
        mid[split] = len(v) + inv.ravel()
        v = np.vstack([v, 0.5 * (v[uniq[:, 0]] + v[uniq[:, 1]])])
        if n is not None:
            nm = n[uniq[:, 0]] + n[uniq[:, 1]]
            nm /= np.maximum(np.linalg.norm(nm, axis=1, keepdims=True), 1e-12)
            n = np.vstack([n, nm])
        count = split.sum(1)
        out = [f[count == 0]]
        for c in (1, 2, 3):
            sel = np.flatnonzero(count == c)
            if sel.size == 0:
                continue
            if c == 1:    # rotate so the split edge is edge 0
                r = np.argmax(split[sel], axis=1)
            elif c == 2:  # rotate so the unsplit edge is edge 2
                r = (np.argmin(split[sel], axis=1) + 1) % 3
            else:
                r = np.zeros(sel.size, np.int64)
            idx = (r[:, None] + np.arange(3)) % 3
            a, b, cc = (np.take_along_axis(f[sel], idx, 1)[:, k] for k in range(3))
            m0, m1, m2 = (np.take_along_axis(mid[sel], idx, 1)[:, k] for k in range(3))
            if c == 1:
                out += [np.stack([a, m0, cc], 1), np.stack([m0, b, cc], 1)]
            elif c == 2:
                out += [np.stack([m0, b, m1], 1), np.stack([a, m0, m1], 1), np.stack([a, m1, cc], 1)]
            else:
                out += [np.stack([a, m0, m2], 1), np.stack([b, m1, m0], 1), np.stack([cc, m2, m1], 1),
                        np.stack([m0, m1, m2], 1)]
        f = np.concatenate(out)


def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # area-weighted
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(norm > 0, n / np.maximum(norm, 1e-30), np.array([0.0, 0.0, 1.0]))


@dataclasses.dataclass(frozen=True)
class SynthObject:
    """The normalised, refined object: ``vertices`` [V, 3], ``faces`` [F, 3], ``normals``
    [V, 3], ``part`` [F] (0 or 1: which colour), ``colors`` [2, 3] (linear RGB albedo),
    ``roughness``."""

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    part: np.ndarray
    colors: np.ndarray
    roughness: float

    @property
    def centroids(self) -> np.ndarray:
        return self.vertices[self.faces].mean(axis=1)


def _color(rng) -> np.ndarray:
    h, s, v = rng.uniform(0, 1), rng.uniform(0.45, 0.8), rng.uniform(0.45, 0.8)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) ** 2.2   # sRGB-ish -> linear albedo


def make_object(vertices, faces, config: SynthConfig) -> SynthObject:
    """Refine the mesh and give it the seeded material of ``config``."""
    v, f, normals = refine_mesh(vertices, faces, config.max_edge, normals=_vertex_normals(vertices, faces))
    rng = np.random.default_rng([int(config.seed), 11])
    colors = np.stack([_color(rng), _color(rng)])
    part = np.zeros(len(f), np.int64)
    if config.material == "two-tone":
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        part = (v[f].mean(1) @ d > rng.uniform(-0.3, 0.3)).astype(np.int64)
    return SynthObject(v, f, normals, part, colors, _ROUGHNESS[config.material])


# ----------------------------------------------------------------------------- defects


def _icosphere(level: int = 2) -> tuple[np.ndarray, np.ndarray]:
    t = (1 + 5 ** 0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                  [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
                  [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    for _ in range(level):
        v, f = _split_all(v, f)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, f


def _split_all(v, f):
    """One pass of :func:`refine_mesh` splitting every edge."""
    lengths = np.linalg.norm(v[f] - v[np.roll(f, -1, 1)], axis=-1)
    return refine_mesh(v, f, 0.999 * float(lengths.min()), max_faces=len(f) * 4)[:2]


def _burr_mesh(p, n, r, rng) -> tuple[np.ndarray, np.ndarray]:
    """A lumpy ellipsoid (radius 0.8 r, half-height 0.7 r along ``n``) centred 0.45 r out
    of the surface point ``p``."""
    v, f = _icosphere(2)
    v = v * (1.0 + 0.15 * rng.uniform(-1, 1, size=(len(v), 1)))
    t = np.cross(n, [1.0, 0, 0] if abs(n[0]) < 0.9 else [0, 1.0, 0])
    t /= np.linalg.norm(t)
    frame = np.stack([t, np.cross(n, t), n], axis=1)          # columns: tangent, bitangent, normal
    v = (v * [0.8 * r, 0.8 * r, 0.7 * r]) @ frame.T + p + 0.45 * r * n
    return v, f


def _stain_color(host: np.ndarray, rng) -> np.ndarray:
    dark, pale = np.array([0.05, 0.025, 0.01]), np.array([0.8, 0.7, 0.3])
    base = dark if np.abs(host - dark).max() >= np.abs(host - pale).max() else pale
    return np.clip(base * rng.uniform(0.85, 1.15, size=3), 0, 1)


# ----------------------------------------------------------------------------- rendering


def _scene(mi, obj: SynthObject, defect: dict | None):
    """The Mitsuba scene of ``obj`` (with ``defect``, see :func:`_apply_defect`)."""
    shapes, faces, part = {}, obj.faces, obj.part
    extra = []
    if defect is not None:
        sel = np.zeros(len(faces), bool)
        sel[defect["faces"]] = True
        if defect["type"] in ("Missing", "Stains"):
            faces, part = faces[~sel], part[~sel]
        if defect["type"] == "Stains":
            extra.append(("stain", obj.faces[sel], defect["color"]))
    for k in (0, 1):
        fk = faces[part == k]
        if len(fk):
            shapes[f"part{k}"] = _mesh_object(mi, f"part{k}", obj.vertices, fk, obj.normals,
                                              _bsdf(mi, obj.colors[k], obj.roughness))
    for name, fk, color in extra:
        shapes[name] = _mesh_object(mi, name, obj.vertices, fk, obj.normals, _bsdf(mi, color, obj.roughness))
    if defect is not None and defect["type"] == "Burrs":
        bv, bf = np.asarray(defect["vertices"]), np.asarray(defect["mesh_faces"])
        shapes["burr"] = _mesh_object(mi, "burr", bv, bf, _vertex_normals(bv, bf),
                                      _bsdf(mi, defect["color"], obj.roughness))
    d = {"type": "scene", "integrator": {"type": "path", "max_depth": 6, "hide_emitters": True},
         "env": {"type": "constant", "radiance": {"type": "rgb", "value": _ENV}}}
    for i, (direction, irr) in enumerate(_LIGHTS):
        d[f"light{i}"] = {"type": "directional", "direction": list(direction),
                          "irradiance": {"type": "rgb", "value": irr}}
    d.update(shapes)
    return mi.load_dict(d)


def _sensor(mi, c2w, config: SynthConfig):
    to_world = np.asarray(c2w, float) @ np.diag([-1.0, 1.0, -1.0, 1.0])   # Blender/OpenGL -> Mitsuba camera
    res = config.resolution
    return mi.load_dict({
        "type": "perspective", "fov": math.degrees(config.camera_angle_x), "fov_axis": "x",
        "to_world": mi.ScalarTransform4f(to_world.tolist()),
        "sampler": {"type": "independent", "sample_count": int(config.spp)},
        "film": {"type": "hdrfilm", "width": res, "height": res, "rfilter": {"type": "box"},
                 "pixel_format": "rgba"}})


def _render(mi, scene, c2w, config: SynthConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(8-bit sRGB [H, W, 3] on white, alpha [H, W] float)."""
    img = np.array(mi.render(scene, sensor=_sensor(mi, c2w, config), seed=int(seed)), np.float64)
    alpha = np.clip(img[..., 3], 0.0, 1.0)
    straight = np.where(alpha[..., None] > 0, img[..., :3] / np.maximum(alpha[..., None], 1e-12), 0.0)
    rgb = alpha[..., None] * linear_to_srgb(straight) + (1.0 - alpha[..., None])
    return np.round(np.clip(rgb, 0, 1) * 255.0).astype(np.uint8), alpha


def render_view(obj: SynthObject, c2w, config: SynthConfig, *, seed: int,
                defect: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb uint8 [H, W, 3], alpha [H, W])``: ``obj`` (with ``defect``, a placement as
    recorded in ``synth.json``) seen from Blender c2w ``c2w``, sampler seed ``seed``,
    composited on white. Deterministic."""
    mi = _mitsuba(config.threads)
    return _render(mi, _scene(mi, obj, _defect_arrays(defect)), c2w, config, seed)


def defect_mask(good: np.ndarray, bad: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels whose 8-bit colours differ by more than ``threshold`` (max over channels,
    in [0, 1])."""
    diff = np.abs(good.astype(np.int16) - bad.astype(np.int16)).max(-1)
    return diff > threshold * 255.0


def measure_noise(obj: SynthObject, c2w, config: SynthConfig, seeds=(1, 2)) -> dict:
    """Render noise of one defect-free view: two renders with different sampler seeds;
    statistics of the per-pixel colour difference (max over channels, [0, 1]) over the
    object's pixels (alpha = 1 in both)."""
    a, aa = render_view(obj, c2w, config, seed=seeds[0])
    b, ab = render_view(obj, c2w, config, seed=seeds[1])
    inside = (aa >= 1.0) & (ab >= 1.0)
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1)[inside] / 255.0
    thr = config.mask_threshold
    return {"spp": config.spp, "seeds": list(seeds), "pixels": int(inside.sum()),
            "mean": float(d.mean()), "std": float(d.std()), "p99": float(np.quantile(d, 0.99)),
            "p999": float(np.quantile(d, 0.999)), "max": float(d.max()),
            "above_threshold": float((d > thr).mean())}


def _defect_arrays(defect):
    if defect is None:
        return None
    return {**defect, "faces": np.asarray(defect.get("faces", []), np.int64)}


# ----------------------------------------------------------------------------- placement


def _pixel_ray(c2w, i, j, config):
    res = config.resolution
    f = 0.5 * res / math.tan(0.5 * config.camera_angle_x)
    d = np.asarray(c2w)[:3, :3] @ np.array([(j + 0.5 - 0.5 * res) / f, -(i + 0.5 - 0.5 * res) / f, -1.0])
    return np.asarray(c2w)[:3, 3], d / np.linalg.norm(d), f


def _pick_point(mi, scene, obj, alpha, c2w, config, rng):
    """A random surface point seen through a fully covered pixel, facing the camera:
    ``(p, n, distance, facing)`` or None."""
    rows, cols = np.nonzero(alpha >= 1.0)
    if rows.size == 0:
        return None
    for _ in range(200):
        k = int(rng.integers(rows.size))
        o, d, f = _pixel_ray(c2w, rows[k], cols[k], config)
        si = scene.ray_intersect(mi.Ray3f(mi.ScalarPoint3f(*o), mi.ScalarVector3f(*d)))
        if not si.is_valid():
            continue
        n = np.array(si.n, float)
        facing = -float(n @ d)
        if facing < 0:
            n, facing = -n, -facing
        if facing >= MIN_FACING:
            return np.array(si.p, float), n, float(si.t), facing, f
    return None


def _place(kind, obj, p, n, r, rng):
    """The placement of a defect of ``kind`` (JSON-able), or None when it touches no face."""
    if kind == "Burrs":
        v, f = _burr_mesh(p, n, r, rng)
        color = obj.colors[int(obj.part[np.argmin(np.linalg.norm(obj.centroids - p, axis=1))])]
        return {"type": kind, "point": p.tolist(), "normal": n.tolist(), "radius": r, "faces": [],
                "vertices": v.tolist(), "mesh_faces": f.tolist(), "color": color.tolist()}
    sel = np.flatnonzero(np.linalg.norm(obj.centroids - p, axis=1) <= r)
    if sel.size == 0:
        return None
    out = {"type": kind, "point": p.tolist(), "normal": n.tolist(), "radius": r, "faces": sel.tolist()}
    if kind == "Stains":
        host = obj.colors[int(np.bincount(obj.part[sel], minlength=2).argmax())]
        out["color"] = _stain_color(host, rng).tolist()
    return out


def _defective_view(mi, good_scene, obj, kind, c2w, config, seed, good, alpha, rng):
    """``(image, mask, record)`` of a defect of ``kind`` placed for this view."""
    lo, hi = config.defect_fraction
    target = float(rng.uniform(lo, hi))
    obj_px = int((alpha >= 0.5).sum())
    best = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        hit = _pick_point(mi, good_scene, obj, alpha, c2w, config, rng)
        if hit is None:
            break
        p, n, t, facing, f = hit
        r = (t / f) * math.sqrt(target * obj_px / (math.pi * facing))
        placement = _place(kind, obj, p, n, r, rng)
        if placement is None:
            continue
        img, _ = _render(mi, _scene(mi, obj, _defect_arrays(placement)), c2w, config, seed)
        mask = defect_mask(good, img, config.mask_threshold)
        frac = float(mask.sum()) / max(obj_px, 1)
        score = abs(math.log(max(frac, 1e-9) / target))
        if best is None or score < best[0]:
            best = (score, img, mask, placement, frac, attempt)
        if 0.5 * target <= frac <= 3.0 * target:
            break
    if best is None or best[4] == 0.0:
        raise UserError(f"could not place a visible {kind} defect in a test view (seed {config.seed}); "
                        "try a larger --defect-fraction or --resolution")
    _, img, mask, placement, frac, attempt = best
    diff = np.abs(good.astype(np.int16) - img.astype(np.int16)).max(-1) / 255.0
    record = {"placement": placement, "target_fraction": target, "object_pixels": obj_px,
              "mask_pixels": int(mask.sum()), "mask_fraction": frac, "attempts": attempt,
              "contrast_mean": float(diff[mask].mean()) if mask.any() else 0.0,
              "contrast_median": float(np.median(diff[mask])) if mask.any() else 0.0}
    return img, mask, record


# ----------------------------------------------------------------------------- dataset


def _seed(config, *tags) -> int:
    return int(np.random.default_rng([int(config.seed), *tags]).integers(2 ** 31 - 1))


def _test_plan(config, train_dirs) -> list[dict]:
    rng = np.random.default_rng([int(config.seed), 2])
    plan = [{"kind": "good", "n": n} for n in range(config.test_good)]
    plan += [{"kind": k, "n": n} for k in SYNTH_DEFECT_TYPES for n in range(config.test_per_type)]
    rolled = set(rng.choice(len(plan), size=int(round(len(plan) / 3)), replace=False).tolist()) if plan else set()
    for k, q in enumerate(plan):
        c2w = _random_test_pose(rng, train_dirs, radius=_RADIUS, z_range=(-0.8, 0.92), max_roll=0.0)
        q["roll_deg"] = float(rng.uniform(-180.0, 180.0)) if k in rolled else 0.0
        q["c2w"] = roll_pose(c2w, math.radians(q["roll_deg"])) if q["roll_deg"] else c2w
        q["seed"] = _seed(config, 3, k)
    return plan


def _generate(root: Path, mesh_path: Path, obj: SynthObject, config: SynthConfig, mesh_info: dict,
              context: Context) -> None:
    mi = _mitsuba(config.threads)
    writer = MadWriter(root, config.camera_angle_x)
    good_scene = _scene(mi, obj, None)
    poses = training_poses(config.train_views, seed=config.seed, radius=_RADIUS, z_range=(-0.85, 0.95))
    for i, c2w in enumerate(poses):
        writer.train(_render(mi, good_scene, c2w, config, _seed(config, 4, i))[0], c2w)
        context.tick("synth train views", i + 1, len(poses))
    train_dirs = poses[:, :3, 3] / np.linalg.norm(poses[:, :3, 3], axis=1, keepdims=True)
    plan = _test_plan(config, train_dirs)
    defects = {}
    for k, q in enumerate(plan):
        good, alpha = _render(mi, good_scene, q["c2w"], config, q["seed"])
        if q["kind"] == "good":
            writer.test("good", q["n"], good, q["c2w"])
        else:
            rng = np.random.default_rng([int(config.seed), 5, k])
            img, mask, record = _defective_view(mi, good_scene, obj, q["kind"], q["c2w"], config, q["seed"],
                                                good, alpha, rng)
            rel = writer.test(q["kind"], q["n"], img, q["c2w"], mask)
            defects[rel] = {"seed": q["seed"], "roll_deg": q["roll_deg"], **record}
        context.tick("synth test views", k + 1, len(plan))
    writer.finish()
    noise_pose = plan[0]["c2w"] if plan else poses[0]
    noise = measure_noise(obj, noise_pose, config, seeds=(_seed(config, 6, 0), _seed(config, 6, 1)))
    fr = [d["mask_fraction"] for d in defects.values()]
    contrast = [d["contrast_median"] for d in defects.values()]
    context.say(f"synth: render noise at {config.spp} spp: p99 {noise['p99']:.3f}, max {noise['max']:.3f} "
                f"(mask threshold {config.mask_threshold})"
                + (f"; defects: {min(fr):.2%}-{max(fr):.2%} of the object's pixels, median contrast "
                   f"{float(np.median(contrast)):.3f}" if fr else ""))
    manifest = {
        "generator": __name__, "format": _FORMAT, "config": dataclasses.asdict(config),
        "mesh": {"path": str(mesh_path), **mesh_info, "refined_vertices": int(len(obj.vertices)),
                 "refined_faces": int(len(obj.faces))},
        "renderer": {"mitsuba": mi.__version__, "variant": "scalar_rgb", "integrator": "path, max_depth 6",
                     "filter": "box", "output": "8-bit sRGB composited on white"},
        "lighting": {"constant_environment": _ENV,
                     "directional": [{"direction": list(d), "irradiance": i} for d, i in _LIGHTS]},
        "material": {"name": config.material, "bsdf": "twosided roughplastic", "alpha": obj.roughness,
                     "colors_linear": obj.colors.tolist()},
        "cameras": {"camera_angle_x": config.camera_angle_x, "radius": list(_RADIUS),
                    "train_seeds": [_seed(config, 4, i) for i in range(len(poses))]},
        "test": [{"path": f"test/{q['kind']}/{q['n']}.png", "seed": q["seed"], "roll_deg": q["roll_deg"]}
                 for q in plan],
        "noise": {"view": f"test/{plan[0]['kind']}/{plan[0]['n']}.png" if plan else "train/good/0.png", **noise},
        "defects": defects,
    }
    write_json(root / "synth.json", manifest, indent=1)


def make_synth_dataset(
    mesh: str | os.PathLike,
    out: str | os.PathLike,
    config: SynthConfig = SynthConfig(),
    *,
    context: Context = QUIET,
) -> Path:
    """Render ``mesh`` into a new MAD-Sim class folder ``out`` (see the module docstring):
    ``train/good/``, ``transforms.json``, ``test/<type>/``, ``ground_truth/<type>/``,
    ``test_poses.json`` and ``synth.json`` (every parameter, seed, placement, the measured
    noise and defect fractions). Deterministic for a config. Written into a hidden
    temporary sibling and renamed into place at the end. An existing non-empty ``out``,
    a missing or unsupported mesh raise a one-line :class:`UserError`."""
    out, mesh = Path(out), Path(mesh)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"refusing to write into {str(out)!r}: it exists and is not an empty folder")
    vertices, faces = load_mesh(mesh, config.up_axis)
    info = {"sha256": file_sha256(mesh), "vertices": int(len(vertices)), "faces": int(len(faces))}
    obj = make_object(vertices, faces, config)
    context.say(f"synth: {mesh.name}: {len(faces)} faces, refined to {len(obj.faces)}; "
                f"{config.train_views} training and {config.test_good + 3 * config.test_per_type} test views "
                f"at {config.resolution} px, {config.spp} spp")
    return write_staged(out, lambda tmp: _generate(tmp, mesh, obj, config, info, context))
