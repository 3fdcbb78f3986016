"""The lego-AD development benchmark: anomaly-detection sets in the MAD-Sim class layout
built from the NeRF lego scene, and a runner for ``splatjax evaluate`` on them.

  python scripts/lego_ad.py build OUT [--seed 0] [--source LEGO] [--good 20] [--defects 10]
                                      [--pose-views 20]
  python scripts/lego_ad.py run DATA_CLASS_FOLDER --model RUN --out OUT [-- evaluate flags]

build
  Reads the Blender-layout source folder (``transforms_train.json``,
  ``transforms_val.json``, RGBA PNGs; never written) and writes, deterministically for a
  seed, two MAD-Sim class folders (layout of ``splatjax.data.mad``) and a manifest:

  OUT/LegoAD/    transforms.json + train/good/<i>.png: the train split (frame i <-> <i>.png,
                 PNGs copied byte for byte); queries from the val split (never seen by a
                 fit), every one a distinct val view: test/good/<n>.png (--good, 20),
                 test/{Burrs,Missing,Stains}/<n>.png (--defects, 10 each),
                 ground_truth/<type>/<n>_mask.png, test_poses.json (Blender c2w).
                 About a third of the queries (round(N / 3), good and defective alike) are
                 rolled in-plane by a uniform random angle in [-180, 180) degrees (image
                 and pose: splatjax.data.roll); defects are injected after the roll.
  OUT/LegoPose/  the same training part; test/good holds --pose-views (20) val views
                 unrolled and --pose-views other val views rolled; test poses; no defects.
  OUT/lego_ad_build.json   per query: val frame, roll angle (degrees), defect parameters,
                 changed pixels, object pixels.

  Only val views whose object lies inside the image's inscribed circle are rolled, so a
  rolled image is exactly the render at its rolled pose (nothing is cut off).

  Defects (2D, on the RGBA query; sizes relative to the object's pixel count, i.e. the
  pixels with alpha > 0 in that query before the defect; each defect's changed-pixel
  count lies in [0.3 %, 3 %] of it and is at least 4 pixels, else another placement is
  drawn; the target area is drawn log-uniformly in [0.4 %, 2.7 %]):

  - Stains: an irregular smooth blob (a radial falloff plus Gaussian-smoothed noise,
    thresholded to the target area, its connected part) on object pixels only, blended
    with a paint colour (red, blue, green, black, white, purple, orange, cyan; one at
    least 100/255 away from the blob's mean colour) at strength 0.6-0.95 with a soft
    one-pixel edge; alpha unchanged.
  - Missing: such a blob of object pixels removed (alpha 0, so the white background shows;
    inside the silhouette it reads as a hole).
  - Burrs: a spike (tapered triangle, slightly bent) or a lump (half ellipse) attached at a
    pixel of the outer silhouette (next to background that reaches the image border, not a
    hole) and growing outward along the outer normal of the smoothed alpha, length / base
    width 1.2-4; opaque, in the median colour of the object within a few pixels of the
    attachment point, shaded 0.8-1.05 along its length; it only adds material: pixels with
    alpha < 255 connected to the attachment point within the shape.

  Masks are exact by construction: 255 exactly where the image composited on white changed
  (after uint8 quantisation), else 0.

run
  Runs ``splatjax evaluate DATA --model RUN --out OUT [flags after --]`` in-process, reads
  OUT/report.json and OUT/per_image.csv, prints one line (image AUROC, pixel AUROC, AUPRO,
  coarse and fine pose errors as median / max, rotation in rad and translation in scene
  units, seconds per query in total and per stage) and appends it as a JSON row (with the
  command and the variant flags) to OUT/../lego_ad_results.jsonl. The report's pose
  summary holds median and mean only: the maxima (and the rolled / unrolled split, read
  from the build manifest when there is one) are computed here from per_image.csv.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's splatjax
from splatjax.data.roll import fits_inscribed_circle, roll_image, roll_pose  # noqa: E402


def _default_source() -> Path:
    """``shared/data/nerf_synthetic_lego_400`` in the first folder above this script that
    has it (a worktree sits deeper than the main checkout)."""
    for parent in Path(__file__).resolve().parents:
        p = parent / "shared" / "data" / "nerf_synthetic_lego_400"
        if (p / "transforms_train.json").is_file():
            return p
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "nerf_synthetic_lego_400"


DEFAULT_SOURCE = _default_source()
DEFECT_TYPES = ("Burrs", "Missing", "Stains")
FRACTION_RANGE = (0.003, 0.03)      # accepted changed pixels / object pixels
TARGET_RANGE = (0.004, 0.027)       # drawn target area / object pixels (log-uniform)
MIN_PIXELS = 4
MAX_TRIES = 200
PAINTS = np.array([[200, 30, 30], [30, 60, 200], [40, 160, 50], [20, 20, 20], [245, 245, 245],
                   [130, 40, 160], [240, 130, 20], [30, 190, 200]], np.float64)
MANIFEST = "lego_ad_build.json"
RESULTS = "lego_ad_results.jsonl"


class BuildError(RuntimeError):
    """The source cannot give the requested sets (message says which option/file)."""


# ----------------------------------------------------------------------------- source


def read_split(source: Path, split: str) -> tuple[float, list[tuple[Path, np.ndarray]]]:
    """camera_angle_x and [(image path, Blender c2w)] of ``transforms_<split>.json``."""
    path = source / f"transforms_{split}.json"
    if not path.is_file():
        raise BuildError(f"{path}: not found (the source must be a Blender/NeRF folder with train and val splits)")
    data = json.loads(path.read_text())
    views = []
    for i, fr in enumerate(data["frames"]):
        rel = fr["file_path"].removeprefix("./")
        img = source / rel if rel.lower().endswith(".png") else source / f"{rel}.png"
        if not img.is_file():
            raise BuildError(f"{path}: frame {i} names {img}, which does not exist")
        views.append((img, np.asarray(fr["transform_matrix"], np.float64)))
    return float(data["camera_angle_x"]), views


def load_rgba(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA")).copy()


def composite(rgba: np.ndarray) -> np.ndarray:
    """uint8 RGB of an RGBA uint8 image composited on white."""
    x = rgba.astype(np.float64) / 255.0
    return np.round(255.0 * (x[..., :3] * x[..., 3:] + 1.0 - x[..., 3:])).astype(np.uint8)


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Pixels whose white composite differs (the exact defect mask)."""
    return np.any(composite(before) != composite(after), axis=-1)


