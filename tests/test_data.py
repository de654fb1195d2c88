"""The character tokenizer and the data pipeline: corpus, text files, split, batches, evaluation
windows and the tiny Shakespeare download (tested offline: file:// URLs and a refused port)."""

import hashlib
import math
import os
import re
import shutil
import urllib.request

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from minigpt import InputError
from minigpt.data import (
    SHAKESPEARE_SHA256,
    TRAIN_FRACTION,
    cache_dir,
    default_corpus,
    download_shakespeare,
    get_batch,
    iter_windows,
    load_text,
    split,
)
from minigpt.tokenizer import CharTokenizer

REFUSED_URL = "http://127.0.0.1:9/nothing"  # the discard port: nothing listens, connecting is refused

# ------------------------------------------------------------------------------------------------
# CharTokenizer


@given(st.text(min_size=1))
def test_round_trip_any_text(text):
    """decode(encode(s)) == s for any text with the tokenizer built from it; the vocabulary is the
    sorted distinct characters; ids are int64 in [0, vocab_size)."""
    tok = CharTokenizer.from_text(text)
    assert tok.chars == sorted(set(text))
    assert len(set(tok.chars)) == tok.vocab_size
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert ids.min() >= 0 and ids.max() < tok.vocab_size
    assert tok.decode(ids) == text
    assert tok.decode(ids.tolist()) == text


@given(st.text(min_size=1), st.data())
def test_round_trip_substrings(text, data):
    """Any text made of vocabulary characters (here: a sample of the training text's characters,
    in any order) round-trips, including the empty string."""
    tok = CharTokenizer.from_text(text)
    s = "".join(data.draw(st.lists(st.sampled_from(tok.chars), max_size=30)))
    assert tok.decode(tok.encode(s)) == s


def test_fixed_vocabulary():
    """A fixed vocabulary maps characters to their list positions and back."""
    tok = CharTokenizer.from_text("hello, world\n")
    assert tok.chars == ["\n", " ", ",", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.vocab_size == 10
    np.testing.assert_array_equal(tok.encode("hello"), [5, 4, 6, 6, 7])
    assert tok.decode([9, 7, 8, 6, 3, 0]) == "world\n"
    assert tok.decode(np.array([[5, 4], [6, 6]])) == "hell"  # any shape, read in C order
    assert tok.decode([]) == "" and tok.encode("").shape == (0,)


def test_explicit_vocabulary_keeps_its_order():
    """CharTokenizer(chars) uses the given id order (as a checkpoint stores it), not a sorted one."""
    tok = CharTokenizer(["z", "a", "é"])
    np.testing.assert_array_equal(tok.encode("aéz"), [1, 2, 0])
    assert tok.decode([2, 0]) == "éz"


def test_encode_unknown_characters_names_them():
    """Unknown characters raise an InputError that counts and names each of them once."""
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(InputError) as exc:
        tok.encode("abxzyx!")
    msg = str(exc.value)
    assert "4 character(s) not in the model's vocabulary" in msg
    for c in "xyz!":
        assert repr(c) in msg
    assert "'a'" not in msg


def test_encode_many_unknown_characters_abbreviates():
    """More than ten unknown characters: ten are shown, then '...'."""
    tok = CharTokenizer.from_text("a")
    with pytest.raises(InputError, match=r"^12 character\(s\).*\.\.\.; use only"):
        tok.encode("bcdefghijklm")


@pytest.mark.parametrize("ids", [[-1], [3], [0, 1, 2, 3], [[0], [7]]])
def test_decode_out_of_range(ids):
    """Ids outside [0, vocab_size) raise an InputError giving the valid range."""
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(InputError, match=re.escape("[0, 3)")):
        tok.decode(ids)


def test_empty_vocabulary():
    """An empty vocabulary (from an empty text or an empty list) is an InputError."""
    with pytest.raises(InputError, match="empty"):
        CharTokenizer.from_text("")
    with pytest.raises(InputError, match="empty"):
        CharTokenizer([])


@pytest.mark.parametrize("chars", [["a", "a"], ["ab"], ["a", ""]])
def test_invalid_vocabulary(chars):
    """Duplicates, multi-character and empty entries are rejected."""
    with pytest.raises(InputError, match="distinct single characters"):
        CharTokenizer(chars)


# ------------------------------------------------------------------------------------------------
# default corpus and text files


def test_default_corpus():
    """The embedded corpus is a deterministic str of about 465 KB."""
    a, b = default_corpus(), default_corpus()
    assert isinstance(a, str)
    assert len(a) > 400_000
    assert a == b
    assert len(CharTokenizer.from_text(a).chars) > 60  # a real text, not a handful of characters


def test_load_text_missing(tmp_path):
    """A missing file (or a directory) is 'not found' with its path."""
    for path in (tmp_path / "missing.txt", tmp_path):
        with pytest.raises(InputError, match="not found") as exc:
            load_text(path)
        assert str(path) in str(exc.value)


def test_load_text_empty(tmp_path):
    """An empty file is 'empty' with its path."""
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="is empty") as exc:
        load_text(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize(
    "content, position", [(b"\xff\xfe\x00bad", 0), (b"good text \xc3(", 10), ("café".encode("latin-1"), 3)]
)
def test_load_text_not_utf8(tmp_path, content, position):
    """Non-UTF-8 bytes (UTF-16 BOM, a broken sequence, latin-1) raise 'not UTF-8' with the
    offset of the first bad byte."""
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=f"not UTF-8 text \\(byte {position} cannot be decoded\\)"):
        load_text(path)


