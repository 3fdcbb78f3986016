"""scripts/bench_pose.py (a step of scripts/gpu_check.sh) runs end to end on the toy object:
batched vs one-by-one refinement, their agreement and the JSON it writes."""

from __future__ import annotations

import json

import pytest
from script_modules import load_script


@pytest.mark.slow  # a script smoke test (about 30 s); scripts/gpu_check.sh runs the script itself
def test_bench_pose_toy_batched_matches_one_by_one(tmp_path):
    out = tmp_path / "bench.json"
    rc = load_script("bench_pose").main(["--workdir", str(tmp_path / "work"), "--resolution", "32",
                                         "--fit-iterations", "40", "--queries", "3", "--steps", "3",
                                         "--batch-sizes", "2", "--backend", "reference", "--json", str(out)])
    assert rc in (0, None)
    res = json.loads(out.read_text())
    assert res["queries"] == 3 and res["steps"] == 3 and res["one_by_one_s_per_query"] > 0
    batched = res["batched"]["2"]
    assert batched["s_per_query"] > 0 and batched["max_pose_diff"] < 1e-4  # vmapped chunks = one by one
