"""Thread counts for processes that share one machine, such as MPI ranks: set before NumPy loads.

NumPy's BLAS (OpenBLAS) and numba each start one thread per core by default, and read their
thread counts once, when they load. Two ranks on a 2-core machine then run 2 x (2 BLAS + 2 numba)
threads on 2 cores; measured here, that made matrix products 1.75x slower than one thread per rank
(shared/reference/engineering.md, "Oversubscription with MPI ranks"). So a process started by an
MPI launcher (mpiexec) gives itself cores // (ranks on this machine) threads, at least 1.

`minigpt/__init__.py` calls `limit_threads_for_mpi()` first, before anything imports NumPy, so
every `minigpt ...` command and every `import minigpt` under mpiexec gets it. It

- changes nothing outside an MPI launch (a plain `minigpt train` keeps all cores);
- never overrides a variable the user set (OPENBLAS_NUM_THREADS=2 mpiexec ... is respected);
- is too late if NumPy was imported before minigpt: then set the variables yourself, e.g.
  `mpiexec -n 2 -genv OPENBLAS_NUM_THREADS 1 -genv NUMBA_NUM_THREADS 1 python script.py`.

This module must not import NumPy (or anything that does).
"""

from __future__ import annotations

import os

# what the launchers tell each process: ranks on this machine first, else ranks in the whole job
LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")  # MPICH's hydra, Open MPI
WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
# OpenBLAS (NumPy's wheels), OpenMP, MKL, and numba's own pool
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def ranks_on_this_machine(environ=os.environ) -> int | None:
    """How many ranks of an MPI job share this machine, from the launcher's environment;
    None when the process was not started by an MPI launcher."""
    for names in (LOCAL_SIZE_VARS, WORLD_SIZE_VARS):  # the job size is an upper bound if that is all we know
        for name in names:
            value = environ.get(name, "")
            if value.isdigit() and int(value) >= 1:
                return int(value)
    return None


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), not merely the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def threads_per_rank(cores: int, ranks: int) -> int:
    """cores // ranks, at least 1."""
    return max(1, cores // max(1, ranks))


def limit_threads_for_mpi(environ=os.environ) -> dict:
    """Under an MPI launcher, set each unset variable of THREAD_VARS to cores // local ranks.
    Returns the variables it set (empty outside MPI, or when the user set them all)."""
    ranks = ranks_on_this_machine(environ)
    if ranks is None:
        return {}
    n = str(threads_per_rank(usable_cores(), ranks))
    chosen = {name: n for name in THREAD_VARS if name not in environ}
    environ.update(chosen)
    return chosen