def test_load_text_unicode_exact(tmp_path):
    """A UTF-8 file with non-ASCII characters loads exactly, without newline translation."""
    text = "Ærø — naïve café\r\n日本語 😀\nΩ\r"
    path = tmp_path / "u.txt"
    path.write_bytes(text.encode("utf-8"))
    assert load_text(path) == text
    assert load_text(str(path)) == text


# ------------------------------------------------------------------------------------------------
# split


@given(st.integers(2, 3000), st.integers(1, 40))
@example(n=20, block_size=1)
@example(n=30, block_size=2)
def test_split_is_first_90_last_10(n, block_size):
    """split returns ids[:int(n*0.9)] and ids[int(n*0.9):] when the validation part holds at
    least block_size + 1 tokens, and raises an InputError naming block_size otherwise."""
    ids = np.arange(n) * 3 + 1
    cut = int(n * 0.9)
    if n - cut >= block_size + 1:
        train, val = split(ids, block_size)
        np.testing.assert_array_equal(train, ids[:cut])
        np.testing.assert_array_equal(val, ids[cut:])
    else:
        with pytest.raises(InputError, match="block_size"):
            split(ids, block_size)


def test_split_exact_values():
    """Hard-coded cuts: 1000 -> 900/100, 11 -> 9/2, 1_115_394 (tiny Shakespeare) -> 1_003_854."""
    assert TRAIN_FRACTION == 0.9
    for n, cut in [(1000, 900), (11, 9), (1_115_394, 1_003_854)]:
        train, val = split(np.zeros(n, dtype=np.int64), 1)
        assert (len(train), len(val)) == (cut, n - cut)


def test_split_too_short_message_advice_works():
    """The 'too short' message says block_size and the smallest text length that works; a text
    of that length does split."""
    for block_size in (1, 7, 64, 256):
        with pytest.raises(InputError, match="block_size") as exc:
            split(np.zeros(block_size * 5, dtype=np.int64), block_size)
        need = int(re.search(r"at least (\d+) characters", str(exc.value)).group(1))
        _, val = split(np.zeros(need, dtype=np.int64), block_size)
        assert len(val) >= block_size + 1


# ------------------------------------------------------------------------------------------------
# get_batch


