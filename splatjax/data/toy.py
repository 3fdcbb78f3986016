"""A built-in, seeded toy dataset in the MAD-Sim layout: a LEGO-like object of coloured
axis-aligned bricks with studs, rendered by its own vectorised numpy ray caster (ground
truth; it never uses the splat renderer), with three kinds of 3D defects like MAD-Sim.

World frame: Blender's (z up), object centred at the origin, about 1.5-2 units across.
Cameras: camera-to-world 4 x 4 in the Blender/OpenGL convention (x right, y up, looking
down -z), pixel (row i, column j) centred at (u, v) = (j + 0.5, i + 0.5), focal length
``0.5 * W / tan(0.5 * camera_angle_x)``, principal point at the image centre, i.e. the same
model as :func:`splatjax.camera.camera_from_blender`.

Shading is view-independent (Lambert + ambient with lights fixed to the object), matching a
degree-0 colour splat model. Each pixel is supersampled ``s x s`` (default 2 x 2); alpha
is the covered fraction.

Defects (at random test poses that are not training poses, always placed on a part that
is visible from the test camera and checked to cover at least ``min_defect_fraction`` of
the image):

* ``Missing``: one visible brick (with its studs) removed;
* ``Burrs``: a small lump (a box sticking out of a visible brick face, darker than it);
* ``Stains``: a round discoloured patch painted on a visible brick face.

The mask of a defective image is every pixel where the defective render differs from the
defect-free render at the same pose (another surface, another depth, or paint) in any of
its sub-samples.

Layout written (MAD-Sim): ``train/good/<i>.png`` (RGBA), ``transforms.json``,
``test/<type>/<n>.png`` (RGBA), ``ground_truth/<type>/<n>_mask.png`` (not for ``good``),
plus ``test_poses.json`` (``{"camera_angle_x": a, "poses": {"test/<type>/<n>.png": c2w}}``)
and ``toy_meta.json`` (generator parameters; written last, marks a complete dataset).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from jaxtyping import Bool, Float

from ..camera import look_at_c2w
from ..errors import ConfigError, DatasetError
from ..files import atomic_write, read_json, write_json
from .madwrite import MadWriter, write_staged

__all__ = [
    "ToyScene",
    "ToyRender",
    "TOY_DEFECT_TYPES",
    "make_toy_scene",
    "render_toy",
    "raycast_toy",
    "defect_mask",
    "training_poses",
    "make_toy_dataset",
    "write_toy_preview",
]

TOY_DEFECT_TYPES = ("Burrs", "Missing", "Stains")
_MAX_ROLL = math.radians(10.0)        # test cameras: in-plane roll up to this
_MIN_TEST_ANGLE = math.radians(3.0)   # test directions: at least this far from training ones
_FORMAT = 1  # bump when the generator's output changes (invalidates reuse of old folders)

# Grid of the brick model: stud pitch and brick height in world units (LEGO ratio 1 : 1.2).
_PITCH = 0.2
_BRICK_H = 0.24
_STUD_R = 0.06
_STUD_H = 0.045

_PALETTE = np.array([
    [0.78, 0.08, 0.07],  # red
    [0.06, 0.33, 0.72],  # blue
    [0.96, 0.78, 0.08],  # yellow
    [0.12, 0.55, 0.22],  # green
    [0.93, 0.47, 0.07],  # orange
    [0.62, 0.63, 0.60],  # light grey
    [0.83, 0.74, 0.52],  # tan
    [0.55, 0.78, 0.15],  # lime
    [0.33, 0.66, 0.85],  # azure
    [0.55, 0.16, 0.45],  # magenta
])

# Lights fixed to the object (view-independent shading): ambient + two directional lights.
_AMBIENT = 0.48
_LIGHTS = np.array([[0.42, 0.28, 0.86], [-0.62, -0.72, 0.31]])
_LIGHTS = _LIGHTS / np.linalg.norm(_LIGHTS, axis=1, keepdims=True)
_LIGHT_W = np.array([0.5, 0.2])


@dataclasses.dataclass(frozen=True)
class ToyScene:
    """Primitives of a toy object (numpy, float64).

    kind: [P] 0 = axis-aligned box, 1 = cylinder with a vertical (z) axis whose radius is
    half its x extent; lo, hi: [P, 3] axis-aligned bounds; color: [P, 3] albedo in [0, 1];
    part: [P] the brick each primitive belongs to (a brick and its studs share one part).
    stains: [K, 4] (centre xyz, radius) painted on part ``stain_part`` [K] with
    ``stain_color`` [K, 3].
    """

    kind: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    color: np.ndarray
    part: np.ndarray
    stains: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 4)))
    stain_part: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.int64))
    stain_color: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 3)))

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def without_part(self, part: int) -> "ToyScene":
        keep = self.part != part
        return dataclasses.replace(self, kind=self.kind[keep], lo=self.lo[keep], hi=self.hi[keep],
                                   color=self.color[keep], part=self.part[keep])

    def with_box(self, lo, hi, color) -> "ToyScene":
        new_part = int(self.part.max(initial=-1)) + 1
        return dataclasses.replace(
            self, kind=np.append(self.kind, 0), lo=np.vstack([self.lo, lo]),
            hi=np.vstack([self.hi, hi]), color=np.vstack([self.color, color]),
            part=np.append(self.part, new_part))

    def with_stain(self, centre, radius, part, color) -> "ToyScene":
        return dataclasses.replace(
            self, stains=np.vstack([self.stains, [*centre, radius]]),
            stain_part=np.append(self.stain_part, part),
            stain_color=np.vstack([self.stain_color, color]))


# ----------------------------------------------------------------------------- object


def _occupancy(rng: np.random.Generator) -> np.ndarray:
    """A creature-like voxel occupancy [X, Y, Z] (bool): legs, body, head, tail, extras."""
    occ = np.zeros((10, 10, 7), dtype=bool)
    bl, bw = rng.integers(5, 8), rng.integers(3, 6)          # body length (x), width (y)
    bx0, by0 = (10 - bl) // 2, (10 - bw) // 2
    legs = rng.random() < 0.75
    z0 = 1 if legs else 0
    bh = rng.integers(2, 4)
    occ[bx0:bx0 + bl, by0:by0 + bw, z0:z0 + bh] = True
    if legs:
        for lx in (bx0, bx0 + bl - 1):
            for ly in (by0, by0 + bw - 1):
                occ[lx, ly, 0] = True
                if rng.random() < 0.5:  # thicker legs
                    occ[lx + (1 if lx == bx0 else -1), ly, 0] = True
    top = z0 + bh
    # head on one end, may overhang by one cell
    hl, hw = rng.integers(2, 4), rng.integers(2, min(4, bw) + 1)
    front = rng.random() < 0.5
    hx0 = bx0 - int(rng.random() < 0.6) if front else bx0 + bl - hl + int(rng.random() < 0.6)
    hx0 = int(np.clip(hx0, 0, 10 - hl))
    hy0 = by0 + int(rng.integers(0, bw - hw + 1))
    hh = rng.integers(1, 3)
    occ[hx0:hx0 + hl, hy0:hy0 + hw, top:min(7, top + hh)] = True
    # tail / arm at the other end
    tx = bx0 + bl if front else bx0 - 1
    ty = by0 + int(rng.integers(0, bw))
    tz = z0 + int(rng.integers(0, bh))
    if 0 <= tx < 10:
        occ[tx, ty, tz] = True
        if rng.random() < 0.5 and tz + 1 < 7:
            occ[tx, ty, tz + 1] = True
    # a few random extras on top of the body (crest, back plates)
    for _ in range(int(rng.integers(1, 4))):
        ex, ey = bx0 + int(rng.integers(0, bl)), by0 + int(rng.integers(0, bw))
        if not occ[ex, ey, top]:
            occ[ex, ey, top] = True
            if rng.random() < 0.5 and ex + 1 < bx0 + bl:
                occ[ex + 1, ey, top] = True
    # side ears / arms
    if rng.random() < 0.6:
        ay = by0 - 1 if rng.random() < 0.5 else by0 + bw
        ax = bx0 + int(rng.integers(1, max(2, bl - 1)))
        if 0 <= ay < 10:
            occ[ax, ay, z0 + bh - 1] = True
    return occ


_BRICK_SIZES = [(2, 4), (4, 2), (2, 3), (3, 2), (2, 2), (1, 4), (4, 1), (1, 3), (3, 1),
                (1, 2), (2, 1), (1, 1)]


def make_toy_scene(seed: int = 0) -> ToyScene:
    """The seeded toy object: bricks (boxes on a 0.2 x 0.2 x 0.24 grid, studs on exposed
    tops), centred at the origin. Deterministic for a seed."""
    rng = np.random.default_rng([int(seed), 0])
    occ = _occupancy(rng)
    nx, ny, nz = occ.shape
    brick_of = -np.ones(occ.shape, dtype=np.int64)
    bricks = []  # (x0, y0, z, sx, sy)
    for z in range(nz):
        # scan the layer in raster order, from either end; a brick grows away from the
        # scan start so it only covers cells not yet visited
        flip = bool(rng.random() < 0.5)
        order = [(x, y) for x in range(nx) for y in range(ny)]
        for x, y in (order[::-1] if flip else order):
            if not occ[x, y, z] or brick_of[x, y, z] >= 0:
                continue
            sizes = list(_BRICK_SIZES)
            rng.shuffle(sizes)
            sizes.sort(key=lambda s: -s[0] * s[1] + rng.random() * 2.5)
            for sx, sy in sizes:
                xs = slice(x - sx + 1, x + 1) if flip else slice(x, x + sx)
                ys = slice(y - sy + 1, y + 1) if flip else slice(y, y + sy)
                if xs.start < 0 or ys.start < 0 or xs.stop > nx or ys.stop > ny:
                    continue
                if occ[xs, ys, z].all() and (brick_of[xs, ys, z] < 0).all():
                    brick_of[xs, ys, z] = len(bricks)
                    bricks.append((xs.start, ys.start, z, sx, sy))
                    break
    base = _PALETTE[rng.choice(len(_PALETTE), size=3, replace=False)]
    kind, lo, hi, color, part = [], [], [], [], []
    for b, (x0, y0, z, sx, sy) in enumerate(bricks):
        c = base[rng.integers(0, 3)] if rng.random() < 0.8 else _PALETTE[rng.integers(len(_PALETTE))]
        kind.append(0)
        lo.append([x0 * _PITCH, y0 * _PITCH, z * _BRICK_H])
        hi.append([(x0 + sx) * _PITCH, (y0 + sy) * _PITCH, (z + 1) * _BRICK_H])
        color.append(c)
        part.append(b)
    for x, y, z in zip(*np.nonzero(occ)):
        if z + 1 < nz and occ[x, y, z + 1]:
            continue
        b = brick_of[x, y, z]
        cx, cy, top = (x + 0.5) * _PITCH, (y + 0.5) * _PITCH, (z + 1) * _BRICK_H
        kind.append(1)
        lo.append([cx - _STUD_R, cy - _STUD_R, top])
        hi.append([cx + _STUD_R, cy + _STUD_R, top + _STUD_H])
        color.append(color[b])
        part.append(b)
    lo, hi = np.array(lo, float), np.array(hi, float)
    centre = 0.5 * (lo.min(0) + hi.max(0))
    return ToyScene(kind=np.array(kind, np.int64), lo=lo - centre, hi=hi - centre,
                    color=np.array(color, float), part=np.array(part, np.int64))


# ----------------------------------------------------------------------------- cameras


def training_poses(n: int, *, seed: int = 0, radius: tuple[float, float] = (3.0, 3.5),
                   z_range: tuple[float, float] = (-0.5, 0.97)) -> Float[np.ndarray, "N 4 4"]:
    """``n`` look-at cameras on a Fibonacci spiral over the sphere band
    ``z/r in z_range`` (default: the upper ~3/4 of the sphere), radii uniform in
    ``radius`` (seeded)."""
    rng = np.random.default_rng([int(seed), 1])
    golden = math.pi * (3.0 - math.sqrt(5.0))
    phase = rng.uniform(0, 2 * math.pi)
    zs = z_range[1] - (np.arange(n) + 0.5) / n * (z_range[1] - z_range[0])
    rs = rng.uniform(*radius, size=n)
    out = []
    for k in range(n):
        phi = phase + k * golden
        rho = math.sqrt(max(0.0, 1.0 - zs[k] ** 2))
        out.append(look_at_c2w(rs[k] * np.array([rho * math.cos(phi), rho * math.sin(phi), zs[k]])))
    return np.stack(out)


def _random_test_pose(rng, train_dirs, *, radius=(3.0, 3.5), z_range=(-0.4, 0.9),
                      max_roll=_MAX_ROLL, min_angle=_MIN_TEST_ANGLE, tries=1000):
    """A random look-at pose at least ``min_angle`` away from every training direction
    (or the farthest of ``tries`` candidates when training views are too dense)."""
    best, best_cos = None, np.inf
    for _ in range(tries):
        z = rng.uniform(*z_range)
        phi = rng.uniform(0, 2 * math.pi)
        rho = math.sqrt(1 - z * z)
        d = np.array([rho * math.cos(phi), rho * math.sin(phi), z])
        c = float(np.max(train_dirs @ d))
        if c < best_cos:
            best, best_cos = d, c
        if c < math.cos(min_angle):
            break
    return look_at_c2w(rng.uniform(*radius) * best, roll=rng.uniform(-max_roll, max_roll))


# ----------------------------------------------------------------------------- ray caster


@dataclasses.dataclass(frozen=True)
class ToyRender:
    """Result of :func:`raycast_toy`. rgb: [H, W, 3] composited on the background;
    alpha: [H, W] covered fraction; sub-sample buffers at [H s, W s]: ``prim`` (primitive
    index, -1 = background), ``part``, ``depth`` (ray parameter, inf = miss), ``normal``
    [H s, W s, 3], ``stained`` (bool), ``color`` (shaded colour, 0 where missed)."""

    rgb: np.ndarray
    alpha: np.ndarray
    prim: np.ndarray
    part: np.ndarray
    depth: np.ndarray
    normal: np.ndarray
    stained: np.ndarray
    color: np.ndarray
    supersample: int

    def straight_rgba(self) -> np.ndarray:
        """[H, W, 4] un-premultiplied colour + alpha (for RGBA PNGs)."""
        s = self.supersample
        h, w = self.alpha.shape
        prem = self.color.reshape(h, s, w, s, 3).mean(axis=(1, 3))
        a = self.alpha[..., None]
        rgb = np.where(a > 0, prem / np.maximum(a, 1e-12), 0.0)
        return np.concatenate([np.clip(rgb, 0, 1), a], axis=-1)


def _box_hits(o, d, lo, hi):
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(d == 0.0, 1e-30, d)
        t0, t1 = (lo - o) * inv, (hi - o) * inv
    tmin, tmax = np.minimum(t0, t1), np.maximum(t0, t1)
    tn, tf = tmin.max(-1), tmax.min(-1)
    hit = (tn <= tf) & (tn > 1e-6)
    axis = tmin.argmax(-1)
    n = np.zeros(d.shape)
    np.put_along_axis(n, axis[..., None], -np.sign(np.take_along_axis(d, axis[..., None], -1)), -1)
    return np.where(hit, tn, np.inf), n


def _cylinder_hits(o, d, lo, hi):
    c = 0.5 * (lo[:2] + hi[:2])
    r = 0.5 * (hi[0] - lo[0])
    ox, oy = o[0] - c[0], o[1] - c[1]
    dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
    a = dx * dx + dy * dy
    b = 2.0 * (ox * dx + oy * dy)
    cc = ox * ox + oy * oy - r * r
    disc = b * b - 4.0 * a * cc
    with np.errstate(divide="ignore", invalid="ignore"):
        sq = np.sqrt(np.maximum(disc, 0.0))
        vertical = a < 1e-12
        ts = np.where(vertical, np.where(cc < 0, -np.inf, np.inf), (-b - sq) / (2 * a))
        te = np.where(vertical, np.where(cc < 0, np.inf, -np.inf), (-b + sq) / (2 * a))
        dzs = np.where(dz == 0.0, 1e-30, dz)
        tz0, tz1 = (lo[2] - o[2]) / dzs, (hi[2] - o[2]) / dzs
    tzn, tzf = np.minimum(tz0, tz1), np.maximum(tz0, tz1)
    tn, tf = np.maximum(ts, tzn), np.minimum(te, tzf)
    hit = (disc >= 0) & (tn <= tf) & (tn > 1e-6)
    side = ts > tzn
    tfin = np.where(np.isfinite(tn), tn, 0.0)
    px, py = ox + tfin * dx, oy + tfin * dy
    n = np.stack([np.where(side, px / r, 0.0), np.where(side, py / r, 0.0),
                  np.where(side, 0.0, -np.sign(dz))], axis=-1)
    return np.where(hit, tn, np.inf), n


def _shade(normal: np.ndarray) -> np.ndarray:
    lam = np.maximum(normal @ _LIGHTS.T, 0.0) @ _LIGHT_W
    return _AMBIENT + lam


def _pixel_window(cam: np.ndarray, f: float, cx: float, cy: float, H: int, W: int):
    """Rows and columns (r0, r1, c0, c1) a primitive's box corners ``cam`` [8, 3] (OpenGL
    camera coordinates) can cover; all rows and columns when a corner is behind the camera;
    None when the box is wholly behind the camera or off the image."""
    zc = -cam[:, 2]
    if np.all(zc <= 1e-6):
        return None
    if np.any(zc <= 1e-6):
        return 0, H, 0, W
    us, vs = cx + f * cam[:, 0] / zc, cy - f * cam[:, 1] / zc
    c0, c1 = max(0, int(math.floor(us.min() - 0.5))), min(W, int(math.ceil(us.max() + 0.5)))
    r0, r1 = max(0, int(math.floor(vs.min() - 0.5))), min(H, int(math.ceil(vs.max() + 0.5)))
    return None if c0 >= c1 or r0 >= r1 else (r0, r1, c0, c1)


def _paint_stains(scene: ToyScene, albedo: np.ndarray, hit: np.ndarray, part: np.ndarray,
                  points: np.ndarray) -> np.ndarray:
    """Paint each stain (a ball on one part) into ``albedo`` in place; the stained pixels."""
    stained = np.zeros(hit.shape, bool)
    for (sx, sy, sz, sr), sp, sc in zip(scene.stains, scene.stain_part, scene.stain_color):
        inside = hit & (part == sp) & (np.sum((points - [sx, sy, sz]) ** 2, -1) < sr * sr)
        albedo[inside] = sc
        stained |= inside
    return stained


def raycast_toy(
    scene: ToyScene,
    c2w: Float[np.ndarray, "4 4"],
    camera_angle_x: float,
    width: int,
    height: int | None = None,
    *,
    supersample: int = 2,
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> ToyRender:
    """Ray-cast ``scene`` from a Blender/OpenGL camera-to-world ``c2w`` (pinhole, focal
    ``0.5 W / tan(camera_angle_x / 2)``, principal point at the centre), ``s x s``
    supersampled. Each primitive only tests the rays inside its projected bounding
    rectangle (a z-buffer over primitives), which keeps this fast in plain numpy."""
    height = width if height is None else height
    s = int(supersample)
    H, W = height * s, width * s
    f = 0.5 * width / math.tan(0.5 * camera_angle_x) * s
    cx, cy = 0.5 * W, 0.5 * H
    c2w = np.asarray(c2w, float)
    R, o = c2w[:3, :3], c2w[:3, 3]
    u = np.arange(W) + 0.5
    v = np.arange(H) + 0.5
    dcam = np.stack(np.broadcast_arrays((u[None, :] - cx) / f, -(v[:, None] - cy) / f,
                                        -np.ones((H, 1))), axis=-1)
    dirs = dcam @ R.T  # [H, W, 3], unit z-depth parametrisation
    depth = np.full((H, W), np.inf)
    prim = -np.ones((H, W), np.int64)
    normal = np.zeros((H, W, 3))
    corners_sel = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], bool)
    for k in range(len(scene)):
        window = _pixel_window((np.where(corners_sel, scene.hi[k], scene.lo[k]) - o) @ R, f, cx, cy, H, W)
        if window is None:
            continue
        r0, r1, c0, c1 = window
        d = dirs[r0:r1, c0:c1]
        hits = _box_hits if scene.kind[k] == 0 else _cylinder_hits
        t, n = hits(o, d, scene.lo[k], scene.hi[k])
        win = t < depth[r0:r1, c0:c1]
        if win.any():
            depth[r0:r1, c0:c1][win] = t[win]
            prim[r0:r1, c0:c1][win] = k
            normal[r0:r1, c0:c1][win] = n[win]
    hit = prim >= 0
    part = np.where(hit, scene.part[np.maximum(prim, 0)], -1)
    albedo = np.where(hit[..., None], scene.color[np.maximum(prim, 0)], 0.0)
    stained = _paint_stains(scene, albedo, hit, part, o + np.where(hit, depth, 0.0)[..., None] * dirs)
    color = np.clip(albedo * _shade(normal)[..., None], 0.0, 1.0) * hit[..., None]
    alpha = hit.reshape(height, s, width, s).mean(axis=(1, 3))
    prem = color.reshape(height, s, width, s, 3).mean(axis=(1, 3))
    bg = np.asarray(background, float)
    rgb = (prem + bg * (1.0 - alpha[..., None])).astype(np.float32)
    return ToyRender(rgb=rgb, alpha=alpha.astype(np.float32), prim=prim, part=part, depth=depth,
                     normal=normal, stained=stained, color=color, supersample=s)


def render_toy(
    scene: ToyScene, c2w: Float[np.ndarray, "4 4"], camera_angle_x: float, width: int, height: int | None = None,
    **options,
) -> tuple[Float[np.ndarray, "H W 3"], Float[np.ndarray, "H W"]]:
    """``(rgb, alpha)``: the toy object seen from ``c2w``, composited on ``background``
    (float32 in [0, 1]); ``options`` (``supersample``, ``background``) and their defaults
    are those of :func:`raycast_toy`."""
    r = raycast_toy(scene, c2w, camera_angle_x, width, height, **options)
    return r.rgb, r.alpha


# ----------------------------------------------------------------------------- defects


def defect_mask(good: ToyRender, bad: ToyRender, *, color_tol: float = 0.02) -> Bool[np.ndarray, "H W"]:
    """Pixels where ``bad`` differs from ``good``: another part, another depth or paint in
    any sub-sample, or a colour change above ``color_tol``."""
    s = good.supersample
    both = np.isfinite(good.depth) & np.isfinite(bad.depth)
    gd, bd = np.where(both, good.depth, 0.0), np.where(both, bad.depth, 0.0)
    depth_diff = both & (np.abs(gd - bd) > 1e-6 * np.maximum(1.0, np.abs(gd)))
    sub = (good.part != bad.part) | bad.stained | depth_diff
    h, w = good.alpha.shape
    m = sub.reshape(h, s, w, s).any(axis=(1, 3))
    return m | (np.abs(good.rgb - bad.rgb).max(-1) > color_tol)


def _visible_face_samples(r: ToyRender, scene: ToyScene, c2w, min_facing: float):
    """Sub-sample indices hitting a box face whose normal points towards the camera by
    more than ``min_facing`` (cosine; the view direction is approximated by the direction
    from the origin to the camera, the object being small against the camera distance)."""
    hit = (r.prim >= 0)
    is_box = np.zeros_like(hit)
    is_box[hit] = scene.kind[r.prim[hit]] == 0
    rows, cols = np.nonzero(is_box)
    if rows.size == 0:
        return rows, cols
    n = r.normal[rows, cols]
    view = c2w[:3, 3] / np.linalg.norm(c2w[:3, 3])
    ok = n @ view > min_facing
    return rows[ok], cols[ok]


def _make_defect(kind: str, scene: ToyScene, good: ToyRender, c2w, fov, rng, res, min_fraction):
    """One attempt at a visible defect of ``kind``; ``None`` when the pose offers none."""
    if kind == "Missing":
        parts, counts = np.unique(good.part[good.part >= 0], return_counts=True)
        ok = parts[counts >= min_fraction * good.part.size]  # visible enough to matter
        if ok.size == 0:
            return None
        return scene.without_part(int(rng.choice(ok)))
    rows, cols = _visible_face_samples(good, scene, c2w, 0.35 if kind == "Burrs" else 0.45)
    if rows.size == 0:
        return None
    j = int(rng.integers(rows.size))
    r_, c_ = rows[j], cols[j]
    o = c2w[:3, 3]
    s = good.supersample
    f = 0.5 * res / math.tan(0.5 * fov) * s
    dcam = np.array([(c_ + 0.5 - 0.5 * res * s) / f, -(r_ + 0.5 - 0.5 * res * s) / f, -1.0])
    p = o + good.depth[r_, c_] * (c2w[:3, :3] @ dcam)
    n = good.normal[r_, c_]
    k = good.prim[r_, c_]
    host_part, host_color = int(scene.part[k]), scene.color[k]
    if kind == "Burrs":
        width_, length = rng.uniform(0.08, 0.12), rng.uniform(0.12, 0.2)
        axis = int(np.argmax(np.abs(n)))
        lo = p - width_ / 2
        hi = p + width_ / 2
        tip = p[axis] + n[axis] * length
        base = p[axis] - n[axis] * 0.01
        lo[axis], hi[axis] = min(tip, base), max(tip, base)
        return scene.with_box(lo, hi, np.clip(host_color * 0.6, 0, 1))
    if kind == "Stains":
        lum = host_color @ np.array([0.299, 0.587, 0.114])
        stain = np.array([0.24, 0.14, 0.06]) if lum > 0.35 else np.array([0.95, 0.9, 0.6])
        return scene.with_stain(p, rng.uniform(0.09, 0.14), host_part, stain)
    raise ValueError(f"unknown defect type {kind!r}")


# ----------------------------------------------------------------------------- dataset


def _params(seed, resolution, num_train, num_test_per_type, supersample, min_defect_fraction,
            camera_angle_x):
    checks = {"resolution": (resolution, 8, "an integer >= 8"),
              "num_train": (num_train, 1, "an integer >= 1"),
              "num_test_per_type": (num_test_per_type, 1, "an integer >= 1"),
              "supersample": (supersample, 1, "an integer >= 1")}
    for name, (value, low, what) in checks.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(name, f"must be {what} (got {value!r})", owner="make_toy_dataset")
    if not 0.0 <= float(min_defect_fraction) < 0.5:
        raise ConfigError("min_defect_fraction", f"must be in [0, 0.5) (got {min_defect_fraction!r})",
                          owner="make_toy_dataset")
    if not 0.0 < float(camera_angle_x) < math.pi:
        raise ConfigError("camera_angle_x", f"must be in (0, pi) radians (got {camera_angle_x!r})",
                          owner="make_toy_dataset")
    return {"seed": int(seed), "resolution": int(resolution), "num_train": int(num_train),
            "num_test_per_type": int(num_test_per_type), "supersample": int(supersample),
            "min_defect_fraction": float(min_defect_fraction),
            "camera_angle_x": float(camera_angle_x)}


def _read_meta(folder: Path) -> dict | None:
    try:
        meta = read_json(folder / "toy_meta.json")
    except DatasetError:
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == __name__ else None


def make_toy_dataset(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    resolution: int = 128,
    num_train: int = 100,
    num_test_per_type: int = 6,
    supersample: int = 2,
    min_defect_fraction: float = 0.004,
    camera_angle_x: float = 0.6911112070083618,
) -> Path:
    """Generate (or reuse) the seeded toy dataset in MAD-Sim layout at ``out_dir``.

    ``num_train`` training views (Fibonacci spiral over the upper ~3/4 sphere, radius 3 to
    3.5), ``num_test_per_type`` test images for each of good, Burrs, Missing, Stains at
    random poses (radius 3 to 3.5, roll up to 10 degrees, at least 3 degrees from every
    training direction); each defect covers at least ``min_defect_fraction`` of the image.
    Deterministic for a seed. Written into a temporary sibling folder and renamed into
    place, so an interrupted run leaves no complete-looking dataset. An existing complete
    toy dataset with the same parameters is reused; one with other parameters is replaced;
    any other non-empty ``out_dir`` raises :class:`DatasetError`. Returns ``out_dir``.
    """
    out = Path(out_dir)
    params = _params(seed, resolution, num_train, num_test_per_type, supersample,
                     min_defect_fraction, camera_angle_x)
    replace_old = False
    if out.exists():
        if not out.is_dir():
            raise DatasetError(f"toy dataset target {str(out)!r} exists and is not a folder")
        if any(out.iterdir()):
            meta = _read_meta(out)
            if meta is None:
                raise DatasetError(
                    f"refusing to write the toy dataset into {str(out)!r}: the folder is not "
                    "empty and is not a toy dataset (no valid toy_meta.json)")
            if meta.get("format") == _FORMAT and meta.get("params") == params:
                return out
            replace_old = True
    write_staged(out, lambda tmp: _generate(tmp, **params), replace=replace_old)
    return out


def _generate(root: Path, *, seed, resolution, num_train, num_test_per_type, supersample,
              min_defect_fraction, camera_angle_x) -> None:
    scene = make_toy_scene(seed)
    fov, res, ss = camera_angle_x, resolution, supersample
    # training views
    writer = MadWriter(root, fov)
    poses = training_poses(num_train, seed=seed)
    for c2w in poses:
        writer.train(raycast_toy(scene, c2w, fov, res, supersample=ss).straight_rgba(), c2w)
    # test views
    train_dirs = poses[:, :3, 3] / np.linalg.norm(poses[:, :3, 3], axis=1, keepdims=True)
    defects = {}
    min_px = min_defect_fraction * res * res
    for ti, kind in enumerate(("good",) + TOY_DEFECT_TYPES):
        rng = np.random.default_rng([int(seed), 2, ti])
        for n in range(num_test_per_type):
            for _attempt in range(200):
                c2w = _random_test_pose(rng, train_dirs)
                good = raycast_toy(scene, c2w, fov, res, supersample=ss)
                if kind == "good":
                    img, mask = good, None
                    break
                bad_scene = _make_defect(kind, scene, good, c2w, fov, rng, res, min_defect_fraction)
                if bad_scene is None:
                    continue
                img = raycast_toy(bad_scene, c2w, fov, res, supersample=ss)
                mask = defect_mask(good, img)
                visible = np.abs(good.rgb - img.rgb).max(-1) > 0.1
                # big enough, and clearly visible over a good share of its mask (e.g. not
                # a brick whose removal reveals a same-coloured one behind it)
                if mask.sum() >= min_px and visible.sum() >= max(0.75 * min_px, 0.3 * mask.sum()):
                    break
            else:
                raise RuntimeError(f"could not place a visible {kind} defect (seed {seed})")
            rel = writer.test(kind, n, img.straight_rgba(), c2w, mask)
            if mask is not None:
                defects[rel] = {"mask_pixels": int(mask.sum())}
    writer.finish()
    meta = {"generator": __name__, "format": _FORMAT,
            "params": _params(seed, resolution, num_train, num_test_per_type, supersample,
                              min_defect_fraction, camera_angle_x),
            "num_primitives": len(scene), "num_bricks": int(np.unique(scene.part).size),
            "defects": defects}
    write_json(root / "toy_meta.json", meta, indent=1)


# ----------------------------------------------------------------------------- preview


def write_toy_preview(dataset_dir: str | os.PathLike, out_png: str | os.PathLike, *,
                      num_train: int = 6, index: int = 0) -> Path:
    """One PNG grid: ``num_train`` training views on the first row, then for each test type
    the test image ``<index>``, the defect-free re-render at its pose (from
    ``toy_meta.json``'s seed and ``test_poses.json``), the mask overlaid in red and the
    per-pixel colour difference. Returns ``out_png``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .images import read_mask, read_rgb

    root = Path(dataset_dir)
    meta = _read_meta(root)
    if meta is None:
        raise DatasetError(f"{str(root)!r} is not a toy dataset (no valid toy_meta.json)")
    p = meta["params"]
    scene = make_toy_scene(p["seed"])
    poses = read_json(root / "test_poses.json", "test-pose file")
    types = ("good",) + TOY_DEFECT_TYPES
    cols = max(num_train, 4)
    fig, axes = plt.subplots(1 + len(types), cols, figsize=(1.9 * cols, 1.9 * (1 + len(types))),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    n_avail = len(list((root / "train" / "good").glob("*.png")))
    for j, i in enumerate(np.linspace(0, n_avail - 1, min(num_train, n_avail)).astype(int)):
        axes[0, j].imshow(read_rgb(root / "train" / "good" / f"{i}.png")[0])
        axes[0, j].set_title(f"train {i}", fontsize=8)
    for row, kind in enumerate(types, start=1):
        rel = f"test/{kind}/{index}.png"
        img = read_rgb(root / rel)[0]
        try:
            c2w, fov = np.asarray(poses["poses"][rel], float), float(poses["camera_angle_x"])
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{str(root / 'test_poses.json')!r} has no usable pose of {rel!r} ({e})") from e
        ref = render_toy(scene, c2w, fov,
                         img.shape[1], img.shape[0], supersample=p["supersample"])[0]
        mpath = root / "ground_truth" / kind / f"{index}_mask.png"
        mask = read_mask(mpath)[0] if mpath.is_file() else np.zeros(img.shape[:2], bool)
        over = img.copy()
        over[mask] = 0.45 * over[mask] + 0.55 * np.array([1.0, 0.0, 0.0])
        diff = np.abs(img - ref).max(-1)
        for j, (im, title) in enumerate([(img, f"{kind} {index}"), (ref, "defect-free"),
                                         (over, f"mask ({int(mask.sum())} px)"),
                                         (diff, "|difference|")]):
            axes[row, j].imshow(im, **({"cmap": "magma", "vmin": 0, "vmax": 1} if im.ndim == 2 else {}))
            axes[row, j].set_title(title, fontsize=8)
    fig.tight_layout()
    out_png = atomic_write(out_png, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return out_png
