"""k-means weight sharing (minigpt.compress.kmeans): at most 2^b distinct values, a non-increasing
objective, linear initialization, nearest-centroid assignment, the centroid gradient as a
bincount (checked against finite differences of the model's loss), the codec, and Huffman coding."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigpt import GPTConfig, InputError, gpt_forward, init_params
from minigpt.compress import kmeans as KM
from minigpt.compress import storage

SEEDS = st.integers(0, 2**32 - 1)


def draw(seed, n=300):
    rng = np.random.default_rng(seed)
    return rng.standard_t(3, size=n) * 10.0 ** rng.uniform(-2, 1)


@given(SEEDS, st.integers(1, 6))
def test_at_most_2_to_the_b_values_and_a_non_increasing_objective(seed, bits):
    w = draw(seed)
    idx, c, history = KM.kmeans_1d(w, bits)
    shared = c[idx]
    assert len(np.unique(shared)) <= 2**bits and idx.max() < 2**bits
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(history))
    assert np.all(np.diff(c) >= 0)  # centroids stay sorted
    # each value sits at its nearest centroid
    d = np.abs(w[:, None] - c[None, :])
    assert np.allclose(d[np.arange(len(w)), idx], d.min(axis=1))


@given(SEEDS)
def test_linear_initialization_spans_the_range_evenly(seed):
    w = draw(seed)
    c = KM.linear_init(w, 16)
    assert c[0] == w.min() and c[-1] == w.max()
    assert np.allclose(np.diff(c), (w.max() - w.min()) / 15)


def test_sharing_is_the_identity_with_enough_clusters_and_ties_go_low():
    w = np.array([0.5, -1.0, 2.0, 0.5])
    idx, c, _ = KM.kmeans_1d(w, 2)
    assert np.array_equal(c[idx], w)
    assert KM.assign(np.array([0.5]), np.array([0.0, 1.0])).tolist() == [0]


@given(SEEDS, st.integers(1, 5))
def test_centroid_gradient_is_a_bincount(seed, bits):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, 2**bits, 50)
    dw = rng.normal(size=50)
    g = KM.centroid_grad(idx, dw, 2**bits)
    expected = [dw[idx == k].sum() for k in range(2**bits)]
    np.testing.assert_allclose(g, expected, atol=1e-12)


def test_centroid_gradient_matches_finite_differences_of_the_model_loss():
    config = GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=8, bias=False)
    params = init_params(config, seed=0, dtype=np.float64)
    name = "h.0.mlp.c_fc.weight"
    idx, c, _ = KM.kmeans_1d(params[name], 2)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 7, (2, 4)), rng.integers(0, 7, (2, 4))

    def loss(cb):
        return gpt_forward(config, {**params, name: cb[idx]}, x, y)[1]

    from minigpt import gpt_backward

    _, _, cache = gpt_forward(config, {**params, name: c[idx]}, x, y)
    analytic = KM.centroid_grad(idx, gpt_backward(cache)[name], 4)
    eps = 1e-5
    numeric = np.array([(loss(c + eps * np.eye(4)[k]) - loss(c - eps * np.eye(4)[k])) / (2 * eps) for k in range(4)])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-10)


def test_codec_round_trips_and_packs_the_indices():
    w = draw(1, 256).astype(np.float32).reshape(16, 16)
    idx, codebook, shared = KM.share_weight(w, 4)
    enc = storage.encode(shared, "kmeans", bits=4, idx=idx, codebook=codebook)
    assert np.array_equal(storage.decode(enc), shared)
    assert enc.parts["idx"].nbytes == 128 and enc.parts["codebook"].nbytes == 16 * 4


@given(st.lists(st.integers(0, 9), min_size=1, max_size=200))
def test_huffman_round_trips_with_kraft_equality_and_near_entropy_length(symbols):
    data, lengths, nbits = KM.huffman_encode(symbols)
    assert KM.huffman_decode(data, lengths, nbits, len(symbols)).tolist() == symbols
    if len(lengths) >= 2:
        assert sum(2.0 ** -n for n in lengths.values()) == 1.0  # a complete prefix code
        _, counts = np.unique(symbols, return_counts=True)
        p = counts / counts.sum()
        entropy = -(p * np.log2(p)).sum()
        assert entropy - 1e-9 <= nbits / len(symbols) < entropy + 1


def test_finetuning_the_centroids_keeps_the_sharing_and_lowers_the_loss():
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16, bias=False)
    params = init_params(config, seed=0)
    ids = np.tile(np.arange(11), 40)  # an easy, learnable sequence
    shared, new = {}, dict(params)
    for name in ("h.0.mlp.c_fc.weight", "h.0.attn.c_attn.weight"):
        idx, c, w = KM.share_weight(params[name], 2)
        shared[name], new[name] = (idx, c), w
    out, books, losses = KM.finetune_centroids(config, new, shared, ids, iters=30, lr=1e-2, batch_size=4)
    for name, (idx, c) in books.items():
        assert np.array_equal(out[name], c[idx]) and len(np.unique(out[name])) <= 4
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_bad_bits():
    with pytest.raises(InputError, match="bits must be an integer in 1..8"):
        KM.kmeans_1d(np.ones(4), 9)
    with pytest.raises(InputError, match="NaN or inf"):
        KM.kmeans_1d(np.array([1.0, np.nan]), 2)