@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 12), st.integers(1, 40))
def test_get_batch_targets_are_inputs_shifted(seed, batch_size, block_size, extra):
    """x and y are (B, T) windows of ids with y[b, t] == ids[start + t + 1] where
    x[b, t] == ids[start + t], and start in [0, len(ids) - T - 1]."""
    n = block_size + extra
    ids = np.random.default_rng(seed ^ 0xABCDEF).permutation(n).astype(np.int64) * 5 + 2
    position = {int(v): i for i, v in enumerate(ids)}
    x, y = get_batch(ids, batch_size, block_size, np.random.default_rng(seed))
    assert x.shape == y.shape == (batch_size, block_size)
    assert x.dtype == y.dtype == ids.dtype
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    for b in range(batch_size):
        start = position[int(x[b, 0])]
        assert 0 <= start <= n - block_size - 1
        np.testing.assert_array_equal(x[b], ids[start : start + block_size])
        np.testing.assert_array_equal(y[b], ids[start + 1 : start + block_size + 1])


def test_get_batch_same_seed_same_batch():
    """The same rng seed gives the same batch; another seed a different one."""
    ids = np.arange(10_000)
    x1, y1 = get_batch(ids, 8, 16, np.random.default_rng(42))
    x2, y2 = get_batch(ids, 8, 16, np.random.default_rng(42))
    x3, _ = get_batch(ids, 8, 16, np.random.default_rng(43))
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


def test_get_batch_uses_every_start_including_the_last():
    """Window starts cover [0, n - T - 1] exactly: the last token is reachable as a target, and
    no window runs past the end."""
    block_size, n = 4, 9  # starts 0..4
    ids = np.arange(n)
    x, y = get_batch(ids, 2000, block_size, np.random.default_rng(0))
    assert set(x[:, 0].tolist()) == set(range(n - block_size))
    assert y.max() == n - 1


def test_get_batch_minimal_text():
    """With exactly block_size + 1 tokens the only window is the whole text."""
    ids = np.array([3, 1, 4, 1, 5])
    x, y = get_batch(ids, 3, 4, np.random.default_rng(1))
    np.testing.assert_array_equal(x, np.tile(ids[:4], (3, 1)))
    np.testing.assert_array_equal(y, np.tile(ids[1:], (3, 1)))


# ------------------------------------------------------------------------------------------------
# iter_windows


@given(st.integers(2, 300), st.integers(1, 12), st.integers(1, 5))
@example(n=1 + 8 * 5, block_size=8, batch_size=2)  # targets a multiple of block_size
@example(n=1 + 8 * 5 + 3, block_size=8, batch_size=2)  # and not
@example(n=2, block_size=12, batch_size=1)  # one target, shorter than a block
@example(n=13, block_size=12, batch_size=3)  # exactly one full block
def test_iter_windows_cover_every_target_once_in_order(n, block_size, batch_size):
    """Concatenating the windows gives x == ids[:-1] and y == ids[1:]; batches have at most
    batch_size rows of block_size tokens, and only a final single-row batch may be shorter."""
    ids = np.random.default_rng(n).integers(0, 50, n)
    batches = list(iter_windows(ids, block_size, batch_size))
    xs, ys = [], []
    for i, (x, y) in enumerate(batches):
        assert x.shape == y.shape and x.ndim == 2
        assert 1 <= x.shape[0] <= batch_size
        if x.shape[1] != block_size:
            assert i == len(batches) - 1 and x.shape[0] == 1 and 1 <= x.shape[1] < block_size
        np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
        xs.extend(x.ravel().tolist())
        ys.extend(y.ravel().tolist())
    assert xs == ids[:-1].tolist()
    assert ys == ids[1:].tolist()
    full = (n - 1) // block_size
    expected_batches = math.ceil(full / batch_size) + ((n - 1) % block_size != 0)
    assert len(batches) == expected_batches


