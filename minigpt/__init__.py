"""minigpt: a GPT-2-style transformer in NumPy with every backward pass written by hand."""

__version__ = "0.1.0"

# first, before NumPy loads: under mpiexec, one rank's share of the cores (see minigpt/threads.py)
from .threads import limit_threads_for_mpi

limit_threads_for_mpi()

from .config import GPTConfig
from .errors import InputError
from .model import gpt_backward, gpt_forward, init_params, param_shapes

__all__ = ["GPTConfig", "InputError", "__version__", "gpt_backward", "gpt_forward", "init_params", "param_shapes"]
