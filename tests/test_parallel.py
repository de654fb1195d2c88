"""Data parallelism in one process: shard gradients, combined by the per-token rule, equal the
full-batch gradient."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt import GPTConfig, InputError, gpt_backward, gpt_forward, init_params
from minigpt.parallel import shard_gradients

CFG = GPTConfig(vocab_size=9, block_size=6, n_layer=2, n_head=2, n_embd=8)


def random_params(seed):
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0, 0.3, v.shape) for k, v in init_params(CFG, seed, np.float64).items()}


@settings(max_examples=20)
@given(seed=st.integers(0, 2**32 - 1), shard_size=st.integers(1, 3), n_shards=st.integers(1, 4),
       ignore_fraction=st.sampled_from([0.0, 0.3, 0.8]))  # fmt: skip
def test_shard_gradients_equal_full_batch(seed, shard_size, n_shards, ignore_fraction):
    """For any shard count that divides the batch, and shards holding different numbers of
    ignored targets, the combined shard gradients equal the full-batch gradients (float64, 1e-12
    relative to each tensor's largest entry) and the combined loss equals the full-batch loss."""
    params = random_params(seed)
    rng = np.random.default_rng(seed)
    B, T = shard_size * n_shards, CFG.block_size
    idx = rng.integers(0, CFG.vocab_size, (B, T))
    targets = rng.integers(0, CFG.vocab_size, (B, T))
    targets[rng.random((B, T)) < ignore_fraction] = -1
    _, full_loss, cache = gpt_forward(CFG, params, idx, targets)
    full = gpt_backward(cache)
    loss, grads = shard_gradients(CFG, params, idx, targets, n_shards)
    assert abs(loss - full_loss) <= 1e-12 * max(1.0, abs(full_loss))
    for name, g in full.items():
        assert np.abs(grads[name] - g).max() <= 1e-12 * max(np.abs(g).max(), 1e-300), name


def test_plain_average_is_wrong_when_shards_hold_different_counts():
    """Why the per-token rule matters: with unequal numbers of ignored targets, the plain average
    of shard gradients (what DDP does with equal shards) differs from the full-batch gradient."""
    params = random_params(0)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, CFG.vocab_size, (2, 6))
    targets = rng.integers(0, CFG.vocab_size, (2, 6))
    targets[0, 1:] = -1  # shard 0 keeps 1 target, shard 1 keeps 6
    _, _, cache = gpt_forward(CFG, params, idx, targets)
    full = gpt_backward(cache)["wte.weight"]
    plain = sum(gpt_backward(gpt_forward(CFG, params, idx[k : k + 1], targets[k : k + 1])[2])["wte.weight"]
                for k in range(2)) / 2  # fmt: skip
    assert np.abs(plain - full).max() > 1e-3 * np.abs(full).max()
    _, weighted = shard_gradients(CFG, params, idx, targets, 2)
    np.testing.assert_allclose(weighted["wte.weight"], full, rtol=0, atol=1e-12 * np.abs(full).max())


@pytest.mark.parametrize("n_shards", [0, 3, -1, True])
def test_shard_count_must_divide_the_batch(n_shards):
    params = random_params(0)
    idx = np.zeros((4, 6), dtype=np.int64)
    with pytest.raises(InputError, match="positive divisor of the batch size 4"):
        shard_gradients(CFG, params, idx, idx, n_shards)
