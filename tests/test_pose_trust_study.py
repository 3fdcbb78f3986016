"""scripts/pose_trust_study.py rules-table and loss-rule: they count flags as the library's trust rules judge."""

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


def test_loss_rule_reads_the_calibration_the_evaluation_used_and_counts_flags(tmp_path, capsys):
    study = load_script("pose_trust_study")
    model, ev = tmp_path / "model", tmp_path / "eval"
    model.mkdir()
    ev.mkdir()
    (model / "map_calibration.json").write_text(json.dumps({  # another entry's reference must not be read
        "a": {"threshold": 5.0, "heldout_pose_loss": 0.1}, "b": {"threshold": 7.0, "heldout_pose_loss": 0.01}}))
    (ev / "report.json").write_text(json.dumps({"model": str(model / "model.ply"), "threshold": 7.0}))
    rows = [  # (final loss, outline ratio, rotation error, trusted)
        (0.05, 9.0, 1.4, 1),  # a wrong view, trusted by the evaluation: loss 5 x and outline 9 x -> flagged
        (0.05, 1.0, 0.001, 1),  # a hole: loss 5 x, outline as held-out views -> only the loss alone flags it
        (0.01, 9.0, 0.002, 1),  # a burr: outline only
    ]
    head = "path,final_loss,pose_outline_ratio,fine_rotation_rad,pose_trusted,pose_residual_ratio,silhouette_iou\n"
    (ev / "per_image.csv").write_text(head + "".join(f"test/x/{i}.png,{l},{o},{e},{t},1.0,0.95\n"
                                                     for i, (l, o, e, t) in enumerate(rows)))
    assert [round(r["loss_ratio"], 6) for r in study._eval_rows(ev)] == [5.0, 5.0, 1.0]
    study.main(["loss-rule", str(ev), "--outline", "3"])
    out = capsys.readouterr().out
    assert "3 queries of 1 evaluations, 1 beyond 0.01 rad (1 of them trusted by the evaluation)" in out
    assert "| 3.5 | 3 | 1 of 1 | 0 |" in out and "| 3.5 | 0 | 1 of 1 | 1 |" in out and "| 5 | 3 | 0 of 1 | 0 |" in out