# ----------------------------------------------------------------------------- defects


def smooth_blob(rng, allowed: np.ndarray, centre: tuple[int, int], area: float) -> np.ndarray:
    """An irregular smooth blob of about ``area`` pixels of ``allowed`` around ``centre``
    (row, col): radial falloff plus smoothed noise, thresholded, its connected part."""
    h, w = allowed.shape
    r = math.sqrt(area / math.pi)
    half = int(math.ceil(2.5 * r)) + 2
    r0, r1 = max(centre[0] - half, 0), min(centre[0] + half + 1, h)
    c0, c1 = max(centre[1] - half, 0), min(centre[1] + half + 1, w)
    noise = ndimage.gaussian_filter(rng.normal(size=(r1 - r0, c1 - c0)), sigma=max(r / 2.0, 0.7))
    noise /= noise.std() + 1e-12
    rows, cols = np.mgrid[r0:r1, c0:c1]
    field = -((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / max(r * r, 1.0) + 0.6 * noise
    field[~allowed[r0:r1, c0:c1]] = -np.inf
    k = int(min(max(round(area), 1), np.isfinite(field).sum()))
    thr = np.sort(field.ravel())[::-1][k - 1]
    blob = field >= thr
    labels, _ = ndimage.label(blob)
    keep = labels[centre[0] - r0, centre[1] - c0] or np.bincount(labels.ravel())[1:].argmax() + 1
    out = np.zeros_like(allowed)
    out[r0:r1, c0:c1] = labels == keep
    return out


def _random_pixel(rng, where: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(where)
    k = rng.integers(rows.size)
    return int(rows[k]), int(cols[k])


def stain(rng, rgba: np.ndarray, area: float) -> tuple[np.ndarray, dict]:
    obj = rgba[..., 3] > 0
    centre = _random_pixel(rng, rgba[..., 3] == 255)
    blob = smooth_blob(rng, obj, centre, area)
    mean = rgba[..., :3][blob].astype(np.float64).mean(axis=0)
    far = [i for i, p in enumerate(PAINTS) if np.linalg.norm(p - mean) >= 100.0]
    paint = PAINTS[rng.choice(far)] if far else 255.0 - mean
    strength = rng.uniform(0.6, 0.95)
    weight = strength * np.clip(1.5 * ndimage.gaussian_filter(blob.astype(np.float64), 0.7), 0.0, 1.0) * blob
    out = rgba.copy()
    rgb = rgba[..., :3].astype(np.float64)
    out[..., :3] = np.round((1.0 - weight[..., None]) * rgb + weight[..., None] * paint).astype(np.uint8)
    return out, {"centre": list(centre), "paint": paint.tolist(), "strength": strength}


def missing(rng, rgba: np.ndarray, area: float) -> tuple[np.ndarray, dict]:
    obj = rgba[..., 3] > 0
    centre = _random_pixel(rng, obj)
    blob = smooth_blob(rng, obj, centre, area)
    out = rgba.copy()
    out[blob] = 0
    return out, {"centre": list(centre)}


def _outside(alpha: np.ndarray) -> np.ndarray:
    """Background (alpha 0) connected to the image border: outside the silhouette, not holes."""
    labels, _ = ndimage.label(alpha == 0)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, border[border > 0])


def _outward_normal(alpha: np.ndarray, p: tuple[int, int]) -> np.ndarray | None:
    """Unit outward normal (d_row, d_col) of the smoothed alpha at ``p``, or None if flat."""
    smooth = ndimage.gaussian_filter(alpha, 2.0)
    g = np.array([ndimage.sobel(smooth, axis=0)[p], ndimage.sobel(smooth, axis=1)[p]])
    n = np.linalg.norm(g)
    return None if n < 1e-6 else -g / n


def burr(rng, rgba: np.ndarray, area: float) -> tuple[np.ndarray, dict]:
    alpha = rgba[..., 3].astype(np.float64) / 255.0
    solid = alpha >= 0.5
    p = _random_pixel(rng, solid & ndimage.binary_dilation(_outside(rgba[..., 3])))
    normal = _outward_normal(alpha, p)
    if normal is None:
        return rgba.copy(), {"centre": list(p)}
    kind = "spike" if rng.random() < 0.6 else "lump"
    aspect = rng.uniform(1.2, 4.0)
    width = math.sqrt((2.0 if kind == "spike" else 4.0 / math.pi) * area / aspect)
    length, bend = aspect * width, rng.uniform(-0.5, 0.5) / max(aspect * width, 1.0)
    rows, cols = np.mgrid[0:alpha.shape[0], 0:alpha.shape[1]]
    d_r, d_c = rows - p[0], cols - p[1]
    t = d_r * normal[0] + d_c * normal[1]
    s = -d_r * normal[1] + d_c * normal[0] - bend * t * t
    u = np.clip(t / length, 0.0, None)
    if kind == "spike":
        shape = (t >= -1.5) & (u <= 1.0) & (np.abs(s) <= 0.5 * width * (1.0 - u) + 0.5)
    else:
        shape = (t >= -1.5) & (u ** 2 + (2.0 * s / width) ** 2 <= 1.0)
    labels, _ = ndimage.label(shape & (rgba[..., 3] < 255))
    touching = np.unique(labels[max(p[0] - 1, 0):p[0] + 2, max(p[1] - 1, 0):p[1] + 2])
    added = np.isin(labels, touching[touching > 0])  # the part grown from p, not distant gaps
    near = (np.hypot(d_r, d_c) <= width + 3.0) & (rgba[..., 3] == 255)
    colour = np.median(rgba[..., :3][near].astype(np.float64), axis=0) if near.any() else np.full(3, 128.0)
    shade = (1.05 - 0.25 * np.clip(u, 0.0, 1.0))[..., None]
    out = rgba.copy()
    out[..., :3] = np.where(added[..., None], np.clip(np.round(shade * colour), 0, 255), rgba[..., :3])
    out[..., 3] = np.where(added, 255, rgba[..., 3])
    return out, {"centre": list(p), "kind": kind, "normal": normal.tolist(), "length": length,
                 "width": width, "colour": colour.tolist()}


INJECT = {"Burrs": burr, "Missing": missing, "Stains": stain}


def inject(rng, rgba: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(defective RGBA, exact mask, parameters): placements are drawn until the changed
    pixels are within FRACTION_RANGE of the object's pixels and at least MIN_PIXELS."""
    n_obj = int((rgba[..., 3] > 0).sum())
    lo = max(FRACTION_RANGE[0] * n_obj, MIN_PIXELS)
    hi = FRACTION_RANGE[1] * n_obj
    if hi < lo:
        raise BuildError(f"a query has only {n_obj} object pixels: too few for a defect of "
                         f"{MIN_PIXELS} to {FRACTION_RANGE[1]:.0%} of them")
    for attempt in range(MAX_TRIES):
        area = n_obj * math.exp(rng.uniform(*np.log(TARGET_RANGE)))
        out, params = INJECT[kind](rng, rgba, max(area, lo))
        mask = changed(rgba, out)
        if lo <= mask.sum() <= hi:
            return out, mask, {**params, "type": kind, "pixels": int(mask.sum()), "object_pixels": n_obj,
                               "fraction": float(mask.sum() / n_obj), "attempts": attempt + 1}
    raise BuildError(f"no {kind} placement within {MAX_TRIES} tries gave {lo:.0f} to {hi:.0f} changed pixels")


# ----------------------------------------------------------------------------- plan


def plan_queries(rng, n_val: int, rollable: np.ndarray, *, good: int, defects: int, pose_views: int
                 ) -> dict[str, list[dict]]:
    """``{class: [{"rel": "test/<type>/<n>.png", "val": index, "type": t, "roll_deg": a}]}``:
    distinct val views per class, round(N / 3) rolled LegoAD queries, LegoPose half rolled."""
    n_ad = good + len(DEFECT_TYPES) * defects
    if n_ad > n_val or 2 * pose_views > n_val:
        raise BuildError(f"the val split has {n_val} views: too few for --good {good} + 3 x --defects {defects} "
                         f"distinct views, or 2 x --pose-views {pose_views}")
    types = ["good"] * good + [t for t in DEFECT_TYPES for _ in range(defects)]
    views = rng.permutation(n_val)[:n_ad]
    slots = np.flatnonzero(rollable[views])
    n_roll = int(round(n_ad / 3.0))
    if slots.size < n_roll:
        raise BuildError(f"only {slots.size} of the chosen val views fit in the inscribed circle; {n_roll} "
                         "must be rolled")
    rolled = set(rng.choice(slots, size=n_roll, replace=False).tolist())
    ad, counts = [], {}
    for k, (t, v) in enumerate(zip(types, views)):
        n = counts[t] = counts.get(t, -1) + 1
        angle = float(rng.uniform(-180.0, 180.0)) if k in rolled else 0.0
        ad.append({"rel": f"test/{t}/{n}.png", "val": int(v), "type": t, "roll_deg": angle})
    order = rng.permutation(n_val)
    plain = order[:pose_views]
    others = [v for v in order[pose_views:] if rollable[v]][:pose_views]
    if len(others) < pose_views:
        raise BuildError(f"only {len(others)} other val views fit in the inscribed circle; --pose-views "
                         f"{pose_views} must be rolled")
    pose = [{"rel": f"test/good/{n}.png", "val": int(v), "type": "good", "roll_deg": 0.0}
            for n, v in enumerate(plain)]
    pose += [{"rel": f"test/good/{pose_views + n}.png", "val": int(v), "type": "good",
              "roll_deg": float(rng.uniform(-180.0, 180.0))} for n, v in enumerate(others)]
    return {"LegoAD": ad, "LegoPose": pose}


# ----------------------------------------------------------------------------- build


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def write_train(folder: Path, fov: float, train: list[tuple[Path, np.ndarray]]) -> None:
    """transforms.json (frame i <-> train/good/<i>.png) and the train PNGs copied."""
    good = folder / "train" / "good"
    good.mkdir(parents=True)
    frames = []
    for i, (img, c2w) in enumerate(train):
        shutil.copyfile(img, good / f"{i}.png")
        frames.append({"file_path": f"train/good/{i}.png", "transform_matrix": c2w.tolist()})
    (folder / "transforms.json").write_text(json.dumps({"camera_angle_x": fov, "frames": frames}, indent=1) + "\n")


def write_queries(folder: Path, fov: float, val: list[tuple[Path, np.ndarray]], queries: list[dict],
                  seed: int, class_index: int) -> dict:
    """Rolled / defective query PNGs, masks and test_poses.json; returns the manifest part."""
    poses, manifest = {}, {}
    for k, q in enumerate(queries):
        rng = np.random.default_rng([seed, class_index, k])
        img, c2w = val[q["val"]]
        rgba = load_rgba(img)
        if q["roll_deg"]:
            rgba, c2w = roll_image(rgba, math.radians(q["roll_deg"])), roll_pose(c2w, math.radians(q["roll_deg"]))
        entry = {"val_frame": q["val"], "val_file": img.name, "roll_deg": q["roll_deg"]}
        if q["type"] != "good":
            clean = rgba
            rgba, mask, entry["defect"] = inject(rng, clean, q["type"])
            if mask.sum() < MIN_PIXELS or not np.array_equal(mask, changed(clean, rgba)):
                raise AssertionError(f"{q['rel']}: the defect mask is not the changed pixels")
            save_png(folder / "ground_truth" / q["type"] / f"{Path(q['rel']).stem}_mask.png",
                     np.where(mask, 255, 0).astype(np.uint8))
        save_png(folder / q["rel"], rgba)
        poses[q["rel"]] = c2w.tolist()
        manifest[q["rel"]] = entry
    (folder / "test_poses.json").write_text(json.dumps({"camera_angle_x": fov, "poses": poses}, indent=1) + "\n")
    return manifest


def build(out: str | os.PathLike, *, seed: int = 0, source: str | os.PathLike = DEFAULT_SOURCE, good: int = 20,
          defects: int = 10, pose_views: int = 20) -> dict:
    """Write OUT/LegoAD, OUT/LegoPose and OUT/lego_ad_build.json (module docstring); returns
    the manifest. Refuses an OUT inside the source or already holding these folders."""
    out, source = Path(out), Path(source)
    if out.resolve().is_relative_to(source.resolve()):
        raise BuildError(f"{out}: the output folder must not be inside the source folder {source}")
    for name in ("LegoAD", "LegoPose", MANIFEST):
        if (out / name).exists():
            raise BuildError(f"{out / name} exists; delete it or choose another OUT")
    fov, train = read_split(source, "train")
    fov_val, val = read_split(source, "val")
    if abs(fov - fov_val) > 1e-9:
        raise BuildError(f"{source}: train and val camera_angle_x differ ({fov} vs {fov_val})")
    rollable = np.array([fits_inscribed_circle(load_rgba(img)[..., 3]) for img, _ in val])
    queries = plan_queries(np.random.default_rng(seed), len(val), rollable, good=good, defects=defects,
                           pose_views=pose_views)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"source": str(source.resolve()), "seed": seed, "good": good, "defects": defects,
                "pose_views": pose_views, "fraction_range": FRACTION_RANGE, "min_pixels": MIN_PIXELS,
                "rollable_val_views": int(rollable.sum()), "classes": {}}
    for index, (name, qs) in enumerate(queries.items()):
        tmp = out / f".{name}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        write_train(tmp, fov, train)
        manifest["classes"][name] = write_queries(tmp, fov, val, qs, seed, index)
        tmp.rename(out / name)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


# ----------------------------------------------------------------------------- run


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, np.float64)
    return {"median": float(np.median(v)), "max": float(v.max())} if v.size else {"median": None, "max": None}


def pose_summary(rows: list[dict], rolled: set[str] | None) -> dict | None:
    """Median and max coarse / fine rotation (rad) and translation errors from
    per_image.csv rows, overall and (with the manifest's rolled paths) rolled / unrolled."""
    if not rows or "fine_rotation_rad" not in rows[0]:
        return None
    groups = {"all": rows}
    if rolled is not None:
        groups["rolled"] = [r for r in rows if r["path"] in rolled]
        groups["unrolled"] = [r for r in rows if r["path"] not in rolled]
    return {g: {f"{stage}_{key}": _stats([float(r[f"{stage}_{key}"]) for r in rs])
                for stage in ("coarse", "fine") for key in ("rotation_rad", "translation")}
            for g, rs in groups.items()}


def _rolled_paths(data: Path) -> set[str] | None:
    path = data.parent / MANIFEST
    if not path.is_file():
        return None
    classes = json.loads(path.read_text()).get("classes", {})
    entries = classes.get(data.resolve().name)
    return None if entries is None else {rel for rel, e in entries.items() if e.get("roll_deg")}


def _fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}f}"


