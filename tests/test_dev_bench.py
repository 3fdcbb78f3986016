"""scripts/dev_bench.py: the dev benchmark's object table, its halves and its Table 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
from script_modules import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("dev_bench")


def test_objects_split_into_disjoint_sets_with_one_material_each(bench):
    sets = (bench.TUNING, bench.HELD_OUT, bench.HELD_OUT_2, bench.HELD_OUT_3, bench.HELD_OUT_4, bench.HELD_OUT_5,
            bench.HELD_OUT_6, bench.HELD_OUT_7, bench.HELD_OUT_8, bench.HELD_OUT_9,
            bench.HELD_OUT_10, bench.HELD_OUT_11, bench.HELD_OUT_12, bench.HELD_OUT_13, bench.HELD_OUT_14,
            bench.HELD_OUT_15, bench.HELD_OUT_16)
    assert tuple(bench.SPLITS.values()) == sets and list(bench.SPLITS)[:2] == ["tuning", "held-out"]
    assert set().union(*map(set, sets)) == set(bench.OBJECTS) and len(bench.OBJECTS) == 51
    assert sum(map(len, sets)) == 51  # disjoint
    for half in sets:
        assert sorted(bench.OBJECTS[o][1] for o in half) == ["glossy", "plastic", "two-tone"]
    assert len({seed for _, _, seed in bench.OBJECTS.values()}) == 51  # every class its own views and defects
    for first in bench.HELD_OUT:  # the held-out meshes again, each time in another material
        again = [bench.OBJECTS[f"{first}-{k}"] for k in (2, 3)]
        assert all(o[0] == bench.OBJECTS[first][0] for o in again)
        assert len({bench.OBJECTS[first][1], *(o[1] for o in again)}) == 3
        assert bench.OBJECTS[f"{first}-4"] == bench.OBJECTS[first][:2] + (bench.OBJECTS[first][2] + 30,)
        second = bench.OBJECTS[f"{first}-2"]
        assert bench.OBJECTS[f"{first}-5"] == second[:2] + (second[2] + 30,)
        third = bench.OBJECTS[f"{first}-3"]
        assert bench.OBJECTS[f"{first}-6"] == third[:2] + (third[2] + 30,)
        assert bench.OBJECTS[f"{first}-7"] == bench.OBJECTS[first][:2] + (bench.OBJECTS[first][2] + 60,)
        assert bench.OBJECTS[f"{first}-8"] == second[:2] + (second[2] + 60,)
        assert bench.OBJECTS[f"{first}-9"] == third[:2] + (third[2] + 60,)
        assert bench.OBJECTS[f"{first}-10"] == bench.OBJECTS[first][:2] + (bench.OBJECTS[first][2] + 90,)
        assert bench.OBJECTS[f"{first}-11"] == second[:2] + (second[2] + 90,)
        assert bench.OBJECTS[f"{first}-12"] == third[:2] + (third[2] + 90,)
        assert bench.OBJECTS[f"{first}-13"] == bench.OBJECTS[first][:2] + (bench.OBJECTS[first][2] + 120,)
        assert bench.OBJECTS[f"{first}-14"] == second[:2] + (second[2] + 120,)
        assert bench.OBJECTS[f"{first}-15"] == third[:2] + (third[2] + 120,)
        assert bench.OBJECTS[f"{first}-16"] == bench.OBJECTS[first][:2] + (bench.OBJECTS[first][2] + 150,)
    assert bench.parser().parse_args(["run", "OUT"]).objects == list(bench.TUNING + bench.HELD_OUT)


def _row(obj, split, auroc, rot):
    return {"object": obj, "split": split, "image_auroc": auroc, "pixel_auroc": 0.99, "aupro": 0.9,
            "pose": {"all": {"fine_rotation_rad": {"median": rot, "max": 2 * rot}},
                     "rolled": {"fine_rotation_rad": {"median": rot, "max": 3 * rot}}},
            "seconds_per_query": {"total": 4.0}}


def test_table_keeps_the_newest_row_per_object_and_means_each_half(bench, tmp_path):
    rows = [_row("bunny", "tuning", 0.5, 0.001), _row("bunny", "tuning", 0.78, 0.0017),
            _row("cow", "tuning", 0.9, 0.002), _row("fandisk", "held-out", 0.8, 0.003), {"class": "no object"}]
    (tmp_path / bench.RESULTS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    detection, poses = bench.table(tmp_path).split("\n\n")
    lines = detection.splitlines()
    assert lines[0].startswith("| object | split | image AUROC")
    body = lines[2:]
    assert body[0].startswith("| bunny | tuning | 0.780 | 0.990 | 0.900 | 0.0017 / 0.0034 | 0.0017 / 0.0051 | n/a | 4.00")
    assert body[2] == "| **mean** | tuning | 0.840 | 0.990 | 0.900 | | | | |"
    assert body[3].startswith("| fandisk | held-out | 0.800") and len(body) == 4  # one held-out object: no mean
    assert poses.splitlines()[0].startswith("| object | split | rolled:") and len(poses.splitlines()) == 2  # no CSVs


def test_pose_table_and_verdicts_come_from_the_runs_files(bench, tmp_path):
    data, out = tmp_path / "data", tmp_path / "eval"
    data.mkdir()
    out.mkdir()
    (data / "synth.json").write_text(json.dumps({"test": [{"path": f"test/good/{i}.png", "roll_deg": 30.0 * (i % 2)}
                                                          for i in range(4)]}))
    errs, trusted = [0.001, 0.002, 0.5, 0.003], [1, 1, 0, 0]  # query 2 failed (flagged), query 3 flagged wrongly
    (out / "per_image.csv").write_text("path,fine_rotation_rad,pose_trusted\n" + "".join(
        f"test/good/{i}.png,{e},{t}\n" for i, (e, t) in enumerate(zip(errs, trusted))))
    (out / "report.json").write_text(json.dumps({"verdicts": {"false_positive_rate": 0.25, "recall": 0.5},
                                                 "num_defective": 2, "num_test_images": 6, "threshold": 123.0}))
    row = {**_row("cow", "tuning", 0.9, 0.002), "out": str(out), "data": str(data)}
    (tmp_path / bench.RESULTS).write_text(json.dumps(row) + "\n")
    detection, poses = bench.table(tmp_path).split("\n\n")
    assert "| 1/4, 1/2 (123) |" in detection.splitlines()[2]
    cells = [c.strip() for c in poses.splitlines()[2].split("|")[1:-1]]
    assert cells[:2] == ["cow", "tuning"]
    assert cells[2] == "0.0025 / 0.0029 / 0.0030" and cells[3] == "0.2505 / 0.4501 / 0.5000"  # rolled 1, 3; unrolled 0, 2
    assert cells[4:8] == ["0 + 1 of 4", "2", "1", "0"]


def test_pose_table_pools_the_queries_of_a_split(bench, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "synth.json").write_text(json.dumps({"test": [{"path": f"test/good/{i}.png", "roll_deg": 30.0 * (i % 2)}
                                                          for i in range(4)]}))
    rows = []
    for name, errs, trusted, spq in (("bunny", [0.001, 0.002, 0.003, 0.004], [1, 1, 1, 1], 2.0),
                                     ("cow", [0.005, 0.02, 0.006, 0.007], [1, 1, 1, 0], 4.0)):
        out = tmp_path / name
        out.mkdir()
        (out / "per_image.csv").write_text("path,fine_rotation_rad,pose_trusted\n" + "".join(
            f"test/good/{i}.png,{e},{t}\n" for i, (e, t) in enumerate(zip(errs, trusted))))
        row = {**_row(name, "tuning", 0.9, 0.002), "out": str(out), "data": str(data)}
        row["seconds_per_query"] = {"total": spq}
        rows.append(json.dumps(row) + "\n")
    (tmp_path / bench.RESULTS).write_text("".join(rows))
    poses = bench.pose_table({r["object"]: r for r in map(json.loads, rows)}).splitlines()
    assert len(poses) == 5 and poses[2].startswith("| bunny |") and poses[3].startswith("| cow |")
    cells = [c.strip() for c in poses[4].split("|")[1:-1]]
    # rolled: 0.002, 0.004, 0.02, 0.007; unrolled: 0.001, 0.003, 0.005, 0.006
    assert cells[:2] == ["**all**", "tuning"]
    assert cells[2].endswith("/ 0.0200") and cells[3].startswith("0.0040 /")
    assert cells[4] == "1 + 0 of 8 (87.5 % within 0.01)"
    assert cells[5:] == ["1", "1", "1", "3.00"]  # cow's 0.02 is not flagged; its flagged 0.007 is within


def test_rolled_queries_come_from_the_synth_manifest(bench, tmp_path):
    (tmp_path / "synth.json").write_text(json.dumps({"test": [{"path": "test/good/0.png", "roll_deg": 0.0},
                                                              {"path": "test/Burrs/1.png", "roll_deg": -37.5}]}))
    assert bench._rolled(tmp_path) == {"test/Burrs/1.png"}


def test_pose_axes_finds_the_orbit_ambiguity(bench, tmp_path):
    """Estimates that orbit the object (turn the camera about its x / y axis by a small angle
    and move it sideways by distance x angle, keeping the object in place): the rotation
    errors about x and y correlate -1 / +1 with the sideways moves along y and x."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    truth, est = {}, {}
    for i in range(8):
        a = np.eye(4)
        a[:3, :3] = Rotation.random(random_state=i).as_matrix()
        a[:3, 3] = a[:3, :3] @ np.array([0.0, 0.0, 3.0])  # 3 units from the object at the origin
        ex, ey = rng.normal(0, 2e-3, 2)
        turn = Rotation.from_rotvec([ex, ey, 0.0]).as_matrix()
        b = a.copy()
        b[:3, :3] = a[:3, :3] @ turn
        b[:3, 3] = a[:3, :3] @ (turn @ np.array([0.0, 0.0, 3.0]))  # orbit: still looking at the origin
        truth[f"test/good/{i}.png"], est[f"test/good/{i}.png"] = a.tolist(), b.tolist()
    (tmp_path / "data" / "obj").mkdir(parents=True)
    (tmp_path / "eval" / "obj").mkdir(parents=True)
    (tmp_path / "data" / "obj" / "test_poses.json").write_text(json.dumps({"poses": truth}))
    (tmp_path / "eval" / "obj" / "poses.json").write_text(json.dumps({"fine": est}))
    row = bench.pose_axes(tmp_path, ["obj", "missing"]).splitlines()
    assert len(row) == 3 and row[2].startswith("| obj | 8 | ")
    cx, cy = (float(c) for c in row[2].split("|")[4:6])
    assert cx < -0.99 and cy > 0.99
