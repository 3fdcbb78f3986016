"""scripts/lego_ad.py: the lego-AD sets built from a tiny Blender-layout folder load as
MAD-Sim classes with exact masks and true poses; the run step's result row."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from dataset_builders import tree_state
from script_modules import load_script
from PIL import Image

from splatjax.camera import look_at_c2w
from splatjax.data import load_mad_class
from splatjax.data.roll import roll_image, roll_pose

SIZE, N_TRAIN, N_VAL = 32, 3, 6
SMALL = ["--good", "2", "--defects", "1", "--pose-views", "2"]


@pytest.fixture(scope="module")
def lego_ad():
    return load_script("lego_ad")


def textured_disc(rng) -> np.ndarray:
    """A 32 x 32 RGBA view: a disc of radius 12 (soft 1 px rim) with a smooth random
    texture, transparent elsewhere (colour 0)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    r = np.hypot(rows - SIZE / 2, cols - SIZE / 2)
    alpha = np.clip(12.5 - r, 0.0, 1.0)
    tex = np.stack([np.sin(rows / 3 + rng.uniform(0, 6)) * np.cos(cols / 4 + rng.uniform(0, 6)) for _ in range(3)], -1)
    rgb = 128 + 100 * tex
    img = np.concatenate([rgb * (alpha[..., None] > 0), 255 * alpha[..., None]], axis=-1)
    return np.round(img).astype(np.uint8)


def make_source(root: Path) -> Path:
    rng = np.random.default_rng(1)
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        (root / split).mkdir(parents=True)
        frames = []
        for i in range(n):
            Image.fromarray(textured_disc(rng)).save(root / split / f"r_{i}.png")
            angle = 2 * math.pi * (i + 0.5 * (split == "val")) / n
            c2w = look_at_c2w([4 * math.cos(angle), 4 * math.sin(angle), 1.0 + 0.1 * i])
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w.tolist()})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))
    return root


@pytest.fixture(scope="module")
def built(lego_ad, tmp_path_factory):
    src = make_source(tmp_path_factory.mktemp("src") / "lego")
    before = tree_state(src)
    out = tmp_path_factory.mktemp("out") / "ad"
    assert lego_ad.main(["build", str(out), "--source", str(src), "--seed", "3", *SMALL]) == 0
    return src, out, before


