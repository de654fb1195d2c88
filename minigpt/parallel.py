"""Data parallelism: every worker holds the whole model, computes the gradients of its own shard of
the batch, and the shard gradients are combined before one identical optimizer step everywhere
(PyTorch DistributedDataParallel, Horovod). Two parts:

1. `shard_gradients`: the idea in one process, for the tutorial and the property test. Split a
   batch into K shards, compute each shard's gradients on its own, combine them, and get exactly
   the gradient of the whole batch.
2. `DataParallel` and `run_data_parallel`: the real thing over MPI (mpi4py), used by
   `mpiexec -n N minigpt train --data-parallel ...` (see train.py's `dp` hooks).

The rule that makes it exact, with ignored targets too (per-token normalization): the loss is a
mean over the N non-ignored targets of the whole batch, so shard k (holding n_k of them) must
contribute its gradient scaled by n_k / N. Each shard's loss is already a mean over its own n_k
targets, so

    dL/dθ = sum_k (n_k / N) · dL_k/dθ

When every shard holds the same number of targets (no ignored positions, equal shard sizes), the
weights are all 1/K and this is the plain average of the shard gradients that DDP computes with an
allreduce. A shard whose targets are all ignored has n_k = 0 and contributes nothing. Over MPI,
every rank draws the indices of the whole global batch (a few integers), so every rank can count
N itself; rank k scales its gradients by n_k / N and one SUM-Allreduce adds them up.

How a data-parallel run works (rank r of R, global batch size B; R must divide B):
- Start: rank 0's parameters, AdamW moments and step are broadcast to every rank, so all ranks
  start identical (a new run, or a resumed one).
- Sampler: every step draws the global batch exactly as a single process with batch size B does
  (numpy generator seeded with [seed, step, stream]); rank r keeps rows [r B/R, (r+1) B/R). So R
  ranks consume exactly the batches one process would, and their summed gradients equal its
  gradients up to rounding.
- Communication: the shard gradients, the loss (and the objective's logged values, and a Ctrl-C
  flag) are copied into ONE flat contiguous buffer, and ONE buffer-based `Allreduce` sums it (not
  the lowercase, pickle-based `allreduce`, measured 20x slower here). Gradient clipping and AdamW
  then run on the summed buffer, which is bitwise the same on every rank, so every rank's
  parameters stay bitwise identical (checked at every evaluation). With 2 ranks that is certain
  (a + b == b + a in IEEE arithmetic); with more, MPI only recommends that every rank receive the
  same sum. MPICH's algorithms do deliver it, and the check would stop a library that does not.
- Side effects: only rank 0 logs, evaluates and writes files (metrics, checkpoints).
- Dropout: rank 0 draws the single-process masks' stream; rank r > 0 its own stream. With
  dropout 0 (the presets) a run equals the single-process run; with dropout > 0 it is a correct
  data-parallel run with different masks.
- Failure: an exception on any rank prints a one-line error naming the rank and aborts the whole
  job (MPI_Abort), instead of leaving the others waiting forever in a collective. A rank that dies
  is noticed by mpiexec, which stops the others; a rank that hangs is caught by a watchdog: any
  collective that waits longer than `collective_timeout` seconds aborts the job. Checkpoints are
  written atomically, so the last one stays intact.
- Threads: see minigpt/threads.py (each rank uses cores // ranks threads, set before NumPy loads).

Legend: B batch (global), T time, K shards, R ranks (MPI world size), r this rank.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
import traceback
from contextlib import contextmanager

import numpy as np

from .config import GPTConfig
from .errors import InputError
from .layers import IGNORE_INDEX
from .model import gpt_backward, gpt_forward


def shard_batch(idx, targets, k: int, n_shards: int):
    """Shard k of K of a global batch: rows [k B/K, (k+1) B/K) of idx and targets (B, T), and the
    shard's weight n_k / N (its non-ignored targets over the whole batch's; 0 when N = 0)."""
    B = idx.shape[0]
    shard_size = B // n_shards
    rows = slice(k * shard_size, (k + 1) * shard_size)
    n_total = int((targets != IGNORE_INDEX).sum())  # N: every worker can count it from the global batch
    n_k = int((targets[rows] != IGNORE_INDEX).sum())
    return idx[rows], targets[rows], n_k / max(n_total, 1)


def shard_gradients(config: GPTConfig, params, idx, targets, n_shards: int):
    """The full batch's loss and gradients, computed shard by shard.

    Parameters
    ----------
    idx, targets : int arrays of shape (B, T); B must be divisible by n_shards
    n_shards : K, the number of workers to simulate; shard k holds rows [k B/K, (k+1) B/K)

    Returns
    -------
    loss : float, equal to gpt_forward's loss on the whole batch
    grads : dict like params, equal to gpt_backward's gradients on the whole batch (up to rounding)
    """
    idx, targets = np.asarray(idx), np.asarray(targets)
    B = idx.shape[0]
    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1 or B % n_shards:
        raise InputError(f"the shard count must be a positive divisor of the batch size {B}, got {n_shards}")
    loss, grads = 0.0, None
    for k in range(n_shards):
        x, y, weight = shard_batch(idx, targets, k, n_shards)  # weight = n_k / N, this shard's share
        _, shard_loss, cache = gpt_forward(config, params, x, y)
        shard_grads = gpt_backward(cache, dloss=weight)
        loss += weight * shard_loss
        grads = shard_grads if grads is None else {name: grads[name] + g for name, g in shard_grads.items()}
    return loss, grads


# ---------------------------------------------------------------------------------------------
# Over MPI: `mpiexec -n R minigpt train --data-parallel ...`

INSTALL_HINT = "pip install 'minigpt[mpi]' (mpi4py and the MPICH library, no system MPI needed)"
ABORT_STATUS = {InputError: 2, KeyboardInterrupt: 130}  # anything else: 1, as the CLI
ABORT_GRACE_S = 0.5  # time for mpiexec to forward a rank's last words before MPI_Abort (see _say_and_abort)


def import_mpi():
    """mpi4py's MPI module (importing it starts MPI), or an InputError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as e:  # no mpi4py, or mpi4py without an MPI library ("libmpi.so: cannot open ...")
        raise InputError(f"--data-parallel needs mpi4py and an MPI library ({e}); install them with "
                         f"{INSTALL_HINT}") from None  # fmt: skip
    return MPI


