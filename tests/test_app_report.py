"""splatjax.app.report: heatmap panels on a fixed scale (byte-identical alone and among
others), verdicts, the per-image CSV and the paper-style table."""

import csv

import numpy as np
import pytest

from splatjax.anomaly import MapCalibration
from splatjax.app import report

CAL = MapCalibration(threshold=1.0, vmin=0.0, vmax=2.0, features="weights-free", map_size=224, map_sigma=4.0,
                     score="max", views=5, train_score_max=0.7, train_score_median=0.4)


def _image(seed, strength):
    rng = np.random.default_rng(seed)
    query = rng.uniform(0, 1, (32, 40, 3)).astype(np.float32)
    render = np.clip(query + rng.normal(0, 0.05, query.shape), 0, 1).astype(np.float32)
    amap = (strength * rng.uniform(0, 1, (224, 224))).astype(np.float32)
    mask = np.zeros((32, 40), bool)
    mask[10:20, 5:15] = strength > 1
    return query, render, amap, float(amap.max()), mask


def test_a_panel_is_byte_identical_alone_and_among_others(tmp_path):
    # image "x" is defect-free (low map); its neighbours have strong defects (maps up to 50x
    # higher): with a per-model scale, x's picture must not depend on them
    items = {"y": _image(1, 40.0), "x": _image(0, 0.8), "z": _image(2, 25.0)}

    def write(folder, names):
        q, r, m, s, k = (np.stack([items[n][j] for n in names]) for j in range(5))
        return report.write_heatmaps(folder, names, q, r, m, s, CAL, masks=k)

    [alone] = write(tmp_path / "alone", ["x"])
    among = write(tmp_path / "among", ["y", "x", "z"])
    assert alone.read_bytes() == among[1].read_bytes()
    assert alone.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert among[0].read_bytes() != among[1].read_bytes()


def test_panel_shows_the_scale_and_the_verdict():
    from PIL import Image
    import io

    q, r, m, s, k = _image(0, 0.8)
    png = report.heatmap_panel(q, r, m, s, CAL, name="x", mask=k)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert img.shape[0] >= 256 and img.shape[1] > 3 * 256  # three panels of >= 256 px plus the colour bar
    assert report.verdict(1.01, CAL) == "ANOMALOUS" and report.verdict(1.0, CAL) == "normal"
    # a different scale draws the same map differently
    hotter = MapCalibration(**{**CAL.to_dict(), "vmax": 0.5, "threshold": 0.25})
    assert report.heatmap_panel(q, r, m, s, hotter, name="x") != report.heatmap_panel(q, r, m, s, CAL, name="x")


def test_per_image_csv(tmp_path):
    path = report.write_per_image_csv(tmp_path / "t.csv", {"path": ["a", "b"], "score": [0.5, np.float32(1.25)],
                                                           "label": [0, 1]})
    rows = list(csv.DictReader(open(path)))
    assert rows == [{"path": "a", "score": "0.5", "label": "0"}, {"path": "b", "score": "1.25", "label": "1"}]


def test_pose_convergence_plot_takes_diverged_and_nan_traces(tmp_path):
    traces = np.vstack([np.linspace(0.1, 0.01, 6), np.full(6, np.nan), np.linspace(0.05, 0.2, 6)])
    report.plot_pose_convergence(tmp_path / "c.png", traces, diverged=np.array([False, True, True]))
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_has_rows_and_mean():
    reports = [{"class": "A", "image_auroc": 0.9, "pixel_auroc": 0.99, "aupro": 0.8,
                "seconds_per_query_without_coarse": 2.0,
                "pose": {"fine": {"translation": {"median": 0.01}, "rotation_rad": {"median": 0.002}}}},
               {"class": "B", "image_auroc": 0.7, "pixel_auroc": 0.97, "aupro": None}]
    table = report.format_table(reports)
    assert "| A | 90.0 | 99.0 | 80.0 | 0.0100 | 0.0020 | 2.00 |" in table
    assert "| **mean** | 80.0 | 98.0 | 80.0 |" in table
    assert "| B | 70.0 | 97.0 | n/a |" in table


@pytest.mark.parametrize("n", [1, 3])
def test_calibration_round_trips_through_a_dict(n):
    cal = MapCalibration(**{**CAL.to_dict(), "views": n})
    assert MapCalibration.from_dict(cal.to_dict()) == cal
