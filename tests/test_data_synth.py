"""The mesh benchmark generator (splatjax synth): MAD layout read back by the loaders, masks
exact by construction (re-rendered), 3D defects where they physically can be, determinism,
the source mesh untouched, refusals and interrupts. Tiny mesh, 48 px, few views."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mitsuba")

from conftest import SHARED_DATA  # noqa: E402
from PIL import Image  # noqa: E402

from splatjax.app.cli import main  # noqa: E402
from splatjax.data import detect_format, load_mad_class, madwrite  # noqa: E402
from splatjax.data import synth as S  # noqa: E402
from splatjax.errors import UserError  # noqa: E402

CFG = S.SynthConfig(train_views=3, test_good=1, test_per_type=1, resolution=48, spp=32, seed=0, threads=2,
                    defect_fraction=(0.03, 0.06), max_edge=0.08)


def write_blob_obj(path: Path) -> Path:
    """A lumpy UV sphere (y up, off-centre and not unit size) of 448 faces as OBJ."""
    nu, nv = 16, 15
    verts = [(0.0, 1.0, 0.0)]
    for i in range(1, nv):
        th = math.pi * i / nv
        for j in range(nu):
            ph = 2 * math.pi * j / nu
            r = 1.0 + 0.2 * math.sin(3 * ph) * math.sin(th) + 0.15 * math.cos(2 * th)
            verts.append((r * math.sin(th) * math.cos(ph), r * math.cos(th), 0.7 * r * math.sin(th) * math.sin(ph)))
    verts.append((0.0, -1.0, 0.0))
    faces, last = [], len(verts) - 1
    ring = lambda i, j: 1 + (i - 1) * nu + (j % nu)  # noqa: E731
    for j in range(nu):
        faces.append((0, ring(1, j + 1), ring(1, j)))
        faces.append((last, ring(nv - 1, j), ring(nv - 1, j + 1)))
    for i in range(1, nv - 1):
        for j in range(nu):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j + 1), ring(i + 1, j)
            faces += [(a, b, c), (a, c, d)]
    lines = [f"v {2 * x + 5:.6f} {2 * y - 1:.6f} {2 * z:.6f}" for x, y, z in verts]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    mesh = write_blob_obj(tmp_path_factory.mktemp("mesh") / "blob.obj")
    os.utime(mesh, (1_000_000_000, 1_000_000_000))
    return mesh, mesh.read_bytes(), mesh.stat().st_mtime_ns


@pytest.fixture(scope="module")
def synth_class(blob, tmp_path_factory):
    return S.make_synth_dataset(blob[0], tmp_path_factory.mktemp("synth") / "Blob", CFG)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _png(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def test_folder_loads_as_mad_class(synth_class):
    root = synth_class
    assert detect_format(root).name == "mad"
    mad = load_mad_class(root, test_poses=root / "test_poses.json")
    assert mad.train.images.shape == (3, 48, 48, 3)
    assert mad.test.defect_types == ("good", "Burrs", "Missing", "Stains")
    np.testing.assert_array_equal(mad.test.labels, [0, 1, 1, 1])
    assert not mad.test.masks[0].any() and all(m.any() for m in mad.test.masks[1:])
    assert np.all(mad.train.images[:, 0, 0] == 1.0)  # white background
    manifest = json.loads((root / "synth.json").read_text())
    assert manifest["config"] == json.loads(json.dumps(dataclasses.asdict(CFG)))
    assert sum(1 for t in manifest["test"] if t["roll_deg"]) == 1  # a third of 4 test images rolled
    poses = json.loads((root / "test_poses.json").read_text())["poses"]
    np.testing.assert_allclose(mad.test.c2w, [poses[p] for p in mad.test.paths])
    noise = manifest["noise"]
    assert noise["spp"] == 32 and noise["pixels"] > 0 and 0 <= noise["p99"] <= noise["max"] <= 1
    for rel, d in manifest["defects"].items():
        assert d["mask_pixels"] == int((_png(root / "ground_truth" / rel.split("/")[1] / "0_mask.png") > 0).sum())
        assert d["mask_fraction"] == pytest.approx(d["mask_pixels"] / d["object_pixels"])


def test_masks_exact_by_construction(blob, synth_class):
    """Each mask equals the thresholded difference to the defect-free view re-rendered with
    the same seed; the defective view re-renders bit-exactly from its recorded placement;
    mask pixels lie where each defect type can change the picture."""
    root = synth_class
    manifest = json.loads((root / "synth.json").read_text())
    obj = S.make_object(*S.load_mesh(blob[0], CFG.up_axis), CFG)
    poses = json.loads((root / "test_poses.json").read_text())["poses"]
    for rel, d in manifest["defects"].items():
        kind = rel.split("/")[1]
        bad = _png(root / rel)
        mask = _png(root / "ground_truth" / kind / "0_mask.png") > 0
        good, alpha = S.render_view(obj, poses[rel], CFG, seed=d["seed"])
        np.testing.assert_array_equal(mask, S.defect_mask(good, bad, CFG.mask_threshold))
        again, alpha_bad = S.render_view(obj, poses[rel], CFG, seed=d["seed"], defect=d["placement"])
        np.testing.assert_array_equal(again, bad)
        if kind in ("Missing", "Stains"):  # only the object's own pixels can change
            assert not (mask & (alpha == 0)).any()
        if kind == "Stains":  # paint: the same geometry, the same silhouette
            np.testing.assert_array_equal(alpha_bad > 0.5, alpha > 0.5)
        if kind == "Missing":  # removing faces (same rays): coverage can only fall
            assert np.all(alpha_bad <= alpha)
        if kind == "Burrs":  # added material: coverage can only grow; outside the object, mask pixels are the burr
            assert np.all(alpha_bad >= alpha)
            assert np.all(alpha_bad[mask & (alpha == 0)] > 0)


def test_deterministic_and_seeded(blob, synth_class, tmp_path, capsys):
    mesh = blob[0]
    again = S.make_synth_dataset(mesh, tmp_path / "again", CFG)
    assert _files(again) == _files(synth_class)
    argv = ["synth", str(mesh), "--out", str(tmp_path / "seed1"), "--train-views", "3", "--test-good", "1",
            "--test-per-type", "1", "--resolution", "48", "--spp", "32", "--threads", "2",
            "--defect-fraction", "0.03", "0.06", "--max-edge", "0.08", "--seed", "1"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert f"class folder: {tmp_path / 'seed1'}" in out.out and "synth test views" in out.err
    other = _files(tmp_path / "seed1")
    assert other.keys() == _files(synth_class).keys()
    assert other["train/good/0.png"] != _files(synth_class)["train/good/0.png"]
    assert json.loads(other["synth.json"])["config"]["seed"] == 1


def test_source_mesh_untouched(blob, synth_class):
    mesh, data, mtime = blob
    assert mesh.read_bytes() == data and mesh.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in mesh.parent.iterdir()) == ["blob.obj"]
    assert not any(p.name.startswith(".") for p in synth_class.parent.iterdir())  # no work folder left


def test_cli_refusals(blob, tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    assert main(["synth", str(blob[0]), "--out", str(full)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and str(full) in err[0]
    assert [p.name for p in full.iterdir()] == ["notes.txt"]
    for bad in (tmp_path / "nope.obj", tmp_path / "mesh.stl"):
        if bad.suffix == ".stl":
            bad.write_text("solid x\nendsolid x\n")
        assert main(["synth", str(bad), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(bad) in err[0]
    broken = tmp_path / "broken.obj"
    broken.write_text("v 0 0 0\nf 1 2 3\n")
    assert main(["synth", str(broken), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(broken) in err[0]
    assert main(["synth", str(blob[0]), "--out", str(tmp_path / "o"), "--spp", "0"]) == 2
    assert "--spp" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_interrupt_leaves_no_complete_looking_folder(blob, tmp_path, monkeypatch):
    calls = []

    def boom(*a, **k):
        calls.append(a)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    real = madwrite.write_png
    monkeypatch.setattr(madwrite, "write_png", boom)
    with pytest.raises(KeyboardInterrupt):
        S.make_synth_dataset(blob[0], tmp_path / "cut", CFG)
    assert list(tmp_path.iterdir()) == []


def test_missing_mitsuba_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "mitsuba", None)
    with pytest.raises(UserError, match=r"pip install 'splatjax\[synth\]'"):
        S._mitsuba()


def test_refine_mesh_conforming():
    v, f = S._icosphere(0)
    rv, rf, rn = S.refine_mesh(v, f, 0.3, normals=v)
    edges = np.sort(np.stack([rf, np.roll(rf, -1, 1)], -1).reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert np.all(counts == 2)  # closed mesh stays closed: no T-junctions
    assert np.linalg.norm(rv[edges[:, 0]] - rv[edges[:, 1]], axis=1).max() <= 0.3
    area = lambda v, f: 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum()  # noqa: E731
    assert area(rv, rf) == pytest.approx(area(v, f))
    np.testing.assert_allclose(np.linalg.norm(rn, axis=1), 1.0)


def test_shared_mesh_tiny(tmp_path):
    mesh = SHARED_DATA / "meshes" / "suzanne.obj"
    if not mesh.is_file():
        pytest.skip("shared meshes (../shared/data/meshes) not present")
    cfg = dataclasses.replace(CFG, train_views=2, test_good=0, max_edge=0.1, material="two-tone")
    root = S.make_synth_dataset(mesh, tmp_path / "Suzanne", cfg)
    mad = load_mad_class(root)
    assert mad.train.images.shape == (2, 48, 48, 3) and mad.test.labels.tolist() == [1, 1, 1]
    assert all(m.any() for m in mad.test.masks)
