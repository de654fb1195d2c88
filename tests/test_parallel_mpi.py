"""Data-parallel training over MPI, for real: `mpiexec -n 2` runs of tests/mpi_worker.py.

- 2 ranks trained for 20 steps hold, each, the parameters of one process trained on the same
  global batches (float64, 1e-10), and both ranks' parameters are bitwise identical;
- a rank that dies, hangs or raises stops the whole run with an error instead of a hang, and the
  last checkpoint stays intact (and resumes, with 2 ranks, to the single process's parameters);
- gradual pruning over 2 ranks prunes the same weights as one process, to the same values;
- a rank count that does not divide the batch is a one-line error, exit status 2.

Skipped without mpi4py or mpiexec (`pip install 'minigpt[mpi]'` brings both). The runs use the
NumPy backend: the subject is the communication, and it spares each rank the float64 numba compile.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt import backend
from minigpt.checkpoint import load_checkpoint, load_tensors
from minigpt.compress.prune import LINEAR_WEIGHTS
from minigpt.train import TrainConfig, train

pytest.importorskip("mpi4py")  # the package only: importing mpi4py.MPI would start MPI in pytest
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("no mpiexec (pip install 'minigpt[mpi]' installs MPICH's)", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "mpi_worker.py"
MODEL = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, bias=True, dropout=0.0)
STEPS = 20
TIMEOUT = 120  # seconds per mpiexec run; each takes a few


def settings(out_dir, data, **overrides) -> dict:
    tc = dict(out_dir=str(out_dir), data=str(data), dtype="float64", seed=7, batch_size=4, max_iters=STEPS,
              learning_rate=3e-3, warmup_iters=3, lr_decay_iters=STEPS, min_lr=3e-4, grad_clip=1.0,
              eval_interval=5, eval_iters=2, log_interval=5, data_parallel=True)
    return {"train": {**tc, **overrides}, "model": MODEL}


def env() -> dict:
    e = dict(os.environ, MINIGPT_BACKEND="numpy")
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH", "")) if p)
    return e


def mpiexec(n, args, timeout=TIMEOUT):
    return subprocess.run([MPIEXEC, "-n", str(n), *args], capture_output=True, text=True, timeout=timeout,
                          env=env(), cwd=ROOT, stdin=subprocess.DEVNULL)  # fmt: skip


def run_worker(tmp_path, s, n=2, name="settings.json"):
    path = tmp_path / name
    path.write_text(json.dumps(s))
    return mpiexec(n, [sys.executable, str(WORKER), str(path)])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small text (a few thousand characters) so that every run takes seconds."""
    rng = np.random.default_rng(0)
    words = ["the", "king", "queen", "of", "and", "to", "my", "lord", "say", "what", "thou", "art", "\n"]
    text = " ".join(rng.choice(words, 2000))
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def single(tmp_path_factory, corpus):
    """The reference: one process, the same global batch size, data-parallel off."""
    out = tmp_path_factory.mktemp("single")
    s = settings(out, corpus, data_parallel=False)
    with backend.use_backend("numpy"):
        train(TrainConfig(**s["train"]), s["model"], quiet=True)
    return load_checkpoint(out / "resume.safetensors").params


def assert_equal_to_single(params, single):
    assert params.keys() == single.keys()
    for name, p in single.items():
        assert np.abs(params[name] - p).max() <= 1e-10, name


def test_two_ranks_equal_one_process(tmp_path, corpus, single):
    proc = run_worker(tmp_path, settings(tmp_path, corpus))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["world_size"] == 2 and summary["iter"] == STEPS
    ranks = [load_tensors(tmp_path / f"params_rank{r}.safetensors")[0] for r in range(2)]
    for name in ranks[0]:  # bitwise identical across ranks
        assert ranks[0][name].tobytes() == ranks[1][name].tobytes(), name
    assert_equal_to_single(ranks[0], single)
    # rank 0 wrote the files, and its resume state is its parameters
    saved = load_checkpoint(tmp_path / "resume.safetensors")
    assert saved.meta["step"] == STEPS and saved.meta["train_config"]["data_parallel"]
    assert all(np.array_equal(saved.params[n], ranks[0][n]) for n in saved.params)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["iter"] for m in metrics if "val_loss" in m] == [0, 5, 10, 15, 20]  # written once, by rank 0