def read_rgba(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        return np.asarray(im).copy()


def test_classes_load_with_poses(built):
    src, out, before = built
    ad = load_mad_class(out / "LegoAD", test_poses=out / "LegoAD" / "test_poses.json")
    assert len(ad.train) == N_TRAIN and len(ad.test) == 2 + 3
    assert sorted(set(ad.test.defect_types)) == ["Burrs", "Missing", "Stains", "good"]
    assert ad.test.c2w is not None and ad.test.c2w.shape == (5, 4, 4)  # test_poses.json picked up
    pose = load_mad_class(out / "LegoPose", test_poses=out / "LegoPose" / "test_poses.json")
    assert len(pose.test) == 4 and set(pose.test.defect_types) == {"good"} and not pose.test.labels.any()
    assert pose.test.c2w is not None
    assert tree_state(src) == before  # the source folder is untouched


def test_masks_are_the_changed_pixels_and_poses_the_rolled_ones(lego_ad, built):
    src, out, _ = built
    val = json.loads((src / "transforms_val.json").read_text())["frames"]
    manifest = json.loads((out / lego_ad.MANIFEST).read_text())["classes"]
    for name, n_rolled in (("LegoAD", round(5 / 3)), ("LegoPose", 2)):
        folder = out / name
        poses = json.loads((folder / "test_poses.json").read_text())["poses"]
        images = sorted(p.relative_to(folder).as_posix() for p in (folder / "test").rglob("*.png"))
        assert sorted(poses) == images == sorted(manifest[name])
        assert sum(bool(e["roll_deg"]) for e in manifest[name].values()) == n_rolled
        assert len({e["val_frame"] for e in manifest[name].values()}) == len(images)  # distinct views
        for rel in images:
            e = manifest[name][rel]
            angle = math.radians(e["roll_deg"])
            clean = read_rgba(src / "val" / f"r_{e['val_frame']}.png")
            clean = roll_image(clean, angle) if angle else clean
            np.testing.assert_allclose(poses[rel], roll_pose(np.array(val[e["val_frame"]]["transform_matrix"]),
                                                             angle), atol=1e-12)
            query = read_rgba(folder / rel)
            kind = rel.split("/")[1]
            if kind == "good":
                np.testing.assert_array_equal(query, clean)
                continue
            with Image.open(folder / "ground_truth" / kind / f"{Path(rel).stem}_mask.png") as im:
                mask = np.asarray(im)
            assert set(np.unique(mask)) == {0, 255}
            np.testing.assert_array_equal(mask > 0, lego_ad.changed(clean, query))
            n_obj = (clean[..., 3] > 0).sum()
            assert max(lego_ad.MIN_PIXELS, 0.003 * n_obj) <= (mask > 0).sum() <= 0.03 * n_obj


def test_defect_kinds_edit_as_documented(lego_ad, built):
    src, out, _ = built
    manifest = json.loads((out / lego_ad.MANIFEST).read_text())["classes"]["LegoAD"]
    for kind in ("Burrs", "Missing", "Stains"):
        e = manifest[f"test/{kind}/0.png"]
        clean = read_rgba(src / "val" / f"r_{e['val_frame']}.png")
        clean = roll_image(clean, math.radians(e["roll_deg"])) if e["roll_deg"] else clean
        query = read_rgba(out / "LegoAD" / "test" / kind / "0.png")
        mask = lego_ad.changed(clean, query)
        if kind == "Stains":  # paint on object pixels; alpha unchanged
            np.testing.assert_array_equal(query[..., 3], clean[..., 3])
            assert (clean[..., 3][mask] > 0).all()
        elif kind == "Missing":  # object pixels removed
            assert (query[..., 3][mask] == 0).all() and (clean[..., 3][mask] > 0).all()
        else:  # opaque material added where the object was not opaque
            assert (query[..., 3][mask] == 255).all() and (clean[..., 3][mask] < 255).all()


def test_train_part_and_determinism(lego_ad, built, tmp_path):
    src, out, _ = built
    t = json.loads((out / "LegoAD" / "transforms.json").read_text())
    src_frames = json.loads((src / "transforms_train.json").read_text())["frames"]
    assert t["camera_angle_x"] == 0.69 and len(t["frames"]) == N_TRAIN
    for i, fr in enumerate(t["frames"]):
        assert fr["transform_matrix"] == src_frames[i]["transform_matrix"]
        copied = (out / "LegoAD" / "train" / "good" / f"{i}.png").read_bytes()
        assert copied == (src / "train" / f"r_{i}.png").read_bytes()
    again = tmp_path / "again"
    assert lego_ad.main(["build", str(again), "--source", str(src), "--seed", "3", *SMALL]) == 0
    same = {k: (v[0], v[3]) for k, v in tree_state(again).items()}  # (is folder, bytes), not times
    assert same and same == {k: (v[0], v[3]) for k, v in tree_state(out).items()}


def test_refusals(lego_ad, built, capsys):
    src, out, _ = built
    assert lego_ad.main(["build", str(out), "--source", str(src), *SMALL]) == 2
    assert "exists" in capsys.readouterr().err
    assert lego_ad.main(["build", str(src / "inside"), "--source", str(src), *SMALL]) == 2
    assert "inside the source" in capsys.readouterr().err
    assert not (src / "inside").exists()
    assert lego_ad.main(["build", str(out.parent / "big"), "--source", str(src), "--good", "9"]) == 2
    assert "too few" in capsys.readouterr().err


def test_run_writes_one_row(lego_ad, built, tmp_path, monkeypatch, capsys):
    """The run step with a stand-in for splatjax evaluate: the argv it gets, the line, the row."""
    _, out, _ = built
    seen = {}

    def fake_main(argv):
        seen["argv"] = argv
        res = Path(argv[argv.index("--out") + 1])
        res.mkdir(parents=True)
        rel = sorted(json.loads((out / lego_ad.MANIFEST).read_text())["classes"]["LegoAD"])
        rows = ["path,label,fine_rotation_rad,fine_translation,coarse_rotation_rad,coarse_translation"]
        rows += [f"{p},0,{0.01 * k},{0.1 * k},{0.5 * k},{k}" for k, p in enumerate(rel)]
        (res / "per_image.csv").write_text("\n".join(rows) + "\n")
        (res / "report.json").write_text(json.dumps({
            "class": "LegoAD", "num_test_images": len(rel), "image_auroc": 0.75, "pixel_auroc": 0.5, "aupro": None,
            "seconds": {"load": 1.0, "fine": 4.0, "total": 5.0}}))
        return 0

    import splatjax.app.cli

    monkeypatch.setattr(splatjax.app.cli, "main", fake_main)
    res = tmp_path / "runs" / "wf"
    assert lego_ad.main(["run", str(out / "LegoAD"), "--model", "M", "--out", str(res), "--",
                         "--features", "weights-free"]) == 0
    assert seen["argv"] == ["evaluate", str(out / "LegoAD"), "--model", "M", "--out", str(res),
                            "--features", "weights-free"]
    line = capsys.readouterr().out
    assert "image AUROC 0.750" in line and "AUPRO n/a" in line and "fine rot 0.0200/0.0400 rad" in line and "rolled" in line
    (row,) = [json.loads(x) for x in (tmp_path / "runs" / lego_ad.RESULTS).read_text().splitlines()]
    assert row["variant_flags"] == ["--features", "weights-free"]
    assert row["seconds_per_query"] == {"total": 1.0, "load": 0.2, "fine": 0.8}
    assert row["pose"]["all"]["coarse_translation"] == {"median": 2.0, "max": 4.0}
    assert len(row["pose"]["rolled"]["fine_rotation_rad"]) == 2  # split by the manifest's rolls