def result_line(name: str, row: dict) -> str:
    """One line: AUROCs, AUPRO, pose errors (median/max), seconds per query."""
    head = (f"{name} [{' '.join(row['variant_flags']) or 'defaults'}]: image AUROC {_fmt(row['image_auroc'])} | "
            f"pixel AUROC {_fmt(row['pixel_auroc'])} | AUPRO {_fmt(row['aupro'])}")
    parts = [head]
    pose = (row.get("pose") or {}).get("all")
    if pose:
        for stage in ("coarse", "fine"):
            r, t = pose[f"{stage}_rotation_rad"], pose[f"{stage}_translation"]
            parts.append(f"{stage} rot {_fmt(r['median'], 4)}/{_fmt(r['max'], 4)} rad, "
                         f"trans {_fmt(t['median'], 4)}/{_fmt(t['max'], 4)} (median/max)")
    split = row.get("pose") or {}
    if "rolled" in split and split["rolled"]["fine_rotation_rad"]["max"] is not None:
        parts.append("fine rot median/max rolled " + "/".join(
            _fmt(split["rolled"]["fine_rotation_rad"][k], 4) for k in ("median", "max")) + ", unrolled " + "/".join(
            _fmt(split["unrolled"]["fine_rotation_rad"][k], 4) for k in ("median", "max")) + " rad")
    spq = row["seconds_per_query"]
    stages = ", ".join(f"{k} {v:.2f}" for k, v in spq.items() if k != "total")
    parts.append(f"{spq['total']:.2f} s/query ({stages}); wall {row['wall_s']:.0f} s")
    return " | ".join(parts)


