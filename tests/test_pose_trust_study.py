"""scripts/pose_trust_study.py rules-table: it counts flags exactly as the library's trust rule judges."""

from __future__ import annotations

import json

from script_modules import load_script

from splatjax.pose import PoseConfig


def test_rules_table_flags_as_the_library_rule_and_counts_failures(tmp_path, capsys):
    study = load_script("pose_trust_study")
    pc = PoseConfig()
    q = [  # (IoU, residual ratio, outline ratio, rotation error)
        (0.99, 5.0, 1.0, 0.001),  # a stain: residual high, outline as held-out views -> trusted by default
        (0.95, 5.0, 9.0, 1.2),  # a wrong view: both high -> flagged
        (0.50, 1.0, 1.0, 2.0),  # silhouette rule
        (0.99, 1.0, 9.0, 0.002),  # a burr: outline only -> trusted
    ]
    queries = [{"path": f"test/x/{i}.png", "label": 1, "iou": a, "residual_ratio": r, "outline_ratio": o,
                "fine_rotation_rad": e} for i, (a, r, o, e) in enumerate(q)]
    flags = study._flags(queries, pc.max_residual_ratio, pc.residual_outline_ratio)
    assert flags.tolist() == [False, True, True, False]
    assert study._flags(queries, pc.max_residual_ratio, 0.0).tolist() == [True, True, True, False]  # residual alone
    run = tmp_path / "a.json"
    run.write_text(json.dumps({"eval": "EVAL", "queries": queries}))
    study.main(["rules-table", str(run), "--plot", str(tmp_path / "p.png")])
    out = capsys.readouterr().out
    assert "4 queries of 1 evaluations, 2 beyond 0.01 rad" in out and (tmp_path / "p.png").stat().st_size > 0
    row = f"| {pc.max_residual_ratio:g} | {pc.residual_outline_ratio:g} | 2 / 2 | 0 | 2 |"
    assert row in out and "default rule" not in out  # the default rule agrees with the truth on every query
