"""Data parallelism in one process: shard gradients, combined by the per-token rule, equal the
full-batch gradient."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt import GPTConfig, InputError, gpt_backward, gpt_forward, init_params, parallel, threads
from minigpt.cli import main
from minigpt.parallel import shard_batch, shard_gradients
from minigpt.threads import THREAD_VARS
from minigpt.train import TrainConfig

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


# ---------------------------------------------------------------------------------------------
# The data-parallel mode's pieces that need no MPI (the mpiexec runs are in test_parallel_mpi.py)


def test_shard_batch_splits_rows_and_weights_by_targets():
    idx = np.arange(24).reshape(4, 6)
    targets = np.ones((4, 6), dtype=np.int64)
    targets[:2, :3] = -1  # the first half holds 6 targets, the second 12: N = 18
    shards = [shard_batch(idx, targets, k, 2) for k in range(2)]
    np.testing.assert_array_equal(np.concatenate([s[0] for s in shards]), idx)  # disjoint, covering, in order
    assert [s[2] for s in shards] == [6 / 18, 12 / 18]
    assert shard_batch(idx, np.full((4, 6), -1), 1, 2)[2] == 0.0  # no targets at all: nothing to contribute


def test_data_parallel_without_mpi4py_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `from mpi4py import MPI` now raises ImportError
    code = main(["train", "--data-parallel", "--preset", "tiny", "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--data-parallel needs mpi4py and an MPI library" in err and "pip install 'minigpt[mpi]'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_collective_timeout_must_be_positive(value, capsys):
    try:
        code = main(["train", "--data-parallel", "--collective-timeout", value])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "collective_timeout must be a number of seconds > 0" in err and err.count("\n") == 1
    with pytest.raises(InputError, match="collective_timeout"):
        TrainConfig(collective_timeout=True)


@pytest.mark.parametrize("environ, cores, expected", [
    ({}, 8, {}),  # not under mpiexec: nothing changes
    ({"PMI_SIZE": "2", "MPI_LOCALNRANKS": "2"}, 2, {v: "1" for v in THREAD_VARS}),  # MPICH: 2 ranks on 2 cores
    ({"PMI_SIZE": "4", "MPI_LOCALNRANKS": "2"}, 8, {v: "4" for v in THREAD_VARS}),  # 2 of 4 ranks on this machine
    ({"OMPI_COMM_WORLD_SIZE": "3"}, 8, {v: "2" for v in THREAD_VARS}),  # Open MPI, local size unknown
    ({"PMI_SIZE": "3"}, 2, {v: "1" for v in THREAD_VARS}),  # more ranks than cores: at least 1
    ({"PMI_SIZE": "2", "OPENBLAS_NUM_THREADS": "2"}, 2,  # the user's choice is kept
     {v: "1" for v in THREAD_VARS if v != "OPENBLAS_NUM_THREADS"}),
])  # fmt: skip
def test_threads_per_rank(environ, cores, expected, monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    env = dict(environ)
    assert threads.limit_threads_for_mpi(env) == expected
    assert env == {**environ, **expected}


def test_threads_are_set_before_numpy_loads():
    """In a fresh interpreter under a (simulated) MPI launch, `import minigpt` sets the thread
    variables before NumPy is imported (an import hook records them at that moment), and numba
    reads the limit."""
    code = """
import os, sys
seen = {}
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy" and not seen:
            seen.update({v: os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")})
sys.meta_path.insert(0, Spy())
import minigpt, numba
print(seen["OPENBLAS_NUM_THREADS"], seen["NUMBA_NUM_THREADS"], numba.config.NUMBA_NUM_THREADS)
"""
    env = {k: v for k, v in os.environ.items() if k not in threads.THREAD_VARS}
    env.update(PMI_SIZE="64", MPI_LOCALNRANKS="64", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1", "1"]


class RecordingComm:
    """Stands in for MPI.COMM_WORLD: records MPI_Abort, and what stderr held at that moment."""

    def __init__(self, capsys, events):
        self.capsys, self.events = capsys, events

    def Abort(self, status):  # mpi4py's name
        self.events.append(("abort", status, self.capsys.readouterr().err))


@pytest.mark.parametrize("exc, status, line, traceback_shown", [
    (RuntimeError("boom\nsecond line"), 1, "boom", True),  # a bug: where it happened, then the one line
    (InputError("bad --flag"), 2, "bad --flag", False),  # the user's error: the one line only
    (KeyboardInterrupt(), 130, "KeyboardInterrupt", False),
])  # fmt: skip
def test_abort_reports_the_error_before_mpi_abort(exc, status, line, traceback_shown, capsys, monkeypatch):
    """The one-line error (after the traceback for a bug) is written and flushed, then the rank
    waits ABORT_GRACE_S so that mpiexec forwards it, and only then calls MPI_Abort: an abort that
    overtakes the message loses it (tests/test_parallel_mpi.py saw that in 1 run in 15)."""
    events = []
    monkeypatch.setattr(parallel.time, "sleep", lambda s: events.append(("sleep", s, capsys.readouterr().err)))
    dp = object.__new__(parallel.DataParallel)  # no MPI, no watchdog thread: just the abort path
    dp.rank, dp.size, dp.comm = 1, 2, RecordingComm(capsys, events)
    try:
        raise exc
    except BaseException as e:  # noqa: BLE001 (as run_data_parallel catches it)
        dp.abort(e)
    assert [e[:2] for e in events] == [("sleep", parallel.ABORT_GRACE_S), ("abort", status)]
    written, after_sleep = events[0][2], events[1][2]
    assert after_sleep == ""  # everything was out before the pause
    assert written.endswith(f"minigpt: error: rank 1 of 2: {line}; stopping every rank\n")
    assert written.count("\n") > 1 if traceback_shown else written.count("\n") == 1
    assert ("Traceback (most recent call last)" in written) == traceback_shown