def test_gradual_pruning_over_two_ranks_equals_one_process(tmp_path, corpus):
    """Gradual magnitude pruning (--prune-to) under 2 ranks: every rank computes the masks from its
    own copy of the parameters, which the Allreduce keeps bitwise identical, so the ranks prune the
    same weights, and the run equals one process's pruned run: the same zeros, the same values."""
    prune = dict(prune_to=0.5, prune_start=2, prune_end=12, prune_every=2)
    single_dir = tmp_path / "single"
    s = settings(single_dir, corpus, data_parallel=False, **prune)
    with backend.use_backend("numpy"):
        train(TrainConfig(**s["train"]), s["model"], quiet=True)
    reference = load_checkpoint(single_dir / "resume.safetensors").params
    proc = run_worker(tmp_path, settings(tmp_path, corpus, **prune))
    assert proc.returncode == 0, proc.stderr
    ranks = [load_tensors(tmp_path / f"params_rank{r}.safetensors")[0] for r in range(2)]
    for name in ranks[0]:
        assert ranks[0][name].tobytes() == ranks[1][name].tobytes(), name
    pruned = [n for n in reference if n.split(".", 2)[-1] in LINEAR_WEIGHTS]
    assert len(pruned) == 4 * MODEL["n_layer"]
    for name in pruned:
        zeros = ranks[0][name] == 0
        assert np.array_equal(zeros, reference[name] == 0), name  # the same weights pruned
        assert abs(zeros.mean() - 0.5) <= 1 / zeros.size, name  # at the final sparsity
    assert_equal_to_single(ranks[0], reference)


def test_dying_rank_stops_the_run_and_the_checkpoint_resumes(tmp_path, corpus, single):
    """Rank 1 is killed (SIGKILL) in iter 7: mpiexec stops rank 0 too, instead of a hang. The
    state saved at iter 5 is intact, and 2 ranks resume it to the single process's parameters."""
    s = settings(tmp_path, corpus)
    s["fail"] = {"rank": 1, "at_iter": 7, "how": "die"}
    proc = run_worker(tmp_path, s)
    assert proc.returncode != 0
    assert "BAD TERMINATION" in proc.stdout + proc.stderr  # MPICH names the dead rank's signal
    assert load_checkpoint(tmp_path / "resume.safetensors").meta["step"] == 5
    assert load_checkpoint(tmp_path / "ckpt.safetensors").meta["iter"] <= 5
    s = settings(tmp_path, corpus, resume=True)
    s["start_iter"] = 5
    proc = run_worker(tmp_path, s, name="resume.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["iter"] == STEPS
    assert_equal_to_single(load_tensors(tmp_path / "params_rank1.safetensors")[0], single)


@pytest.mark.parametrize("how, message", [
    ("hang", "rank 0 of 2: no answer from the other ranks for 3 s in the gradient Allreduce of iter 7"),
    ("raise", "rank 1 of 2: injected failure; stopping every rank"),
])  # fmt: skip
def test_failing_rank_aborts_every_rank(tmp_path, corpus, how, message):
    """A rank that hangs is caught by the others' watchdog; one that raises aborts the job itself.
    Either way the run ends with a one-line error and exit status 1, and the checkpoint of iter 5
    is intact."""
    s = settings(tmp_path, corpus, collective_timeout=3.0)
    s["fail"] = {"rank": 1, "at_iter": 7, "how": how}
    proc = run_worker(tmp_path, s)
    assert proc.returncode == 1, proc.stderr
    assert f"minigpt: error: {message}" in proc.stderr
    assert load_checkpoint(tmp_path / "resume.safetensors").meta["step"] == 5


def test_ctrl_c_on_one_rank_stops_every_rank_after_the_same_step(tmp_path, corpus):
    """A Ctrl-C seen by rank 1 alone (in iter 7) travels with the Allreduce: both ranks finish
    iter 7, rank 0 saves the state of iter 8, and neither waits for the other."""
    s = settings(tmp_path, corpus)
    s["fail"] = {"rank": 1, "at_iter": 7, "how": "interrupt"}
    proc = run_worker(tmp_path, s)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["interrupted"] and summary["iter"] == 8
    assert load_checkpoint(tmp_path / "resume.safetensors").meta["step"] == 8
    ranks = [load_tensors(tmp_path / f"params_rank{r}.safetensors")[0] for r in range(2)]
    assert all(ranks[0][n].tobytes() == ranks[1][n].tobytes() for n in ranks[0])


def test_rank_count_must_divide_the_batch(tmp_path, corpus):
    proc = mpiexec(2, [sys.executable, "-m", "minigpt", "train", "--data-parallel", "--preset", "tiny",
                       "--data", str(corpus), "--batch-size", "3", "--out-dir", str(tmp_path / "out")])  # fmt: skip
    assert proc.returncode == 2
    expected = ("minigpt: error: --data-parallel with 2 ranks needs a batch size divisible by 2, got --batch-size 3 "
                "(the global batch; each rank takes batch_size / ranks rows)")
    assert proc.stderr.strip().splitlines() == [expected]
    assert not (tmp_path / "out").exists()  # stopped before anything was written
