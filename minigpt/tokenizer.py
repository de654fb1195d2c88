"""Character-level tokenizer: one token per Unicode character, as nanoGPT's shakespeare_char.

The vocabulary is the sorted set of characters of the training text, so token ids are stable for
a given text. It is stored with every checkpoint (as a JSON list in the header metadata), so a
model always decodes with the vocabulary it was trained on. decode(encode(s)) == s for any s made
of vocabulary characters.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError


class CharTokenizer:
    def __init__(self, chars):
        chars = list(chars)
        if not chars:
            raise InputError("the vocabulary is empty: the training text has no characters")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise InputError("a character vocabulary must list distinct single characters")
        self.chars = chars  # id -> character
        self.stoi = {c: i for i, c in enumerate(chars)}  # character -> id

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The vocabulary of a text: its distinct characters, sorted by code point."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """str -> int64 array of token ids. Characters outside the vocabulary are an error that
        names them."""
        try:
            return np.array([self.stoi[c] for c in text], dtype=np.int64)
        except KeyError:
            missing = sorted({c for c in text if c not in self.stoi})
            shown = ", ".join(repr(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise InputError(
                f"{len(missing)} character(s) not in the model's vocabulary: {shown}; "
                "use only characters that occur in the training text"
            ) from None

    def decode(self, ids) -> str:
        """Token ids -> str."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise InputError(f"token ids must be in [0, {self.vocab_size}) to decode")
        return "".join(self.chars[i] for i in ids.tolist())