def test_iter_windows_exact():
    """Hard-coded: 11 tokens, T=4, batch 2 -> one batch of two full windows, then [8, 9] -> [9, 10]."""
    ids = np.arange(11)
    batches = list(iter_windows(ids, 4, 2))
    assert len(batches) == 2
    np.testing.assert_array_equal(batches[0][0], [[0, 1, 2, 3], [4, 5, 6, 7]])
    np.testing.assert_array_equal(batches[0][1], [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(batches[1][0], [[8, 9]])
    np.testing.assert_array_equal(batches[1][1], [[9, 10]])


# ------------------------------------------------------------------------------------------------
# download_shakespeare (offline)


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything calls urlopen."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_cached_file_used_without_network(tmp_path, shakespeare_path, no_network):
    """A cached file with the right checksum is returned as is, with no network access."""
    dest = tmp_path / "tinyshakespeare.txt"
    shutil.copyfile(shakespeare_path, dest)
    before = os.stat(dest).st_mtime_ns
    assert download_shakespeare(dest_dir=tmp_path, url=REFUSED_URL, timeout=1.0) == dest
    assert os.stat(dest).st_mtime_ns == before
    assert sorted(os.listdir(tmp_path)) == ["tinyshakespeare.txt"]


def test_unreachable_url_says_where_to_put_the_file(tmp_path):
    """With no cache and no network the InputError names the URL, the exact path to copy the
    file to, and --data; nothing is written."""
    dest_dir = tmp_path / "cache" / "minigpt"
    with pytest.raises(InputError) as exc:
        download_shakespeare(dest_dir=dest_dir, url=REFUSED_URL, timeout=2.0)
    msg = str(exc.value)
    assert REFUSED_URL in msg
    assert f"copy tinyshakespeare.txt to {dest_dir / 'tinyshakespeare.txt'}" in msg
    assert "--data" in msg
    assert not (dest_dir / "tinyshakespeare.txt").exists()
    assert os.listdir(dest_dir) == []


def test_corrupt_cache_is_not_trusted(tmp_path):
    """A cached file with the wrong checksum is not returned: the download is retried (and here
    fails)."""
    (tmp_path / "tinyshakespeare.txt").write_text("First Citizen:\nshort\n")
    with pytest.raises(InputError, match="cannot download"):
        download_shakespeare(dest_dir=tmp_path, url=REFUSED_URL, timeout=2.0)


def test_wrong_checksum_download_rejected(tmp_path):
    """Downloaded bytes with the wrong sha256 raise an InputError giving both digests, and
    nothing (not even a temporary file) is saved."""
    payload = b"not shakespeare at all\n"
    source = tmp_path / "served.txt"
    source.write_bytes(payload)
    dest_dir = tmp_path / "cache"
    with pytest.raises(InputError, match="not saved") as exc:
        download_shakespeare(dest_dir=dest_dir, url=source.as_uri(), timeout=2.0)
    msg = str(exc.value)
    assert hashlib.sha256(payload).hexdigest() in msg and SHAKESPEARE_SHA256 in msg
    assert os.listdir(dest_dir) == []


def test_good_download_saved(tmp_path, shakespeare_path):
    """A download with the right checksum (served from a file:// URL) is saved under
    dest_dir/tinyshakespeare.txt, byte for byte, with no temporary file left."""
    dest_dir = tmp_path / "new" / "cache"
    dest = download_shakespeare(dest_dir=dest_dir, url=shakespeare_path.as_uri(), timeout=5.0)
    assert dest == dest_dir / "tinyshakespeare.txt"
    assert dest.read_bytes() == shakespeare_path.read_bytes()
    assert os.listdir(dest_dir) == ["tinyshakespeare.txt"]


def test_cache_dir_environment(monkeypatch, tmp_path):
    """cache_dir: $MINIGPT_CACHE, else $XDG_CACHE_HOME/minigpt, else ~/.cache/minigpt."""
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "m"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "m"
    monkeypatch.delenv("MINIGPT_CACHE")
    assert cache_dir() == tmp_path / "x" / "minigpt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "minigpt"
