"""GPTConfig: the hyperparameters that define the model's shapes and numerics.

The fields and their defaults follow nanoGPT's GPTConfig (karpathy/nanoGPT model.py) with GPT-2's
numerics made explicit: the LayerNorm epsilon (1e-5, as torch.nn.LayerNorm and Hugging Face's
GPT2Config.layer_norm_epsilon) and the activation (GPT-2's tanh-approximated GELU, or ReLU).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

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
    # Structured pruning (minigpt.compress.prune) makes layers narrower than these defaults:
    # per-layer head counts (each head keeps hs = n_embd // n_head channels) and MLP widths.
    # None (the default): every layer has n_head heads and an MLP of 4 * n_embd, as GPT-2.
    head_counts: tuple[int, ...] | None = field(default=None, metadata={"cli": False})
    mlp_widths: tuple[int, ...] | None = field(default=None, metadata={"cli": False})

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
        for name in ("head_counts", "mlp_widths"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != self.n_layer:
                raise InputError(
                    f"{name} must be a list of {self.n_layer} positive integers (one per layer), got {value!r}"
                )
            if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0 for v in value):
                raise InputError(f"{name} must hold positive integers, got {list(value)!r}")
            object.__setattr__(self, name, tuple(int(v) for v in value))  # hashable, JSON-safe ints

    @property
    def head_size(self) -> int:
        """hs: channels per attention head."""
        return self.n_embd // self.n_head

    def layer_heads(self, i: int) -> int:
        """NH_i: the attention heads of layer i (n_head unless structured pruning removed some)."""
        return self.n_head if self.head_counts is None else self.head_counts[i]

    def layer_mlp_width(self, i: int) -> int:
        """The MLP's hidden width in layer i (4 * n_embd unless structured pruning removed neurons)."""
        return 4 * self.n_embd if self.mlp_widths is None else self.mlp_widths[i]

    @property
    def uniform(self) -> bool:
        """Every layer has n_head heads and a 4 * n_embd MLP (the GPT-2 shapes; HF and llm.c export)."""
        return all(self.layer_heads(i) == self.n_head and self.layer_mlp_width(i) == 4 * self.n_embd
                   for i in range(self.n_layer))

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict. The per-layer fields appear only when set, so a dense
        model's config (and every checkpoint written before they existed) reads exactly as before."""
        d = dataclasses.asdict(self)
        for name in ("head_counts", "mlp_widths"):
            if d[name] is None:
                del d[name]
            else:
                d[name] = list(d[name])
        return d

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
