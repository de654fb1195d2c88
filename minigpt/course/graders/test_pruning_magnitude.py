"""Assignment pruning, part magnitude: the count rule k = round(s * n) (half to even, as
torch.nn.utils.prune) and the mask that prunes the k lowest scores (ties: the lower flat index
goes first), per tensor and, through the same function, globally across tensors."""

import numpy as np
import pytest

from minigpt.compress.prune import global_masks, mask_from_scores, n_to_prune
from minigpt.errors import InputError


@pytest.mark.parametrize(("sparsity", "n", "k"), [
    (0.0, 10, 0), (0.5, 10, 5), (0.25, 10, 2), (0.35, 10, 4), (0.45, 10, 4), (0.55, 10, 6),
    (0.5, 7, 4), (0.9, 10, 9), (0.99, 100, 99), (0.3, 1000, 300),
])
def test_count_rule_rounds_half_to_even(sparsity, n, k):
    # 0.25 * 10 = 2.5 -> 2 and 0.35 * 10 = 3.5 -> 4 (half to even); 0.5 * 7 = 3.5 -> 4
    got = n_to_prune(sparsity, n)
    assert got == k, f"n_to_prune(sparsity={sparsity}, n={n}): yours {got!r}, expected {k} (round half to even)"
    assert isinstance(got, int), f"n_to_prune must return an int, got {type(got).__name__}"


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_count_rule_refuses_sparsity_outside_0_1(sparsity):
    with pytest.raises(InputError):
        n_to_prune(sparsity, 10)


SCORES = np.array([[0.5, 0.1, 0.9, 0.3],
                   [0.3, 0.7, 0.0, 0.8],
                   [0.2, 0.6, 0.4, 0.3]])  # three 0.3s: a tie broken by flat index


@pytest.mark.parametrize(("sparsity", "pruned"), [
    (0.25, [(1, 2), (0, 1), (2, 0)]),                       # 3 of 12: 0.0, 0.1, 0.2
    (0.5, [(1, 2), (0, 1), (2, 0), (0, 3), (1, 0), (2, 3)]),  # 6 of 12: then the three 0.3s
    (0.45, [(1, 2), (0, 1), (2, 0), (0, 3), (1, 0)]),       # 5.4 -> 5: the first two 0.3s by flat index
])
def test_mask_prunes_the_lowest_scores_ties_by_flat_index(sparsity, pruned):
    mask = mask_from_scores(SCORES, sparsity)
    expected = np.ones(SCORES.shape, bool)
    for i in pruned:
        expected[i] = False
    got = np.asarray(mask)
    assert got.shape == SCORES.shape, f"mask shape {got.shape}, expected {SCORES.shape}"
    assert got.dtype == bool, f"the mask must be boolean (True = kept), got {got.dtype}"
    assert np.array_equal(got, expected), (
        f"mask at sparsity {sparsity}: pruned {sorted(map(tuple, np.argwhere(~got).tolist()))}, "
        f"expected {sorted(pruned)}")


def test_no_kept_score_is_below_a_pruned_one_and_masks_nest():
    scores = np.abs(np.sin(np.arange(7 * 9) * 1.3)).reshape(7, 9)
    previous = np.ones(scores.shape, bool)
    for s in (0.1, 0.3, 0.5, 0.7, 0.9):
        mask = np.asarray(mask_from_scores(scores, s))
        assert (~mask).sum() == round(s * scores.size), f"sparsity {s}: pruned {(~mask).sum()}, expected {round(s * 63)}"
        assert scores[mask].min() >= scores[~mask].max(), f"sparsity {s}: a kept score is below a pruned one"
        assert not np.any(mask & ~previous), f"sparsity {s}: a weight pruned at a lower sparsity came back"
        previous = mask


def test_global_ranking_equals_pruning_the_concatenation():
    a = np.abs(np.cos(np.arange(12) * 0.7)).reshape(3, 4)
    b = np.abs(np.cos(np.arange(10) * 1.9 + 1)).reshape(5, 2) * 0.5  # smaller scores: pruned more
    masks = global_masks({"a": a, "b": b}, 0.5)
    flat = np.asarray(mask_from_scores(np.concatenate([a.ravel(), b.ravel()]), 0.5))
    got = np.concatenate([np.ravel(masks["a"]), np.ravel(masks["b"])])
    assert np.array_equal(got, flat), "global pruning must equal pruning the concatenation of the scores"
    assert (~got).sum() == 11, f"global: pruned {(~got).sum()} of 22, expected 11"
