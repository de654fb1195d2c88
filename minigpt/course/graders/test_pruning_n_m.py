"""Assignment pruning, part n_m: the N:M semi-structured mask. A weight (d_in, d_out) keeps
exactly N of every M consecutive weights along the input dimension (axis 0), in every column:
the N with the highest scores; on a tie the earlier entry is pruned first."""

import numpy as np
import pytest

from minigpt.compress.prune import nm_mask

# (d_in, d_out) = (8, 2): two groups of 4 inputs per column
SCORES = np.array([[0.9, 0.1],
                   [0.2, 0.2],
                   [0.5, 0.2],
                   [0.1, 0.7],
                   [0.3, 0.4],
                   [0.3, 0.1],
                   [0.8, 0.6],
                   [0.0, 0.9]])


def test_2_of_4_keeps_the_two_largest_per_group():
    # column 0: [0.9, 0.2, 0.5, 0.1] keeps rows 0, 2; [0.3, 0.3, 0.8, 0.0] keeps rows 5, 6 (of the tied
    # 0.3s the earlier goes); column 1: [0.1, 0.2, 0.2, 0.7] keeps rows 2, 3; [0.4, 0.1, 0.6, 0.9] rows 6, 7
    expected = np.array([[1, 0], [0, 0], [1, 1], [0, 1],
                         [0, 0], [1, 0], [1, 1], [0, 1]], bool)
    mask = np.asarray(nm_mask(SCORES, 2, 4))
    assert mask.shape == SCORES.shape and mask.dtype == bool, f"mask: shape {mask.shape} dtype {mask.dtype}"
    assert np.array_equal(mask, expected), f"2:4 mask: yours\n{mask.astype(int).T}\nexpected\n{expected.astype(int).T}"


@pytest.mark.parametrize(("n", "m"), [(1, 2), (2, 4), (1, 4), (3, 4), (2, 8), (5, 8)])
def test_every_group_keeps_exactly_n(n, m):
    scores = np.abs(np.sin(np.arange(16 * 3) * 2.1)).reshape(16, 3)
    mask = np.asarray(nm_mask(scores, n, m))
    per_group = mask.reshape(16 // m, m, 3).sum(axis=1)
    assert np.all(per_group == n), f"{n}:{m}: kept per group (rows: groups, columns: outputs)\n{per_group}, expected {n} each"
    for g in range(16 // m):
        block = scores[g * m:(g + 1) * m]
        kept = mask[g * m:(g + 1) * m]
        for j in range(3):
            assert block[kept[:, j], j].min() >= block[~kept[:, j], j].max(), \
                f"{n}:{m}: group {g}, column {j}: a kept score is below a pruned one"


def test_groups_run_along_the_input_dimension():
    scores = np.arange(8 * 4, dtype=float).reshape(8, 4)  # grows down each column
    mask = np.asarray(nm_mask(scores, 2, 4))
    expected = np.tile(np.array([0, 0, 1, 1], bool)[:, None], (2, 4))  # the last two of each group of 4 rows
    assert np.array_equal(mask, expected), "groups are M consecutive rows (inputs) of one column, not columns"

