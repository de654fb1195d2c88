"""Which implementation of the hot layers runs: the NumPy reference or its numba twins.

    numpy  the layers in minigpt/layers (and minigpt.optim's AdamW update): the readable
           specification, one NumPy expression per formula.
    numba  the same functions compiled as loops in minigpt/kernels, each tested equal to its
           NumPy reference. The default: several times faster on the element-wise and
           attention work. Matrix products run in NumPy's BLAS on both.

Choose with the environment variable MINIGPT_BACKEND=numpy|numba, or from Python:

    from minigpt import backend
    backend.set_backend("numpy")          # from now on
    with backend.use_backend("numpy"):    # for a block
        ...

The two sets take the same arguments and return the same results and caches. The model asks
for the active set once per forward (`ops()`) and keeps it in its cache, so a backward always
runs on the backend of its forward, even if the switch is flipped in between.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from types import SimpleNamespace

from .errors import InputError

BACKENDS = ("numba", "numpy")
DEFAULT = "numba"
ENV = "MINIGPT_BACKEND"

# the functions every backend provides; the model and optimizer call only these
OPS = (
    "embedding_forward", "embedding_backward", "layernorm_forward", "layernorm_backward",
    "linear_forward", "linear_backward", "attention_forward", "attention_backward", "attention_forward_kv",
    "gelu_forward", "gelu_backward", "relu_forward", "relu_backward", "dropout_forward", "dropout_backward",
    "cross_entropy_forward", "cross_entropy_backward", "adamw_update", "sum_of_squares",
)  # fmt: skip

_active: str | None = None
_namespaces: dict[str, SimpleNamespace] = {}  # what runs: a backend's own functions, or a patch
_own: dict[str, SimpleNamespace] = {}  # each backend's own functions, as built


def check_backend(name) -> str:
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return name


def get_backend() -> str:
    """The active backend's name: set_backend's choice, else $MINIGPT_BACKEND, else numba."""
    global _active
    if _active is None:
        value = os.environ.get(ENV, DEFAULT).strip().lower() or DEFAULT
        if value not in BACKENDS:
            raise InputError(f"{ENV}={value!r} is not a backend: set it to one of {', '.join(BACKENDS)}")
        _active = value
    return _active


def set_backend(name: str) -> None:
    global _active
    _active = check_backend(name)


@contextmanager
def use_backend(name: str):
    """Run a block on another backend, then switch back."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _numpy_ops() -> SimpleNamespace:
    from . import layers, optim

    ns = {name: getattr(layers, name) for name in OPS if hasattr(layers, name)}
    ns["attention_forward_kv"] = layers.attention.attention_forward_kv
    ns["adamw_update"], ns["sum_of_squares"] = optim.adamw_update, optim.sum_of_squares
    return SimpleNamespace(name="numpy", **ns)


def _numba_ops() -> SimpleNamespace:
    from .kernels import activation, adamw, attention, cross_entropy, embedding, layernorm

    ns = vars(ops_for("numpy")).copy()  # what has no kernel (linear, relu, dropout, ...) stays NumPy
    for module in (activation, adamw, attention, cross_entropy, embedding, layernorm):
        ns.update({name: getattr(module, name) for name in OPS if hasattr(module, name)})
    ns["name"] = "numba"
    return SimpleNamespace(**ns)


def ops_for(name: str) -> SimpleNamespace:
    """The named backend's functions (see OPS), built on first use (numba loads only then)."""
    check_backend(name)
    if name not in _own:
        _own[name] = _namespaces[name] = _numpy_ops() if name == "numpy" else _numba_ops()
    return _namespaces[name]


def ops() -> SimpleNamespace:
    """The active backend's functions."""
    return ops_for(get_backend())


def is_patched() -> bool:
    """Whether the active backend runs replaced functions (inside `patched`): code with its own
    fused path for a backend (generate's compiled decoding step) must then take the plain one."""
    name = get_backend()
    return ops_for(name) is not _own[name]


@contextmanager
def patched(name: str, namespace: SimpleNamespace):
    """Run a block with the named backend's functions replaced by namespace (which must provide
    every name in OPS), e.g. wrapped in timers by `minigpt bench`; restored afterwards."""
    missing = [op for op in OPS if not hasattr(namespace, op)]
    if missing:
        raise ValueError(f"the replacement namespace lacks {', '.join(missing)}")
    original = ops_for(name)
    _namespaces[name] = namespace
    try:
        yield namespace
    finally:
        _namespaces[name] = original