class SilentReporter:
    """What ranks other than 0 use in place of train.Reporter: they log nothing and write no files."""

    class _Bar:
        def update(self, n=1):
            pass

    def __init__(self):
        self.bar = self._Bar()

    def record(self, line: str, **fields):
        pass

    def say(self, line: str):
        pass

    def close(self):
        pass


class SyncedInterrupt:
    """A Ctrl-C seen by any rank, agreed on by all: `requested` is the value summed in the last
    step's Allreduce, so every rank stops after the same step (a rank that stopped alone would
    leave the others waiting)."""

    def __init__(self, local):
        self.local, self.requested = local, False


class DataParallel:
    """One rank of a data-parallel run: the MPI communicator and the collectives train() needs.

    Every collective is called by every rank at the same point of the loop, and is timed by a
    watchdog thread: one that waits longer than `timeout` seconds aborts the whole job."""

    def __init__(self, comm, timeout: float):
        self.comm, self.rank, self.size, self.timeout = comm, comm.Get_rank(), comm.Get_size(), float(timeout)
        self.is_root = self.rank == 0
        self.mpi = import_mpi()  # already imported by start(): just the module
        self._buffer, self._views, self._log_names = None, {}, ()
        self.interrupt = None
        self._waiting, self._lock, self._stop = None, threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._watchdog, name="minigpt-dp-watchdog", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, batch_size: int, timeout: float) -> DataParallel:
        """Start MPI and check that the ranks can split the global batch evenly."""
        comm = import_mpi().COMM_WORLD
        size, rank = comm.Get_size(), comm.Get_rank()
        if batch_size % size:
            if rank == 0:  # every rank finds the same problem; one line is enough
                raise InputError(f"--data-parallel with {size} ranks needs a batch size divisible by {size}, got "
                                 f"--batch-size {batch_size} (the global batch; each rank takes batch_size / ranks rows)")  # fmt: skip
            raise SystemExit(2)
        return cls(comm, timeout)

    # -- the watchdog ----------------------------------------------------------------------------

    @contextmanager
    def watch(self, what: str):
        """Time one collective call; the watchdog aborts the job if it takes longer than timeout."""
        with self._lock:
            self._waiting = (what, time.monotonic() + self.timeout)
        try:
            yield
        finally:
            with self._lock:
                self._waiting = None

    def _watchdog(self):
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            with self._lock:
                waiting = self._waiting
            if waiting is not None and time.monotonic() > waiting[1]:
                self._say_and_abort(f"no answer from the other ranks for {self.timeout:g} s in {waiting[0]} (a rank "
                                    "died or hangs); stopping every rank (raise --collective-timeout if steps or "
                                    "evaluations are slower than that)", status=1)  # fmt: skip

    def close(self):
        self._stop.set()

    def _say_and_abort(self, message: str, status: int, before: str = ""):
        """Print `before` (a traceback, or nothing) and the one-line error, then MPI_Abort the job.

        mpiexec forwards each rank's stderr through a pipe, and MPI_Abort makes it kill every rank;
        a message written just before the abort can be lost if the kill wins that race (it did, in
        about 1 run in 15 on this machine). So the report goes out as one flushed write and the rank
        waits ABORT_GRACE_S for the forwarder to pass it on. The other ranks are stuck in a
        collective meanwhile, so the wait costs nothing."""
        sys.stderr.write(f"{before}minigpt: error: rank {self.rank} of {self.size}: {message}\n")
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(status)

    def abort(self, exc: BaseException):
        """Stop every rank after an exception on this one (the others may be waiting in a collective)."""
        status = next((code for cls, code in ABORT_STATUS.items() if isinstance(exc, cls)), 1)
        from .train import TrainingError

        # a bug (not a user-facing error): show where, above the one-line error
        bug = not isinstance(exc, (InputError, TrainingError, KeyboardInterrupt))
        before = "".join(traceback.format_exception(exc)) if bug else ""
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self._say_and_abort(f"{first_line}; stopping every rank", status, before)

    # -- the collectives -------------------------------------------------------------------------

    def broadcast_state(self, trainable: dict, optimizer, scalars: dict) -> dict:
        """Rank 0's parameters, AdamW moments and step counts to every rank, in place.

        scalars: small JSON values (the step, best val loss, ...); returns rank 0's. Parameters go
        with buffer-based Bcast, one per tensor (once per run, so the count does not matter)."""
        with self.watch("the broadcast of the initial state"):
            for group in (trainable, optimizer.m, optimizer.v):
                for name in sorted(group):
                    a = group[name]
                    if not a.flags.c_contiguous:
                        raise ValueError(f"{name} is not C-contiguous, so it cannot be broadcast in place")
                    self.comm.Bcast(a, root=0)
            scalars = self.bcast_json(dict(scalars, optim_t=optimizer.t))
        optimizer.t = scalars.pop("optim_t")
        return scalars

    def bcast_json(self, value):
        """A small JSON value from rank 0 to every rank, as bytes in a buffer (no pickle)."""
        data = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8) if self.is_root else None
        n = np.array([0 if data is None else data.size], dtype=np.int64)
        self.comm.Bcast(n, root=0)
        buf = data.copy() if self.is_root else np.empty(int(n[0]), dtype=np.uint8)
        self.comm.Bcast(buf, root=0)
        return json.loads(buf.tobytes().decode())

    def shard(self, x, y):
        """This rank's rows of a global batch (B, T) -> (B/R, T), and its weight n_r / N."""
        return shard_batch(x, y, self.rank, self.size)

    def allreduce(self, grads: dict, loss: float, logs: dict, step: int):
        """Sum every rank's weighted gradients, loss and logged values with ONE Allreduce over one
        flat contiguous buffer (also carrying the Ctrl-C flag). Returns (grads, loss, logs), the
        gradients as views into the buffer (so clipping scales the buffer in place)."""
        log_names = tuple(sorted(logs))
        if self._buffer is None or self._log_names != log_names or set(self._views) != set(grads):
            self._allocate(grads, log_names)
        buf = self._buffer
        for name, view in self._views.items():
            np.copyto(view, grads[name])
        tail = buf[buf.size - 2 - len(log_names) :]  # [loss, stop, logs...]
        tail[0], tail[1] = loss, float(bool(self.interrupt and self.interrupt.local.requested))
        tail[2:] = [logs[k] for k in log_names]
        with self.watch(f"the gradient Allreduce of iter {step}"):
            self.comm.Allreduce(self.mpi.IN_PLACE, buf, op=self.mpi.SUM)
        if self.interrupt is not None:
            self.interrupt.requested = bool(tail[1] > 0)
        return dict(self._views), float(tail[0]), {k: float(v) for k, v in zip(log_names, tail[2:], strict=True)}

    def _allocate(self, grads: dict, log_names):
        """One buffer: every gradient, flattened in a fixed (sorted) order, then the scalars."""
        names = sorted(grads)
        dtypes = {grads[n].dtype for n in names}
        if len(dtypes) != 1:
            raise ValueError(f"the gradients have several dtypes ({dtypes}); one flat buffer needs one")
        sizes = [grads[n].size for n in names]
        self._buffer = np.empty(sum(sizes) + 2 + len(log_names), dtype=dtypes.pop())
        self._views, offset = {}, 0
        for name, n in zip(names, sizes, strict=True):
            self._views[name] = self._buffer[offset : offset + n].reshape(grads[name].shape)  # a contiguous view
            offset += n
        self._log_names = tuple(log_names)

    def check_in_sync(self, params: dict, step: int):
        """Raise unless every rank holds bitwise the same parameters (a sha256 per rank, gathered)."""
        h = hashlib.sha256()
        for name in sorted(params):
            h.update(np.ascontiguousarray(params[name]).tobytes())
        mine = np.frombuffer(h.digest(), dtype=np.uint8).copy()
        every = np.empty((self.size, mine.size), dtype=np.uint8)
        with self.watch(f"the parameter check of iter {step}"):
            self.comm.Allgather(mine, every)
        differ = [r for r in range(self.size) if not np.array_equal(every[r], every[0])]
        if differ:
            from .train import TrainingError

            raise TrainingError(f"at iter {step} the parameters of rank(s) {differ} differ from rank 0's")


def run_data_parallel(train_fn, tc, *args, **kwargs) -> dict:
    """train_fn(tc, ..., dp=DataParallel) on this rank; any exception aborts every rank. The
    summary gains "rank" and "world_size" (the CLI prints only rank 0's)."""
    dp = DataParallel.start(tc.batch_size, tc.collective_timeout)
    try:
        summary = train_fn(tc, *args, dp=dp, **kwargs)
    except BaseException as e:
        if dp.size == 1:  # nobody is waiting: the ordinary error path
            raise
        dp.abort(e)
        raise  # not reached: Abort ends the process
    finally:
        dp.close()
    return dict(summary, rank=dp.rank, world_size=dp.size)
