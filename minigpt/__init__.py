"""minigpt: a GPT-2-style transformer in NumPy with every backward pass written by hand."""

__version__ = "0.1.0"

from .config import GPTConfig
from .errors import InputError
from .model import gpt_backward, gpt_forward, init_params, param_shapes

__all__ = ["GPTConfig", "InputError", "__version__", "gpt_backward", "gpt_forward", "init_params", "param_shapes"]
