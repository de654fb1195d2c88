"""GPTConfig: the hyperparameters that define the model's shapes and numerics.

The fields and their defaults follow nanoGPT's GPTConfig (karpathy/nanoGPT model.py) with GPT-2's
numerics made explicit: the LayerNorm epsilon (1e-5, as torch.nn.LayerNorm and Hugging Face's
GPT2Config.layer_norm_epsilon) and the activation (GPT-2's tanh-approximated GELU, or ReLU).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

from .errors import InputError

ACTIVATIONS = ("gelu", "relu")


def is_number(x) -> bool:
    """A real number, and not a bool (True would silently act as 1)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 65  # V: 65 is tiny Shakespeare's character set
    block_size: int = 64  # maxT: the longest context; wpe has this many rows
    n_layer: int = 4  # L: transformer blocks
    n_head: int = 4  # NH: attention heads; head size hs = n_embd // n_head
    n_embd: int = 128  # C: channels of the residual stream
    dropout: float = 0.0  # probability of zeroing, in [0, 1); 0 turns dropout off
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2. False: a bit better and faster (nanoGPT)
    activation: str = "gelu"  # "gelu" (tanh approximation, as GPT-2) or "relu"
    layer_norm_epsilon: float = 1e-5  # as torch.nn.LayerNorm and GPT-2

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))  # numpy integers become plain ints (JSON-safe)
        if self.n_embd % self.n_head != 0:
            raise InputError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"try n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}"
            )
        if not is_number(self.dropout) or not (0.0 <= self.dropout < 1.0):
            raise InputError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.bias, bool):
            raise InputError(f"bias must be true or false, got {self.bias!r}")
        if self.activation not in ACTIVATIONS:
            raise InputError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        eps = self.layer_norm_epsilon
        if not is_number(eps) or not (eps > 0 and math.isfinite(eps)):
            raise InputError(f"layer_norm_epsilon must be a positive number, got {eps!r}")

    @property
    def head_size(self) -> int:
        """hs: channels per attention head."""
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        """Build a config from a dict (e.g. a checkpoint's metadata); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown GPTConfig fields: {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> GPTConfig:
        return dataclasses.replace(self, **changes)
