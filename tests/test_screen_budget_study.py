"""scripts/screen_budget_study.py: which candidates a cut after s screening steps keeps."""

from __future__ import annotations

import numpy as np
from script_modules import load_script


def test_a_cut_keeps_the_better_half_by_the_lowest_loss_so_far():
    study = load_script("screen_budget_study")
    # one query, 4 candidates, 5 steps: candidate 3 is worst until step 3, then best
    traces = np.array([[[1.0, 0.9, 0.8, 0.8, 0.8],
                        [1.0, 0.7, 0.7, 0.7, 0.7],
                        [1.0, 0.95, 0.9, 0.9, 0.9],
                        [1.0, 1.0, 1.0, 0.1, 0.05]]])
    final = np.array([[0.8, 0.7, 0.9, 0.05]])
    err = np.array([[2.0, 0.5, 2.5, 0.01]])  # rad: candidate 3 is the right basin
    kept, near = study.survivors(traces, final, err, 1)  # after step 1: candidates 1 and 0 go on
    assert not kept[0] and not near[0]
    kept, near = study.survivors(traces, final, err, 3)  # after step 3: 3 and 1
    assert kept[0] and near[0]
    # nobody within the basin: the nearest counts as kept whatever the cut
    _, near = study.survivors(traces, final, err + 1.0, 1)
    assert near[0]
    # ties go to the lower index: at step 0 every loss is 1.0, so 0 and 1 go on
    kept, _ = study.survivors(traces, np.array([[0.1, 0.2, 0.3, 0.4]]), err, 0)
    assert kept[0]
    kept, _ = study.survivors(traces, np.array([[0.4, 0.3, 0.2, 0.1]]), err, 0)
    assert not kept[0]
