"""scripts/retry_alternatives_study.py: at which try a retry keeping the lowest loss finds the right basin."""

from __future__ import annotations

import numpy as np
from script_modules import load_script


def test_the_right_try_is_the_first_converged_alternative_a_lowest_loss_retry_keeps():
    study = load_script("retry_alternatives_study")
    err = np.array([0.002, 3.0, 0.004, 2.0, 0.001])  # rad, alternatives 0..4 after the fine pose
    loss = np.array([0.005, 0.03, 0.006, 0.02, 0.004])
    # tries in the order of distinct_alternatives (-1 fills): 3 (wrong basin) then 2 (right)
    assert study.first_right_try(np.array([3, 2, -1]), err, loss, kept_loss=0.05) == 2
    assert study.first_right_try(np.array([2, 3]), err, loss, kept_loss=0.05) == 1
    # the right basin ends above the kept (flipped) pose's loss: a retry would not take it
    assert study.first_right_try(np.array([3, 2]), err, loss, kept_loss=0.0055) == 0
    # after a lower-loss wrong try, a converged one must beat that loss too
    loss2 = loss.copy()
    loss2[1] = 0.0045
    assert study.first_right_try(np.array([1, 2, 4]), err, loss2, kept_loss=0.05) == 3
    assert study.first_right_try(np.array([-1, -1]), err, loss, kept_loss=0.05) == 0