def run(data: str | os.PathLike, model: str, out: str | os.PathLike, extra: list[str], *,
        rolled: set[str] | None = None, results: Path | None = None, **labels) -> dict:
    """``splatjax evaluate`` on one class folder, then the result row (module docstring),
    appended to ``results`` (default OUT/../lego_ad_results.jsonl). ``rolled``: the rolled
    query paths (default: from the lego-AD build manifest); ``labels`` are added to the row."""
    from splatjax.app.cli import main as cli_main

    data, out = Path(data), Path(out)
    argv = ["evaluate", str(data), "--model", str(model), "--out", str(out), *extra]
    t0 = time.perf_counter()
    rc = cli_main(argv)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(rc)
    report = json.loads((out / "report.json").read_text())
    with open(out / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    m = report["num_test_images"]
    row = {"time": datetime.datetime.now().isoformat(timespec="seconds"), "class": report["class"],
           "data": str(data.resolve()), "model": str(model), "out": str(out.resolve()),
           "command": ["python", "scripts/lego_ad.py", "run", str(data), "--model", str(model), "--out", str(out),
                       *(["--", *extra] if extra else [])],
           "evaluate_argv": ["splatjax", *argv], "variant_flags": extra,
           **{k: report.get(k) for k in ("image_auroc", "pixel_auroc", "aupro", "num_test_images",
                                         "num_defective", "features", "coarse_method", "render_backend",
                                         "image_size")},
           "fine_steps": (report.get("pose_config") or {}).get("steps", report.get("fine_steps")),
           "pose": pose_summary(rows, _rolled_paths(data) if rolled is None else rolled),
           "seconds_per_query": {"total": report["seconds"]["total"] / m,
                                 **{k: v / m for k, v in report["seconds"].items() if k != "total"}},
           "seconds": report["seconds"], "wall_s": wall, **labels}
    print(result_line(report["class"], row), flush=True)
    with open(results or out.resolve().parent / RESULTS, "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


# ----------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lego_ad.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write OUT/LegoAD and OUT/LegoPose from the lego scene")
    b.add_argument("out", help="output folder (gets LegoAD/, LegoPose/, lego_ad_build.json)")
    b.add_argument("--seed", type=int, default=0, help="seed of views, rolls and defects (default 0)")
    b.add_argument("--source", default=str(DEFAULT_SOURCE), help="Blender lego folder with train and val splits "
                   "(read only; default: the shared nerf_synthetic_lego_400)")
    b.add_argument("--good", type=int, default=20, help="LegoAD good queries (default 20)")
    b.add_argument("--defects", type=int, default=10, help="LegoAD queries per defect type (default 10)")
    b.add_argument("--pose-views", type=int, default=20,
                   help="LegoPose unrolled queries, and as many rolled ones (default 20)")
    r = sub.add_parser("run", help="splatjax evaluate on a class folder, one result line + a JSONL row",
                       description="Runs splatjax evaluate DATA --model RUN --out OUT [flags after --]; prints "
                                   "one line and appends it to OUT/../lego_ad_results.jsonl.")
    r.add_argument("data", help="class folder (e.g. OUT/LegoAD)")
    r.add_argument("--model", required=True, help="fitted run folder or .ply")
    r.add_argument("--out", required=True, help="evaluate output folder")
    return ap


def split_extra(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """(this script's arguments, the ``splatjax evaluate`` flags after ``--``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    k = argv.index("--")
    return argv[:k], argv[k + 1:]


def main(argv: list[str] | None = None) -> int:
    argv, extra = split_extra(argv)
    args = parser().parse_args(argv)
    if args.command == "build":
        if extra:
            parser().error("build takes no flags after --")
        for opt in ("good", "defects", "pose_views"):
            if getattr(args, opt) < 1:
                parser().error(f"--{opt.replace('_', '-')} must be at least 1")
        t0 = time.perf_counter()
        try:
            m = build(args.out, seed=args.seed, source=args.source, good=args.good, defects=args.defects,
                      pose_views=args.pose_views)
        except BuildError as e:
            sys.stderr.write(f"lego_ad.py build: error: {e}\n")
            return 2
        n = {c: len(q) for c, q in m["classes"].items()}
        print(f"built {n} queries in {args.out} in {time.perf_counter() - t0:.1f} s")
        return 0
    run(args.data, args.model, args.out, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
