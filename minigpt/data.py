"""Text data: the embedded default corpus, text files, the train/val split and random batches.

- The default corpus is the Python language reference (the pydoc topics text that ships with
  every CPython as `pydoc_data.topics`, about 465 KB), so `minigpt train` works offline anywhere.
- `load_text(path)` reads any UTF-8 text file.
- `split(ids)`: the first 90% of the tokens train, the last 10% validate (as nanoGPT).
- `get_batch`: B random contiguous windows of T tokens. **The targets are the inputs shifted by
  one, here:** x = ids[i : i + T], y = ids[i + 1 : i + 1 + T], so y[b, t] is the token after x[b, t].
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .errors import InputError

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TRAIN_FRACTION = 0.9


def default_corpus() -> str:
    """The Python language reference topics, joined in sorted order (deterministic)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some Linux distributions package pydoc_data separately
        raise InputError(
            "this Python has no pydoc_data module for the default corpus; pass --data PATH "
            "(e.g. after `minigpt data shakespeare`)"
        ) from None
    return "\n\n".join(topics[key] for key in sorted(topics))


def load_text(path) -> str:
    """Read a UTF-8 text file; a missing, unreadable, non-UTF-8 or empty file is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"data file {path} is not UTF-8 text (byte {e.start} cannot be decoded)") from None
    except OSError as e:
        raise InputError(f"cannot read data file {path}: {e.strerror}") from None
    if not text:
        raise InputError(f"data file {path} is empty")
    return text


def split(ids: np.ndarray, block_size: int):
    """First 90% train, last 10% val. Both must hold at least block_size + 1 tokens, since a
    window of T inputs needs one more token for its last target."""
    n = len(ids)
    cut = int(n * TRAIN_FRACTION)
    train, val = ids[:cut], ids[cut:]
    need = block_size + 1
    if len(val) < need:
        raise InputError(
            f"the text is too short: {n} tokens give a validation split (last 10%) of {len(val)}, "
            f"fewer than block_size + 1 = {need}; use more text (at least {int(np.ceil(need / (1 - TRAIN_FRACTION)))} "
            "characters) or a smaller --block-size"
        )
    return train, val


def get_batch(ids: np.ndarray, batch_size: int, block_size: int, rng: np.random.Generator):
    """B random windows: x (B, T) and targets y (B, T) = x shifted left by one token.

    Window starts are drawn uniformly from [0, len(ids) - T - 1] (as nanoGPT's get_batch, which
    never uses the very last token as an input)."""
    starts = rng.integers(0, len(ids) - block_size, size=batch_size)
    offsets = np.arange(block_size)
    x = ids[starts[:, None] + offsets]  # (B, T)
    y = ids[starts[:, None] + offsets + 1]  # (B, T), the next tokens
    return x, y


def iter_windows(ids: np.ndarray, block_size: int, batch_size: int):
    """Consecutive, non-overlapping windows covering every target of ids exactly once, in
    batches: yields (x, y) of shape (b, T). The last window may be shorter, so it has its own
    batch. Used for the deterministic full-split evaluation."""
    n_targets = len(ids) - 1
    starts = list(range(0, n_targets, block_size))
    full = [s for s in starts if s + block_size <= n_targets]
    offsets = np.arange(block_size)
    for i in range(0, len(full), batch_size):
        s = np.array(full[i : i + batch_size])
        yield ids[s[:, None] + offsets], ids[s[:, None] + offsets + 1]
    if len(full) < len(starts):
        s = starts[-1]
        yield ids[None, s:n_targets], ids[None, s + 1 : n_targets + 1]


def cache_dir() -> Path:
    """Where downloaded data is kept: $MINIGPT_CACHE, else $XDG_CACHE_HOME/minigpt, else ~/.cache/minigpt."""
    if os.environ.get("MINIGPT_CACHE"):
        return Path(os.environ["MINIGPT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minigpt"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_shakespeare(dest_dir=None, url: str = SHAKESPEARE_URL, timeout: float = 30.0) -> Path:
    """Download tiny Shakespeare (1,115,394 bytes) into the cache, verify its sha256 and return
    its path. A cached copy with the right checksum is reused without any network access."""
    dest_dir = Path(dest_dir) if dest_dir else cache_dir()
    dest = dest_dir / "tinyshakespeare.txt"
    if dest.is_file() and sha256_file(dest) == SHAKESPEARE_SHA256:
        return dest
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the cache directory {dest_dir}: {e.strerror}") from None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise InputError(
            f"cannot download {url} ({reason}); with no network, copy tinyshakespeare.txt to {dest} "
            "(or pass --data PATH to train)"
        ) from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        raise InputError(f"downloaded file has sha256 {digest}, expected {SHAKESPEARE_SHA256}; not saved")
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, dest)  # atomic: a half-written file never has the final name
    return dest
